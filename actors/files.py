"""FilesActor: filesystem.* — the node's files by path, and through handles (open/read/write/close).

File I/O runs on worker threads, never on the actor's own thread: removing a big tree or a
recursive chmod can take long, and an actor that does not answer its parent's heartbeats for 6 s
is killed as hung. A worker's answer comes back through a wake-up pipe that the actor watches, and
the actor replies from its own thread (Thespian's send is not thread-safe).

Two kinds of workers: path commands (open, exists, list, mkdir, remove, move, chmod, chown) share
a pool; calls on a handle (read, write, close) go to one of a few single-thread lanes chosen by the
handle, so a client that pushes many writes without waiting for each result gets them applied in
the order it sent them, and a long `remove` never delays a transfer. Reads are bounded (1 MiB per
`filesystem.read`), writes by the command size limit (8 MiB), so one call on a handle holds its
lane for milliseconds.

Handles are kept here, in this process: at most `files_max_handles` (256) open at once, each closed
after `files_idle_timeout` (300 s) without use, and all lost when this actor restarts.

Paths are refused when they resolve (symlinks and `..` followed) into core0's own state: the node
config's state_dir, run_dir, runtime_dir, the redis socket's directory, the log file and the config
file. That is a safety rail against mistakes, not a security boundary: whoever can send
`filesystem.*` can also run `core.system` as root.
"""

from __future__ import annotations

import base64
import collections
import errno
import grp
import itertools
import os
import pwd
import shutil
import stat
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs

from g8os.actors.base import DEFERRED, Actor
from g8os.messages.errors import (
    AlreadyExists,
    FailedPrecondition,
    G8Error,
    Internal,
    InvalidArgument,
    NotFound,
)
from g8os.messages.filesystem import (
    FilesystemChmod,
    FilesystemChown,
    FilesystemClose,
    FilesystemExists,
    FilesystemList,
    FilesystemMkdir,
    FilesystemMove,
    FilesystemOpen,
    FilesystemRead,
    FilesystemRemove,
    FilesystemWrite,
    decode_block,
    open_flags,
)
from g8os.messages.internal import Call
from g8os.system.mountinfo import mounts_below
from g8os.system.mountinfo import under as _under

WORKERS = 4                  # concurrent path commands; the rest wait in the pool's queue
LANES = 4                    # single-thread lanes for calls on handles (one handle: one lane, in order)
MAX_HANDLES = 256            # default of config.files_max_handles
IDLE_TIMEOUT = 300.0         # default of config.files_idle_timeout, seconds
EXPIRED_MEMORY = 1024        # ids of handles closed for idleness, kept to explain a later 404
SWEEP_SLACK = 0.01           # a sweep fires this long after the deadline it was armed for


# --------------------------------------------------------------------------------------------- policy


@attrs.frozen
class Policy:
    """Which resolved paths filesystem.* refuses. Pure: no I/O, so it is tested on its own."""

    protected: tuple[str, ...] = ()

    def check(self, path: str, *, whole_tree: bool = False) -> None:
        """FailedPrecondition if `path` (already resolved) is core0's own state; with `whole_tree`
        (remove, move, recursive chmod/chown) also if it holds core0's state below it."""
        if whole_tree and path == "/":
            raise FailedPrecondition("refused: / is the whole node")
        for top in self.protected:
            if _under(path, top):
                raise FailedPrecondition(f"refused: {path} is core0's own state ({top})")
            if whole_tree and _under(top, path):
                raise FailedPrecondition(f"refused: {path} holds core0's own state ({top})")


def protected_paths(config: Any, *, topmost: bool = True) -> tuple[str, ...]:
    """core0's own state on this node, resolved: what no filesystem.* call may touch (`topmost`:
    without the paths that lie below another one of them)."""
    paths = [getattr(config, "state_dir", ""), getattr(config, "run_dir", ""),
             getattr(config, "runtime_dir", ""), getattr(config, "log_file", "")]
    socket = getattr(getattr(config, "redis", None), "socket", "")
    if socket:
        paths.append(os.path.dirname(socket))
    config_file = _init_config_file()
    if config_file:
        paths.append(config_file)
        if getattr(config, "mode", "") == "sandbox":
            # The sandbox's directory: the keeper's sandbox.json (the password) sits beside it.
            paths.append(os.path.dirname(config_file))
    resolved = {os.path.realpath(p) for p in paths if p}
    if topmost:  # a path below another protected one adds nothing to a check by name
        resolved = {p for p in resolved if not any(q != p and _under(p, q) for q in resolved)}
    return tuple(sorted(resolved))


