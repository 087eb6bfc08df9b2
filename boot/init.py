"""PID 1 of a g8os node: mounts, reaping, signals; starts and watches the actor plane.

This process does as little as possible, because a `waitpid(-1)` reaper steals the exit status of
anything else it would spawn, and because its death ends the whole node (a PID namespace dies with
its init, a kernel panics). Everything else runs in the actor plane it starts.

Contract
--------
argv
    ``python -m g8os.boot.init --config FILE [--plane MODULE|PATH.py]``

    ``--plane`` names what runs as the actor plane: a module (run with ``-m``, default
    ``g8os.boot.node``) or the path of a ``.py`` file (tests use a fake plane this way).

Preconditions
    Must be PID 1. In a sandbox it must also have mount, network, UTS and IPC namespaces of its own:
    when /proc still belongs to an outer PID namespace, PID 1 compares its namespaces with those of
    the process that started it and refuses to start if any is shared (so it never mounts over a
    host's /proc).

Node setup, in order
    ``/`` recursively private; proc on /proc; sysfs on /sys (the host's /sys/fs/cgroup tree is bound
    back when there is one); devtmpfs on /dev, devpts (newinstance, ptmxmode=0666) on /dev/pts, tmpfs
    on /dev/shm, /run and /tmp. The node's own directories (state_dir, run_dir, the log file's and the
    redis socket's directories) that one of these mounts would cover are bound back at the same path,
    and every one of them is checked to be the very same directory after the mounts.
    Then: hostname, ``lo`` up, RLIMIT_NOFILE raised to 65536 (or the hard limit),
    THESPLOG_FILE=<run_dir>/thespian.log and THESPLOG_THRESHOLD=WARNING in the environment.

The plane
    Started as ``[python, -m, PLANE, --config, FILE, --notify-fd, W]`` with stdin on /dev/null, and
    stdout/stderr appended to the log file when the config names one. W is the write end of a pipe;
    the plane writes JSON lines on it::

        {"event": "admin", "pid": <pid of the Thespian admin>}   once the actor system is up
        {"event": "ready"}                                       once the tree answers

    The plane is considered dead when its process exits, or when the admin pid exits, while the node
    is not shutting down. Then PID 1 kills every process of the namespace (``kill(-1, SIGKILL)``),
    reaps until it has no child left, and starts the plane again after a backoff of 1, 2, 4, 8, 16,
    30, 30... seconds; the backoff resets when the dead plane had run for 60 s or more.

Signals
    SIGTERM, SIGINT: ordered shutdown. SIGTERM to the plane, wait for it to exit for at most
    ``config.shutdown_timeout`` seconds, then ``kill(-1, SIGKILL)``, reap everything, exit 0.
    SIGUSR1: reopen PID 1's log file and forward SIGUSR1 to the plane (which reopens its own).
    SIGCHLD: reap. Every other catchable signal is ignored (and reset to default for the plane).

Exit codes
    0 after an ordered shutdown; 1 when setting up the node failed or PID 1 itself crashed (everything
    in the namespace was killed first); 2 on bad usage: not PID 1, not isolated, unreadable config.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TextIO

from g8os.boot.config import NodeConfig
from g8os.system import linux

DEFAULT_PLANE = "g8os.boot.node"
NOFILE = 65536
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
HEALTHY_AFTER = 60.0  # a plane that ran this long before dying restarts after the first backoff again

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2

HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# Ignored by PID 1 and reset to their default for the plane (SIG_IGN survives exec, handlers do not).
IGNORED_SIGNALS = (
    signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGPIPE, signal.SIGALRM, signal.SIGTSTP,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF,
    signal.SIGPWR, signal.SIGIO, signal.SIGSTKFLT,
)

# Mount points that hide whatever the host had there; node directories below them are bound back.
COVERING_MOUNTS = ("/dev", "/run", "/tmp")


class Log:
    """Plain lines to the log file (append, line buffered), or to stderr when there is none."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._file: TextIO = sys.stderr
        self.open()

    def open(self) -> None:
        if not self.path:
            self._file = sys.stderr
            return
        try:
            os.makedirs(os.path.dirname(self.path) or "/", exist_ok=True)
            self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (kept open)
        except OSError as exc:
            self._file = sys.stderr
            self(f"cannot open log file {self.path}: {exc}; logging to stderr")

    def reopen(self) -> None:
        """After log rotation: the old file was renamed, write to a new one at the same path."""
        if self._file is not sys.stderr:
            self._file.close()
        self.open()

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        try:
            self._file.write(f"{stamp} init[{os.getpid()}]: {message}\n")
            self._file.flush()
        except (OSError, ValueError):
            pass  # a full disk must never take PID 1 down


