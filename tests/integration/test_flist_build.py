"""Building flists from real trees: a directory with every kind of file (made here, as root),
checked attribute by attribute and byte by byte against what the flist and the store give back;
rebuilds are byte-identical and upload nothing; a tar of the tree gives the very same flist."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import zstandard

from g8os.fs.builder import BuildError, Tree, build_from_dir, build_from_tar, build_tree
from g8os.fs.chunks import CHUNK_SIZE, decompress
from g8os.fs.format import Flist
from g8os.fs.store import DirStore

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="mknod, chown and security.capability need root"),
]

CAP_NET_RAW = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)   # cap_net_raw+ep, VFS_CAP_REVISION_2
UNICODE = "naïve – ファイル.txt".encode()
ODD = [b"\xff\xfe-not-utf8", b"new\nline", b"back\\slash", b" spaces ", b"-dash", b"*?[glob]"]
DEPTH = 100


class SpyStore(DirStore):
    """A DirStore that counts what the builder asks of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lock = threading.Lock()
        self.exists_calls: list[list[str]] = []
        self.put_ids: list[str] = []

    def exists(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        with self.lock:
            self.exists_calls.append(ids)
        return super().exists(ids)

    def put(self, chunks: Mapping[str, bytes]) -> None:
        with self.lock:
            self.put_ids.extend(chunks)
        super().put(chunks)


def _write(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def _set_capability(path: Path) -> None:
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(path)], check=True)
    else:
        os.setxattr(path, "security.capability", CAP_NET_RAW)


