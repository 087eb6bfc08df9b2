"""`core0 sandbox`: a g8os node as PID 1 of fresh namespaces on this host, and its keeper.

The keeper is a host process that owns one sandbox for its whole life:

- it writes ``/var/lib/g8os/sandbox/<name>/config.json`` (the node's NodeConfig), copies the
  boot configuration it is given (``--config DIR``: the ``*.toml`` files) into ``<dir>/config``, and holds an
  exclusive flock on the sandbox directory, so a second keeper of the same name refuses to start
  while a dead keeper's directory is recognised as stale and cleaned;
- it forks the node's PID 1 into new PID, mount, UTS, IPC and network namespaces
  (``start_pid1``), with PR_SET_PDEATHSIG=SIGKILL so the node never outlives its keeper;
- it stays in the host's namespaces and forwards TCP connections on 127.0.0.1:<port> byte for byte
  to the node's redis unix socket (redis itself enforces the password);
- once the node answers ``core.ping`` it writes ``sandbox.json`` and announces the connection info;
- on SIGTERM/SIGINT/SIGHUP it stops the node (SIGTERM to PID 1, SIGKILL after
  ``shutdown_timeout + 5`` s), closes the forwarder and removes the sandbox directory (exit 0).
  If PID 1 dies on its own, the keeper cleans up the same way and exits 1.

Public functions: ``up``, ``down``, ``status``, ``list_sandboxes``, ``run_foreground``, and
``start_pid1`` (the one code path that creates a node's namespaces, also used by tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import psutil
import redis
import redis.asyncio

from g8os.boot.config import NodeConfig, RedisConfig
from g8os.system import linux

SANDBOX_ROOT = Path("/var/lib/g8os/sandbox")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
HOST = "127.0.0.1"
STOP_GRACE = 5.0       # seconds the keeper waits beyond the node's own shutdown_timeout
PING_INTERVAL = 0.2    # pause between failed attempts to reach the node's redis
TAIL_LINES = 30


# ---------------------------------------------------------------------------------------------
# Paths, names, files
# ---------------------------------------------------------------------------------------------

def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"invalid sandbox name {name!r}: use [a-z0-9][a-z0-9-]{{0,31}}")
    return name


def sandbox_dir(name: str) -> Path:
    return SANDBOX_ROOT / validate_name(name)


def node_config(name: str, directory: Path) -> NodeConfig:
    return NodeConfig(
        name=name,
        mode="sandbox",
        hostname=name,
        state_dir=str(directory / "state"),
        run_dir=str(directory / "run"),
        log_file=str(directory / "core0.log"),
        redis=RedisConfig(socket=str(directory / "run" / "redis.sock"), password=secrets.token_urlsafe(24)),
    )


def _check_settings(settings: Mapping[str, Any] | None) -> None:
    """`settings` of `up` name fields of NodeConfig (tests shorten periods with them)."""
    unknown = set(settings or {}) - {f.name for f in attrs.fields(NodeConfig)}
    if unknown:
        raise ValueError(f"settings {sorted(unknown)}: not fields of the node's configuration")


def config_source(path: str | os.PathLike[str] | None) -> str | None:
    """The absolute path of a boot configuration directory given to `up`, checked at once."""
    if not path:
        return None
    source = os.path.abspath(path)
    if not os.path.isdir(source):
        raise ValueError(f"--config {path}: not a directory")
    return source


def copy_config(source: str, directory: Path) -> str:
    """Copy the boot configuration (the ``*.toml`` files directly in `source`) into the sandbox
    directory; the node reads the copy.

    A copy, not the original: the node sees the configuration it was started with, and sees it
    at all (a directory under /tmp or /run would be hidden by the node's own mounts there).
    Only the TOML files: whatever else the directory holds is not the node's to read.
    """
    target = directory / "config"
    target.mkdir(mode=0o700, exist_ok=True)
    for entry in sorted(Path(source).iterdir()):
        if entry.suffix == ".toml" and entry.is_file():
            shutil.copyfile(entry, target / entry.name)
    return str(target)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _tails(directory: Path) -> str:
    parts = []
    for name in ("core0.log", "keeper.log"):
        text = tail(directory / name)
        if text:
            parts.append(f"--- last lines of {directory / name} ---\n{text}")
    return "\n".join(parts)


def _say(message: str) -> None:
    """Keeper's own diagnostics on fd 2 (its terminal, or keeper.log when detached)."""
    with contextlib.suppress(OSError):
        os.write(2, f"{time.strftime('%H:%M:%S')} keeper[{os.getpid()}]: {message}\n".encode())


# ---------------------------------------------------------------------------------------------
# The keeper's identity and lock
# ---------------------------------------------------------------------------------------------

def _lock_dir(directory: Path) -> int:
    """Create (or take over a stale) sandbox directory and hold an exclusive flock on it.

    The lock lives as long as the keeper: a second keeper fails here, and a directory whose lock
    is free belongs to a dead keeper. The inode check catches a directory that was removed and
    recreated between our open and our lock.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        try:
            directory.mkdir(mode=0o700)
            fresh = True
        except FileExistsError:
            fresh = False
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"sandbox {directory.name!r} is already running") from None
        try:
            same = os.stat(directory).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        if not fresh:
            _say(f"cleaning the stale sandbox directory {directory}")
            _empty(directory)
        return fd
    raise RuntimeError(f"cannot lock {directory}")


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _remove_if_stale(directory: Path) -> bool:
    """Remove a sandbox directory nobody holds the lock of; True if it is gone."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _write_keeper_pid(directory: Path) -> None:
    # The start time tells our keeper from an unrelated process that reused its pid.
    me = psutil.Process()
    _write_private(directory / "keeper.pid", json.dumps({"pid": me.pid, "create_time": me.create_time()}))


def _keeper_process(directory: Path) -> psutil.Process | None:
    """The live keeper of a sandbox directory, if any."""
    try:
        record = json.loads((directory / "keeper.pid").read_text())
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap_if_child(proc.pid)
            return None
        return proc
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def _reap_if_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _gone(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap_if_child(proc.pid)
            return True
        return not proc.is_running()
    except psutil.NoSuchProcess:
        return True


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------
# The node's PID 1
# ---------------------------------------------------------------------------------------------

def start_pid1(config_path: str | os.PathLike[str], *, plane: str | None = None) -> int:
    """Fork the node's PID 1 into new PID, mount, UTS, IPC and network namespaces; return its pid.

    The caller stays in its own namespaces, but unshare(CLONE_NEWPID) puts every later child of
    the caller into the new PID namespace: call this at most once per process, from a process that
    forks nothing else (the keeper). ``plane`` is passed to init's ``--plane`` (tests).
    """
    argv = [sys.executable, "-m", "g8os.boot.init", "--config", os.path.abspath(config_path)]
    if plane:
        argv += ["--plane", plane]
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns into the caller's code
        os.setsid()
        linux.set_pdeathsig(signal.SIGKILL)  # the node dies with its keeper, even a SIGKILLed one
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)  # the keeper's stdout carries only its JSON line
        os.execv(sys.executable, argv)
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(127)


# ---------------------------------------------------------------------------------------------
# The TCP forwarder and the readiness probe
# ---------------------------------------------------------------------------------------------

def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {HOST}:{port}: {exc}") from None
    return sock


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close, so a reply to the last command still comes back
    except (ConnectionError, OSError):
        writer.close()


class Forwarder:
    """127.0.0.1:<port> -> the node's redis unix socket, byte for byte."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            node_reader, node_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, node_writer}
        try:
            await asyncio.gather(_pump(reader, node_writer), _pump(node_reader, writer))
        finally:
            for w in (writer, node_writer):
                w.close()
                self.writers.discard(w)

    def close_all(self) -> None:
        for writer in list(self.writers):
            writer.close()


async def ping_node(config: NodeConfig, deadline: float) -> str:
    """Send `core.ping` through the node's redis until a SUCCESS result comes back; its data.

    Raises TimeoutError with the last problem seen when the (event loop clock) deadline passes.
    """
    loop = asyncio.get_running_loop()
    problem = "no answer"
    while loop.time() < deadline:
        client = redis.asyncio.Redis(unix_socket_path=config.redis.socket,
                                     password=config.redis.password or None,
                                     socket_connect_timeout=1, socket_timeout=5, decode_responses=True)
        try:
            job = str(uuid.uuid4())
            await client.rpush("core:default",
                               json.dumps({"id": job, "command": "core.ping", "arguments": {}}))
            while loop.time() < deadline:
                raw = await client.brpoplpush(f"result:{job}", f"result:{job}", 1)
                if raw is None:
                    continue
                result = json.loads(raw)
                if result.get("state") == "SUCCESS":
                    return str(result.get("data", ""))
                problem = f"core.ping answered {result.get('state')}: {result.get('data')}"
                break
        except (redis.RedisError, OSError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            await client.aclose()
        await asyncio.sleep(PING_INTERVAL)
    raise TimeoutError(problem)


# ---------------------------------------------------------------------------------------------
# The keeper
# ---------------------------------------------------------------------------------------------

class Report(Protocol):
    def ready(self, info: dict[str, Any]) -> None: ...
    def failed(self, message: str) -> None: ...


class ConsoleReport:
    """Foreground: one JSON line on stdout, human hints on stderr."""

    def ready(self, info: dict[str, Any]) -> None:
        print(json.dumps(info), flush=True)
        print(f"sandbox {info['name']!r} is up. Connect with:\n"
              f"  g8os --host {info['host']} --port {info['port']} --password {info['password']} ping\n"
              f"or through the unix socket {info['socket']}. Stop with Ctrl-C or "
              f"`core0 sandbox down --name {info['name']}`.", file=sys.stderr, flush=True)

    def failed(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class PipeReport:
    """Detached or attached keeper: one JSON line on the pipe `up()` waits on, then EOF."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def _send(self, payload: dict[str, Any]) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, (json.dumps(payload) + "\n").encode())
        os.close(self.fd)
        self.fd = None

    def ready(self, info: dict[str, Any]) -> None:
        self._send({"ok": True, "sandbox": info})

    def failed(self, message: str) -> None:
        self._send({"ok": False, "error": message})


class Keeper:
    def __init__(self, name: str, directory: Path, config: NodeConfig, listener: socket.socket,
                 pid1: int, report: Report, timeout: float) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self.listener = listener
        self.pid1 = pid1
        self.report = report
        self.timeout = timeout
        self.pid1_status: int | None = None
        self.stop = asyncio.Event()
        self.exited = asyncio.Event()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "host": HOST, "port": self.listener.getsockname()[1],
                "password": self.config.redis.password, "socket": self.config.redis.socket,
                "pid": os.getpid()}

    def _on_pid1_readable(self, pidfd: int) -> None:
        try:
            pid, status = os.waitpid(self.pid1, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid1, 0
        if pid == 0:
            return
        self.pid1_status = status
        asyncio.get_running_loop().remove_reader(pidfd)
        self.exited.set()

    def _describe_exit(self) -> str:
        status = self.pid1_status or 0
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.waitstatus_to_exitcode(status)}"

    async def _first(self, *aws: Any, timeout: float | None = None) -> set[asyncio.Task]:
        tasks = [asyncio.ensure_future(a) for a in aws]
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return done

    async def _until_ready(self) -> bool:
        loop = asyncio.get_running_loop()
        ping = asyncio.ensure_future(ping_node(self.config, loop.time() + self.timeout))
        done = await self._first(ping, self.stop.wait(), self.exited.wait())
        if ping in done and ping.exception() is None:
            _say(f"node answered core.ping: {ping.result()}")
            return True
        if ping in done:
            reason = f"the node did not answer core.ping within {self.timeout:g}s ({ping.exception()})"
        elif self.exited.is_set():
            reason = f"the node's PID 1 exited during startup ({self._describe_exit()})"
        else:
            reason = "stopped before the node was ready"
        self.report.failed(f"sandbox {self.name!r} failed to start: {reason}\n{_tails(self.directory)}")
        return False

    async def _stop_node(self) -> None:
        if self.exited.is_set():
            return
        _say(f"stopping the node (SIGTERM to PID 1, host pid {self.pid1})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid1, signal.SIGTERM)
        if await self._first(self.exited.wait(), timeout=self.config.shutdown_timeout + STOP_GRACE):
            return
        _say("the node did not stop in time: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid1, signal.SIGKILL)
        await self._first(self.exited.wait(), timeout=10)

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop.set)
        pidfd = os.pidfd_open(self.pid1)
        loop.add_reader(pidfd, self._on_pid1_readable, pidfd)
        forwarder = Forwarder(self.config.redis.socket)
        server = await asyncio.start_server(forwarder.handle, sock=self.listener)
        code = 1
        try:
            if await self._until_ready():
                _write_private(self.directory / "sandbox.json", json.dumps(self.info(), indent=2))
                self.report.ready(self.info())
                await self._first(self.stop.wait(), self.exited.wait())
            if self.exited.is_set():
                _say(f"the node's PID 1 exited on its own ({self._describe_exit()})")
            else:
                code = 0 if self.stop.is_set() else 1
            await self._stop_node()
        finally:
            server.close()
            forwarder.close_all()
            with contextlib.suppress(OSError):
                loop.remove_reader(pidfd)
            os.close(pidfd)
        _say(f"sandbox {self.name!r} stopped")
        return code


def _redirect_output(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def _kill_and_wait(pid: int) -> None:
    """Last resort when the keeper itself fails: the node must not outlive it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def run_keeper(name: str, *, port: int = 0, report: Report, timeout: float = 60.0,
               plane: str | None = None, log_to_file: bool = False, config_dir: str | None = None,
               settings: Mapping[str, Any] | None = None) -> int:
    """The keeper, in the calling process, until the sandbox stops; its exit code.

    Raises RuntimeError before anything was started (bad name, already running, port taken).
    """
    directory = sandbox_dir(name)
    lock = _lock_dir(directory)
    pid1: int | None = None
    try:
        if log_to_file:
            _redirect_output(directory / "keeper.log")
        _write_keeper_pid(directory)
        config = node_config(name, directory)
        for sub in (config.state_dir, config.run_dir):
            os.makedirs(sub, mode=0o700, exist_ok=True)
        if config_dir:
            config.config_dir = copy_config(config_dir, directory)
        for field, value in (settings or {}).items():
            setattr(config, field, value)
        config.save(directory / "config.json")
        listener = listen(port)
        pid1 = start_pid1(directory / "config.json", plane=plane)
        port = listener.getsockname()[1]
        _say(f"sandbox {name!r}: node PID 1 is host pid {pid1}, forwarding {HOST}:{port}")
        keeper = Keeper(name, directory, config, listener, pid1, report, timeout)
        code = asyncio.run(keeper.serve())
        pid1 = None if keeper.exited.is_set() else pid1
        return code
    finally:
        if pid1 is not None:
            _kill_and_wait(pid1)
        shutil.rmtree(directory, ignore_errors=True)
        os.close(lock)


# ---------------------------------------------------------------------------------------------
# Public operations
# ---------------------------------------------------------------------------------------------

def run_foreground(name: str = "default", port: int = 0, *, timeout: float = 60.0,
                   plane: str | None = None, config_dir: str | None = None) -> int:
    """`core0 sandbox`: the keeper in this process; prints the JSON line, serves until a signal."""
    validate_name(name)
    return run_keeper(name, port=port, report=ConsoleReport(), timeout=timeout, plane=plane,
                      config_dir=config_source(config_dir))


def _read_reply(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data.split(b"\n", 1)[0])


def _keeper_child(name: str, port: int, timeout: float, plane: str | None, fd: int, detach: bool,
                  config_dir: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
    """Runs in the forked keeper; never returns."""
    code = 1
    report = PipeReport(fd)
    try:
        if detach:
            os.setsid()
            if os.fork():
                os._exit(0)
        else:
            linux.set_pdeathsig(signal.SIGTERM)  # attached: the sandbox stops with its caller
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the caller's handlers mean nothing here
        code = run_keeper(name, port=port, report=report, timeout=timeout, plane=plane, log_to_file=True,
                          config_dir=config_dir, settings=settings)
    except BaseException as exc:
        report.failed(f"sandbox {name!r} failed to start: {exc}")
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(code)


def up(name: str = "default", *, port: int = 0, detach: bool = False, timeout: float = 60,
       plane: str | None = None, config_dir: str | os.PathLike[str] | None = None,
       settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Start a sandbox and return its connection info once the node answers `core.ping`.

    detach=True: the keeper is a daemon (double fork, setsid, output in <dir>/keeper.log) that
    outlives the caller. detach=False: the keeper is the caller's child and stops when the caller
    exits (PR_SET_PDEATHSIG). Either way `down(name)` stops it. ``plane`` is for tests (init's
    ``--plane``). ``config_dir``: a boot configuration (startup services, extensions: see
    docs/config.md) copied into the sandbox. ``settings``: fields of the node's NodeConfig to set
    (e.g. ``{"stats_periods": [2, 60]}``). Raises RuntimeError with the tail of the node's logs
    when it does not come up; ValueError when ``config_dir`` is not a directory or a setting is
    not a NodeConfig field.
    """
    validate_name(name)
    source = config_source(config_dir)
    _check_settings(settings)
    running = _keeper_process(sandbox_dir(name))
    if running is not None:
        raise RuntimeError(f"sandbox {name!r} is already running (keeper pid {running.pid})")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _keeper_child(name, port, timeout, plane, write_fd, detach, source, settings)
    os.close(write_fd)
    try:
        if detach:
            os.waitpid(pid, 0)  # the intermediate exits as soon as the daemon is forked
        # The keeper answers by itself at the latest after its timeout and a node shutdown.
        reply = _read_reply(read_fd, timeout + attrs.fields(NodeConfig).shutdown_timeout.default + 15)
    finally:
        os.close(read_fd)
    if reply is not None and reply.get("ok"):
        return reply["sandbox"]
    return _startup_failed(name, reply, None if detach else pid)


def _startup_failed(name: str, reply: dict[str, Any] | None, child: int | None) -> dict[str, Any]:
    directory = sandbox_dir(name)
    if reply is not None:
        message = reply.get("error", "unknown error")
    else:
        message = f"sandbox {name!r}: the keeper gave no answer\n{_tails(directory)}"
        keeper = _keeper_process(directory)
        if keeper is not None:
            keeper.terminate()
            _wait_gone(keeper, 30)
    if child is not None:  # attached keeper: reap it once it has cleaned up
        with contextlib.suppress(psutil.Error):
            psutil.Process(child).wait(30)
    raise RuntimeError(message)


def down(name: str = "default", timeout: float = 30) -> None:
    """Stop a sandbox: SIGTERM its keeper and wait until it is gone."""
    directory = sandbox_dir(name)
    keeper = _keeper_process(directory)
    if keeper is None:
        _remove_if_stale(directory)
        raise RuntimeError(f"sandbox {name!r} is not running")
    keeper.terminate()
    if _wait_gone(keeper, timeout):
        return
    keeper.kill()  # PID 1 follows through its PDEATHSIG
    _wait_gone(keeper, 10)
    _remove_if_stale(directory)
    raise RuntimeError(f"sandbox {name!r} did not stop within {timeout:g}s; its keeper was killed")


def status(name: str = "default") -> dict[str, Any]:
    """{"name", "state": absent|stale|starting|running, ...}; running adds the connection info."""
    directory = sandbox_dir(name)
    if not directory.is_dir():
        return {"name": name, "state": "absent"}
    keeper = _keeper_process(directory)
    if keeper is None:
        return {"name": name, "state": "stale", "dir": str(directory)}
    try:
        info = json.loads((directory / "sandbox.json").read_text())
    except (OSError, ValueError):
        return {"name": name, "state": "starting", "dir": str(directory), "pid": keeper.pid}
    return {**info, "state": "running", "dir": str(directory)}


def list_sandboxes() -> list[dict[str, Any]]:
    if not SANDBOX_ROOT.is_dir():
        return []
    names = sorted(p.name for p in SANDBOX_ROOT.iterdir() if p.is_dir() and NAME_RE.match(p.name))
    return [status(name) for name in names]