# ---------------------------------------------------------------------------------------------
# Node setup
# ---------------------------------------------------------------------------------------------

ISOLATED = ("mnt", "net", "uts", "ipc")  # namespaces a sandboxed PID 1 must not share with the host


class NotIsolated(Exception):
    """PID 1 would share a namespace with the system that started it."""


def _outer_parent() -> int:
    """Our parent's pid as the outer /proc sees it (getppid() says 0 across the namespace border)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


def check_isolated() -> None:
    """Refuse to mount anything in namespaces shared with the system that started us.

    When /proc is still an outer PID namespace's proc (it says we are not pid 1), we run inside a
    sandbox: our mount, network, UTS and IPC namespaces must then differ from those of the process
    that started us (the keeper, in the host's namespaces). Without /proc (initramfs boot) or with
    our own /proc, there is nothing outside to protect.
    """
    try:
        seen_as = int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return
    if seen_as == 1:
        return
    for outer in (_outer_parent(), 1):
        try:
            shared = [kind for kind in ISOLATED if linux.same_namespace(kind, outer, "self")]
        except OSError:
            continue  # gone, or not ours to inspect: try the next witness
        if shared:
            raise NotIsolated(f"refusing to run: {shared} namespaces shared with outer pid {outer}")
        return
    raise NotIsolated("refusing to run: cannot compare our namespaces with the outer system's")


def node_dirs(config: NodeConfig) -> list[str]:
    """The directories the node needs to reach through the mounts: its state, sockets and logs."""
    paths = [config.state_dir, config.run_dir, os.path.dirname(config.redis.socket)]
    if config.log_file:
        paths.append(os.path.dirname(config.log_file))
    return sorted({os.path.abspath(p) for p in paths if p})


def software_dirs() -> list[str]:
    """Where the node's own code and interpreter live: they must stay visible too (a checkout
    or a virtualenv under /tmp would otherwise vanish under the node's fresh /tmp)."""
    import g8os

    paths = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(g8os.__file__))]
    return sorted({os.path.abspath(p) for p in paths if p and os.path.isdir(p)})


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _topmost(paths: list[str]) -> list[str]:
    """Drop paths below another path of the list: binding the parent keeps them too."""
    return [p for p in paths if not any(q != p and _under(p, q) for q in paths)]


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def mount_filesystems(config: NodeConfig, log: Log) -> None:
    keep = node_dirs(config)
    for path in keep:
        os.makedirs(path, mode=0o700, exist_ok=True)
    keep = sorted({*keep, *software_dirs()})
    before = {path: _identity(path) for path in keep}
    # O_PATH handles on what the mounts will cover, bound back afterwards through /proc/self/fd.
    held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            for p in _topmost(keep) if any(_under(p, top) for top in COVERING_MOUNTS)}
    cgroup = (os.open("/sys/fs/cgroup", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
              if os.path.ismount("/sys/fs/cgroup") else None)
    try:
        # First, so that nothing below propagates to (or from) the host's mount namespace.
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        _mount_kernel_filesystems(log)
        if cgroup is not None:  # containers need the host's cgroup hierarchies (v1 and v2)
            linux.mount(f"/proc/self/fd/{cgroup}", "/sys/fs/cgroup", None, linux.MS_BIND | linux.MS_REC)
        _mount_dev(log)
        for target, mode in (("/run", "0755"), ("/tmp", "1777")):
            linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"mode={mode}")
        for path, fd in held.items():
            os.makedirs(path, exist_ok=True)
            linux.mount(f"/proc/self/fd/{fd}", path, None, linux.MS_BIND)
            log(f"kept {path} reachable through the mounts")
    finally:
        for fd in [*held.values(), *([cgroup] if cgroup is not None else [])]:
            os.close(fd)
    moved = [path for path in keep if _identity(path) != before[path]]
    if moved:
        raise RuntimeError(f"node directories hidden by the mounts: {', '.join(moved)}")