def make_tree(root: Path) -> Path:
    """Every kind of inode a root filesystem holds, with the odd corners."""
    rnd = os.urandom(3 * CHUNK_SIZE + CHUNK_SIZE // 2)
    root.mkdir()
    os.chmod(root, 0o755)
    _write(root / "empty", b"")
    _write(root / "small.txt", b"hello\n")
    _write(root / "exact-inline", b"i" * 4096)
    _write(root / "just-over", b"o" * 4097)
    _write(root / "one-mib", rnd[:CHUNK_SIZE])
    _write(root / "big.bin", rnd)                              # 3.5 MiB: 4 chunks, the last short
    _write(root / "copy.bin", rnd)                             # the same chunks again
    with open(root / "sparse", "wb") as f:                     # 5 MiB, one page of data
        f.truncate(5 * CHUNK_SIZE)
        f.seek(2 * CHUNK_SIZE + 100)
        f.write(b"data in the middle of holes")
    (root / "dir" / "sub").mkdir(parents=True)
    _write(root / "hard-a", os.urandom(10_000))
    os.link(root / "hard-a", root / "dir" / "hard-b")
    os.link(root / "hard-a", root / "dir" / "sub" / "hard-c")
    _write(root / "hard-small", b"tiny")
    os.link(root / "hard-small", root / "dir" / "hard-small-2")
    os.symlink("small.txt", root / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("nowhere/at/all", root / "dangling")
    os.symlink("../../..", root / "dir" / "up-link")
    os.symlink("dir", root / "dir-link")
    dev = root / "dev"
    dev.mkdir()
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(dev / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(dev / "fifo", 0o600)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(dev / "sock"))
    finally:
        sock.close()
    ping = _write(root / "ping", b"\x7fELF pretend" * 500, 0o755)
    _set_capability(ping)
    os.setxattr(root / "small.txt", "user.comment", b"a comment")
    os.setxattr(root / "small.txt", "user.binary", bytes(range(256)))
    os.setxattr(root / "dir", "user.on-a-dir", b"yes")
    _write(root / "setuid", b"#!/bin/sh\n", 0o4755)
    (root / "setgid-dir").mkdir()
    os.chmod(root / "setgid-dir", 0o2775)
    (root / "sticky").mkdir()
    os.chmod(root / "sticky", 0o1777)
    _write(root / "nothing", b"no permissions at all", 0o000)
    owned = _write(root / "owned", b"someone else's")
    os.chown(owned, 1234, 5678)
    os.chown(root / "rel-link", 4321, 8765, follow_symlinks=False)
    (root / "empty-dir").mkdir()
    _write(root / os.fsdecode(UNICODE), "ünïcödé\n".encode())
    for name in ODD:
        _write(Path(os.fsdecode(bytes(root) + b"/" + name)), name)
    deep = root
    for level in range(DEPTH):
        deep = deep / f"level-{level:02d}"
    deep.mkdir(parents=True)
    _write(deep / "bottom", b"the bottom")
    os.utime(root / "small.txt", ns=(0, 1_234_567_890_123_456_789))   # nanoseconds kept
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


# ---------------------------------------------------------------------------------- reference


def reference(root: Path) -> dict[bytes, tuple[os.stat_result, dict[bytes, bytes]]]:
    """Every path under root (b"/" for root) with its lstat and xattrs, read directly."""
    top = bytes(root)
    found = {b"/": (os.lstat(top), _xattrs(top))}
    stack = [b""]
    while stack:
        rel = stack.pop()
        for name in os.listdir(top + rel or top):
            path = rel + b"/" + name
            st = os.lstat(top + path)
            found[path] = (st, _xattrs(top + path))
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return found


def _xattrs(path: bytes) -> dict[bytes, bytes]:
    return {os.fsencode(n): os.getxattr(path, n, follow_symlinks=False)
            for n in os.listxattr(path, follow_symlinks=False)}


def content(flist: Flist, store: DirStore, ino: int) -> bytes:
    inline = flist.inline(ino)
    if inline is not None:
        return inline
    chunks = flist.chunks(ino)
    blobs = store.get([c for c, _ in chunks])
    parts = [decompress(blobs[c], c) for c, _ in chunks]
    assert [len(p) for p in parts] == [n for _, n in chunks]
    return b"".join(parts)


def assert_same(root: Path, flist: Flist, store: DirStore) -> None:
    """The flist describes exactly the tree at root: names, every attribute, every byte."""
    ref = reference(root)
    walked = dict(flist.walk())
    assert sorted(walked) == sorted(ref)
    first_path: dict[tuple[int, int], bytes] = {}
    for path, inode in walked.items():
        st, xattrs = ref[path]
        assert inode.mode == st.st_mode, path
        assert (inode.uid, inode.gid) == (st.st_uid, st.st_gid), path
        assert inode.mtime_ns == st.st_mtime_ns == inode.ctime_ns, path
        assert inode.nlink == st.st_nlink, path
        assert flist.xattrs(inode.ino) == xattrs, path
        assert inode.rdev == (st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0), path
        key = (st.st_dev, st.st_ino)
        if key in first_path:   # a hardlink: the same inode as the first name
            assert walked[first_path[key]].ino == inode.ino, path
        else:
            first_path[key] = path
        full = bytes(root) + (b"" if path == b"/" else path)
        if stat.S_ISREG(st.st_mode):
            assert inode.size == st.st_size, path
            with open(full, "rb") as f:
                assert content(flist, store, inode.ino) == f.read(), path
            assert (flist.inline(inode.ino) is not None) == (st.st_size <= 4096), path
        elif stat.S_ISLNK(st.st_mode):
            assert flist.readlink(inode.ino) == os.readlink(full), path
            assert inode.size == len(os.readlink(full)), path
        else:
            assert inode.size == 0, path
    assert len({i.ino for i in walked.values()}) == len(first_path)


# ---------------------------------------------------------------------------------- tests


def test_every_kind_of_file_survives(tmp_path, tree):
    store = DirStore(tmp_path / "store")
    report = build_from_dir(tree, tmp_path / "a.flist", store)
    with Flist.open(tmp_path / "a.flist", tmp_path / "work") as flist:
        assert_same(tree, flist, store)
        assert flist.xattrs(flist.lookup(1, b"ping").ino)[b"security.capability"][:4] in (
            CAP_NET_RAW[:4], b"\x00\x00\x00\x03")
        sparse = flist.chunks(flist.lookup(1, b"sparse").ino)
        assert len(sparse) == 5 and len({c for c, _ in sparse}) == 2   # holes: one all-zero chunk
        assert flist.chunks(flist.lookup(1, b"copy.bin").ino) == flist.chunks(flist.lookup(1, b"big.bin").ino)
        stats = flist.stats()
        assert flist.routes() == [("00", "ff", store.url)]
    assert (report.dirs, report.symlinks, report.specials, report.hardlinks) == (7 + DEPTH, 5, 4, 3)
    assert report.files == stats["files"] and report.bytes == stats["bytes"]
    assert report.chunks == stats["unique_chunks"] == report.chunks_uploaded
    assert report.chunks_present == 0
    # 3.5 MiB random (4) + 1 MiB (its first) + just-over + hard-a + ping + sparse (zero, data)
    assert report.chunks == 4 + 0 + 1 + 1 + 1 + 2


def test_the_same_tree_gives_the_same_bytes_and_uploads_nothing_again(tmp_path, tree):
    store = SpyStore(tmp_path / "store")
    first = build_from_dir(tree, tmp_path / "1.flist", store, workers=1)
    assert len(store.exists_calls) == 1 and sorted(store.put_ids) == sorted(set(store.put_ids))
    assert len(store.put_ids) == first.chunks_uploaded == first.chunks
    store.exists_calls.clear()
    store.put_ids.clear()
    second = build_from_dir(tree, tmp_path / "2.flist", store, workers=8)
    assert (tmp_path / "1.flist").read_bytes() == (tmp_path / "2.flist").read_bytes()
    assert len(store.exists_calls) == 1 and store.put_ids == []
    assert (second.chunks_uploaded, second.chunks_present) == (0, first.chunks)


def test_only_the_missing_chunks_are_uploaded(tmp_path, tree):
    store = SpyStore(tmp_path / "store")
    first = build_from_dir(tree, tmp_path / "1.flist", store)
    stored = sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file())
    lost = stored[:2]
    for path in lost:
        path.unlink()
    store.exists_calls.clear()
    store.put_ids.clear()
    again = build_from_dir(tree, tmp_path / "2.flist", store)
    assert len(store.exists_calls) == 1 and sorted(store.exists_calls[0]) == store.exists_calls[0]
    assert sorted(store.put_ids) == sorted(p.name for p in lost)
    assert (again.chunks_uploaded, again.chunks_present) == (2, first.chunks - 2)
    with Flist.open(tmp_path / "2.flist", tmp_path / "work") as flist:
        assert_same(tree, flist, store)


def test_progress_is_reported(tmp_path, tree):
    calls: list[tuple[int, int, str]] = []
    build_from_dir(tree, tmp_path / "a.flist", DirStore(tmp_path / "store"),
                   progress=lambda *a: calls.append(a))
    for phase in ("hashing", "uploading", "writing"):
        seen = [(done, total) for done, total, message in calls if message == phase]
        assert seen, phase
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), phase
        assert seen[-1][0] == seen[-1][1] > 0, phase


