"""Build an flist from a directory or a tar archive, uploading the chunks a store lacks.

A build has four steps:
1. read the tree into memory (`Tree`): metadata of every entry, hardlinks found by
   (st_dev, st_ino) or by the tar's link members; a tar is streamed, never extracted;
2. hash every regular file: bodies up to INLINE_MAX bytes kept inline, larger files cut into
   1 MiB chunks named by their BLAKE3 (a tar's files are hashed while it streams by);
3. ask the store once which chunk ids it has (`store.exists(all ids)`), then read the missing
   chunks again, check they still hash to their id, compress and `put` them in batches on a
   thread pool — so a rebuild of an unchanged tree reads each file once and uploads nothing;
4. number the inodes in a fixed traversal order and write the database (format.py).

Deterministic: entries are sorted by name and numbered depth first, ctime is recorded as the
mtime (a copy of a tree cannot keep its ctimes, so storing them would make equal trees differ),
directory sizes are 0 (they depend on the filesystem), and no build time is written anywhere.
The same tree gives the same `.flist` bytes, from a directory or from a tar of it.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

import attrs
import zstandard

from g8os.fs import format as fmt
from g8os.fs.chunks import CHUNK_SIZE, chunk_id, compress
from g8os.fs.store import Store, public_url

Progress = Callable[[int, int, str], None]   # (done bytes, total bytes, what is happening)

UPLOAD_BATCH_BYTES = 8 * CHUNK_SIZE   # plain bytes per store.put: one round trip per few MiB
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIR_MODE = stat.S_IFDIR | 0o755       # a directory a tar implies but never lists


class BuildError(Exception):
    """The source cannot become an flist (a hostile tar path, a file that changed while it was
    read, a missing hardlink target...). The message names the path."""


@attrs.frozen
class BuildReport:
    files: int             # regular file inodes
    dirs: int              # directories, the root included
    symlinks: int
    hardlinks: int         # names beyond the first of a file
    specials: int          # devices, fifos, sockets
    bytes: int             # content of the regular files
    chunks: int            # distinct chunk ids
    chunks_uploaded: int
    chunks_present: int    # already in the store
    seconds: float


@attrs.frozen
class FileSource:
    """A regular file's bytes are in this file on disk."""

    path: bytes


@attrs.frozen
class TarSource:
    """A regular file's bytes are member number `index` of this tar archive."""

    archive: Path
    index: int


@attrs.define(eq=False)
class Entry:
    """One inode of the tree being built; several names may share one Entry (hardlinks)."""

    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    size: int = 0
    target: bytes | None = None                        # symlinks
    xattrs: dict[bytes, bytes] = attrs.Factory(dict)
    children: dict[bytes, Entry] | None = None         # directories
    source: FileSource | TarSource | None = None       # regular files
    inline: bytes | None = None                        # regular files ≤ INLINE_MAX, once hashed
    chunks: list[tuple[str, int]] | None = None        # regular files > INLINE_MAX, once hashed

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def hashed(self) -> bool:
        return self.inline is not None or self.chunks is not None


