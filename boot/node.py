"""The actor plane: `python -m g8os.boot.node --config FILE --notify-fd N`.

PID 1 starts this process. It moves into a network namespace of its own that holds only
loopback (Thespian listens on every address and unpickles what it receives, so nothing on the
node's network may reach it), starts the Thespian actor system there and the RootActor, and
then watches: it tells PID 1 the admin's pid and when the tree is ready, turns SIGTERM into an
ordered shutdown of the tree, SIGUSR1 into log reopening, and exits if the root dies (PID 1
then restarts the plane).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from typing import Any

import redis
from thespian.actors import ActorSystem

from g8os.actors.root import RootActor
from g8os.boot.config import NodeConfig
from g8os.messages.internal import Init, ReopenLogs, Shutdown, Stopped
from g8os.system import info, linux

START_TIMEOUT = 60.0


def _notify(fd: int | None, **event: Any) -> None:
    if fd is not None:
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
        except OSError:
            pass


def _log(config: NodeConfig, line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{stamp} node[{os.getpid()}]: {line}\n"
    if config.log_file:
        with open(config.log_file, "a", encoding="utf-8") as log:
            log.write(text)
    else:
        sys.stderr.write(text)


def enter_private_network() -> None:
    """A network namespace with only loopback, for the actor plane's TCP transport."""
    linux.unshare(linux.CLONE_NEWNET)
    linux.set_link_up("lo")


def run(config: NodeConfig, notify_fd: int | None) -> int:
    enter_private_network()
    os.environ["THESPIAN_BASE_IPADDR"] = "127.0.0.1"
    os.environ.setdefault("THESPLOG_FILE", os.path.join(config.run_dir, "thespian.log"))
    os.environ.setdefault("THESPLOG_THRESHOLD", "WARNING")
    os.makedirs(config.run_dir, exist_ok=True)
    os.makedirs(config.state_dir, exist_ok=True)

    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(sig, lambda signum, frame: received.append(signum))

    _warm_up(config)

    system = ActorSystem("multiprocTCPBase", {"Admin Port": config.actor_port},
                         logDefs={"version": 1, "root": {"level": "WARNING"}})
    try:
        root = system.createActor(RootActor)
        reply = system.ask(root, Init("", "/", 0, config), START_TIMEOUT)
        if reply is None or not hasattr(reply, "pid"):
            _log(config, f"root did not start: {reply!r}")
            return 1
        root_pid = reply.pid
        admin_pid = _parent_of(root_pid)
        _notify(notify_fd, event="admin", pid=admin_pid)
        _notify(notify_fd, event="ready", root=root_pid)
        _log(config, f"actor plane up: admin {admin_pid}, root {root_pid}")
        root_fd = os.pidfd_open(root_pid)
        # Only now: actors forked earlier must not inherit this process's wakeup fd.
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        _reap_children()
        if received:
            os.write(wake_w, b"\0")
        while True:
            ready, _, _ = select.select([wake_r, root_fd], [], [])
            if root_fd in ready:
                _log(config, "root actor died: the plane exits for PID 1 to restart it")
                return 1
            _drain(wake_r)
            while received:
                signum = received.pop(0)
                if signum == signal.SIGCHLD:
                    _reap_children()  # Thespian's detached intermediate that forked the admin
                    continue
                if signum == signal.SIGUSR1:
                    system.tell(root, ReopenLogs())
                    continue
                _log(config, f"{signal.Signals(signum).name}: stopping the tree in order")
                answer = system.ask(root, Shutdown(signal.Signals(signum).name),
                                    max(1.0, config.shutdown_timeout - 2.0))
                if not isinstance(answer, Stopped):
                    _log(config, "the tree did not stop in time")
                return 0
    finally:
        system.shutdown()


def _warm_up(config: NodeConfig) -> None:
    """Do once, here, what every actor would otherwise do after being forked from us: import
    every command module, generate cattrs' structuring code, run git for info.version. A
    restarted actor then serves in milliseconds instead of tens of them.

    The boot configuration is read here too, once per start of the plane: every actor, forked
    from us, sees the same startup services and extensions (system/bootconfig.py)."""
    from g8os.messages import registry
    from g8os.messages.convert import converter
    from g8os.system import bootconfig

    bootconfig.install(bootconfig.current(config.config_dir))
    for command in registry.load().values():
        converter.get_structure_hook(command.request)
    info.version()
    redis.Redis(unix_socket_path="/nonexistent").register_script("return 1")


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    return int(data[data.rfind(b")") + 2:].split()[1])


def _reap_children() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="g8os.boot.node", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--notify-fd", type=int, default=None)
    args = parser.parse_args(argv)
    config = NodeConfig.load(args.config)
    linux.set_process_name("g8:node")
    return run(config, args.notify_fd)


if __name__ == "__main__":
    sys.exit(main())