def _without_socket(tree: Path) -> None:
    """Tar has no sockets: take it out, leaving its directory's mtime as it was."""
    st = os.stat(tree / "dev")
    os.unlink(tree / "dev" / "sock")
    os.utime(tree / "dev", ns=(st.st_atime_ns, st.st_mtime_ns))


def _python_tar(tree: Path, out: Path, compression: str) -> Path:
    """A pax tar written by Python's tarfile, with xattrs and nanosecond mtimes as pax headers
    (SCHILY.xattr.*, the form GNU tar and Docker use)."""

    def describe(info: tarfile.TarInfo) -> tarfile.TarInfo:
        path = os.fsencode(tree) + b"/" + info.name.encode("utf-8", "surrogateescape")
        st = os.lstat(path)
        info.pax_headers["mtime"] = f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"
        for name, value in _xattrs(path).items():
            key = "SCHILY.xattr." + name.decode("utf-8", "surrogateescape")
            info.pax_headers[key] = value.decode("utf-8", "surrogateescape")
        return info

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        tar.add(os.fspath(tree), arcname=".", filter=describe)
    data = raw.getvalue()
    if compression == "gz":
        data = gzip.compress(data, mtime=0)
    elif compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("maker", ["gnu-tar", "python-plain", "python-gz", "python-zst"])