def _mount_kernel_filesystems(log: Log) -> None:
    hardened = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    linux.mount("proc", "/proc", "proc", hardened)    # pids of this PID namespace
    linux.mount("sysfs", "/sys", "sysfs", hardened)   # interfaces of this network namespace
    log("mounted /proc and /sys")


def _mount_dev(log: Log) -> None:
    # devtmpfs is one superblock shared with the host: mount it without options, so that the
    # mount does not reconfigure the host's /dev, and never create anything in it but missing dirs.
    try:
        try:
            linux.mount("devtmpfs", "/dev", "devtmpfs", linux.MS_NOSUID)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # /dev is already that devtmpfs (the kernel refuses it on itself): drop our copy of the
            # host's /dev tree, with its pts, shm, mqueue... (private: the host keeps its own).
            linux.umount("/dev", linux.MNT_DETACH)
            linux.mount("devtmpfs", "/dev", "devtmpfs", linux.MS_NOSUID)
    except OSError as exc:
        log(f"cannot mount devtmpfs ({exc}); keeping the existing /dev")
    for sub in ("/dev/pts", "/dev/shm"):
        os.makedirs(sub, exist_ok=True)
    linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620")
    linux.mount("tmpfs", "/dev/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777")
    log("mounted /dev, /dev/pts, /dev/shm")


def raise_nofile(log: Log) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_hard = hard if hard == resource.RLIM_INFINITY else max(hard, NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), want_hard))
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # not allowed above it: the hard max
    log(f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)}")


def name_this_host(hostname: str, log: Log) -> None:
    """Make the node's hostname resolve (Thespian and many programs look it up): a private
    /etc/hosts with the host's entries plus the name, bound over the original in our mount
    namespace only."""
    try:
        with open("/etc/hosts", encoding="utf-8") as hosts:
            entries = hosts.read()
    except OSError:
        entries = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    path = "/run/g8os-hosts"
    with open(path, "w", encoding="utf-8") as hosts:
        hosts.write(entries.rstrip("\n") + f"\n127.0.1.1\t{hostname}\n")
    try:
        linux.mount(path, "/etc/hosts", None, linux.MS_BIND)
    except OSError as exc:
        log(f"cannot bind a private /etc/hosts: {exc}; {hostname} will not resolve")


def prepare_node(config: NodeConfig, log: Log) -> None:
    mount_filesystems(config, log)
    socket.sethostname(config.hostname)
    name_this_host(config.hostname, log)
    linux.set_link_up("lo")
    raise_nofile(log)
    # Inherited by the plane, the Thespian admin and every actor.
    os.environ["THESPLOG_FILE"] = os.path.join(config.run_dir, "thespian.log")
    os.environ["THESPLOG_THRESHOLD"] = "WARNING"
    log(f"node prepared: hostname {config.hostname}, lo up")


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

def kill_all() -> None:
    """SIGKILL every process of this PID namespace but ourselves. Only ever as PID 1:
    anywhere else kill(-1) would hit every process the caller may signal."""
    if os.getpid() != 1:
        raise RuntimeError("kill(-1) outside PID 1 refused")
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left to kill


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


@dataclass
class Plane:
    """One generation of the actor plane, from its start to its teardown."""

    pid: int
    notify_fd: int | None
    started: float
    buffer: bytes = b""
    admin_pid: int | None = None
    admin_fd: int | None = None     # pidfd: the admin may not be our child when the plane is a subreaper
    ready: bool = False
    exited: bool = False
    failure: str | None = None      # why this generation is dead, first reason wins

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason

    def close(self) -> None:
        for fd in (self.notify_fd, self.admin_fd):
            if fd is not None:
                os.close(fd)
        self.notify_fd = self.admin_fd = None


