"""The flist mount: a read-only pyfuse3 filesystem over an `Flist` and a `ChunkCache`, with a
kernel overlayfs on top whose upper dir takes the container's writes.

    python -m g8os.fs.mount FLIST TARGET [--rw-dir DIR] [--store URL] [--cache DIR] [--notify-fd N]

One server process per flist (core0 supervises it). Without --rw-dir the read-only filesystem is
mounted on TARGET itself. With --rw-dir it is mounted on DIR/lower and an overlay goes on TARGET
(lowerdir=DIR/lower, upperdir=DIR/upper, workdir=DIR/work, metacopy=on when the kernel has it).
"ready" is written to the notify fd (and printed) once everything is mounted; SIGTERM or SIGINT
unmounts the overlays, then the FUSE mount, and exits 0.

Several containers share one server (and its page cache): every further overlay is simply another
overlay mount with the same lowerdir, from any process that sees the lower mount:

    mount_overlay(lower="/run/flists/X/lower", target="/containers/2/root", rw_dir="/containers/2/rw")

(or `FlistServer.add_overlay` inside the server process). Unmount those before stopping the
server: once it exits their reads fail with ENOTCONN. The server lazily unmounts, at shutdown,
the overlays still stacked on its lower in its mount namespace, since they could only fail.

Why it is built this way (measurements in /work/shared/research/flist.md and baselines.md §4):
- The image never changes under a mount, so the kernel keeps entries, attributes (300 s TTLs,
  negative lookups included) and pages (keep_cache) and barely calls us: pyfuse3 costs about
  60 µs per request on one thread.
- Inode numbers are the flist's own, so they are stable across server restarts.
- Chunk fetches (I/O, zstd, BLAKE3) run in worker threads: the trio loop that answers the kernel
  never blocks, and a dead store costs the reads that need it EIO after the cache's timeout, never a
  hang and never unverified bytes.
- Sequential readers get the next chunks fetched in the background, and the bdi read-ahead is
  raised to 1 MiB so the kernel asks in whole chunks (2.5x measured).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import signal
import stat
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from g8os.fs import chunks as chunkmod
from g8os.fs.chunks import CHUNK_SIZE, ChunkError, StoreUnavailable
from g8os.system.mountinfo import mounts

log = logging.getLogger("g8os.fs.mount")

LISTINGS_KEPT = 4096     # directory listings kept ready (a few MB for typical roots)
TTL = 300.0                      # seconds the kernel may trust entries and attributes (they never change)
DEFAULT_CACHE_DIR = "/var/cache/g8os/chunks"
DEFAULT_QUOTA = 10 << 30         # bytes of verified chunks kept on disk
DEFAULT_TIMEOUT = 30.0           # seconds a chunk fetch may take before its read fails with EIO
FETCH_GRACE = 5.0                # beyond the cache's own timeout, before we abandon its thread
MEMORY_BYTES = 32 << 20          # plain chunks kept in memory: a chunk is read as 1..8 requests
READAHEAD_MAX = 8                # chunks fetched ahead of a long sequential reader (window 1, 2, 4, 8)
MAX_BACKGROUND = 8               # read-ahead fetches in flight at once
CACHE_WORKERS = 8                # the cache's fetch threads (each fetches up to 16 ids per round trip)
FETCH_THREADS = 16               # worker threads for chunk fetches (blocking I/O, zstd, BLAKE3)
READ_AHEAD_KB = 1024             # bdi read-ahead: lets the kernel send 1 MiB reads
BLOCK = 512                      # st_blocks unit
FSNAME = "g8os-flist"
# xattrs overlayfs interprets on a lower layer: an flist must not steer the overlay mounted on it
# (redirects, metacopy origins, opaque dirs), so they are not shown.
HIDDEN_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.")

P = ParamSpec("P")
R = TypeVar("R")


def _guarded(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Any exception but FUSEError would tear pyfuse3's loop (and every container's root) down:
    report it and answer EIO instead."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ChunkError as exc:
            log.warning("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


async def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    """Every write: the flist is immutable (the kernel already refuses most on a ro mount)."""
    raise pyfuse3.FUSEError(errno.EROFS)


@dataclass
class _Handle:
    """An open regular file: where its bytes are, and where a sequential reader goes next."""

    ino: int
    size: int
    inline: bytes | None
    ids: list[str | None] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    last_chunk: int = -1  # last chunk a read touched: reads at it or the next one are sequential
    streak: int = 0       # chunk boundaries crossed sequentially in a row: grows the read-ahead window


@dataclass
class _Flight:
    """One chunk fetch that every concurrent reader of the chunk waits on."""

    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None


class FlistFS(pyfuse3.Operations):
    """The read-only filesystem: metadata from the flist's database (on the trio thread, it is
    fast and local), data from the chunk cache (in worker threads)."""

    def __init__(self, flist: Any, cache: Any, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.flist = flist
        self.cache = cache
        self.timeout = timeout
        self.fetch_deadline = timeout + FETCH_GRACE
        self.nursery: trio.Nursery | None = None  # set by the server: read-ahead runs there
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, list[tuple[bytes, Any]]] = {}
        self._listings: dict[int, list[tuple[bytes, Any]]] = {}   # directory inode → replies
        self._next_fh = 1
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._flights: dict[str, _Flight] = {}
        self._background = 0
        self._limiter = trio.CapacityLimiter(FETCH_THREADS)
        self._statfs = self._make_statfs()
        # What this server did, logged when it stops: requests, bytes, chunk fetches (misses of the
        # in-memory chunks), read-ahead fetches started, reads answered EIO.
        self.counters = {"reads": 0, "read_bytes": 0, "fetches": 0, "readahead": 0, "eio": 0}

    # -- attributes -------------------------------------------------------------------------

    def _entry(self, inode: Any) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode.ino
        attr.generation = 0
        attr.entry_timeout = TTL
        attr.attr_timeout = TTL
        attr.st_mode = inode.mode
        attr.st_nlink = inode.nlink
        attr.st_uid = inode.uid
        attr.st_gid = inode.gid
        attr.st_rdev = inode.rdev
        attr.st_size = inode.size
        attr.st_blksize = CHUNK_SIZE  # tells cp & co. to read in whole chunks
        attr.st_blocks = (inode.size + BLOCK - 1) // BLOCK
        attr.st_atime_ns = inode.mtime_ns
        attr.st_mtime_ns = inode.mtime_ns
        attr.st_ctime_ns = inode.ctime_ns
        return attr

    def _inode(self, ino: int) -> Any:
        try:
            inode = self.flist.getattr(ino)
        except (KeyError, LookupError):
            inode = None
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

    def _make_statfs(self) -> pyfuse3.StatvfsData:
        """Sizes from the flist's stats: overlayfs refuses a lower without statfs, and df should
        show the image's size."""
        files, size = self.flist.totals()
        data = pyfuse3.StatvfsData()
        data.f_bsize = CHUNK_SIZE
        data.f_frsize = 4096
        data.f_blocks = (size + data.f_frsize - 1) // data.f_frsize
        data.f_bfree = data.f_bavail = 0
        data.f_files = files
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    # -- metadata handlers ------------------------------------------------------------------

    @_guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        inode = self.flist.lookup(parent_inode, name)
        if inode is None:
            # A negative entry the kernel keeps for TTL: loaders and PATH searches probe many
            # names that are not there (raising ENOENT would not be cached).
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = 0
            attr.entry_timeout = TTL
            return attr
        return self._entry(inode)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Nothing to free: inodes live in the database, not in memory."""

    @_guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(self._inode(inode))

    @_guarded
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        node = self._inode(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return self.flist.readlink(inode)

    @_guarded
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        node = self._inode(inode)
        if not stat.S_ISDIR(node.mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._fh()
        # The listing is taken once per open: offsets stay meaningful across readdir calls. The
        # flist never changes, so listings (with their entries' attributes, ready to reply) are
        # kept for the next opendir: pyfuse3 cannot let the kernel cache directory contents.
        listing = self._listings.get(inode)
        if listing is None:
            listing = [(name, self._entry(node)) for name, node in self.flist.readdir(inode)]
            self._listings[inode] = listing
            while len(self._listings) > LISTINGS_KEPT:
                self._listings.pop(next(iter(self._listings)))
        self._dirs[fh] = listing
        return fh

    @_guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dirs.get(fh)
        if entries is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for index in range(start_id, len(entries)):
            name, attributes = entries[index]
            # Always readdirplus: the kernel fills its dentry and attribute caches from this,
            # so a following stat of every entry costs no lookup.
            if not pyfuse3.readdir_reply(token, name, attributes, index + 1):
                break

    @_guarded
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if name.startswith(HIDDEN_XATTR_PREFIXES):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        value = self.flist.xattrs(inode).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_guarded
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [name for name in self.flist.xattrs(inode) if not name.startswith(HIDDEN_XATTR_PREFIXES)]

    @_guarded
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        return self._statfs

    async def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        """default_permissions: the kernel checks modes itself and does not ask."""
        return True

    # -- data handlers ----------------------------------------------------------------------

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @_guarded
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self._inode(inode)
        if stat.S_ISDIR(node.mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        handle = _Handle(ino=inode, size=node.size, inline=self.flist.inline(inode))
        if handle.inline is None and node.size:
            start = 0
            for chunk, size in self.flist.chunks(inode):
                handle.ids.append(chunk or None)
                handle.sizes.append(size)
                handle.starts.append(start)
                start += size
        fh = self._fh()
        self._handles[fh] = handle
        # keep_cache: pages read once stay valid across opens (the file never changes), shared by
        # every container on this flist.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    @_guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        end = min(off + size, handle.size)
        if off >= end:
            return b""
        self.counters["reads"] += 1
        if handle.inline is not None:
            data = handle.inline[off:end]
            if len(data) != end - off:
                log.error("inode %d: inline data shorter than its size", handle.ino)
                raise pyfuse3.FUSEError(errno.EIO)
            self.counters["read_bytes"] += len(data)
            return data
        first = bisect.bisect_right(handle.starts, off) - 1
        last = bisect.bisect_right(handle.starts, end - 1) - 1
        if first < 0 or end > (handle.starts[-1] + handle.sizes[-1] if handle.starts else 0):
            log.error("inode %d: chunks do not cover bytes %d..%d", handle.ino, off, end)
            raise pyfuse3.FUSEError(errno.EIO)
        if first in (handle.last_chunk, handle.last_chunk + 1):
            if last > handle.last_chunk:  # entered a new chunk: look further ahead each time
                handle.streak += 1
                self._read_ahead(handle, last + 1, min(READAHEAD_MAX, 1 << min(handle.streak - 1, 3)))
        else:
            handle.streak = 0
        handle.last_chunk = last
        try:
            if first == last:
                plains = [await self._chunk_of(handle, first)]
            else:
                plains = await self._chunks_of(handle, range(first, last + 1))
        except ChunkError as exc:
            self.counters["eio"] += 1
            log.warning("inode %d, bytes %d..%d: %s", handle.ino, off, end, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        parts = []
        for index, plain in zip(range(first, last + 1), plains, strict=True):
            start = handle.starts[index]
            parts.append(plain[max(off, start) - start:min(end, start + len(plain)) - start])
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.counters["read_bytes"] += len(data)
        return data

    async def _chunks_of(self, handle: _Handle, indexes: range) -> list[bytes]:
        """Several chunks at once (a read across a boundary): fetched concurrently."""
        results: dict[int, bytes] = {}
        errors: list[ChunkError] = []

        async def one(index: int) -> None:
            try:
                results[index] = await self._chunk_of(handle, index)
            except ChunkError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for index in indexes:
                nursery.start_soon(one, index)
        if errors:
            raise errors[0]
        return [results[index] for index in indexes]

    async def _chunk_of(self, handle: _Handle, index: int) -> bytes:
        chunk, size = handle.ids[index], handle.sizes[index]
        if chunk is None:  # a hole: nothing stored
            return bytes(size)
        plain = await self.chunk(chunk)
        if len(plain) != size:
            raise chunkmod.ChunkCorrupt(f"chunk {chunk}: {len(plain)} bytes where the flist says {size}")
        return plain

    async def chunk(self, chunk: str) -> bytes:
        """A chunk's verified plain bytes: from memory, or joined to the fetch already running,
        or fetched through the cache in a worker thread (which raises within its timeout; past
        that plus a grace the thread is abandoned, so no read outlives the deadline)."""
        plain = self._memory.get(chunk)
        if plain is not None:
            self._memory.move_to_end(chunk)
            return plain
        flight = self._flights.get(chunk)
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise type(flight.error)(str(flight.error)) if isinstance(flight.error, ChunkError) \
                    else StoreUnavailable(f"chunk {chunk}: {flight.error!r}")
            assert flight.data is not None
            return flight.data
        flight = self._flights[chunk] = _Flight()
        try:
            self.counters["fetches"] += 1
            try:
                with trio.fail_after(self.fetch_deadline):
                    plain = await self._fetch(chunk)
            except trio.TooSlowError:
                raise StoreUnavailable(f"chunk {chunk}: no answer in {self.fetch_deadline:.0f}s") from None
            self._remember(chunk, plain)
            flight.data = plain
            return plain
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[chunk]
            flight.done.set()

    async def _fetch(self, chunk: str) -> bytes:
        """cache.get in a worker thread, tried a second time when it failed as unavailable in
        less than half the timeout: the cache had us join a fetch started earlier, which was
        already failing (the store was down then and may be back now). A store that is really
        down fails the second try too; the caller's deadline bounds both."""
        started = trio.current_time()
        for attempt in (1, 2):
            try:
                return await trio.to_thread.run_sync(self.cache.get, chunk, limiter=self._limiter,
                                                     abandon_on_cancel=True)
            except StoreUnavailable:
                if attempt == 2 or trio.current_time() - started >= self.timeout / 2:
                    raise
                log.debug("chunk %s: retrying once", chunk)
        raise AssertionError("unreachable")

    def _remember(self, chunk: str, plain: bytes) -> None:
        self._memory[chunk] = plain
        self._memory_bytes += len(plain)
        while self._memory_bytes > MEMORY_BYTES and len(self._memory) > 1:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)

    def _read_ahead(self, handle: _Handle, start: int, window: int) -> None:
        """Fetch the chunks after a sequential reader's position in the background, so the
        next read finds them in memory (or joins their fetch) instead of stalling."""
        if self.nursery is None:
            return
        for index in range(start, min(start + window, len(handle.ids))):
            chunk = handle.ids[index]
            if chunk is None or chunk in self._memory or chunk in self._flights:
                continue
            if self._background >= MAX_BACKGROUND:
                return
            self._background += 1
            self.counters["readahead"] += 1
            self.nursery.start_soon(self._fetch_quietly, chunk)

    async def _fetch_quietly(self, chunk: str) -> None:
        try:
            await self.chunk(chunk)
        except ChunkError as exc:
            log.debug("read-ahead of %s: %s", chunk, exc)
        except Exception:
            log.exception("read-ahead of %s", chunk)
        finally:
            self._background -= 1

    @_guarded
    async def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def flush(self, fh: int) -> None:
        """Called on every close; nothing is ever dirty."""

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    # -- writes: refused --------------------------------------------------------------------

    setattr = _refuse
    mknod = _refuse
    mkdir = _refuse
    unlink = _refuse
    rmdir = _refuse
    symlink = _refuse
    rename = _refuse
    link = _refuse
    write = _refuse
    create = _refuse
    setxattr = _refuse
    removexattr = _refuse