def test_a_tar_of_the_tree_gives_the_same_flist(tmp_path, tree, maker):
    _without_socket(tree)
    store = DirStore(tmp_path / "store")
    build_from_dir(tree, tmp_path / "dir.flist", store)
    archive = tmp_path / "tree.tar"
    if maker == "gnu-tar":
        if shutil.which("tar") is None:
            pytest.skip("no GNU tar")
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=posix", "-C", str(tree),
                        "-cpf", str(archive), "."], check=True)
    else:
        archive = _python_tar(tree, archive, maker.split("-")[1])
    report = build_from_tar(archive, tmp_path / "tar.flist", store)
    assert report.chunks_uploaded == 0
    assert (tmp_path / "tar.flist").read_bytes() == (tmp_path / "dir.flist").read_bytes()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def test_tar_later_members_win_and_parents_are_implied(tmp_path):
    archive = tmp_path / "t.tar"
    archive.write_bytes(_tar([
        (_info("/abs/file"), b"first"),
        (_info("abs/file"), b"second, longer"),
        (_info("a/b/c/deep"), b"implied parents"),
        (_info("link-to-deep", tarfile.LNKTYPE, linkname="a/b/c/deep"), None),
        (_info("gone"), b"x"),
        (_info("gone", tarfile.SYMTYPE, linkname="abs/file"), None),
        (_info("./a/", tarfile.DIRTYPE, mode=0o700, uid=7), None),
    ]))
    store = DirStore(tmp_path / "store")
    build_from_tar(archive, tmp_path / "t.flist", store)
    with Flist.open(tmp_path / "t.flist", tmp_path / "work") as flist:
        paths = dict(flist.walk())
        assert content(flist, store, paths[b"/abs/file"].ino) == b"second, longer"
        assert paths[b"/link-to-deep"].ino == paths[b"/a/b/c/deep"].ino and paths[b"/a/b/c/deep"].nlink == 2
        assert flist.readlink(paths[b"/gone"].ino) == b"abs/file"
        assert (paths[b"/a"].mode, paths[b"/a"].uid) == (stat.S_IFDIR | 0o700, 7)
        assert paths[b"/a/b"].mode == stat.S_IFDIR | 0o755


@pytest.mark.parametrize(("members", "message"), [
    ([(_info("../escape"), b"x")], "'..'"),
    ([(_info("a/../../escape"), b"x")], "'..'"),
    ([(_info("link", tarfile.LNKTYPE, linkname="missing"), None)], "no such file"),
    ([(_info("file"), b"x"), (_info("file/below"), b"y")], "is not a directory"),
    ([(_info("x" * 300), b"x")], "longer than 255"),
])
def test_a_hostile_tar_is_refused(tmp_path, members, message):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar(members))
    with pytest.raises(BuildError, match=message):
        build_from_tar(archive, tmp_path / "bad.flist", DirStore(tmp_path / "store"))
    assert not (tmp_path / "bad.flist").exists()


def test_not_a_tar(tmp_path):
    junk = _write(tmp_path / "junk.tar", os.urandom(5000))
    with pytest.raises(BuildError, match="not a tar archive"):
        build_from_tar(junk, tmp_path / "x.flist", DirStore(tmp_path / "store"))


def test_a_file_that_changes_during_the_build_fails_it(tmp_path, tree):
    scanned = Tree.from_dir(tree)
    _write(tree / "big.bin", b"shorter now")
    with pytest.raises(BuildError, match="changed while the flist was built"):
        build_tree(scanned, tmp_path / "a.flist", DirStore(tmp_path / "store"))
    assert not (tmp_path / "a.flist").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tags_routes_and_prefetch_are_recorded(tmp_path, tree):
    build_from_dir(tree, tmp_path / "a.flist", DirStore(tmp_path / "store"),
                   tags={"entrypoint": "/ping", "env": "PATH=/bin"},
                   routes=[("00", "7F", "redis://user:secret@host:6379/0"), ("80", "ff", "http://hub/store?token=x")],
                   prefetch=[b"/big.bin", "small.txt"])
    with Flist.open(tmp_path / "a.flist", tmp_path / "work") as flist:
        assert flist.tags() == {"entrypoint": "/ping", "env": "PATH=/bin"}
        assert flist.routes() == [("00", "7f", "redis://host:6379/0"), ("80", "ff", "http://hub/store")]
        assert flist.prefetch() == [flist.lookup(1, b"big.bin").ino, flist.lookup(1, b"small.txt").ino]
    with pytest.raises(BuildError, match="prefetch"):
        build_from_dir(tree, tmp_path / "b.flist", DirStore(tmp_path / "store"), prefetch=["dir"])