def _init_config_file() -> str:
    """The config file PID 1 was started with (`--config FILE`, its documented argv): the node
    config does not record its own path, and it holds the redis password."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        cwd = os.readlink("/proc/1/cwd")
    except OSError:
        return ""
    for index, arg in enumerate(argv):
        value = b""
        if arg == b"--config" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(b"--config="):
            value = arg.split(b"=", 1)[1]
        if value:
            return os.path.join(cwd, os.fsdecode(value))
    return ""


def resolve(path: str) -> str:
    """Every symlink and `..` resolved, as the kernel would follow them."""
    return os.path.realpath(path)


def resolve_entry(path: str) -> str:
    """The directory entry itself: symlinks resolved in its parents, not in its last component
    (removing or moving a symlink acts on the link, never on what it points to)."""
    head, tail = os.path.split(path.rstrip("/") or "/")
    if tail in ("", ".", ".."):
        return resolve(path)
    return os.path.join(resolve(head), tail)


# --------------------------------------------------------------------------------------------- errors


_NOT_FOUND = {errno.ENOENT, errno.ENOTDIR}
_BAD_INPUT = {errno.EINVAL, errno.ENAMETOOLONG}
_REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTEMPTY, errno.EBUSY,
            errno.ETXTBSY, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ELOOP, errno.EXDEV,
            errno.EMLINK, errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP}


def os_error(exc: OSError, action: str) -> G8Error:
    """The protocol error for a failed syscall: what was done, on what, and the kernel's reason."""
    reason = (exc.strerror or str(exc)).lower()
    where = exc.filename if exc.filename is not None else ""
    message = f"{action} {where}: {reason}".replace("  ", " ") if where else f"{action}: {reason}"
    if exc.errno in _NOT_FOUND:
        return NotFound(message)
    if exc.errno == errno.EEXIST:
        return AlreadyExists(message)
    if exc.errno in _BAD_INPUT:
        return InvalidArgument(message)
    if exc.errno in _REFUSED:
        return FailedPrecondition(message)
    return Internal(message)


# --------------------------------------------------------------------------------------------- handles


@attrs.define(eq=False)
class Handle:
    id: str
    fd: int
    path: str
    mode: str
    readable: bool
    writable: bool
    idle_timeout: float
    opened: float
    last_used: float
    closed: bool = False
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def deadline(self) -> float:
        return self.last_used + self.idle_timeout


_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket", stat.S_IFCHR: "char", stat.S_IFBLK: "block"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "other")


def _tree(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """`top` and everything below it, symlinks not followed, staying on `top`'s filesystem (as
    `chmod -R` with --one-file-system would). Entries that vanish or cannot be read are skipped."""
    first = os.lstat(top)
    yield top, first
    if not stat.S_ISDIR(first.st_mode):
        return
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != first.st_dev:
                    continue  # another filesystem mounted here
                yield entry.path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)