def _split(path: bytes | str) -> list[bytes]:
    """Path components relative to the root; refuses `..` (a tar must not climb out)."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise BuildError(f"path with NUL: {raw!r}")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise BuildError(f"path with '..': {raw!r}")
    for part in parts:
        if len(part) > fmt.MAX_NAME:
            raise BuildError(f"name longer than {fmt.MAX_NAME} bytes: {raw!r}")
    return parts


class Tree:
    """The tree an flist will describe, in memory. Built from a directory or from tar archives
    (several, in order, later members winning: what image layers need), then written by
    `build_tree`."""

    def __init__(self, root: Entry | None = None) -> None:
        self.root = root or Entry(mode=_DIR_MODE, children={})

    # -- paths

    def get(self, path: bytes | str) -> Entry | None:
        entry: Entry | None = self.root
        for part in _split(path):
            if entry is None or entry.children is None:
                return None
            entry = entry.children.get(part)
        return entry

    def put(self, path: bytes | str, entry: Entry) -> None:
        """`entry` at `path`, replacing what was there; missing parent directories are implied.
        A directory put over a directory keeps the old one's children."""
        parts = _split(path)
        if not parts:
            if not entry.is_dir:
                raise BuildError("the root must be a directory")
            entry.children = self.root.children
            self.root = entry
            return
        parent = self._parent(parts)
        old = parent.get(parts[-1])
        if entry.is_dir:
            entry.children = old.children if old is not None and old.is_dir else (entry.children or {})
        parent[parts[-1]] = entry

    def link(self, path: bytes | str, target: bytes | str) -> None:
        """A hardlink: `path` names the same inode as `target`."""
        entry = self.get(target)
        if entry is None or entry.is_dir:
            raise BuildError(f"hardlink {os.fsencode(path)!r} to {os.fsencode(target)!r}: "
                             "no such file (or a directory)")
        parts = _split(path)
        if not parts:
            raise BuildError("the root cannot be a hardlink")
        self._parent(parts)[parts[-1]] = entry

    def remove(self, path: bytes | str) -> None:
        """Drop `path` (and everything below it); absent paths are fine (tar/OCI whiteouts)."""
        parts = _split(path)
        if not parts:
            self.root.children = {}
            return
        parent = self.get(b"/".join(parts[:-1]))
        if parent is not None and parent.children is not None:
            parent.children.pop(parts[-1], None)

    def _parent(self, parts: list[bytes]) -> dict[bytes, Entry]:
        entry = self.root
        for i, part in enumerate(parts[:-1]):
            assert entry.children is not None
            child = entry.children.get(part)
            if child is None:
                child = entry.children[part] = Entry(mode=_DIR_MODE, children={})
            elif not child.is_dir:
                raise BuildError(f"{b'/'.join(parts[:i + 1])!r} is not a directory, "
                                 f"but {b'/'.join(parts)!r} is below it")
            entry = child
        assert entry.children is not None
        return entry.children

    def number(self) -> dict[Entry, int]:
        """Inode numbers: the root is 1, then depth first in name order, the entries of a
        directory numbered together; a hardlinked file gets the number of its first name."""
        numbers: dict[Entry, int] = {self.root: fmt.ROOT_INO}
        stack = [self.root]
        while stack:
            directory = stack.pop()
            assert directory.children is not None
            subdirs = []
            for name in sorted(directory.children):
                child = directory.children[name]
                if child not in numbers:
                    numbers[child] = len(numbers) + 1
                    if child.is_dir:
                        subdirs.append(child)
            stack.extend(reversed(subdirs))
        return numbers

    # -- sources

    @classmethod
    def from_dir(cls, source: str | os.PathLike[str]) -> Tree:
        """A directory, walked with lstat (symlinks are never followed, except `source`
        itself); hardlinks found by (st_dev, st_ino)."""
        top = os.fsencode(os.fspath(source))
        st = os.stat(top)
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"{top!r} is not a directory")
        tree = cls(_entry_from_stat(top, st))
        tree.root.children = {}
        seen: dict[tuple[int, int], Entry] = {}
        stack: list[tuple[bytes, Entry]] = [(top, tree.root)]
        while stack:
            path, directory = stack.pop()
            assert directory.children is not None
            for name in sorted(os.listdir(path)):
                child_path = path + b"/" + name
                st = os.lstat(child_path)
                key = (st.st_dev, st.st_ino)
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and key in seen:
                    directory.children[name] = seen[key]
                    continue
                entry = _entry_from_stat(child_path, st)
                directory.children[name] = entry
                if entry.is_dir:
                    stack.append((child_path, entry))
                elif st.st_nlink > 1:
                    seen[key] = entry
        return tree

    def add_tar(self, archive: str | os.PathLike[str], *, progress: Progress | None = None,
                on_member: Callable[[Tree, bytes, tarfile.TarInfo], bool] | None = None) -> None:
        """Apply a tar archive (plain, gzip, bzip2, xz or zstd) over the tree, streaming it once:
        regular files are hashed as they go by, so nothing is extracted. `on_member(tree, path,
        member)` may take over a member (return False to skip the default handling: whiteouts)."""
        archive = Path(archive)
        total = archive.stat().st_size
        with _open_tar(archive) as (raw, tar):
            for index, member in enumerate(tar):
                path = b"/".join(_split(member.name.encode("utf-8", "surrogateescape")))
                if on_member is not None and not on_member(self, path, member):
                    continue
                self._add_member(tar, archive, index, path, member)
                if progress is not None:
                    progress(raw.tell(), total, f"reading {archive.name}")

    def _add_member(self, tar: tarfile.TarFile, archive: Path, index: int, path: bytes,
                    member: tarfile.TarInfo) -> None:
        if member.islnk():
            self.link(path, member.linkname.encode("utf-8", "surrogateescape"))
            return
        kind = _TAR_TYPES.get(member.type)
        if kind is None:
            raise BuildError(f"{path!r}: unsupported tar member type {member.type!r}")
        entry = Entry(mode=kind | (member.mode & 0o7777), uid=member.uid, gid=member.gid,
                      mtime_ns=_tar_mtime_ns(member), xattrs=_tar_xattrs(member))
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            entry.rdev = os.makedev(member.devmajor, member.devminor)
        elif kind == stat.S_IFLNK:
            entry.target = member.linkname.encode("utf-8", "surrogateescape")
            entry.size = len(entry.target)
            if not entry.target:
                raise BuildError(f"{path!r}: symlink with an empty target")
        elif kind == stat.S_IFREG:
            entry.size = member.size
            entry.source = TarSource(archive, index)
            body = tar.extractfile(member)
            assert body is not None
            entry.inline, entry.chunks = _hash_stream(body, member.size, path)
        self.put(path, entry)


