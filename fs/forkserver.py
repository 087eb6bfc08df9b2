"""A warm parent for flist servers: the engine imported once, one server forked per mount.

    python -m g8os.fs.forkserver SOCKET          # what core0 runs as a service

A cold `python -m g8os.fs.mount` spends about 0.2 s starting the interpreter and importing
pyfuse3 and trio before it even opens the flist: on a node that starts containers, that is most of
the time to a container's first read (bench/flist.py). The fork server pays it once, then forks a
server per mount in about a millisecond. A forked server is exactly what `g8os.fs.mount` runs
(`serve`): one process per flist, its own FUSE session, same readiness and same clean SIGTERM.

Protocol: one unix stream connection per mount, JSON lines.

    -> {"flist": PATH, "target": PATH, "rw_dir"?, "store"?, "cache"?, "workdir"?, "quota"?,
        "timeout"?, "prefetch"?}
    <- {"pid": N}                       the server process, forked
    <- {"ready": true}                  mounted
    <- {"exit": CODE, "error"?: TEXT}   the server ended (a failed start says why)
    <- {"error": TEXT}                  a request refused (bad field); the connection closes

The connection is the mount's lease: when the client closes it or dies, the server gets SIGTERM
and unmounts. When the fork server itself is stopped (SIGTERM), it stops every server first.
Servers die with the fork server (PR_SET_PDEATHSIG) even when it is killed outright.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

import attrs

# The whole engine, imported before any fork: this is what the fork server exists to pay once.
import g8os.fs.cache
import g8os.fs.format
import g8os.fs.store
from g8os.fs import mount as fsmount
from g8os.messages.convert import structure
from g8os.messages.errors import InvalidArgument
from g8os.system.linux import set_pdeathsig

log = logging.getLogger("g8os.fs.forkserver")

MAX_REQUEST = 64 * 1024        # bytes of one request line
STOP_GRACE = 10.0              # seconds servers get to unmount when the fork server stops

_ = (g8os.fs.cache, g8os.fs.format, g8os.fs.store)


@attrs.frozen(kw_only=True)
class MountRequest:
    """One mount, with the same meaning as `python -m g8os.fs.mount`'s arguments."""

    flist: str
    target: str
    rw_dir: str | None = None
    store: str | None = None
    cache: str = fsmount.DEFAULT_CACHE_DIR
    workdir: str | None = None
    quota: int = fsmount.DEFAULT_QUOTA
    timeout: float = fsmount.DEFAULT_TIMEOUT
    prefetch: bool = True

    def __attrs_post_init__(self) -> None:
        for name in ("flist", "target", "rw_dir", "cache", "workdir"):
            value = getattr(self, name)
            if value is not None and not os.path.isabs(value):
                raise InvalidArgument(f"`{name}`: must be an absolute path", field=name)
        if self.quota < 0:
            raise InvalidArgument("`quota`: must not be negative", field="quota")
        if not self.timeout > 0:
            raise InvalidArgument("`timeout`: must be positive", field="timeout")


_FIELDS = frozenset(field.name for field in attrs.fields(MountRequest))


def _parse(line: bytes) -> MountRequest:
    body = json.loads(line)
    if isinstance(body, dict) and (unknown := sorted(set(body) - _FIELDS)):
        # A misspelt option must not be silently dropped (a mount without its rw_dir is not one)
        raise InvalidArgument(f"`{unknown[0]}`: unknown field", field=unknown[0])
    return structure(body, MountRequest)


