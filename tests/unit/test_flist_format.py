"""The flist format: what the writer stores reads back exactly, a file that is not an flist (or
of another version) says so, and every rule the mount relies on is enforced when an flist is
opened: bad databases are crafted by hand with sqlite3, packed, and must fail with a clear
FlistError, never open."""

from __future__ import annotations

import gzip
import io
import sqlite3
import stat
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from g8os.fs import format as fmt
from g8os.fs.chunks import CHUNK_SIZE, chunk_id
from g8os.fs.format import Flist, FlistError, FlistWriter, Inode

pytestmark = pytest.mark.timeout(120)

ID_A = chunk_id(b"a" * CHUNK_SIZE)
ID_B = chunk_id(b"b" * 10)
CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)   # cap_net_raw+ep, VFS_CAP_REVISION_2

# inode numbers of the sample flist
ROOT, DIR, SMALL, BIG, LINK, CHR, FIFO, SOCK, EMPTY = range(1, 10)


def _inode(ino: int, mode: int, size: int = 0, nlink: int = 1, rdev: int = 0) -> Inode:
    return Inode(ino=ino, mode=mode, uid=1000 + ino, gid=2000 + ino, size=size, mtime_ns=10**18 + ino,
                 ctime_ns=10**18 + 2 * ino, rdev=rdev, nlink=nlink)


def write_sample(db: Path) -> None:
    """Every kind of inode: a directory, an inline file hardlinked twice, a chunked file, a
    symlink, a device, a fifo, a socket, an empty file; xattrs, tags, routes, a prefetch list."""
    w = FlistWriter(db)
    w.add_inode(_inode(ROOT, stat.S_IFDIR | 0o755, nlink=3))
    w.add_inode(_inode(DIR, stat.S_IFDIR | 0o1777, nlink=2), xattrs={b"user.dir": b"yes"})
    w.add_inode(_inode(SMALL, stat.S_IFREG | 0o4755, size=5, nlink=2), inline=b"hello",
                xattrs={b"security.capability": CAP, b"user.k": b"\x00\xff"})
    w.add_inode(_inode(BIG, stat.S_IFREG | 0o644, size=CHUNK_SIZE + 10),
                chunks=[(ID_A, CHUNK_SIZE), (ID_B, 10)])
    w.add_inode(_inode(LINK, stat.S_IFLNK | 0o777, size=len(b"/no/such\xfe")), target=b"/no/such\xfe")
    w.add_inode(_inode(CHR, stat.S_IFCHR | 0o620, rdev=(1 << 8) | 3))
    w.add_inode(_inode(FIFO, stat.S_IFIFO | 0o600))
    w.add_inode(_inode(SOCK, stat.S_IFSOCK | 0o755))
    w.add_inode(_inode(EMPTY, stat.S_IFREG | 0o000), inline=b"")
    for parent, name, ino in [(ROOT, b"d", DIR), (ROOT, b"small", SMALL), (DIR, b"hard", SMALL),
                              (ROOT, b"big", BIG), (ROOT, b"link", LINK), (ROOT, b"null", CHR),
                              (DIR, b"fifo", FIFO), (DIR, b"sock", SOCK), (ROOT, "ĕmpty\n".encode(), EMPTY)]:
        w.add_dirent(parent, name, ino)
    w.finish({"entrypoint": "/bin/sh", "env": "A=1"}, [("00", "7f", "http://a/"), ("80", "ff", "zdb://b:9900")],
             [BIG, SMALL])


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    db = tmp_path / "sample.sqlite3"
    write_sample(db)
    return db


def _pack(tmp_path: Path, db: Path, name: str = "x.flist") -> Path:
    out = tmp_path / name
    fmt.pack(db, out)
    return out


