"""The flist format: one SQLite database, packed as a `.flist` (a tar holding `flist.sqlite3`,
compressed with zstd).

The database describes a read-only tree: inodes (so hardlinks are several directory entries
naming one inode), symlink targets, device numbers, xattrs (`security.capability` survives),
tiny file bodies inline, and for larger files the ordered list of 1 MiB chunks (see chunks.py)
whose bytes live in a store. Tags (entrypoint, env, ...), store routes and a prefetch list ride
along.

An flist comes from somewhere else, so opening one treats the metadata as hostile: the schema
must be exactly ours, and every rule the FUSE mount relies on (names are single path
components, directories form a tree below the root, sizes agree with the chunk lists, counts
are bounded) is checked before a single lookup is served. A violation is a `FlistError` naming
the first thing wrong, never a mount that escapes its root.

The writer is deterministic: the same rows give the same database bytes (VACUUM rewrites every
table in key order) and `pack` pins every tar header field, so the same tree gives the same
`.flist` bytes.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gzip
import itertools
import os
import sqlite3
import stat
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import attrs
import blake3
import zstandard

from g8os.fs.chunks import CHUNK_SIZE, HASH, ID_LENGTH

ID_BYTES = ID_LENGTH // 2       # a chunk id as stored: the raw digest

FORMAT_VERSION = 2               # 2: chunk ids stored as raw 32-byte BLAKE3 digests
ROOT_INO = 1                   # FUSE's root inode number: the flist uses the same one
DB_NAME = "flist.sqlite3"      # the one member of the tar that matters
INLINE_MAX = 4096              # files up to this size are stored in the database, no chunk
APPLICATION_ID = 0x67386673    # "g8fs" in the SQLite header: `file` and sqlite3 tools can tell
PACK_ZSTD_LEVEL = 9            # metadata compresses well; level 9 is still fast for 100 MB
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"

# Bounds on untrusted metadata: far above any real image, low enough that a crafted flist
# cannot make the mount allocate or walk without limit.
MAX_INODES = 50_000_000
MAX_DIRENTS = 2 * MAX_INODES
MAX_CHUNKS = 200_000_000
MAX_XATTRS = 10_000_000
MAX_XATTRS_PER_INODE = 1024
MAX_NAME = 255                 # bytes in one name (NAME_MAX)
MAX_TARGET = 4096              # bytes in a symlink target (PATH_MAX)
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 65536
MAX_FILE_SIZE = 1 << 44        # 16 TiB, ext4's limit
MAX_TAGS = 10_000
MAX_TAG_KEY = 255
MAX_TAG_VALUE = 1 << 20
MAX_ROUTES = 1024
MAX_URL = 4096
MAX_PREFETCH = MAX_INODES
VALIDATION_THREADS = 2         # scans at once when a flist is opened (more showed no gain on 2-4 cores)
MAX_DB_BYTES = 1 << 35         # an unpacked database larger than 32 GiB is a decompression bomb

_FILE_TYPES = (stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
               stat.S_IFIFO, stat.S_IFSOCK)

# STRICT tables: SQLite itself refuses a row whose column has the wrong type, and `open`
# refuses a database whose schema is not exactly this text, so every value read back has the
# type the reader expects.
SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE inode(ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL,
    gid INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, rdev INTEGER NOT NULL, nlink INTEGER NOT NULL) STRICT;
CREATE TABLE dirent(parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
    PRIMARY KEY(parent, name)) STRICT, WITHOUT ROWID;
CREATE INDEX dirent_ino ON dirent(ino);
CREATE TABLE symlink(ino INTEGER PRIMARY KEY, target BLOB NOT NULL) STRICT;
CREATE TABLE xattr(ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY(ino, name)) STRICT, WITHOUT ROWID;
CREATE TABLE chunk(ino INTEGER NOT NULL, idx INTEGER NOT NULL, id BLOB NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY(ino, idx)) STRICT, WITHOUT ROWID;
CREATE TABLE inline(ino INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
CREATE TABLE tag(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE route(start TEXT NOT NULL, "end" TEXT NOT NULL, url TEXT NOT NULL) STRICT;
CREATE TABLE prefetch(seq INTEGER PRIMARY KEY, ino INTEGER NOT NULL) STRICT;
"""


class FlistError(Exception):
    """The file is not a usable flist: not an flist at all, an unknown version, or metadata
    that breaks a rule the mount relies on. The message says which."""


@attrs.frozen
class Inode:
    """One inode as the mount reports it (`ino` is also the FUSE inode number)."""

    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    rdev: int
    nlink: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


_INODE_COLUMNS = "ino, mode, uid, gid, size, mtime_ns, ctime_ns, rdev, nlink"