class _Lease:
    """One client connection and the server it holds."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        self.pid: int | None = None
        self.notify: int | None = None       # read end of the server's readiness pipe
        self.notes = b""
        self.error = ""
        self.terminating = False


class ForkServer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.leases: dict[int, _Lease] = {}         # by connection fd
        self.by_pid: dict[int, _Lease] = {}
        self.stopping = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.listener.bind(path)
        os.chmod(path, 0o600)  # a mount is a root privilege
        self.listener.listen(64)
        self.listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._signalled)

    # ---- the loop -----------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Open a small flist once, end to end, before the first fork: the code every server runs
        (SQLite and its validation threads, zstd, BLAKE3, the cache) is then resident in this
        process, and each forked server shares it instead of faulting it in from disk; a first
        mount after the page cache was dropped measured 60-100 ms slower without this."""
        import tempfile

        from g8os.fs.builder import build_from_dir
        from g8os.fs.cache import ChunkCache
        from g8os.fs.format import Flist
        from g8os.fs.store import DirStore

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="g8os-forkserver-") as scratch:
            root = os.path.join(scratch, "root")
            os.makedirs(os.path.join(root, "etc"))
            with open(os.path.join(root, "etc", "small"), "wb") as small:
                small.write(b"inline\n")
            with open(os.path.join(root, "big"), "wb") as big:
                big.write(os.urandom(64 * 1024))
            store = DirStore(os.path.join(scratch, "store"))
            build_from_dir(root, os.path.join(scratch, "warm.flist"), store, routes=[])
            with Flist.open(os.path.join(scratch, "warm.flist"), os.path.join(scratch, "db")) as flist:
                cache = ChunkCache(os.path.join(scratch, "cache"), store, workers=1)
                try:
                    flist.totals()
                    for _name, inode in flist.readdir(flist.root):
                        for chunk, _size in flist.chunks(inode.ino):
                            cache.get(chunk)
                finally:
                    cache.close()
            store.close()
        # fork() copies only the calling thread: a thread left running here could hold a lock
        # (logging's, the allocator's) that every server would then inherit locked.
        others = [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]
        if others:
            raise RuntimeError(f"threads left after the warm-up: {others}")
        log.info("warmed up in %.0f ms", (time.perf_counter() - started) * 1000)

    def run(self) -> int:
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)   # the wake-up fd carries it to the loop
        log.info("forking flist servers from %s (pid %d)", self.path, os.getpid())
        print("ready", flush=True)
        while not (self.stopping and not self.by_pid):
            for key, _events in self.selector.select(timeout=1.0 if self.stopping else None):
                key.data(key.fileobj)
            if self.stopping and time.monotonic() > self.deadline:
                for pid in self.by_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return 0

    def _signalled(self, fd: int) -> None:
        signums = b""
        with contextlib.suppress(BlockingIOError):
            signums = os.read(fd, 512)
        for signum in set(signums):
            if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                self._stop()
        self._reap()

    def _stop(self) -> None:
        log.info("stopping: %d servers", len(self.by_pid))
        self.stopping = True
        self.deadline = time.monotonic() + STOP_GRACE
        self.selector.unregister(self.listener)
        self.listener.close()
        for lease in self.by_pid.values():
            self._terminate(lease)

    def _terminate(self, lease: _Lease) -> None:
        # Once only: a second SIGTERM could land after the server's handler is gone, and kill it
        # before it has unmounted.
        if lease.pid is not None and not lease.terminating:
            lease.terminating = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(lease.pid, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            lease = self.by_pid.pop(pid, None)
            if lease is None:
                continue
            self._drain_notes(lease)
            code = os.waitstatus_to_exitcode(status)
            log.info("server %d ended (%d)", pid, code)
            answer: dict[str, Any] = {"exit": code}
            if lease.error:
                answer["error"] = lease.error
            self._send(lease, answer)
            self._close(lease)

    # ---- connections ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        lease = _Lease(conn)
        self.leases[conn.fileno()] = lease
        self.selector.register(conn, selectors.EVENT_READ, self._readable)

    def _readable(self, conn: socket.socket) -> None:
        lease = self.leases[conn.fileno()]
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the lease is given up: the server unmounts, then its exit is sent
            if lease.pid is not None and lease.pid in self.by_pid:
                self._terminate(lease)
                self._unwatch(lease)
            else:
                self._close(lease)
            return
        if lease.pid is not None:
            return  # one request per connection; anything after it is ignored
        lease.buffer += data
        if b"\n" not in lease.buffer:
            if len(lease.buffer) > MAX_REQUEST:
                self._refuse(lease, f"request longer than {MAX_REQUEST} bytes")
            return
        line = lease.buffer.split(b"\n", 1)[0]
        try:
            request = _parse(line)
        except ValueError as exc:
            self._refuse(lease, getattr(exc, "message", None) or f"not a JSON object: {exc}")
            return
        except InvalidArgument as exc:
            self._refuse(lease, exc.message)
            return
        self._fork(lease, request)

    def _refuse(self, lease: _Lease, message: str) -> None:
        self._send(lease, {"error": message})
        self._close(lease)

    def _fork(self, lease: _Lease, request: MountRequest) -> None:
        notify_r, notify_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(notify_r)
            self._become_server(request, notify_w)  # never returns
        os.close(notify_w)
        os.set_blocking(notify_r, False)
        lease.pid, lease.notify = pid, notify_r
        self.by_pid[pid] = lease
        self.selector.register(notify_r, selectors.EVENT_READ, lambda fd, lease=lease: self._notified(lease))
        log.info("server %d: %s on %s", pid, request.flist, request.target)
        self._send(lease, {"pid": pid})

    def _notified(self, lease: _Lease) -> None:
        before = lease.notes
        self._drain_notes(lease)
        if b"ready\n" in lease.notes and b"ready\n" not in before:
            self._send(lease, {"ready": True})

    def _drain_notes(self, lease: _Lease) -> None:
        if lease.notify is None:
            return
        while True:
            try:
                chunk = os.read(lease.notify, 4096)
            except BlockingIOError:
                return
            if not chunk:
                self.selector.unregister(lease.notify)
                os.close(lease.notify)
                lease.notify = None
                break
            lease.notes += chunk
        for line in lease.notes.decode(errors="replace").splitlines():
            if line.startswith("error "):
                lease.error = line[6:]

    def _send(self, lease: _Lease, document: dict[str, Any]) -> None:
        if lease.conn.fileno() < 0:
            return
        try:
            lease.conn.setblocking(True)
            lease.conn.settimeout(1.0)  # a client that does not read does not stall every mount
            lease.conn.sendall(json.dumps(document).encode() + b"\n")
            lease.conn.setblocking(False)
        except OSError:
            pass

    def _unwatch(self, lease: _Lease) -> None:
        fd = lease.conn.fileno()
        if fd >= 0 and self.leases.pop(fd, None) is not None:
            self.selector.unregister(lease.conn)

    def _close(self, lease: _Lease) -> None:
        self._unwatch(lease)
        lease.conn.close()
        if lease.notify is not None and lease.pid not in self.by_pid:
            self.selector.unregister(lease.notify)
            os.close(lease.notify)
            lease.notify = None

    # ---- the forked server ------------------------------------------------------------------------

    def _become_server(self, request: MountRequest, notify_w: int) -> None:
        code = 1
        try:
            set_pdeathsig(signal.SIGTERM)
            if os.getppid() == 1:  # the fork server died before the line above
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            # Nothing of the fork server's: its listener, its leases, its loop.
            self.selector.close()
            self.listener.close()
            for other in self.leases.values():
                other.conn.close()
                if other.notify is not None:
                    os.close(other.notify)
            os.close(self._wake_r)
            os.close(self._wake_w)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)      # `serve` prints "ready": the pipe says it here
            os.close(devnull)
            errors = _LastError()
            logging.getLogger("g8os.fs").addHandler(errors)
            code = fsmount.serve(request.flist, request.target, store_url=request.store,
                                 cache_dir=request.cache, rw_dir=request.rw_dir, notify_fd=os.dup(notify_w),
                                 workdir=request.workdir, quota=request.quota, timeout=request.timeout,
                                 prefetch=request.prefetch)
            if code and errors.last:
                os.write(notify_w, f"error {errors.last}\n".encode())
        except BaseException as exc:  # a forked child must never return into the fork server's loop
            with contextlib.suppress(Exception):
                os.write(notify_w, f"error {exc}\n".encode())
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
            os._exit(code)