def test_round_trip(tmp_path, sample):
    with Flist.open(_pack(tmp_path, sample), tmp_path / "work") as fl:
        assert fl.root == 1 and fl.version == fmt.FORMAT_VERSION
        assert fl.getattr(SMALL) == _inode(SMALL, stat.S_IFREG | 0o4755, size=5, nlink=2)
        assert fl.getattr(CHR).rdev == (1 << 8) | 3
        assert fl.lookup(ROOT, b"small") == fl.lookup(DIR, b"hard") == fl.getattr(SMALL)
        assert fl.lookup(ROOT, b"nope") is None and fl.lookup(SMALL, b"x") is None
        assert [name for name, _ in fl.readdir(ROOT)] == [b"big", b"d", b"link", b"null", b"small",
                                                          "ĕmpty\n".encode()]
        assert fl.readlink(LINK) == b"/no/such\xfe"
        assert fl.xattrs(SMALL) == {b"security.capability": CAP, b"user.k": b"\x00\xff"}
        assert fl.xattrs(BIG) == {}
        assert fl.chunks(BIG) == [(ID_A, CHUNK_SIZE), (ID_B, 10)]
        assert fl.inline(SMALL) == b"hello" and fl.inline(EMPTY) == b"" and fl.inline(BIG) is None
        assert fl.tags() == {"entrypoint": "/bin/sh", "env": "A=1"}
        assert fl.routes() == [("00", "7f", "http://a/"), ("80", "ff", "zdb://b:9900")]
        assert fl.prefetch() == [BIG, SMALL]
        assert fl.stats() == {"inodes": 9, "dirs": 2, "files": 3, "symlinks": 1, "bytes": CHUNK_SIZE + 15,
                              "chunks": 2, "unique_chunks": 2, "inline": 2}
        assert fl.totals() == (9, CHUNK_SIZE + 15)
        assert [p for p, _ in fl.walk()] == [b"/", b"/big", b"/d", b"/link", b"/null", b"/small",
                                              "/ĕmpty\n".encode(), b"/d/fifo", b"/d/hard", b"/d/sock"]
        with pytest.raises(KeyError):
            fl.getattr(99)
        with pytest.raises(KeyError):
            fl.readlink(SMALL)


def test_readdir_is_sorted_by_bytes(tmp_path):
    db = tmp_path / "db"
    names = [b"\xff", b"B", b"a", b"a b", b"\x01", "é".encode()]
    w = FlistWriter(db)
    w.add_inode(_inode(1, stat.S_IFDIR | 0o755, nlink=2))
    for i, name in enumerate(names, start=2):
        w.add_inode(_inode(i, stat.S_IFREG | 0o644), inline=b"")
        w.add_dirent(1, name, i)
    w.finish()
    with Flist.from_db(db) as fl:
        assert [n for n, _ in fl.readdir(1)] == sorted(names)


def test_pack_is_deterministic(tmp_path):
    first, second = tmp_path / "1.sqlite3", tmp_path / "2.sqlite3"
    write_sample(first)
    write_sample(second)
    assert first.read_bytes() == second.read_bytes()
    assert _pack(tmp_path, first, "1.flist").read_bytes() == _pack(tmp_path, second, "2.flist").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompress(
            (tmp_path / "1.flist").read_bytes(), max_output_size=1 << 30))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mtime, member.uid, member.gid, member.uname, member.mode) == \
            (fmt.DB_NAME, 0, 0, 0, "", 0o644)


def test_unpack_names_the_database_by_digest(tmp_path, sample):
    flist = _pack(tmp_path, sample)
    db = fmt.unpack(flist, tmp_path / "work")
    assert db.name == f"{fmt.digest(flist)}.sqlite3" and db.read_bytes() == sample.read_bytes()
    assert fmt.unpack(flist, tmp_path / "work") == db
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [db.name]   # no temp files left


def test_a_gzip_tar_is_accepted(tmp_path, sample):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(sample, arcname="./flist.sqlite3")
    path = tmp_path / "old.flist"
    path.write_bytes(gzip.compress(raw.getvalue()))
    with Flist.open(path, tmp_path / "work") as fl:
        assert fl.getattr(SMALL).size == 5