class Init:
    def __init__(self, config: NodeConfig, config_path: str, plane: str, log: Log) -> None:
        self.config = config
        self.config_path = config_path
        self.plane_target = plane
        self.log = log
        self.plane: Plane | None = None
        self.stop_deadline: float | None = None
        self.restart_at: float | None = None
        self.backoff = 0.0
        self.pending: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    # -- signals ----------------------------------------------------------------------------

    def install_signals(self) -> None:
        # The C-level handler writes to the wakeup pipe, which wakes select(); the Python handler
        # records the signal, so none is lost even if the pipe were full.
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending.add(signum)

    def _handle_signals(self) -> None:
        while self.pending:
            sig = self.pending.pop()
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.begin_shutdown(signal.Signals(sig).name)
            elif sig == signal.SIGUSR1:
                self.log.reopen()
                self.log("SIGUSR1: log reopened, forwarding to the plane")
                self._signal_plane(signal.SIGUSR1)

    def _signal_plane(self, sig: int) -> None:
        if self.plane is not None and not self.plane.exited:
            try:
                os.kill(self.plane.pid, sig)
            except ProcessLookupError:
                pass

    # -- the plane --------------------------------------------------------------------------

    def _plane_argv(self, notify_fd: int) -> list[str]:
        if self.plane_target.endswith(".py"):
            head = [sys.executable, self.plane_target]
        else:
            head = [sys.executable, "-m", self.plane_target]
        return [*head, "--config", self.config_path, "--notify-fd", str(notify_fd)]

    def _file_actions(self) -> list[tuple]:
        actions: list[tuple] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
        if self.config.log_file:  # the plane's tracebacks land next to PID 1's lines
            actions += [
                (os.POSIX_SPAWN_OPEN, 1, self.config.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ]
        return actions

    def start_plane(self) -> None:
        self.restart_at = None
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_inheritable(write_fd, True)
        argv = self._plane_argv(write_fd)
        try:
            pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=self._file_actions(),
                                 setsigdef=HANDLED_SIGNALS + IGNORED_SIGNALS)
        except OSError as exc:
            os.close(read_fd)
            self.log(f"cannot start the actor plane: {exc}")
            self._schedule_restart(ran_for=0.0)
            return
        finally:
            os.close(write_fd)  # the plane holds it now; we only read
        self.plane = Plane(pid=pid, notify_fd=read_fd, started=time.monotonic())
        self.log(f"started the actor plane, pid {pid}: {' '.join(argv)}")

    def _read_notify(self) -> None:
        plane = self.plane
        if plane is None or plane.notify_fd is None:
            return
        try:
            data = os.read(plane.notify_fd, 65536)
        except BlockingIOError:
            return
        if not data:  # EOF: the plane and everything that inherited the pipe closed it
            os.close(plane.notify_fd)
            plane.notify_fd = None
            return
        plane.buffer += data
        *lines, plane.buffer = plane.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._on_event(plane, line)

    def _on_event(self, plane: Plane, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, TypeError, KeyError):
            self.log(f"bad notify line from the plane: {line[:200]!r}")
            return
        if kind == "admin":
            self._watch_admin(plane, event.get("pid"))
        elif kind == "ready":
            plane.ready = True
            self.log(f"actor plane ready after {time.monotonic() - plane.started:.2f}s")
        else:
            self.log(f"unknown notify event from the plane: {kind!r}")

    def _watch_admin(self, plane: Plane, pid: object) -> None:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            self.log(f"bad admin pid from the plane: {pid!r}")
            return
        if plane.admin_fd is not None:
            os.close(plane.admin_fd)
        plane.admin_pid, plane.admin_fd = pid, None
        try:
            plane.admin_fd = os.pidfd_open(pid)
        except ProcessLookupError:
            plane.fail(f"admin pid {pid} was gone when announced")
            return
        self.log(f"watching the Thespian admin, pid {pid}")

    def _check_admin(self, readable: list[int]) -> None:
        plane = self.plane
        if plane is not None and plane.admin_fd is not None and plane.admin_fd in readable:
            os.close(plane.admin_fd)
            plane.admin_fd = None
            plane.fail(f"admin pid {plane.admin_pid} exited")

    # -- reaping ----------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._child_exited(pid, status)

    def _child_exited(self, pid: int, status: int) -> None:
        plane = self.plane
        if plane is None:
            return
        if pid == plane.pid:
            plane.exited = True
            self.log(f"actor plane pid {pid} exited: {describe_status(status)}")
            plane.fail(f"plane pid {pid} {describe_status(status)}")
        elif pid == plane.admin_pid:
            self.log(f"Thespian admin pid {pid} exited: {describe_status(status)}")
            plane.fail(f"admin pid {pid} {describe_status(status)}")

    def _reap_all(self) -> None:
        """After kill_all: wait until no child is left (the namespace then holds only PID 1)."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            self._child_exited(pid, status)

    # -- failure and shutdown ---------------------------------------------------------------

    def _schedule_restart(self, ran_for: float) -> None:
        if self.backoff == 0.0 or ran_for >= HEALTHY_AFTER:
            self.backoff = BACKOFF_FIRST
        else:
            self.backoff = min(self.backoff * 2, BACKOFF_CAP)
        self.restart_at = time.monotonic() + self.backoff
        self.log(f"restarting the actor plane in {self.backoff:g}s")

    def _recover(self, plane: Plane) -> None:
        self.log(f"actor plane died ({plane.failure}); killing every process of the node")
        kill_all()
        self._reap_all()
        plane.close()
        self.plane = None
        self._schedule_restart(ran_for=time.monotonic() - plane.started)

    def begin_shutdown(self, why: str) -> None:
        if self.stop_deadline is not None:
            self.log(f"{why}: already shutting down")
            return
        self.stop_deadline = time.monotonic() + self.config.shutdown_timeout
        self.restart_at = None
        self.log(f"{why}: shutting down (deadline {self.config.shutdown_timeout:g}s)")
        self._signal_plane(signal.SIGTERM)

    def _finish(self) -> int:
        plane = self.plane
        if plane is not None and not plane.exited:
            self.log("the actor plane did not stop in time")
        self.log("killing every remaining process")
        kill_all()
        self._reap_all()
        if plane is not None:
            plane.close()
        self.log("node stopped")
        return EXIT_OK

    # -- the loop ---------------------------------------------------------------------------

    def _timeout(self) -> float | None:
        deadlines = [t for t in (self.stop_deadline, self.restart_at) if t is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _wait(self) -> list[int]:
        fds = [self.wake_r]
        if self.plane is not None:
            fds += [fd for fd in (self.plane.notify_fd, self.plane.admin_fd) if fd is not None]
        readable, _, _ = select.select(fds, [], [], self._timeout())
        if self.wake_r in readable:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return readable

    def _advance(self) -> int | None:
        """Act on the state after each wakeup; an exit code ends the loop."""
        now = time.monotonic()
        plane = self.plane
        if self.stop_deadline is not None:
            if plane is None or plane.exited or now >= self.stop_deadline:
                return self._finish()
            return None
        if plane is not None and plane.failure is not None:
            self._recover(plane)
        elif plane is None and self.restart_at is not None and now >= self.restart_at:
            self.start_plane()
        return None

    def run(self) -> int:
        self.start_plane()
        while True:
            readable = self._wait()
            self._handle_signals()
            self._reap()
            self._read_notify()
            self._check_admin(readable)
            code = self._advance()
            if code is not None:
                return code


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m g8os.boot.init", description="g8os PID 1")
    parser.add_argument("--config", required=True, help="the node's JSON config (NodeConfig)")
    parser.add_argument("--plane", default=DEFAULT_PLANE,
                        help="module (or .py file) run as the actor plane (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.getpid() != 1:
        print("g8os.boot.init: must run as PID 1 (use `core0 sandbox`)", file=sys.stderr)
        return EXIT_USAGE
    config_path = os.path.abspath(args.config)
    plane = os.path.abspath(args.plane) if args.plane.endswith(".py") else args.plane
    try:
        config = NodeConfig.load(config_path)
    except Exception as exc:
        print(f"g8os.boot.init: cannot read {config_path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    os.chdir("/")
    try:
        os.setsid()  # a session of our own: a terminal's signals reach the keeper, not the node
    except PermissionError:
        pass  # already a session leader (booted as the real init)
    log = Log(config.log_file)
    init = Init(config, config_path, plane, log)
    init.install_signals()  # early: an ignored SIGTERM during setup would be lost
    try:
        check_isolated()
    except NotIsolated as exc:
        log(str(exc))
        return EXIT_USAGE
    try:
        prepare_node(config, log)
        return init.run()
    except BaseException:
        log("fatal: " + traceback.format_exc().rstrip())
        kill_all()
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