class _LastError(logging.Handler):
    """Keeps the last error a server logged, to tell the client why it failed to start."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage().replace("\n", " ")


# ---- the client side ---------------------------------------------------------------------------------


class MountFailed(Exception):
    """The fork server refused the request, or the server it forked failed to start."""


class Lease:
    """A mount held through a fork server; closing it unmounts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.pid = 0
        self.exit_code: int | None = None

    def _next(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise MountFailed("the fork server closed the connection")
        return json.loads(line)

    def wait_ready(self, timeout: float | None = 60.0) -> Lease:
        self.sock.settimeout(timeout)
        while True:
            answer = self._next()
            if "pid" in answer:
                self.pid = answer["pid"]
            elif answer.get("ready"):
                return self
            elif "exit" in answer:
                self.exit_code = answer["exit"]
                raise MountFailed(answer.get("error") or f"the server exited with {answer['exit']}")
            elif "error" in answer:
                raise MountFailed(answer["error"])

    def wait(self, timeout: float | None = None) -> int:
        """Until the server ends (after `release`, or when it fails): its exit code."""
        self.sock.settimeout(timeout)
        while self.exit_code is None:
            answer = self._next()
            if "exit" in answer:
                self.exit_code = answer["exit"]
        return self.exit_code

    def release(self) -> None:
        """Give the mount up: the server unmounts and exits."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.release()
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request_mount(socket_path: str, flist: str, target: str, *, wait: float | None = 60.0,
                  **options: Any) -> Lease:
    """Ask the fork server at `socket_path` to mount `flist` on `target` (options as MountRequest);
    returns the lease once the mount is ready (MountFailed if it cannot be)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(wait)
        sock.connect(socket_path)
        request = {"flist": os.path.abspath(flist), "target": os.path.abspath(target),
                   **{key: value for key, value in options.items() if value is not None}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        lease = Lease(sock)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise MountFailed(f"no fork server at {socket_path}") from None
        raise
    try:
        return lease.wait_ready(wait)
    except BaseException:
        lease.close()
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m g8os.fs.forkserver",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="unix socket to listen on")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="g8os-flist[%(process)d] %(levelname)s %(message)s")
    server = ForkServer(os.path.abspath(args.socket))
    server.warm_up()
    sys.exit(server.run())


if __name__ == "__main__":
    main()