def _user_id(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise NotFound(f"no user {name!r} on the node")


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise NotFound(f"no group {name!r} on the node")


# --------------------------------------------------------------------------------------------- actor


class FilesActor(Actor):
    kind = "files"

    def on_start(self) -> bool:
        # `perm` and the mkdir mode mean what they say, not "minus core0's umask".
        os.umask(0)
        self.policy = Policy(protected_paths(self.config))
        # The same files and directories by identity: a bind mount of one elsewhere (or a hard
        # link to a file) has another path but the same device and inode.
        self.protected_ids: dict[tuple[int, int], str] = {}
        for top in protected_paths(self.config, topmost=False):
            try:
                st = os.stat(top)
            except OSError:
                continue
            self.protected_ids[(st.st_dev, st.st_ino)] = top
        self.max_handles = int(getattr(self.config, "files_max_handles", MAX_HANDLES))
        self.idle_timeout = float(getattr(self.config, "files_idle_timeout", IDLE_TIMEOUT))
        self.handles: dict[str, Handle] = {}
        self.expired: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._table = threading.Lock()
        self._opening = 0            # opens in progress: they count against max_handles
        self._done: collections.deque[tuple[Call, Any, Future[Any]]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self._wake_r, self._on_wake)
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="files")
        self.lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"files-fd{n}") for n in range(LANES)]
        self._sweep_token = itertools.count(1)
        self._sweep_armed: tuple[int, float] | None = None
        self._caller: Any = None
        self.stats: collections.Counter[str] = collections.Counter()
        return True

    def on_stop(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is None:
            return
        for executor in (pool, *self.lanes):
            executor.shutdown(wait=False, cancel_futures=True)
        with self._table:
            handles, self.handles = list(self.handles.values()), {}
        for handle in handles:
            self._close_fd(handle)

    def node_info(self) -> dict[str, Any]:
        with self._table:
            counters = dict(self.stats)
            handles = len(self.handles)
        return {"handles": handles, "max_handles": self.max_handles, "idle_timeout": self.idle_timeout,
                "workers": WORKERS, "lanes": LANES, "protected": list(self.policy.protected), **counters}

    # ---- from a handler to a worker and back ---------------------------------------------------

    def receiveMsg_Call(self, msg: Call, sender: Any) -> None:
        self._caller = msg.reply_to or sender  # where a deferred reply goes
        super().receiveMsg_Call(msg, sender)

    def _work(self, call: Call, fn: Callable[..., Any], request: Any, *, handle: str | None = None) -> Any:
        # A handle's calls all go to the same single-thread lane: run in the order they arrived.
        executor = self.lanes[zlib.crc32(handle.encode()) % LANES] if handle is not None else self.pool
        future = executor.submit(fn, request)
        caller = self._caller
        future.add_done_callback(lambda done: self._finished(call, caller, done))
        return DEFERRED

    def _finished(self, call: Call, caller: Any, future: Future[Any]) -> None:
        """On a worker thread: hand the outcome to the actor's thread."""
        self._done.append((call, caller, future))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the actor will drain the deque

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._done:
            call, caller, future = self._done.popleft()
            if future.cancelled():
                continue
            try:
                value = future.result()
            except G8Error as exc:
                self.reply(call, error=exc, sender=caller)
            except OSError as exc:
                self.reply(call, error=os_error(exc, call.command.command.split(".")[-1]), sender=caller)
            except Exception as exc:
                error = Internal(str(exc) or repr(exc), critical=traceback.format_exc()[-4000:])
                self.reply(call, error=error, sender=caller)
            else:
                self.reply(call, value, sender=caller)
        self._arm_sweep()

    # ---- idle handles --------------------------------------------------------------------------

    def _arm_sweep(self) -> None:
        """One timer, for the earliest idle deadline (timers cannot be cancelled: a newer token
        makes an older timer a no-op)."""
        with self._table:
            deadline = min((h.deadline for h in self.handles.values()), default=None)
        if deadline is None:
            return
        if self._sweep_armed is not None and self._sweep_armed[1] <= deadline:
            return
        token = next(self._sweep_token)
        self._sweep_armed = (token, deadline)
        self.after(max(0.0, deadline - time.monotonic()) + SWEEP_SLACK, "_sweep", token)

    def _sweep(self, token: int) -> None:
        if self._sweep_armed is None or self._sweep_armed[0] != token:
            return
        self._sweep_armed = None
        now = time.monotonic()
        closed = []
        with self._table:
            for handle in list(self.handles.values()):
                # A handle a worker is using is not idle; its next use moves its deadline.
                if handle.deadline <= now and handle.lock.acquire(blocking=False):
                    try:
                        del self.handles[handle.id]
                        self._close_fd(handle)
                    finally:
                        handle.lock.release()
                    closed.append(handle)
        for handle in closed:
            self._remember(handle.id, f"handle {handle.id} ({handle.path}) was closed after "
                                      f"{handle.idle_timeout:g} s without use")
            self._count("idle_closed")
            self.log(f"closed handle {handle.id} on {handle.path}: idle for {handle.idle_timeout:g} s")
        self._arm_sweep()

    def _remember(self, handle_id: str, why: str) -> None:
        with self._table:
            self.expired[handle_id] = why
            while len(self.expired) > EXPIRED_MEMORY:
                self.expired.popitem(last=False)

    def _count(self, what: str, n: int = 1) -> None:
        with self._table:  # workers count too: Counter's += is not atomic
            self.stats[what] += n

    @staticmethod
    def _close_fd(handle: Handle) -> None:
        if not handle.closed:
            handle.closed = True
            try:
                os.close(handle.fd)
            except OSError:
                pass

    # ---- handles: worker side ------------------------------------------------------------------

    def _check(self, path: str, *, whole_tree: bool = False) -> None:
        """Refuse core0's own state: by path (Policy), then by the identity of the deepest existing
        directory on the way and each of its parents."""
        self.policy.check(path, whole_tree=whole_tree)
        current = path
        while True:
            try:
                st = os.lstat(current)  # the last component may be a symlink (remove, move): not followed
            except OSError:
                if current == "/":
                    return
                current = os.path.dirname(current)
                continue
            top = self.protected_ids.get((st.st_dev, st.st_ino))
            if top is not None:
                raise FailedPrecondition(f"refused: {path} is core0's own state ({top}, through {current})")
            if current == "/":
                return
            current = os.path.dirname(current)

    def _use(self, handle_id: str) -> Handle:
        """The open handle, locked for the caller (who must release it)."""
        with self._table:
            handle = self.handles.get(handle_id)
            why = self.expired.get(handle_id)
        if handle is not None:
            handle.lock.acquire()
            if not handle.closed:
                handle.last_used = time.monotonic()
                return handle
            handle.lock.release()
            with self._table:
                why = self.expired.get(handle_id)
        raise NotFound(why or f"no open handle {handle_id!r} (closed, or never opened by this node's "
                              f"files actor; handles do not survive its restart)")

    def _open(self, request: FilesystemOpen) -> str:
        flags, readable, writable = open_flags(request.mode)
        path = resolve(request.file)
        self._check(path)
        with self._table:
            if len(self.handles) + self._opening >= self.max_handles:
                raise FailedPrecondition(f"too many open handles ({self.max_handles}): close some "
                                         f"(idle ones close after {self.idle_timeout:g} s)")
            self._opening += 1
        try:
            # O_NOFOLLOW: the path is resolved already, a symlink there now was swapped in since.
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
            fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK,
                         request.perm)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise FailedPrecondition(f"{request.file} is a {_kind(st.st_mode)}, not a regular file: "
                                             f"only regular files are opened (reading others could "
                                             f"block forever)")
                self._check(os.readlink(f"/proc/self/fd/{fd}"))
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            now = time.monotonic()
            handle = Handle(str(uuid.uuid4()), fd, path, request.mode, readable, writable,
                            request.idle_timeout or self.idle_timeout, now, now)
            with self._table:
                self.handles[handle.id] = handle
            self._count("opened")
            return handle.id
        finally:
            with self._table:
                self._opening -= 1

    def _read(self, request: FilesystemRead) -> str:
        handle = self._use(request.fd)
        try:
            if not handle.readable:
                raise FailedPrecondition(f"handle {handle.id} was opened with mode {handle.mode!r}: "
                                         f"not for reading")
            data = os.read(handle.fd, request.size)
            handle.last_used = time.monotonic()
        finally:
            handle.lock.release()
        self._count("bytes_read", len(data))
        return base64.b64encode(data).decode("ascii")

    def _write(self, request: FilesystemWrite) -> None:
        data = memoryview(decode_block(request.block))
        written = len(data)
        handle = self._use(request.fd)
        try:
            if not handle.writable:
                raise FailedPrecondition(f"handle {handle.id} was opened with mode {handle.mode!r}: "
                                         f"not for writing")
            while data:
                data = data[os.write(handle.fd, data):]
            handle.last_used = time.monotonic()
        finally:
            handle.lock.release()
        self._count("bytes_written", written)
        return None

    def _close(self, request: FilesystemClose) -> None:
        handle = self._use(request.fd)
        try:
            with self._table:
                self.handles.pop(handle.id, None)
            self._close_fd(handle)
        finally:
            handle.lock.release()
        return None

    # ---- paths: worker side --------------------------------------------------------------------

    def _exists(self, request: FilesystemExists) -> bool:
        path = resolve(request.path)
        self._check(path)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return False
            raise os_error(exc, "exists") from None
        return True

    def _list(self, request: FilesystemList) -> list[dict[str, Any]]:
        path = resolve(request.path)
        self._check(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise os_error(exc, "list") from None
        if not stat.S_ISDIR(st.st_mode):
            raise FailedPrecondition(f"list {request.path}: not a directory (a {_kind(st.st_mode)})")
        entries = []
        with os.scandir(path) as listing:
            for entry in listing:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while we listed
                entries.append({"name": entry.name, "size": info.st_size, "mode": info.st_mode & 0o777,
                                "is_dir": stat.S_ISDIR(info.st_mode), "type": _kind(info.st_mode),
                                "mtime": int(info.st_mtime)})
        entries.sort(key=lambda e: e["name"])
        return entries

    def _mkdir(self, request: FilesystemMkdir) -> None:
        path = resolve(request.path)
        self._check(path)
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        except FileExistsError:
            raise AlreadyExists(f"mkdir {request.path}: exists and is not a directory") from None
        except OSError as exc:
            raise os_error(exc, "mkdir") from None
        return None

    def _check_tree(self, path: str, original: str, action: str) -> None:
        self._check(path, whole_tree=True)
        mounted = mounts_below(path)
        if mounted:
            raise FailedPrecondition(f"refused to {action} {original}: a filesystem is mounted at "
                                     f"{mounted[0]}" + (f" (and {len(mounted) - 1} more)" if len(mounted) > 1
                                                        else "") + "; unmount it first")

    def _remove(self, request: FilesystemRemove) -> None:
        path = resolve_entry(request.path)
        self._check_tree(path, request.path, "remove")
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as exc:
            raise os_error(exc, "remove") from None
        return None

    def _move(self, request: FilesystemMove) -> None:
        source, target = resolve_entry(request.path), resolve_entry(request.destination)
        self._check_tree(source, request.path, "move")
        self._check(target, whole_tree=True)
        try:
            os.lstat(source)
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise os_error(exc, "move") from None
            self._move_across(source, target, request.destination)
        return None

    def _move_across(self, source: str, target: str, shown: str) -> None:
        """rename(2) across filesystems: copy (metadata and symlinks kept), then remove the source.
        Like rename, a file replaces a file; unlike it, nothing replaces a directory."""
        st = os.lstat(source)
        if os.path.lexists(target) and (stat.S_ISDIR(st.st_mode) or
                                        stat.S_ISDIR(os.lstat(target).st_mode)):
            raise AlreadyExists(f"move: {shown} exists (across filesystems a directory is not replaced)")
        if stat.S_ISDIR(st.st_mode):
            try:
                shutil.copytree(source, target, symlinks=True)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            shutil.rmtree(source)
            return
        partial = os.path.join(os.path.dirname(target),
                               f".{os.path.basename(target)}.g8os-move-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copy2(source, partial, follow_symlinks=False)
            os.replace(partial, target)
        except BaseException:
            if os.path.lexists(partial):
                os.unlink(partial)
            raise
        os.unlink(source)

    def _chmod(self, request: FilesystemChmod) -> None:
        path = resolve(request.path)
        if not request.recursive:
            self._check(path)
            try:
                os.chmod(path, request.mode)
            except OSError as exc:
                raise os_error(exc, "chmod") from None
            return None
        self._check_tree(path, request.path, "chmod")
        # As the original: entries that cannot be changed are skipped, only the top must exist.
        # Symlinks are skipped (chmod would change what they point to, maybe outside the tree).
        try:
            for entry, st in _tree(path):
                if not stat.S_ISLNK(st.st_mode):
                    try:
                        os.chmod(entry, request.mode)
                    except OSError:
                        if entry == path:
                            raise
        except OSError as exc:
            raise os_error(exc, "chmod") from None
        return None

    def _chown(self, request: FilesystemChown) -> None:
        uid, gid = _user_id(request.user), _group_id(request.group)
        path = resolve(request.path)
        if not request.recursive:
            self._check(path)
            try:
                os.chown(path, uid, gid)
            except OSError as exc:
                raise os_error(exc, "chown") from None
            return None
        self._check_tree(path, request.path, "chown")
        try:
            for entry, _ in _tree(path):
                try:
                    os.chown(entry, uid, gid, follow_symlinks=False)  # a link's own owner
                except OSError:
                    if entry == path:
                        raise
        except OSError as exc:
            raise os_error(exc, "chown") from None
        return None

    # ---- filesystem.* --------------------------------------------------------------------------

    def handle_filesystem_open(self, request: FilesystemOpen, call: Call) -> Any:
        return self._work(call, self._open, request)

    def handle_filesystem_read(self, request: FilesystemRead, call: Call) -> Any:
        return self._work(call, self._read, request, handle=request.fd)

    def handle_filesystem_write(self, request: FilesystemWrite, call: Call) -> Any:
        return self._work(call, self._write, request, handle=request.fd)

    def handle_filesystem_close(self, request: FilesystemClose, call: Call) -> Any:
        return self._work(call, self._close, request, handle=request.fd)

    def handle_filesystem_exists(self, request: FilesystemExists, call: Call) -> Any:
        return self._work(call, self._exists, request)

    def handle_filesystem_list(self, request: FilesystemList, call: Call) -> Any:
        return self._work(call, self._list, request)

    def handle_filesystem_mkdir(self, request: FilesystemMkdir, call: Call) -> Any:
        return self._work(call, self._mkdir, request)

    def handle_filesystem_remove(self, request: FilesystemRemove, call: Call) -> Any:
        return self._work(call, self._remove, request)

    def handle_filesystem_move(self, request: FilesystemMove, call: Call) -> Any:
        return self._work(call, self._move, request)

    def handle_filesystem_chmod(self, request: FilesystemChmod, call: Call) -> Any:
        return self._work(call, self._chmod, request)

    def handle_filesystem_chown(self, request: FilesystemChown, call: Call) -> Any:
        return self._work(call, self._chown, request)