def _tar_with(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def _sqlite_bytes(tmp_path: Path, *statements: str) -> bytes:
    db = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(db)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()
    return db.read_bytes()


@pytest.mark.parametrize("case", ["random", "empty", "zstd-junk", "no-db", "db-not-sqlite", "no-meta",
                                  "no-version", "legacy", "db-a-directory"])
def test_not_an_flist(tmp_path, case):
    content = {
        "random": lambda: bytes(range(256)) * 40,
        "empty": lambda: b"",
        "zstd-junk": lambda: zstandard.ZstdCompressor().compress(b"not a tar at all" * 100),
        "no-db": lambda: _tar_with({"README": b"hello"}),
        "db-not-sqlite": lambda: _tar_with({fmt.DB_NAME: b"plain text " * 100}),
        "no-meta": lambda: _tar_with({fmt.DB_NAME: _sqlite_bytes(tmp_path, "CREATE TABLE t(x)")}),
        "no-version": lambda: _tar_with({fmt.DB_NAME: _sqlite_bytes(
            tmp_path, "CREATE TABLE meta(key, value)", "INSERT INTO meta VALUES ('hash', 'blake3')")}),
        "legacy": lambda: _tar_with({"flistdb.sqlite3": _sqlite_bytes(tmp_path, "CREATE TABLE e(k, v)")}),
        "db-a-directory": lambda: _dir_member_tar(),
    }[case]()
    path = tmp_path / "bad.flist"
    path.write_bytes(content)
    with pytest.raises(FlistError, match=r"^not an flist"):
        Flist.open(path, tmp_path / "work")
    leftovers = [p.name for p in (tmp_path / "work").iterdir() if not p.name.endswith(".sqlite3")]
    assert leftovers == []


@pytest.mark.parametrize("damage", ["cut-in-the-database", "cut-after-the-database", "flipped-byte"])
def test_damaged_packed_flist_is_refused(tmp_path, sample, damage):
    """The fast path for `pack`'s own layout reads the database straight from the decompressor:
    a cut or corrupted archive must still be refused, never half a database accepted."""
    raw = bytearray(_pack(tmp_path, sample).read_bytes())
    if damage == "cut-in-the-database":
        raw = raw[:len(raw) // 2]
    elif damage == "cut-after-the-database":
        raw = raw[:-6]   # the frame's end and checksum are gone
    else:
        raw[len(raw) // 2] ^= 0xFF
    path = tmp_path / "damaged.flist"
    path.write_bytes(bytes(raw))
    with pytest.raises(FlistError, match=r"^(not an flist|hostile metadata)"):
        Flist.open(path, tmp_path / "work")


def _dir_member_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(fmt.DB_NAME)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    return raw.getvalue()


def test_unknown_version(tmp_path, sample):
    with sqlite3.connect(sample) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    conn.close()
    with pytest.raises(FlistError, match=r"^unknown flist version 99$"):
        Flist.open(_pack(tmp_path, sample), tmp_path / "work")


def test_the_writer_keeps_credentials_out(tmp_path):
    w = FlistWriter(tmp_path / "db")
    w.add_inode(_inode(1, stat.S_IFDIR | 0o755, nlink=2))
    with pytest.raises(ValueError, match="credentials"):
        w.finish({}, [("00", "ff", "redis://user:secret@host:6379")], [])
    w.close()


def test_the_writer_refuses_to_finish_a_bad_flist(tmp_path):
    w = FlistWriter(tmp_path / "db")
    w.add_inode(_inode(1, stat.S_IFDIR | 0o755, nlink=2))
    w.add_inode(_inode(2, stat.S_IFREG | 0o644, size=7))   # no content, not named
    with pytest.raises(FlistError, match="hostile metadata"):
        w.finish()


def test_reads_from_many_threads(tmp_path, sample):
    with Flist.open(_pack(tmp_path, sample), tmp_path / "work") as fl:
        expected = list(fl.walk())
        failures: list[BaseException] = []

        def reader() -> None:
            try:
                for _ in range(200):
                    assert list(fl.walk()) == expected
                    assert fl.lookup(DIR, b"hard") == fl.getattr(SMALL)
                    assert fl.chunks(BIG)[1] == (ID_B, 10)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


# ------------------------------------------------------------------------------ hostile metadata

LONG = b"n" * 256
FILE, DIRECTORY = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755


def _ins_inode(ino: int, mode: int, size: int = 0, nlink: int = 1) -> tuple[str, tuple]:
    return ("INSERT INTO inode VALUES (?, ?, 0, 0, ?, 0, 0, 0, ?)", (ino, mode, size, nlink))


# (case id, statements run on a valid sample, what the error must say)
HOSTILE: list[tuple[str, list[tuple[str, tuple]], str]] = [
    ("slash-in-name", [("UPDATE dirent SET name = X'612F62' WHERE name = CAST('big' AS BLOB)", ())],
     "name with '/' or NUL"),
    ("nul-in-name", [("UPDATE dirent SET name = X'6100' WHERE name = CAST('big' AS BLOB)", ())],
     "name with '/' or NUL"),
    ("dot-name", [("UPDATE dirent SET name = X'2E' WHERE name = CAST('big' AS BLOB)", ())], "'.' or '..'"),
    ("dotdot-name", [("UPDATE dirent SET name = X'2E2E' WHERE name = CAST('big' AS BLOB)", ())],
     "'.' or '..'"),
    ("empty-name", [("UPDATE dirent SET name = X'' WHERE name = CAST('big' AS BLOB)", ())],
     "empty or longer"),
    ("long-name", [("UPDATE dirent SET name = ? WHERE name = CAST('big' AS BLOB)", (LONG,))],
     "empty or longer"),
    ("dangling-entry", [("INSERT INTO dirent VALUES (1, X'7A', 999)", ())],
     "names inode 999, which does not exist"),
    ("parent-not-a-dir", [("INSERT INTO dirent VALUES (?, X'7A', ?)", (BIG, FIFO))], "is not a directory"),
    ("parent-missing", [("INSERT INTO dirent VALUES (555, X'7A', ?)", (FIFO,))], "is not a directory"),
    ("directory-hardlink", [("INSERT INTO dirent VALUES (1, X'7A', ?)", (DIR,))], "exactly one"),
    ("entry-names-root", [("INSERT INTO dirent VALUES (?, X'7570', 1)", (DIR,))], "names the root"),
    ("cycle", [_ins_inode(100, DIRECTORY, nlink=3), _ins_inode(101, DIRECTORY, nlink=3),
               ("INSERT INTO dirent VALUES (100, X'61', 101)", ()),
               ("INSERT INTO dirent VALUES (101, X'62', 100)", ())], "not reachable from the root"),
    ("self-loop", [_ins_inode(100, DIRECTORY, nlink=3), ("INSERT INTO dirent VALUES (100, X'61', 100)", ())],
     "not reachable from the root"),
    ("orphan-inode", [_ins_inode(100, FILE)], "inode 100 has no directory entry"),
    ("size-vs-chunks", [("UPDATE inode SET size = size + 1 WHERE ino = ?", (BIG,))], "but the file has"),
    ("chunk-gap", [("UPDATE chunk SET idx = 5 WHERE idx = 1", ())], "chunks numbered 0..5"),
    ("short-chunk-first", [("UPDATE chunk SET size = 10 WHERE idx = 0", ()),
                           ("UPDATE chunk SET size = ? WHERE idx = 1", (CHUNK_SIZE,))],
     "short but not the last"),
    ("chunk-too-big", [("UPDATE chunk SET size = ? WHERE idx = 1", (CHUNK_SIZE + 1,))], "out of range"),
    ("chunk-id-short", [("UPDATE chunk SET id = X'abc0' WHERE idx = 0", ())], "32-byte digest"),
    ("chunk-id-long", [("UPDATE chunk SET id = ? WHERE idx = 0", (bytes(33),))], "32-byte digest"),
    ("chunks-on-a-dir", [("INSERT INTO chunk VALUES (?, 0, ?, 1)", (DIR, bytes.fromhex(ID_B)))],
     "not a regular file"),
    ("inline-size", [("UPDATE inode SET size = 4 WHERE ino = ?", (SMALL,))], "inline bytes but size"),
    ("inline-too-big", [("UPDATE inline SET data = ? WHERE ino = ?", (b"x" * 5000, SMALL)),
                        ("UPDATE inode SET size = 5000 WHERE ino = ?", (SMALL,))], "at most 4096"),
    ("inline-and-chunks", [("INSERT INTO chunk VALUES (?, 0, ?, 5)", (SMALL, bytes.fromhex(ID_B)))],
     "both inline data and chunks"),
    ("inline-on-a-fifo", [("INSERT INTO inline VALUES (?, X'')", (FIFO,))], "not a regular file"),
    ("no-content", [("DELETE FROM inline WHERE ino = ?", (SMALL,))], "neither chunks nor inline"),
    ("symlink-no-target", [("DELETE FROM symlink", ())], "has no target"),
    ("target-on-a-file", [("INSERT INTO symlink VALUES (?, X'61')", (SMALL,))], "not a symlink"),
    ("target-too-long", [("UPDATE symlink SET target = ?", (b"a" * 4097,)),
                         ("UPDATE inode SET size = 4097 WHERE ino = ?", (LINK,))], "target empty, longer"),
    ("target-with-nul", [("UPDATE symlink SET target = X'610062'", ()),
                         ("UPDATE inode SET size = 3 WHERE ino = ?", (LINK,))], "target empty, longer"),
    ("symlink-size", [("UPDATE inode SET size = 1 WHERE ino = ?", (LINK,))], "size 1 but a target"),
    ("xattr-value-too-long", [("INSERT INTO xattr VALUES (?, X'6161', ?)", (BIG, b"v" * 65537))],
     "value longer than"),
    ("xattr-name-nul", [("INSERT INTO xattr VALUES (?, X'610062', X'')", (BIG,))], "bad name"),
    ("xattr-on-nothing", [("INSERT INTO xattr VALUES (999, X'61', X'')", ())], "does not exist"),
    ("file-nlink", [("UPDATE inode SET nlink = 1 WHERE ino = ?", (SMALL,))],
     "nlink 1, but 2 directory entries"),
    ("dir-nlink", [("UPDATE inode SET nlink = 7 WHERE ino = 1", ())], "nlink must be 2 + subdirectories"),
    ("unknown-type", [("UPDATE inode SET mode = ? WHERE ino = ?", (0o170644, FIFO))], "unknown file type"),
    ("mode-too-big", [("UPDATE inode SET mode = ? WHERE ino = ?", (1 << 20 | FILE, BIG))],
     "unknown file type"),
    ("no-root", [("DELETE FROM inode WHERE ino = 1", ())], "no root inode"),
    ("root-not-a-dir", [("UPDATE inode SET mode = ? WHERE ino = 1", (FILE,))],
     "root inode is not a directory"),
    ("inode-zero", [("UPDATE dirent SET ino = 0 WHERE ino = ?", (FIFO,)),
                    ("UPDATE inode SET ino = 0 WHERE ino = ?", (FIFO,))], "inode number 0 out of range"),
    ("negative-size", [("UPDATE inode SET size = -1 WHERE ino = ?", (FIFO,))], "size -1 out of range"),
    ("absurd-size", [("UPDATE inode SET size = ? WHERE ino = ?", (1 << 60, FIFO))], "out of range"),
    ("uid-out-of-range", [("UPDATE inode SET uid = ? WHERE ino = ?", (1 << 32, FIFO))], "uid/gid"),
    ("prefetch-unknown", [("INSERT INTO prefetch VALUES (9, 999)", ())], "prefetch entry 9"),
    ("prefetch-a-dir", [("INSERT INTO prefetch VALUES (9, ?)", (DIR,))], "prefetch entry 9"),
    ("route-not-hex", [("INSERT INTO route VALUES ('zz', 'ff', 'http://x')", ())],
     "not a range of hex prefixes"),
    ("route-inverted", [("INSERT INTO route VALUES ('80', '7f', 'http://x')", ())], "not a range of hex"),
    ("extra-table", [("CREATE TABLE extra(x)", ())], "schema differs"),
    ("a-view", [("CREATE VIEW v AS SELECT 1", ())], "schema differs"),
    ("a-trigger", [("CREATE TRIGGER t AFTER INSERT ON tag BEGIN SELECT 1; END", ())], "schema differs"),
    ("loose-table", [("DROP TABLE prefetch", ()), ("CREATE TABLE prefetch(seq, ino)", ())], "schema differs"),
    ("chunk-size", [("UPDATE meta SET value = '4096' WHERE key = 'chunk_size'", ())], "chunk size"),
    ("hash", [("UPDATE meta SET value = 'md5' WHERE key = 'hash'", ())], "chunk hash"),
]


@pytest.mark.parametrize(("statements", "message"), [(s, m) for _, s, m in HOSTILE],
                         ids=[case for case, _, _ in HOSTILE])
def test_hostile_metadata_is_refused(tmp_path, sample, statements, message):
    conn = sqlite3.connect(sample)
    for sql, args in statements:
        conn.execute(sql, args)
    conn.commit()
    conn.close()
    with pytest.raises(FlistError, match=r"^hostile metadata: ") as caught:
        Flist.open(_pack(tmp_path, sample), tmp_path / "work")
    assert message in str(caught.value)


def test_absurd_counts_are_refused(tmp_path, sample, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_INODES", 5)
    with pytest.raises(FlistError, match="more than 5 rows in inode"):
        Flist.open(_pack(tmp_path, sample), tmp_path / "work")


def test_a_decompression_bomb_is_refused(tmp_path, sample, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_DB_BYTES", 1000)
    with pytest.raises(FlistError, match="hostile metadata: database of"):
        Flist.open(_pack(tmp_path, sample), tmp_path / "work")


def test_a_corrupt_database_is_refused(tmp_path, sample):
    data = bytearray(sample.read_bytes())
    page = 4096
    for offset in range(2 * page + 8, len(data) - page, page):   # trash every b-tree page but the first two
        data[offset:offset + 64] = b"\xa5" * 64
    sample.write_bytes(bytes(data))
    with pytest.raises(FlistError):
        Flist.open(_pack(tmp_path, sample), tmp_path / "work")