# -- mounts -----------------------------------------------------------------------------------

MS_NOATIME = 1024
MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2) through libc (ctypes releases the GIL: the FUSE loop keeps answering the
    lookups an overlay mount makes on its lower)."""
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode()) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {fstype} on {target}: {os.strerror(code)}")


def umount(target: str | os.PathLike[str], *, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"umount {target}: {os.strerror(code)}")


def _overlay_escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlays_over(lower: str | os.PathLike[str]) -> list[str]:
    """Mount points of the overlays stacked on `lower` (as one of their lowerdirs)."""
    lower = os.path.abspath(lower)
    found = []
    for info in mounts():
        if info.fstype != "overlay":
            continue
        for option in _split_options(info.super_options):
            key, _, value = option.partition("=")
            if key in ("lowerdir", "lowerdir+") and lower in _split_lowers(value):
                found.append(info.mountpoint)
                break
    return found


def _split_options(options: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in options:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _split_lowers(value: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part]


def metacopy_supported() -> bool | None:
    """True/False when the loaded overlay module says whether it knows metacopy, None when the
    module is not loaded yet (then the mount tries and falls back)."""
    if os.path.exists("/sys/module/overlay/parameters/metacopy"):
        return True
    if os.path.isdir("/sys/module/overlay"):
        return False
    return None


@dataclass(frozen=True)
class Overlay:
    target: str
    lower: str
    rw_dir: str
    metacopy: bool


def mount_overlay(lower: str | os.PathLike[str], target: str | os.PathLike[str],
                  rw_dir: str | os.PathLike[str], *, metacopy: bool = True) -> Overlay:
    """Mount an overlay on `target`: lowerdir=`lower` (a mounted flist), upperdir=`rw_dir`/upper,
    workdir=`rw_dir`/work. Any number of overlays may share one lower: this is how a second
    container reuses a running flist server. Must not run on the thread serving `lower`.

    A fresh upper dir takes the flist root's mode, owner and times: overlayfs shows the upper's
    for the merged root, which must look like the image's `/`."""
    lower, target, rw = os.path.abspath(lower), os.path.abspath(target), Path(rw_dir).absolute()
    upper, work = rw / "upper", rw / "work"
    os.makedirs(target, exist_ok=True)
    rw.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    if not upper.exists():
        root = os.stat(lower)
        upper.mkdir()
        os.chown(upper, root.st_uid, root.st_gid)
        os.chmod(upper, stat.S_IMODE(root.st_mode))
        os.utime(upper, ns=(root.st_atime_ns, root.st_mtime_ns))
    data = f"lowerdir={_overlay_escape(lower)},upperdir={_overlay_escape(str(upper))}," \
           f"workdir={_overlay_escape(str(work))}"
    supported = metacopy_supported()
    if metacopy and supported is False:
        log.warning("overlay: this kernel has no metacopy; copy-ups of metadata copy whole files")
        metacopy = False
    if metacopy:
        try:
            _mount("overlay", target, "overlay", MS_NOATIME, data + ",metacopy=on")
            return Overlay(target, lower, str(rw), True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            log.warning("overlay on %s: metacopy=on refused (%s); mounting without it", target, exc)
    _mount("overlay", target, "overlay", MS_NOATIME, data)
    return Overlay(target, lower, str(rw), False)


def unmount_overlay(target: str | os.PathLike[str]) -> None:
    """Unmount cleanly when nothing uses it, else detach it (the container is going anyway)."""
    try:
        umount(target)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            log.warning("overlay %s busy: detaching it", target)
            umount(target, lazy=True)
        elif exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def set_read_ahead(mount_point: str, kb: int = READ_AHEAD_KB) -> bool:
    """Raise the FUSE mount's bdi read-ahead so the kernel reads in 1 MiB requests instead of
    128 KiB (measured 2.5x). Must run after FUSE_INIT was answered: INIT clamps it. Best effort."""
    for info in mounts():
        if info.mountpoint == mount_point and info.fstype.startswith("fuse"):
            path = Path("/sys/class/bdi") / info.device / "read_ahead_kb"
            try:
                path.write_text(f"{kb}\n")
                return True
            except OSError as exc:
                log.info("read-ahead not raised (%s: %s)", path, exc)
                return False
    log.info("read-ahead not raised: %s not found in mountinfo", mount_point)
    return False


def _clear_stale(mount_point: str) -> None:
    """A server that died leaves its mount behind ('transport endpoint is not connected') and the
    overlays on it: detach them so its successor can mount again. A mount that still answers
    belongs to a live server and is left alone (OSError EBUSY)."""
    for info in mounts():
        if info.mountpoint != mount_point or not info.fstype.startswith("fuse"):
            continue
        try:
            os.statvfs(mount_point)  # statfs always reaches the server (a stat may be answered from cache)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
        else:
            raise OSError(errno.EBUSY, f"{mount_point} is already mounted and served")
        for over in overlays_over(mount_point):
            log.warning("detaching stale overlay %s", over)
            with contextlib.suppress(OSError):
                umount(over, lazy=True)
        log.warning("detaching stale flist mount on %s", mount_point)
        with contextlib.suppress(OSError):
            umount(mount_point, lazy=True)


# -- the server -------------------------------------------------------------------------------

class FlistServer:
    """Serves one flist: the FUSE mount on `lower`, the overlays on it, readiness and shutdown."""

    def __init__(self, flist: Any, cache: Any, lower: str, *, timeout: float = DEFAULT_TIMEOUT,
                 notify_fd: int | None = None) -> None:
        self.flist = flist
        self.cache = cache
        self.lower = os.path.abspath(lower)
        self.notify_fd = notify_fd
        self.fs = FlistFS(flist, cache, timeout=timeout)
        self.overlays: list[Overlay] = []

    def options(self) -> set[str]:
        options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
        # dev, suid: a container's root needs its device nodes and setuid binaries (libfuse
        # mounts nodev,nosuid unless told otherwise).
        options |= {"ro", "allow_other", f"fsname={FSNAME}", "subtype=flist", "noatime", "dev", "suid"}
        return options

    async def add_overlay(self, target: str | os.PathLike[str], rw_dir: str | os.PathLike[str]) -> Overlay:
        """One more overlay on this server's lower (mounted from a worker thread: the overlay
        looks the lower up, which this thread answers)."""
        overlay = await trio.to_thread.run_sync(functools.partial(mount_overlay, self.lower, target, rw_dir))
        self.overlays.append(overlay)
        log.info("overlay on %s (upper %s/upper%s)", overlay.target, overlay.rw_dir,
                 ", metacopy" if overlay.metacopy else "")
        return overlay

    async def run(self, overlay: tuple[str, str] | None = None, prefetch: bool = True) -> None:
        """Mount, announce readiness, serve until a signal or an external unmount, clean up."""
        os.makedirs(self.lower, exist_ok=True)
        _clear_stale(self.lower)
        pyfuse3.init(self.fs, self.lower, self.options())
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:
                    self.fs.nursery = nursery
                    nursery.start_soon(self._serve_fuse, nursery)
                    await self._start(overlay, prefetch, nursery)
                    nursery.start_soon(self._wait_signal, signals, nursery)
        finally:
            # Normally _wait_signal did this while the loop still served; this is for a failed
            # start (an overlay refused) or an FUSE mount detached from outside.
            if self.overlays or overlays_over(self.lower):
                await self._unmount_overlays()
            self.fs.nursery = None
            pyfuse3.close(unmount=True)
            log.info("unmounted %s; %s", self.lower,
                     ", ".join(f"{key} {value}" for key, value in self.fs.counters.items()))

    async def _serve_fuse(self, nursery: trio.Nursery) -> None:
        try:
            await pyfuse3.main()
        finally:
            nursery.cancel_scope.cancel()

    async def _start(self, overlay: tuple[str, str] | None, prefetch: bool, nursery: trio.Nursery) -> None:
        # A stat through the mount returns once FUSE_INIT is answered; only then does raising the
        # read-ahead stick (INIT clamps it to what was negotiated).
        await trio.to_thread.run_sync(os.stat, self.lower)
        if set_read_ahead(self.lower):
            log.info("read_ahead_kb=%d on %s", READ_AHEAD_KB, self.lower)
        if overlay is not None:
            await self.add_overlay(*overlay)
        if prefetch:
            nursery.start_soon(self._prefetch)
        self._ready()

    def _ready(self) -> None:
        if self.notify_fd is not None:
            try:
                os.write(self.notify_fd, b"ready\n")
                os.close(self.notify_fd)
            except OSError as exc:
                log.warning("notify fd %d: %s", self.notify_fd, exc)
            self.notify_fd = None
        try:
            print("ready", flush=True)
        except (OSError, ValueError):  # no stdout (a supervisor may close it): the fd is enough
            pass

    async def _prefetch(self) -> None:
        """Warm the cache with the flist's prefetch list, in the background: a start never
        waits for it, and demand reads go first (the cache queues prefetches behind them)."""
        try:
            # Not abandoned on shutdown: the thread reads the flist, whose connections are closed
            # once the server stops, and SQLite must not have a connection closed under a running
            # query (a server stopped right after its start crashed that way). It only queues ids,
            # so waiting for it costs milliseconds.
            await trio.to_thread.run_sync(self._queue_prefetch)
        except Exception as exc:
            log.warning("prefetch: %s", exc)

    def _queue_prefetch(self) -> None:
        inos = list(self.flist.prefetch())
        ids = list(dict.fromkeys(chunk for ino in inos for chunk, _size in self.flist.chunks(ino) if chunk))
        if ids:
            queued = self.cache.prefetch(ids)
            log.info("prefetch: %d chunks of %d files, %d not cached yet", len(ids), len(inos), queued)

    async def _wait_signal(self, signals: Any, nursery: trio.Nursery) -> None:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            await self._unmount_overlays()
            pyfuse3.terminate()
            return

    async def _unmount_overlays(self) -> None:
        """Ours first (newest first), then any other overlay still stacked on the lower: it could
        only fail with ENOTCONN once the server is gone."""
        targets = [overlay.target for overlay in reversed(self.overlays)]
        targets += [target for target in overlays_over(self.lower) if target not in targets]
        for target in targets:
            try:
                await trio.to_thread.run_sync(unmount_overlay, target)
                log.info("unmounted overlay %s", target)
            except OSError as exc:
                log.error("overlay %s: %s", target, exc)
        self.overlays.clear()


def _describe(exc: BaseException) -> str:
    """The first real error inside trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{exc}" if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"


def open_chunk_source(flist: Any, store_url: str | None, *, timeout: float) -> Any:
    """The store chunks come from: `store_url` when given (it replaces the flist's routes),
    else a router over the flist's own routes. ValueError when there is none."""
    from g8os.fs.store import open_router, open_store

    if store_url:
        return open_store(store_url, timeout=timeout)
    routes = list(flist.routes())
    if not routes:
        raise ValueError("the flist names no store: give one (--store URL)")
    return open_router(routes, timeout=timeout)


def serve(flist_path: str | os.PathLike[str], target: str | os.PathLike[str], *, store_url: str | None = None,
          cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR, rw_dir: str | os.PathLike[str] | None = None,
          notify_fd: int | None = None, workdir: str | os.PathLike[str] | None = None,
          quota: int = DEFAULT_QUOTA, timeout: float = DEFAULT_TIMEOUT, prefetch: bool = True) -> int:
    """Serve one flist until SIGTERM/SIGINT (0) or a failure to start (1, or 2 for a bad flist).

    Without `rw_dir` the read-only filesystem is mounted on `target`; with it, on `rw_dir`/lower,
    and an overlay (upper `rw_dir`/upper, work `rw_dir`/work) goes on `target`."""
    from g8os.fs.format import Flist, FlistError

    cache_dir = os.fspath(cache_dir)
    if workdir is None:
        workdir = os.path.join(os.path.dirname(os.path.abspath(cache_dir)), "flists")
    os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    try:
        flist = Flist.open(os.fspath(flist_path), os.fspath(workdir))
    except (FlistError, OSError) as exc:
        log.error("%s: %s", flist_path, exc)
        return 2
    log.info("%s unpacked and checked in %.0f ms", flist_path, (time.perf_counter() - started) * 1000)
    from g8os.fs.cache import ChunkCache

    store = cache = None
    try:
        try:
            store = open_chunk_source(flist, store_url, timeout=timeout)
            cache = ChunkCache(cache_dir, store, quota=quota, timeout=timeout, workers=CACHE_WORKERS)
        except (ValueError, OSError) as exc:
            log.error("%s", exc)
            return 2
        if rw_dir is not None:
            lower = os.path.join(os.path.abspath(rw_dir), "lower")
            overlay = (os.path.abspath(target), os.path.abspath(rw_dir))
        else:
            lower, overlay = os.path.abspath(target), None
        server = FlistServer(flist, cache, lower, timeout=timeout, notify_fd=notify_fd)
        try:
            trio.run(server.run, overlay, prefetch)
        except Exception as exc:
            log.error("serving %s on %s: %s", flist_path, target, _describe(exc))
            return 1
        return 0
    finally:
        if cache is not None:
            cache.close()
        if store is not None:
            store.close()
        flist.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m g8os.fs.mount`: what core0's supervisor and `g8os flist mount` run."""
    parser = argparse.ArgumentParser(prog="python -m g8os.fs.mount", description=__doc__.split("\n\n")[0])
    parser.add_argument("flist")
    parser.add_argument("target")
    parser.add_argument("--rw-dir", help="overlay upper/work dirs (and the FUSE lower) go here")
    parser.add_argument("--store", help="chunk store URL, replacing the flist's routes")
    parser.add_argument("--cache", default=DEFAULT_CACHE_DIR, help="chunk cache directory")
    parser.add_argument("--notify-fd", type=int, help="write 'ready\\n' to this fd once mounted")
    parser.add_argument("--workdir", help="where the flist database is unpacked")
    parser.add_argument("--quota", type=int, default=DEFAULT_QUOTA, help="cache size limit, bytes")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds a chunk fetch may take before the read fails with EIO")
    parser.add_argument("--no-prefetch", action="store_true", help="do not warm the cache at start")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="g8os-flist[%(process)d] %(levelname)s %(message)s")
    sys.exit(serve(args.flist, args.target, store_url=args.store, cache_dir=args.cache, rw_dir=args.rw_dir,
                   notify_fd=args.notify_fd, workdir=args.workdir, quota=args.quota, timeout=args.timeout,
                   prefetch=not args.no_prefetch))


if __name__ == "__main__":
    main()