# ----------------------------------------------------------------------------------------- write


class FlistWriter:
    """Builds the database of one flist. The caller chooses inode numbers (the builder assigns
    them in a fixed traversal order so rebuilds agree); `finish` checks the result with the
    same rules `Flist.open` applies, so a writer never produces an flist nobody can open."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.path = Path(db_path)
        self.path.unlink(missing_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        # A scratch file until finish: no journal, no fsync; a crash just loses the build.
        for pragma in ("page_size=4096", "journal_mode=OFF", "synchronous=OFF",
                       "locking_mode=EXCLUSIVE", f"application_id={APPLICATION_ID}",
                       f"user_version={FORMAT_VERSION}"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.executescript(SCHEMA)
        self._conn.execute("BEGIN")

    def add_inode(self, inode: Inode, *, target: bytes | None = None,
                  xattrs: Mapping[bytes, bytes] | None = None,
                  chunks: Sequence[tuple[str, int]] | None = None,
                  inline: bytes | None = None) -> None:
        """One inode with what hangs off it: a symlink's target, xattrs, and for a regular file
        either its inline body or its chunk list."""
        self._conn.execute(f"INSERT INTO inode({_INODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                           attrs.astuple(inode))
        if target is not None:
            self._conn.execute("INSERT INTO symlink(ino, target) VALUES (?, ?)", (inode.ino, bytes(target)))
        if xattrs:
            self._conn.executemany("INSERT INTO xattr(ino, name, value) VALUES (?, ?, ?)",
                                   [(inode.ino, bytes(k), bytes(v)) for k, v in sorted(xattrs.items())])
        if inline is not None:
            self._conn.execute("INSERT INTO inline(ino, data) VALUES (?, ?)", (inode.ino, bytes(inline)))
        if chunks:
            self._conn.executemany("INSERT INTO chunk(ino, idx, id, size) VALUES (?, ?, ?, ?)",
                                   [(inode.ino, i, bytes.fromhex(c), n) for i, (c, n) in enumerate(chunks)])

    def add_dirent(self, parent: int, name: bytes, ino: int) -> None:
        """`name` in directory `parent` names inode `ino`; a second name for a file is a hardlink."""
        self._conn.execute("INSERT INTO dirent(parent, name, ino) VALUES (?, ?, ?)",
                           (parent, bytes(name), ino))

    def finish(self, tags: Mapping[str, str] | None = None,
               routes: Sequence[tuple[str, str, str]] | None = None,
               prefetch: Sequence[int] | None = None) -> None:
        """Write meta, tags, routes and the prefetch list; compact; check; close."""
        meta = {"version": str(FORMAT_VERSION), "hash": HASH, "chunk_size": str(CHUNK_SIZE)}
        self._conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(meta.items()))
        self._conn.executemany("INSERT INTO tag(key, value) VALUES (?, ?)", sorted((tags or {}).items()))
        for start, end, url in routes or ():
            if "@" in url.partition("://")[2].split("/", 1)[0]:
                raise ValueError("a route URL with credentials must not go into an flist")
            self._conn.execute('INSERT INTO route(start, "end", url) VALUES (?, ?, ?)', (start, end, url))
        self._conn.executemany("INSERT INTO prefetch(seq, ino) VALUES (?, ?)", enumerate(prefetch or ()))
        self._conn.execute("COMMIT")
        self._conn.execute("VACUUM")   # every table rewritten in key order: byte-stable output
        try:
            _validate(self._conn)
        finally:
            self.close()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> FlistWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ pack/unpack


def pack(db_path: str | os.PathLike[str], flist_path: str | os.PathLike[str]) -> None:
    """The database as a `.flist`: a tar with one member, every header field fixed (name, mode,
    owner, mtime 0) so equal databases give equal bytes; zstd, single-threaded for the same
    reason. Written to a temporary name and renamed, so a reader never sees half a file."""
    db_path, flist_path = Path(db_path), Path(flist_path)
    info = tarfile.TarInfo(DB_NAME)
    info.size = db_path.stat().st_size
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
    tmp = flist_path.with_name(f".{flist_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        cctx = zstandard.ZstdCompressor(level=PACK_ZSTD_LEVEL, write_checksum=True)
        with open(tmp, "wb") as out, cctx.stream_writer(out, closefd=False) as zout, \
                tarfile.open(fileobj=zout, mode="w|", format=tarfile.PAX_FORMAT) as tar, \
                open(db_path, "rb") as db:
            tar.addfile(info, db)
        tmp.replace(flist_path)
    finally:
        tmp.unlink(missing_ok=True)


def digest(flist_path: str | os.PathLike[str]) -> str:
    """BLAKE3 of the `.flist` file: what a caller pins, and the name its database unpacks to."""
    hasher = blake3.blake3()
    with open(flist_path, "rb") as f:
        while block := f.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def unpack(flist_path: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> Path:
    """The database inside a `.flist`, as `workdir/<digest>.sqlite3` (reused if already there:
    the name is the content). zstd or gzip (0-hub's tar.gz) or a plain tar are accepted; only the
    `flist.sqlite3` member is read, streamed to a temp file and renamed, never extracted by path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / f"{digest(flist_path)}.sqlite3"
    if db_path.exists():
        return db_path
    tmp = workdir / f".{db_path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(flist_path, "rb") as raw:
            if not _extract_packed(_decompressed(raw), tmp):
                raw.seek(0)
                _extract_db(_decompressed(raw), tmp)
        tmp.replace(db_path)
    finally:
        tmp.unlink(missing_ok=True)
    return db_path


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    magic = raw.read(4)
    raw.seek(0)
    if magic == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    if magic[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _extract_packed(stream: IO[bytes], dest: Path) -> bool:
    """The layout `pack` writes (the database first, under a plain ustar header), copied straight
    from the decompressor: tarfile's stream reader costs as much again as decompression. False for
    any other layout, which the general path reads."""
    try:
        header = stream.read(tarfile.BLOCKSIZE)
        member = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except (tarfile.TarError, zstandard.ZstdError, EOFError, gzip.BadGzipFile, ValueError):
        return False
    if member.name.removeprefix("./") != DB_NAME or not member.isreg() or member.size > MAX_DB_BYTES:
        return False
    try:
        with open(dest, "wb") as out:
            buffer = memoryview(bytearray(1 << 20))
            left = member.size
            while left:
                got = stream.readinto(buffer[:min(left, len(buffer))])  # type: ignore[attr-defined]
                if not got:
                    raise FlistError(f"not an flist: {DB_NAME} truncated "
                                     f"({member.size - left} of {member.size} bytes)")
                out.write(buffer[:got])
                left -= got
        while stream.read(1 << 16):  # to the end of the frame: zstd verifies its checksum there
            pass
    except (zstandard.ZstdError, EOFError, gzip.BadGzipFile) as exc:
        raise FlistError(f"not an flist: damaged archive ({exc})") from None
    return True


def _extract_db(stream: IO[bytes], dest: Path) -> None:
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name == "flistdb.sqlite3":
                    raise FlistError("not an flist: a 0-flist (flistdb.sqlite3) database, "
                                     "a format g8os does not read")
                if name != DB_NAME:
                    continue
                if not member.isreg():
                    raise FlistError(f"not an flist: {DB_NAME} is not a regular file")
                if member.size > MAX_DB_BYTES:
                    raise FlistError(f"hostile metadata: database of {member.size} bytes")
                _copy_member(tar.extractfile(member), member.size, dest)
                return
    except (tarfile.TarError, zstandard.ZstdError, EOFError, gzip.BadGzipFile) as exc:
        raise FlistError(f"not an flist: not a tar archive ({exc})") from None
    raise FlistError(f"not an flist: no {DB_NAME} in the archive")


def _copy_member(src: IO[bytes] | None, size: int, dest: Path) -> None:
    if src is None:
        raise FlistError(f"not an flist: {DB_NAME} unreadable")
    written = 0
    with open(dest, "wb") as out:
        while block := src.read(1 << 20):
            written += len(block)
            out.write(block)
    if written != size:
        raise FlistError(f"not an flist: {DB_NAME} truncated ({written} of {size} bytes)")


# ------------------------------------------------------------------------------------------ read


class Flist:
    """A validated, read-only flist database.

    Safe to call from several threads: each thread gets its own SQLite connection on the
    immutable file (no locks taken, memory-mapped), so the FUSE mount's lookups never wait on
    one another.
    """

    root = ROOT_INO

    def __init__(self, db_path: Path, digest: str | None = None) -> None:
        """Use `open` or `from_db`: they validate first."""
        self.db_path = db_path
        self.digest = digest
        self._uri = f"file:{quote(str(db_path.resolve()))}?mode=ro&immutable=1"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False

    @classmethod
    def open(cls, flist_path: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> Flist:
        """Unpack a `.flist` into `workdir` and validate it (FlistError if it is not usable)."""
        db_path = unpack(flist_path, workdir)
        return cls.from_db(db_path, digest=db_path.stem)

    @classmethod
    def from_db(cls, db_path: str | os.PathLike[str], *, digest: str | None = None) -> Flist:
        """An already unpacked database, validated like `open` does."""
        flist = cls(Path(db_path), digest)
        try:
            _validate(flist._conn(), flist._conn)
        except BaseException:
            flist.close()
            raise
        return flist

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise FlistError("flist closed")
                try:
                    conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
                    for pragma in ("query_only=ON", "trusted_schema=OFF", "mmap_size=268435456",
                                   "cell_size_check=ON"):
                        conn.execute(f"PRAGMA {pragma}")
                except sqlite3.Error as exc:
                    raise FlistError(f"not an flist: {exc}") from None
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def _one(self, sql: str, *args: Any) -> Any:
        return self._conn().execute(sql, args).fetchone()

    def getattr(self, ino: int) -> Inode:
        row = self._one(f"SELECT {_INODE_COLUMNS} FROM inode WHERE ino = ?", ino)
        if row is None:
            raise KeyError(ino)
        return Inode(*row)

    def lookup(self, parent: int, name: bytes) -> Inode | None:
        row = self._one(f"SELECT {', '.join('i.' + c for c in _INODE_COLUMNS.split(', '))} "
                        "FROM dirent d JOIN inode i ON i.ino = d.ino WHERE d.parent = ? AND d.name = ?",
                        parent, bytes(name))
        return None if row is None else Inode(*row)

    def readdir(self, ino: int) -> list[tuple[bytes, Inode]]:
        """Entries of a directory, sorted by name (byte order), without "." and ".."."""
        rows = self._conn().execute(
            f"SELECT d.name, {', '.join('i.' + c for c in _INODE_COLUMNS.split(', '))} "
            "FROM dirent d JOIN inode i ON i.ino = d.ino WHERE d.parent = ? ORDER BY d.name", (ino,))
        return [(row[0], Inode(*row[1:])) for row in rows]

    def readlink(self, ino: int) -> bytes:
        row = self._one("SELECT target FROM symlink WHERE ino = ?", ino)
        if row is None:
            raise KeyError(ino)
        return row[0]

    def xattrs(self, ino: int) -> dict[bytes, bytes]:
        rows = self._conn().execute("SELECT name, value FROM xattr WHERE ino = ? ORDER BY name", (ino,))
        return dict(rows.fetchall())

    def chunks(self, ino: int) -> list[tuple[str, int]]:
        """(chunk id, plain size) in file order; chunk i holds bytes [i*CHUNK_SIZE, ...)."""
        rows = self._conn().execute("SELECT id, size FROM chunk WHERE ino = ? ORDER BY idx", (ino,))
        return [(raw.hex(), size) for raw, size in rows]

    def inline(self, ino: int) -> bytes | None:
        row = self._one("SELECT data FROM inline WHERE ino = ?", ino)
        return None if row is None else row[0]

    def tags(self) -> dict[str, str]:
        return dict(self._conn().execute("SELECT key, value FROM tag ORDER BY key").fetchall())

    def routes(self) -> list[tuple[str, str, str]]:
        return self._conn().execute('SELECT start, "end", url FROM route ORDER BY rowid').fetchall()

    def prefetch(self) -> list[int]:
        return [row[0] for row in self._conn().execute("SELECT ino FROM prefetch ORDER BY seq")]

    def meta(self) -> dict[str, str]:
        """version, hash and chunk_size as recorded (validation made them this module's)."""
        return dict(self._conn().execute("SELECT key, value FROM meta").fetchall())

    @property
    def version(self) -> int:
        return int(self.meta()["version"])

    def totals(self) -> tuple[int, int]:
        """(inodes, bytes of regular files): what statfs shows, in one scan of the inode table
        (`stats` also counts distinct chunks, which costs more than a mount can wait for)."""
        inodes, size = self._one(
            f"SELECT count(*), coalesce(sum(CASE WHEN (mode & {_IFMT}) = {stat.S_IFREG} THEN size END), 0) "
            "FROM inode")
        return int(inodes), int(size)

    def stats(self) -> dict[str, int]:
        """Counts for `flist info` and statfs: inodes, dirs, files, symlinks, bytes (of regular
        files), chunks (references), unique_chunks, inline (files stored in the database)."""
        row = self._one(
            "SELECT count(*), "
            f"coalesce(sum((mode & {_IFMT}) = {stat.S_IFDIR}), 0), "
            f"coalesce(sum((mode & {_IFMT}) = {stat.S_IFREG}), 0), "
            f"coalesce(sum((mode & {_IFMT}) = {stat.S_IFLNK}), 0), "
            f"coalesce(sum(CASE WHEN (mode & {_IFMT}) = {stat.S_IFREG} THEN size END), 0) FROM inode")
        chunks, unique = self._one("SELECT count(*), count(DISTINCT id) FROM chunk")
        inline = self._one("SELECT count(*) FROM inline")[0]
        keys = ("inodes", "dirs", "files", "symlinks", "bytes")
        return {**dict(zip(keys, row, strict=True)), "chunks": chunks, "unique_chunks": unique,
                "inline": inline}

    def walk(self) -> Iterator[tuple[bytes, Inode]]:
        """Every path (b"/" for the root, b"/a/b" below it) with its inode, depth first in name
        order; a hardlinked file appears once per name."""
        yield b"/", self.getattr(self.root)
        stack: list[tuple[bytes, int]] = [(b"", self.root)]
        while stack:
            prefix, ino = stack.pop()
            subdirs = []
            for name, inode in self.readdir(ino):
                path = prefix + b"/" + name
                yield path, inode
                if inode.is_dir:
                    subdirs.append((path, inode.ino))
            stack.extend(reversed(subdirs))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> Flist:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ validation


def _expected_schema() -> list[tuple[str, str, str, str | None]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return _schema(conn)
    finally:
        conn.close()


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def _hostile(what: str) -> FlistError:
    return FlistError(f"hostile metadata: {what}")


def _validate(conn: sqlite3.Connection,
              connect: Callable[[], sqlite3.Connection] | None = None) -> None:
    """Every rule the mount relies on, checked in SQL (fast even for millions of rows); the first
    violation found, in the order the rules are listed, is raised as a FlistError naming it.

    With `connect` (a per-thread connection to the same read-only file), the independent scans
    run on several threads: SQLite works without the GIL, and validation is most of the time a
    cold mount takes before it can answer. The earliest rule broken is still the one reported,
    and a rule only counts as broken when every rule before it held, so the verdict and the
    message are those of a sequential run."""
    try:
        _check_identity(conn)
        _check_schema(conn)
        _check_root(conn)
        # The row limits are checked alongside the rest, not before: the database's size is already
        # bounded (MAX_DB_BYTES), so no rule can be made to scan without end.
        rules = [_check_counts, _quick_check, *_check_groups(), _check_coverage, _check_tree]
        workers = min(VALIDATION_THREADS, os.cpu_count() or 1)
        if connect is None or workers < 2:
            for rule in rules:
                rule(conn)
            return
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="flist-check") as pool:
            futures = [pool.submit(lambda rule=rule: rule(connect())) for rule in rules]
            for future in futures:  # in rule order: the first failure listed wins
                future.result()
    except sqlite3.DatabaseError as exc:
        raise _hostile(f"unreadable database ({exc})") from None


def _check_identity(conn: sqlite3.Connection) -> None:
    """Not an flist / unknown version, told apart before anything else is trusted."""
    try:
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'meta'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise FlistError(f"not an flist: not an SQLite database ({exc})") from None
    if kind is None or kind[0] != "table":
        raise FlistError("not an flist: no meta table")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise FlistError(f"not an flist: unreadable meta table ({exc})") from None
    if row is None:
        raise FlistError("not an flist: no version in meta")
    if str(row[0]) != str(FORMAT_VERSION):
        raise FlistError(f"unknown flist version {row[0]}")


def _check_schema(conn: sqlite3.Connection) -> None:
    if _schema(conn) != _EXPECTED_SCHEMA:
        extra = sorted({(t, n) for t, n, *_ in _schema(conn)} ^ {(t, n) for t, n, *_ in _EXPECTED_SCHEMA})
        raise _hostile(f"schema differs from version {FORMAT_VERSION}" + (f" ({extra})" if extra else ""))
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("hash") != HASH:
        raise _hostile(f"chunk hash {meta.get('hash')!r}, not {HASH}")
    if meta.get("chunk_size") != str(CHUNK_SIZE):
        raise _hostile(f"chunk size {meta.get('chunk_size')!r}, not {CHUNK_SIZE}")


def _quick_check(conn: sqlite3.Connection) -> None:
    check = conn.execute("PRAGMA quick_check(1)").fetchone()
    if check is None or check[0] != "ok":
        raise _hostile(f"corrupt database ({check[0] if check else 'no answer'})")


def _check_counts(conn: sqlite3.Connection) -> None:
    limits = {"inode": MAX_INODES, "dirent": MAX_DIRENTS, "chunk": MAX_CHUNKS, "xattr": MAX_XATTRS,
              "symlink": MAX_INODES, "inline": MAX_INODES, "tag": MAX_TAGS, "route": MAX_ROUTES,
              "prefetch": MAX_PREFETCH}
    for table, limit in limits.items():
        # count rows only up to the limit: an absurd table is not scanned to its end
        (count,) = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {limit + 1})").fetchone()
        if count > limit:
            raise _hostile(f"more than {limit} rows in {table}")


_IFMT, _IFDIR, _IFREG, _IFLNK = 0o170000, stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK
_IS_DIR = f"(i.mode & {_IFMT}) = {_IFDIR}"
_IS_REG = f"(i.mode & {_IFMT}) = {_IFREG}"
_IS_LNK = f"(i.mode & {_IFMT}) = {_IFLNK}"


def _not_hex(column: str) -> str:
    return f"ltrim({column}, '0123456789abcdef') != ''"


@attrs.frozen
class _Check:
    """One rule: rows of `source` matching `where` break it; `columns` of the first such row
    fill in `message`."""

    message: str
    columns: str
    source: str
    where: str


# Checks on the same source run as one scan (conditions OR'ed); only when that finds something
# are they run one by one, to name the first rule broken. Order matters: later rules may rely
# on earlier ones (chunk sums on chunk lists being on regular files...).
_CHECKS: list[_Check] = [
    # inodes
    _Check("inode number {0} out of range", "ino", "inode i", "i.ino < 1"),
    _Check("inode {0}: unknown file type (mode {1:o})", "ino, mode", "inode i",
           f"i.mode < 0 OR i.mode > 65535 OR (i.mode & {_IFMT}) NOT IN "
           f"({', '.join(str(t) for t in _FILE_TYPES)})"),
    _Check("inode {0}: uid/gid {1}/{2} out of range", "ino, uid, gid", "inode i",
           "i.uid < 0 OR i.uid > 4294967295 OR i.gid < 0 OR i.gid > 4294967295"),
    _Check("inode {0}: size {1} out of range", "ino, size", "inode i",
           f"i.size < 0 OR i.size > {MAX_FILE_SIZE}"),
    _Check("inode {0}: nlink {1} out of range", "ino, nlink", "inode i",
           "i.nlink < 1 OR i.nlink > 4294967295"),
    _Check("inode {0}: rdev {1} out of range", "ino, rdev", "inode i", "i.rdev < 0"),
    # directory entries: the names
    _Check("directory entry {1!r} in {0}: empty or longer than " + str(MAX_NAME) + " bytes",
           "parent, name", "dirent", f"length(name) = 0 OR length(name) > {MAX_NAME}"),
    _Check("directory entry {1!r} in {0}: name with '/' or NUL", "parent, name", "dirent",
           "instr(name, X'2F') > 0 OR instr(name, X'00') > 0"),
    _Check("directory entry {1!r} in {0}: '.' or '..' as a name", "parent, name", "dirent",
           "name IN (X'2E', X'2E2E')"),
    _Check("directory entry {1!r} in {0}: names the root", "parent, name", "dirent", f"ino = {ROOT_INO}"),
    # directory entries: what they join
    _Check("directory entry names inode {0}, which does not exist", "x",
           "(SELECT DISTINCT ino AS x FROM dirent) LEFT JOIN inode i ON i.ino = x", "i.ino IS NULL"),
    _Check("directory entries in inode {0}, which is not a directory", "x",
           "(SELECT DISTINCT parent AS x FROM dirent) LEFT JOIN inode i ON i.ino = x",
           f"i.ino IS NULL OR NOT {_IS_DIR}"),
    _Check("directory {0} has {1} directory entries (a directory has exactly one)", "x, n",
           "(SELECT ino AS x, count(*) AS n FROM dirent GROUP BY ino) JOIN inode i ON i.ino = x",
           f"{_IS_DIR} AND n != 1"),
    _Check("inode {0}: nlink {1}, but {2} directory entries name it", "x, i.nlink, n",
           "(SELECT ino AS x, count(*) AS n FROM dirent GROUP BY ino) JOIN inode i ON i.ino = x",
           f"NOT {_IS_DIR} AND i.nlink != n"),
    _Check("directory {0}: nlink {1}, but it has {2} subdirectories (nlink must be 2 + subdirectories)",
           "i.ino, i.nlink, coalesce(s.n, 0)",
           "inode i LEFT JOIN (SELECT d.parent AS x, count(*) AS n "
           "FROM inode c JOIN dirent d ON d.ino = c.ino "
           f"WHERE (c.mode & {_IFMT}) = {_IFDIR} GROUP BY d.parent) s ON s.x = i.ino",
           f"{_IS_DIR} AND i.nlink != 2 + coalesce(s.n, 0)"),
    # symlinks
    _Check("inode {0} has a symlink target but is not a symlink", "s.ino",
           "symlink s LEFT JOIN inode i ON i.ino = s.ino", f"i.ino IS NULL OR NOT {_IS_LNK}"),
    _Check("symlink {0}: target empty, longer than " + str(MAX_TARGET) + " bytes, or with NUL", "s.ino",
           "symlink s JOIN inode i ON i.ino = s.ino",
           f"length(s.target) = 0 OR length(s.target) > {MAX_TARGET} OR instr(s.target, X'00') > 0"),
    _Check("symlink {0}: size {1} but a target of {2} bytes", "s.ino, i.size, length(s.target)",
           "symlink s JOIN inode i ON i.ino = s.ino", "i.size != length(s.target)"),
    # xattrs
    _Check("xattr on inode {0}, which does not exist", "x",
           "(SELECT ino AS x, count(*) AS n FROM xattr GROUP BY ino) LEFT JOIN inode i ON i.ino = x",
           "i.ino IS NULL"),
    _Check("inode {0} has more than " + str(MAX_XATTRS_PER_INODE) + " xattrs", "x",
           "(SELECT ino AS x, count(*) AS n FROM xattr GROUP BY ino) LEFT JOIN inode i ON i.ino = x",
           f"n > {MAX_XATTRS_PER_INODE}"),
    _Check("xattr {1!r} on inode {0}: bad name (empty, NUL, or longer than " + str(MAX_XATTR_NAME)
           + " bytes)", "ino, name", "xattr",
           f"length(name) = 0 OR length(name) > {MAX_XATTR_NAME} OR instr(name, X'00') > 0"),
    _Check("xattr {1!r} on inode {0}: value longer than " + str(MAX_XATTR_VALUE) + " bytes",
           "ino, name", "xattr",
           f"length(value) > {MAX_XATTR_VALUE}"),
    # chunk lists
    # Raw digests, not hex text: a length check is all it takes (a text check per row cost
    # more than every other rule together).
    _Check("chunk {1} of inode {0}: id is not a " + str(ID_BYTES) + "-byte digest", "ino, idx", "chunk",
           f"typeof(id) != 'blob' OR length(id) != {ID_BYTES}"),
    _Check("chunk {1} of inode {0}: size {2} out of range", "ino, idx, size", "chunk",
           f"size < 1 OR size > {CHUNK_SIZE}"),
    _Check("chunk list on inode {0}, which is not a regular file", "x", "_chunk_lists",
           f"i.ino IS NULL OR NOT {_IS_REG}"),
    _Check("inode {0}: chunks numbered {1}..{2} ({3} chunks) and {4} bytes, but the file has {5} bytes",
           "x, lo, hi, n, total, i.size", "_chunk_lists", "lo != 0 OR hi != n - 1 OR total != i.size"),
    _Check("inode {0}: a chunk is short but not the last one", "x", "_chunk_lists",
           "shorts > 1 OR (shorts = 1 AND last_short != hi)"),
    # inline bodies
    _Check("inline data on inode {0}, which is not a regular file", "n.ino",
           "inline n LEFT JOIN inode i ON i.ino = n.ino", f"i.ino IS NULL OR NOT {_IS_REG}"),
    _Check("inode {0}: {1} inline bytes but size {2} (inline holds at most " + str(INLINE_MAX) + ")",
           "n.ino, length(n.data), i.size", "inline n LEFT JOIN inode i ON i.ino = n.ino",
           f"length(n.data) != i.size OR i.size > {INLINE_MAX}"),
    _Check("inode {0} has both inline data and chunks", "n.ino", "inline n",
           "EXISTS (SELECT 1 FROM chunk c WHERE c.ino = n.ino AND c.idx = 0)"),
    # tags, routes, prefetch
    _Check("tag {0!r}: key empty or longer than " + str(MAX_TAG_KEY) + " characters, or value too long",
           "key", "tag", f"length(key) = 0 OR length(key) > {MAX_TAG_KEY} "
           f"OR length(CAST(value AS BLOB)) > {MAX_TAG_VALUE}"),
    _Check("route {0!r}-{1!r}: not a range of hex prefixes", 'start, "end"', "route",
           f'length(start) NOT BETWEEN 1 AND {ID_LENGTH} OR length("end") NOT BETWEEN 1 AND {ID_LENGTH} '
           f'OR {_not_hex("start")} OR {_not_hex(chr(34) + "end" + chr(34))} '
           'OR substr(start, 1, length("end")) > "end"'),
    _Check("route url {0!r}: empty or too long", "url", "route",
           f"length(url) = 0 OR length(url) > {MAX_URL}"),
    _Check("prefetch entry {0}: inode {1} is not a regular file", "p.seq, p.ino",
           "prefetch p LEFT JOIN inode i ON i.ino = p.ino", f"i.ino IS NULL OR NOT {_IS_REG}"),
]

_CHUNK_LISTS = (f"(SELECT ino AS x, count(*) AS n, min(idx) AS lo, max(idx) AS hi, sum(size) AS total, "
                f"sum(size != {CHUNK_SIZE}) AS shorts, "
                f"max(CASE WHEN size != {CHUNK_SIZE} THEN idx END) AS last_short "
                "FROM chunk GROUP BY ino) LEFT JOIN inode i ON i.ino = x")


def _check_groups() -> list[Callable[[sqlite3.Connection], None]]:
    """One rule per source of `_CHECKS`, in order."""
    return [functools.partial(_check_group, source, list(group))
            for source, group in itertools.groupby(_CHECKS, key=lambda check: check.source)]


def _check_group(source: str, checks: list[_Check], conn: sqlite3.Connection) -> None:
    source = source.replace("_chunk_lists", _CHUNK_LISTS)
    if len(checks) > 1:
        anything = " OR ".join(f"({check.where})" for check in checks)
        if conn.execute(f"SELECT 1 FROM {source} WHERE {anything} LIMIT 1").fetchone() is None:
            return
    for check in checks:
        row = conn.execute(f"SELECT {check.columns} FROM {source} WHERE {check.where} LIMIT 1").fetchone()
        if row is not None:
            raise _hostile(check.message.format(*row))


def _check_root(conn: sqlite3.Connection) -> None:
    row = conn.execute(f"SELECT mode FROM inode WHERE ino = {ROOT_INO}").fetchone()
    if row is None:
        raise _hostile("no root inode")
    if not stat.S_ISDIR(row[0]):
        raise _hostile("root inode is not a directory")


def _scalar(conn: sqlite3.Connection, sql: str) -> Any:
    return conn.execute(sql).fetchone()[0]


def _check_coverage(conn: sqlite3.Connection) -> None:
    """Counting rules, cheap as whole-table counts: every inode but the root has a name, every
    symlink a target, every non-empty regular file its content. (Given the rules of `_CHECKS`, the rows
    counted are known to attach to inodes of the right kind, so equal counts mean a bijection.)
    Only when a count is off is the offending inode looked up, to name it."""
    named = _scalar(conn, "SELECT count(*) FROM (SELECT DISTINCT ino FROM dirent)")
    if named != _scalar(conn, "SELECT count(*) FROM inode") - 1:
        ino = _scalar(conn, f"SELECT i.ino FROM inode i WHERE i.ino != {ROOT_INO} AND NOT EXISTS "
                            "(SELECT 1 FROM dirent d WHERE d.ino = i.ino) LIMIT 1")
        raise _hostile(f"inode {ino} has no directory entry (unreachable)")
    symlinks = _scalar(conn, f"SELECT count(*) FROM inode i WHERE {_IS_LNK}")
    if _scalar(conn, "SELECT count(*) FROM symlink") != symlinks:
        ino = _scalar(conn, f"SELECT i.ino FROM inode i WHERE {_IS_LNK} AND NOT EXISTS "
                            "(SELECT 1 FROM symlink s WHERE s.ino = i.ino) LIMIT 1")
        raise _hostile(f"symlink {ino} has no target")
    with_content = _scalar(conn, "SELECT (SELECT count(*) FROM (SELECT DISTINCT ino FROM chunk)) "
                                 "+ (SELECT count(*) FROM inline WHERE length(data) > 0)")
    if with_content != _scalar(conn, f"SELECT count(*) FROM inode i WHERE {_IS_REG} AND i.size > 0"):
        row = conn.execute(
            f"SELECT i.ino, i.size FROM inode i WHERE {_IS_REG} AND i.size > 0 "
            "AND NOT EXISTS (SELECT 1 FROM chunk c WHERE c.ino = i.ino) "
            "AND NOT EXISTS (SELECT 1 FROM inline n WHERE n.ino = i.ino) LIMIT 1").fetchone()
        raise _hostile(f"file {row[0]} has size {row[1]} but neither chunks nor inline data")


def _check_tree(conn: sqlite3.Connection) -> None:
    """Every directory reachable from the root. With one entry per directory and parents that
    are directories (checked above), this rules out cycles: a cycle is never reachable."""
    reached = _scalar(conn,
        f"WITH RECURSIVE r(ino) AS (SELECT {ROOT_INO} UNION SELECT d.ino FROM dirent d "
        f"JOIN r ON d.parent = r.ino JOIN inode i ON i.ino = d.ino WHERE {_IS_DIR}) "
        "SELECT count(*) FROM r")
    dirs = _scalar(conn, f"SELECT count(*) FROM inode i WHERE {_IS_DIR}")
    if reached != dirs:
        raise _hostile(f"{dirs - reached} directories not reachable from the root (a cycle)")


_EXPECTED_SCHEMA = _expected_schema()