_TAR_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG, tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.GNUTYPE_SPARSE: stat.S_IFREG, tarfile.SYMTYPE: stat.S_IFLNK, tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO,
}


class _open_tar:
    """A tar archive as a stream (tarfile's "r|" mode), zstd included, and the raw file
    underneath (its position is the progress)."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive

    def __enter__(self) -> tuple[IO[bytes], tarfile.TarFile]:
        self.raw = open(self.archive, "rb")
        try:
            magic = self.raw.read(4)
            self.raw.seek(0)
            stream: Any = self.raw
            mode = "r|*"
            if magic == _ZSTD_MAGIC:
                stream = zstandard.ZstdDecompressor().stream_reader(self.raw, read_across_frames=True)
                mode = "r|"
            self.tar = tarfile.open(fileobj=stream, mode=mode, encoding="utf-8", errors="surrogateescape")
        except (tarfile.TarError, zstandard.ZstdError) as exc:
            self.raw.close()
            raise BuildError(f"{self.archive}: not a tar archive ({exc})") from None
        return self.raw, self.tar

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.tar.close()
        self.raw.close()
        if isinstance(exc, (tarfile.TarError, zstandard.ZstdError, EOFError)):
            raise BuildError(f"{self.archive}: broken tar archive ({exc})") from exc


def _tar_mtime_ns(member: tarfile.TarInfo) -> int:
    """mtime to the nanosecond: a pax header keeps it as a decimal string that tarfile would
    round through a float."""
    text = member.pax_headers.get("mtime")
    if text is not None:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except InvalidOperation:
            pass
    return int(member.mtime) * 1_000_000_000


def _tar_xattrs(member: tarfile.TarInfo) -> dict[bytes, bytes]:
    """xattrs from pax headers: SCHILY.xattr.NAME (GNU tar, star, Docker) and
    LIBARCHIVE.xattr.NAME (bsdtar: URL-encoded name, base64 value)."""
    found: dict[bytes, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found[key[len("SCHILY.xattr."):].encode("utf-8", "surrogateescape")] = \
                value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote_to_bytes(key[len("LIBARCHIVE.xattr."):])
            padded = value + "=" * (-len(value) % 4)
            found.setdefault(name, base64.b64decode(padded))
    return found


def _entry_from_stat(path: bytes, st: os.stat_result) -> Entry:
    mode = st.st_mode
    entry = Entry(mode=mode, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                  xattrs=_read_xattrs(path))
    if stat.S_ISREG(mode):
        entry.size = st.st_size
        entry.source = FileSource(path)
    elif stat.S_ISLNK(mode):
        entry.target = os.readlink(path)
        entry.size = len(entry.target)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        entry.rdev = st.st_rdev
    elif stat.S_ISDIR(mode):
        entry.children = {}
    return entry


def _read_xattrs(path: bytes) -> dict[bytes, bytes]:
    """Every xattr of `path` itself (not a symlink's target): security.capability, ACLs, user.*."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    found = {}
    for name in sorted(names):
        try:
            found[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed since listed
                raise
    return found


# ---------------------------------------------------------------------------------------- hashing

_zero_ids: dict[int, str] = {}


def _zero_id(size: int) -> str:
    if size not in _zero_ids:
        _zero_ids[size] = chunk_id(bytes(size))
    return _zero_ids[size]


Hashed = tuple[bytes | None, list[tuple[str, int]] | None]   # (inline body, chunk list)


def _hash_stream(body: IO[bytes], size: int, path: bytes,
                 advance: Callable[[int], None] | None = None) -> Hashed:
    """(inline body, None) for a small file, (None, chunk list) for a larger one."""
    if size <= fmt.INLINE_MAX:
        data = _read_exact(body, size, path)
        if advance:
            advance(size)
        return data, None
    chunks = []
    for offset in range(0, size, CHUNK_SIZE):
        plain = _read_exact(body, min(CHUNK_SIZE, size - offset), path)
        chunks.append((chunk_id(plain), len(plain)))
        if advance:
            advance(len(plain))
    return None, chunks


def _read_exact(body: IO[bytes], size: int, path: bytes) -> bytes:
    data = body.read(size)
    if len(data) != size:
        raise BuildError(f"{path!r}: shorter than its size (changed while the flist was built?)")
    return data


def _open_regular(path: bytes, size: int, mtime_ns: int) -> int:
    """A file descriptor on `path`, refusing anything that stopped being the regular file we
    saw (O_NONBLOCK so a fifo swapped in cannot hang the build)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
        os.close(fd)
        raise BuildError(f"{path!r} changed while the flist was built")
    return fd


def _is_hole(fd: int, offset: int, length: int) -> bool:
    """No data in [offset, offset+length): a sparse file's hole, zeros without reading."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as exc:
        return exc.errno == errno.ENXIO   # no data at all after offset


def _hash_file(entry: Entry, advance: Callable[[int], None]) -> None:
    assert isinstance(entry.source, FileSource)
    path = entry.source.path
    fd = _open_regular(path, entry.size, entry.mtime_ns)
    try:
        with os.fdopen(os.dup(fd), "rb", buffering=0) as body:
            if entry.size <= fmt.INLINE_MAX:
                entry.inline, entry.chunks = _hash_stream(body, entry.size, path, advance)
                return
        chunks = []
        for offset in range(0, entry.size, CHUNK_SIZE):
            length = min(CHUNK_SIZE, entry.size - offset)
            if _is_hole(fd, offset, length):
                chunks.append((_zero_id(length), length))
            else:
                chunks.append((chunk_id(_pread_exact(fd, length, offset, path)), length))
            advance(length)
        if os.fstat(fd).st_mtime_ns != entry.mtime_ns:
            raise BuildError(f"{path!r} changed while the flist was built")
        entry.chunks = chunks
    finally:
        os.close(fd)


def _pread_exact(fd: int, length: int, offset: int, path: bytes) -> bytes:
    parts = []
    while length:
        part = os.pread(fd, length, offset)
        if not part:
            raise BuildError(f"{path!r}: shorter than its size (changed while the flist was built?)")
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return b"".join(parts)


class _Meter:
    """Serialises progress calls from worker threads: the callback sees one call at a time,
    with `done` never going backwards."""

    def __init__(self, progress: Progress | None, total: int, message: str) -> None:
        self.progress, self.total, self.message = progress, total, message
        self.done = 0
        self.lock = threading.Lock()
        self.advance(0)

    def advance(self, n: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            self.progress(self.done, self.total, self.message)


def _hash_files(entries: list[Entry], pool: ThreadPoolExecutor, progress: Progress | None) -> None:
    todo = [e for e in entries if e.is_file and not e.hashed]
    meter = _Meter(progress, sum(e.size for e in todo), "hashing")
    for future in [pool.submit(_hash_file, e, meter.advance) for e in todo]:
        future.result()


# ---------------------------------------------------------------------------------------- upload


class _Uploader:
    """Compresses and puts chunks in batches on the pool, a bounded number in flight (memory
    stays at a few batches whatever the tree's size)."""

    def __init__(self, store: Store, pool: ThreadPoolExecutor, workers: int, meter: _Meter) -> None:
        self.store, self.pool, self.meter = store, pool, meter
        self.limit = max(2, 2 * workers)
        self.batch: dict[str, bytes] = {}
        self.batch_bytes = 0
        self.inflight: set[Future[None]] = set()

    def add(self, chunk: str, plain: bytes, path: bytes) -> None:
        if chunk_id(plain) != chunk:
            raise BuildError(f"{path!r} changed while the flist was built")
        self.batch[chunk] = plain
        self.batch_bytes += len(plain)
        if self.batch_bytes >= UPLOAD_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        while len(self.inflight) >= self.limit:
            self._reap(FIRST_COMPLETED)
        self.inflight.add(self.pool.submit(self._put, self.batch))
        self.batch, self.batch_bytes = {}, 0

    def _put(self, plain: Mapping[str, bytes]) -> None:
        self.store.put({chunk: compress(data) for chunk, data in plain.items()})
        self.meter.advance(sum(len(data) for data in plain.values()))

    def _reap(self, how: str) -> None:
        done, self.inflight = wait(self.inflight, return_when=how)
        for future in done:
            future.result()

    def close(self) -> None:
        self.flush()
        if self.inflight:
            self._reap("ALL_COMPLETED")


def _upload(entries: list[Entry], missing: set[str], store: Store, workers: int,
            pool: ThreadPoolExecutor, progress: Progress | None) -> int:
    """Read each missing chunk once more (from its file or by streaming its tar again), check it
    still has its id, and put it. Returns how many chunks were uploaded."""
    todo = set(missing)
    sizes = {c: n for e in entries for c, n in (e.chunks or ()) if c in todo}
    meter = _Meter(progress, sum(sizes.values()), "uploading")
    uploader = _Uploader(store, pool, workers, meter)
    by_archive: dict[Path, dict[int, Entry]] = {}
    try:
        for entry in entries:
            if not entry.chunks or not any(c in todo for c, _ in entry.chunks):
                continue
            if isinstance(entry.source, TarSource):
                by_archive.setdefault(entry.source.archive, {})[entry.source.index] = entry
            else:
                _upload_file(entry, todo, uploader)
        for archive, wanted in by_archive.items():
            _upload_tar(archive, wanted, todo, uploader)
    finally:
        uploader.close()
    return len(sizes)


def _upload_file(entry: Entry, todo: set[str], uploader: _Uploader) -> None:
    assert isinstance(entry.source, FileSource) and entry.chunks is not None
    path = entry.source.path
    fd = _open_regular(path, entry.size, entry.mtime_ns)
    try:
        for idx, (chunk, length) in enumerate(entry.chunks):
            if chunk in todo:
                todo.discard(chunk)
                uploader.add(chunk, _pread_exact(fd, length, idx * CHUNK_SIZE, path), path)
    finally:
        os.close(fd)


def _upload_tar(archive: Path, wanted: dict[int, Entry], todo: set[str], uploader: _Uploader) -> None:
    with _open_tar(archive) as (_, tar):
        for index, member in enumerate(tar):
            entry = wanted.get(index)
            if entry is None:
                continue
            assert entry.chunks is not None
            body = tar.extractfile(member)
            assert body is not None
            for chunk, length in entry.chunks:
                plain = _read_exact(body, length, member.name.encode("utf-8", "surrogateescape"))
                if chunk in todo:
                    todo.discard(chunk)
                    uploader.add(chunk, plain, member.name.encode("utf-8", "surrogateescape"))


# ----------------------------------------------------------------------------------------- write


def _write(tree: Tree, numbers: dict[Entry, int], db_path: Path, tags: Mapping[str, str],
           routes: Sequence[tuple[str, str, str]], prefetch: list[int]) -> None:
    ordered = sorted(numbers, key=numbers.__getitem__)
    names: dict[Entry, int] = {}
    subdirs: dict[Entry, int] = {}
    for entry in ordered:
        for child in (entry.children or {}).values():
            names[child] = names.get(child, 0) + 1
            if child.is_dir:
                subdirs[entry] = subdirs.get(entry, 0) + 1
    writer = fmt.FlistWriter(db_path)
    try:
        for entry in ordered:
            ino = numbers[entry]
            nlink = 2 + subdirs.get(entry, 0) if entry.is_dir else names[entry]
            size = 0 if entry.is_dir else entry.size
            rdev = entry.rdev if stat.S_ISCHR(entry.mode) or stat.S_ISBLK(entry.mode) else 0
            inode = fmt.Inode(ino, entry.mode, entry.uid, entry.gid, size, entry.mtime_ns,
                              entry.mtime_ns, rdev, nlink)
            writer.add_inode(inode, target=entry.target, xattrs=entry.xattrs,
                             chunks=entry.chunks if entry.is_file else None,
                             inline=entry.inline if entry.is_file else None)
        for entry in ordered:
            for name, child in sorted((entry.children or {}).items()):
                writer.add_dirent(numbers[entry], name, numbers[child])
        writer.finish(tags, routes, prefetch)
    finally:
        writer.close()


def _report(numbers: dict[Entry, int], chunks: int, uploaded: int, seconds: float) -> BuildReport:
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "specials": 0, "bytes": 0, "names": 0}
    for entry in numbers:
        kind = stat.S_IFMT(entry.mode)
        if kind == stat.S_IFREG:
            counts["files"] += 1
            counts["bytes"] += entry.size
        elif kind == stat.S_IFDIR:
            counts["dirs"] += 1
        elif kind == stat.S_IFLNK:
            counts["symlinks"] += 1
        else:
            counts["specials"] += 1
        if entry.children:
            counts["names"] += sum(1 for c in entry.children.values() if not c.is_dir)
    non_dirs = len(numbers) - counts["dirs"]
    return BuildReport(files=counts["files"], dirs=counts["dirs"], symlinks=counts["symlinks"],
                       hardlinks=counts["names"] - non_dirs, specials=counts["specials"],
                       bytes=counts["bytes"], chunks=chunks, chunks_uploaded=uploaded,
                       chunks_present=chunks - uploaded, seconds=seconds)


def _default_routes(store: Store) -> list[tuple[str, str, str]]:
    """Where the chunks went, without credentials: a Router's table, else the whole range."""
    table = getattr(store, "route_table", None)
    if callable(table):
        return list(table())
    return [("00", "ff", public_url(store.url))]


def build_tree(tree: Tree, output: str | os.PathLike[str], store: Store, *,
               tags: Mapping[str, str] | None = None,
               routes: Sequence[tuple[str, str, str]] | None = None,
               prefetch: Iterable[bytes | str] = (), progress: Progress | None = None,
               workers: int = 4, started: float | None = None) -> BuildReport:
    """Hash what is not hashed yet, upload the chunks the store lacks, write `output`.

    `routes=None` records the build store's public URL (or a Router's table); pass [] for
    none. `prefetch` is a list of paths of regular files, in the order to fetch them.
    `progress(done, total, message)` is called with message "hashing", "uploading", "writing";
    from worker threads, but never two calls at once."""
    started = time.monotonic() if started is None else started
    output = Path(output)
    numbers = tree.number()
    ordered = sorted(numbers, key=numbers.__getitem__)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="flist-build") as pool:
        _hash_files(ordered, pool, progress)
        ids = sorted({c for e in ordered if e.is_file for c, _ in (e.chunks or ())})
        present = store.exists(ids) if ids else set()
        uploaded = _upload(ordered, set(ids) - present, store, workers, pool, progress)
    prefetch_inos = [numbers[_prefetch_entry(tree, p)] for p in prefetch]
    if progress is not None:
        progress(0, 1, "writing")
    with tempfile.TemporaryDirectory(prefix=".flist-build-", dir=output.parent) as scratch:
        db_path = Path(scratch) / fmt.DB_NAME
        _write(tree, numbers, db_path, tags or {},
               _default_routes(store) if routes is None else [_public_route(r) for r in routes],
               prefetch_inos)
        fmt.pack(db_path, output)
    if progress is not None:
        progress(1, 1, "writing")
    return _report(numbers, len(ids), uploaded, time.monotonic() - started)


def _public_route(route: tuple[str, str, str]) -> tuple[str, str, str]:
    start, end, url = route
    return start.lower(), end.lower(), public_url(url)


def _prefetch_entry(tree: Tree, path: bytes | str) -> Entry:
    entry = tree.get(path)
    if entry is None or not entry.is_file:
        raise BuildError(f"prefetch: {os.fsencode(path)!r} is not a regular file in the tree")
    return entry


def build_from_dir(source: str | os.PathLike[str], output: str | os.PathLike[str], store: Store, *,
                   tags: Mapping[str, str] | None = None,
                   routes: Sequence[tuple[str, str, str]] | None = None,
                   prefetch: Iterable[bytes | str] = (), progress: Progress | None = None,
                   workers: int = 4) -> BuildReport:
    """An flist of the directory `source` (its own mode/owner/times become the root's)."""
    started = time.monotonic()
    return build_tree(Tree.from_dir(source), output, store, tags=tags, routes=routes,
                      prefetch=prefetch, progress=progress, workers=workers, started=started)


def build_from_tar(tar_path: str | os.PathLike[str], output: str | os.PathLike[str], store: Store, *,
                   tags: Mapping[str, str] | None = None,
                   routes: Sequence[tuple[str, str, str]] | None = None,
                   prefetch: Iterable[bytes | str] = (), progress: Progress | None = None,
                   workers: int = 4) -> BuildReport:
    """An flist of a tar archive (plain, gz, bz2, xz or zst), streamed, never extracted: its
    "./" member, if any, gives the root's attributes."""
    started = time.monotonic()
    tree = Tree()
    tree.add_tar(tar_path, progress=progress)
    return build_tree(tree, output, store, tags=tags, routes=routes, prefetch=prefetch,
                      progress=progress, workers=workers, started=started)
