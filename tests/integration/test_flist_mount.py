"""The flist mount on real FUSE and overlay mounts (as root): `python -m g8os.fs.mount` serving
flists built by fs/builder.py into a directory store, or through an HTTP store (`python -m
http.server` over the same directory) that the tests stop, freeze and restart.

Every mount is undone and every server stopped even when a test fails: servers are started
through `Servers`, whose teardown kills what is left and lazily unmounts anything still
mounted below the test's directory, then checks that nothing is.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wire import wait_for

pytestmark = pytest.mark.timeout(180)

if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
    pytest.skip("needs root and /dev/fuse", allow_module_level=True)

builder = pytest.importorskip("g8os.fs.builder")

from g8os.fs.chunks import CHUNK_SIZE, chunk_id, compress  # noqa: E402
from g8os.fs.format import FORMAT_VERSION  # noqa: E402
from g8os.fs.mount import mount_overlay, mounts, unmount_overlay  # noqa: E402
from g8os.fs.store import DirStore  # noqa: E402

PY = sys.executable
MiB = 1 << 20
CAP_NET_RAW = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
RAW_NAME = b"raw-\xff\xfe-name"   # not UTF-8


# ----------------------------------------------------------------------------- the source tree

def make_tree(root: Path) -> None:
    """Every kind of file the flist has to carry, with awkward names, modes, owners and times."""
    rnd = __import__("random").Random(8)

    def data(n: int) -> bytes:
        return rnd.randbytes(n)

    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "tiny.txt").write_bytes(b"hello flist\n")
    (root / "inline-max").write_bytes(data(4096))
    (root / "inline-max+1").write_bytes(data(4097))
    (root / "one-chunk").write_bytes(data(CHUNK_SIZE))
    (root / "two-chunks").write_bytes(data(2 * CHUNK_SIZE))
    (root / "big.bin").write_bytes(data(3 * MiB + 512 * 1024 + 123))      # > 3 MiB, 4 chunks
    (root / "huge.bin").write_bytes(data(10 * MiB + 7))                   # for mid-read store stops
    (root / "single.bin").write_bytes(data(600_000))                     # one chunk nobody shares
    with open(root / "sparse", "wb") as f:                                 # holes around one extent
        f.truncate(5 * MiB)
        f.seek(2 * MiB + 100)
        f.write(data(5000))
    (root / "same-a").write_bytes(b"z" * 200_000)                         # two files, one chunk id
    (root / "same-b").write_bytes(b"z" * 200_000)
    # hardlinks: within a directory, across directories, of a chunked and of an inline file
    (root / "links").mkdir()
    os.link(root / "big.bin", root / "links" / "big-again")
    os.link(root / "tiny.txt", root / "links" / "tiny-1")
    os.link(root / "tiny.txt", root / "links" / "tiny-2")
    # symlinks: relative, absolute, dangling, to a directory, a chain, a long target
    os.symlink("tiny.txt", root / "rel-link")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("no/such/target", root / "dangling")
    os.symlink("links", root / "dir-link")
    os.symlink("rel-link", root / "chain-link")
    os.symlink("x" * 1000, root / "long-link")
    # special files
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev" / "loop9", 0o660 | stat.S_IFBLK, os.makedev(7, 9))
    os.mkfifo(root / "dev" / "fifo", 0o644)
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    try:
        os.chdir(root / "dev")  # a relative bind: the socket path limit is 108 bytes
        sock.bind("sock")
    finally:
        os.chdir(cwd)
        sock.close()
    # xattrs: user, trusted, security.capability (as on ping), on files and directories
    os.setxattr(root / "tiny.txt", "user.comment", b"a note")
    os.setxattr(root / "tiny.txt", "user.empty", b"")
    os.setxattr(root / "big.bin", "user.binary", bytes(range(256)))
    os.setxattr(root / "big.bin", "trusted.g8os", b"trusted value")
    os.setxattr(root / "links", "user.dir", b"on a directory")
    (root / "ping").write_bytes(b"#!/bin/sh\necho ping\n")
    os.chmod(root / "ping", 0o755)
    os.setxattr(root / "ping", "security.capability", CAP_NET_RAW)
    # names: unicode, spaces, newline, not UTF-8, the longest allowed
    (root / "ünïcødé-文件 ✓.txt").write_bytes("ünïcødé\n".encode())
    (root / "with space\nand newline").write_bytes(b"odd name\n")
    (root / os.fsdecode(RAW_NAME)).write_bytes(b"raw bytes name\n")
    (root / ("n" * 255)).write_bytes(b"long name\n")
    # deep nesting
    deep = root.joinpath(*[f"d{i:02d}" for i in range(40)])
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_bytes(b"deep leaf\n")
    # a directory with many entries (readdir in several pages)
    many = root / "many"
    many.mkdir()
    for i in range(400):
        (many / f"entry-{i:04d}-{'x' * 40}").write_bytes(str(i).encode())
    # odd modes and owners
    (root / "modes").mkdir()
    for name, mode in (("setuid", 0o4755), ("setgid", 0o2711), ("sticky", 0o1644), ("none", 0o000),
                       ("all", 0o7777), ("wonly", 0o222)):
        path = root / "modes" / name
        path.write_bytes(name.encode())
        os.chmod(path, mode)
    (root / "modes" / "sticky-dir").mkdir()
    os.chmod(root / "modes" / "sticky-dir", 0o1777)
    (root / "modes" / "setgid-dir").mkdir()
    os.chmod(root / "modes" / "setgid-dir", 0o2750)
    (root / "owned").write_bytes(b"owned by someone else\n")
    os.chown(root / "owned", 1234, 5678)
    os.lchown(root / "rel-link", 4321, 8765)
    os.chown(root / "dev" / "fifo", 65534, 65534)
    # times: old, future, sub-second; directories last (children change their mtime)
    os.utime(root / "tiny.txt", ns=(1, 86400 * 365 * 10**9 + 123456789))
    os.utime(root / "owned", ns=(0, 4102444800 * 10**9 + 987654321))      # 2100
    os.utime(root / "rel-link", ns=(0, 1234567890123456789), follow_symlinks=False)
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -t[0].count("/")):
        os.utime(dirpath, ns=(0, 1600000000 * 10**9 + len(dirpath)))
    os.chmod(root, 0o755)


@dataclass(frozen=True)
class Meta:
    kind: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    rdev: int
    nlink: int
    ino: int
    target: bytes | None
    xattrs: tuple[tuple[bytes, bytes], ...]
    digest: str | None


def describe(path: bytes, *, content: bool = True) -> Meta:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    names = os.listxattr(path, follow_symlinks=False)
    xattrs = tuple(sorted((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False)) for n in names))
    digest = None
    if content and kind == stat.S_IFREG:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return Meta(kind=kind, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, size=st.st_size,
                mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, rdev=st.st_rdev, nlink=st.st_nlink,
                ino=st.st_ino, target=os.readlink(path) if kind == stat.S_IFLNK else None, xattrs=xattrs,
                digest=digest)


def snapshot(root: Path | str, *, content: bool = True) -> dict[bytes, Meta]:
    """Every path below `root` (b"" for itself), described with lstat, xattrs, link and bytes."""
    base = os.fsencode(root)
    found = {b"": describe(base, content=content)}

    def walk(rel: bytes) -> None:
        with os.scandir(base + rel) as entries:
            for entry in entries:
                path = rel + b"/" + entry.name
                found[path] = describe(base + path, content=content)
                if entry.is_dir(follow_symlinks=False):
                    walk(path)

    walk(b"")
    return found


def link_groups(tree: dict[bytes, Meta]) -> set[frozenset[bytes]]:
    groups: dict[int, set[bytes]] = {}
    for path, meta in tree.items():
        if meta.kind != stat.S_IFDIR:
            groups.setdefault(meta.ino, set()).add(path)
    return {frozenset(g) for g in groups.values()}


def assert_same_tree(source: dict[bytes, Meta], mounted: dict[bytes, Meta], *, overlay: bool = False) -> None:
    """Byte for byte and field for field. The builder records ctime as the mtime (a copy of a
    tree cannot keep ctimes) and directory sizes as 0 (filesystem-specific); an overlay shows
    its own nlink for directories and its upper dir's times for the root."""
    assert sorted(mounted) == sorted(source)
    problems = []
    for path, want in source.items():
        got = mounted[path]
        checks = {"mode": (got.mode, want.mode), "uid": (got.uid, want.uid), "gid": (got.gid, want.gid),
                  "rdev": (got.rdev, want.rdev), "target": (got.target, want.target),
                  "xattrs": (got.xattrs, want.xattrs), "digest": (got.digest, want.digest),
                  "nlink": (got.nlink, want.nlink), "mtime_ns": (got.mtime_ns, want.mtime_ns),
                  "ctime_ns": (got.ctime_ns, want.mtime_ns)}
        if want.kind != stat.S_IFDIR:
            checks["size"] = (got.size, want.size)
        elif overlay:
            del checks["nlink"]
        if overlay and path == b"":
            del checks["ctime_ns"]
        problems += [f"{path!r} {name}: {a!r} != {b!r}" for name, (a, b) in checks.items() if a != b]
    assert not problems, "\n".join(problems[:30])
    assert link_groups(mounted) == link_groups(source)


# ------------------------------------------------------------------------------------ processes

def mounted_below(root: Path) -> list[str]:
    prefix = str(root)
    return [m.mountpoint for m in mounts()
            if m.mountpoint == prefix or m.mountpoint.startswith(prefix + "/")]


def force_unmount_below(root: Path) -> None:
    for point in sorted(mounted_below(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


class MountServer:
    """`python -m g8os.fs.mount` as core0's supervisor runs it: readiness on a notify fd."""

    def __init__(self, work: Path, flist: Path, target: Path, *, rw_dir: Path | None = None,
                 store: str | None = None, cache: Path | None = None, timeout: float | None = None,
                 prefetch: bool = False) -> None:
        self.work, self.flist, self.target, self.rw_dir = work, flist, target, rw_dir
        self.store, self.timeout, self.prefetch = store, timeout, prefetch
        self.cache = cache or work / "cache"
        self.log = work / f"mount-{os.urandom(3).hex()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def lower(self) -> Path:
        return self.rw_dir / "lower" if self.rw_dir else self.target

    def start(self, deadline: float = 30.0) -> MountServer:
        read_fd, write_fd = os.pipe()
        cmd = [PY, "-m", "g8os.fs.mount", str(self.flist), str(self.target), "--cache", str(self.cache),
               "--workdir", str(self.work / "flists"), "--notify-fd", str(write_fd)]
        if self.rw_dir:
            cmd += ["--rw-dir", str(self.rw_dir)]
        if self.store:
            cmd += ["--store", self.store]
        if self.timeout:
            cmd += ["--timeout", str(self.timeout)]
        if not self.prefetch:
            cmd += ["--no-prefetch"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdout=log, stderr=log)
        os.close(write_fd)
        try:
            line = b""
            end = time.monotonic() + deadline
            while not line.endswith(b"\n"):
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"mount not ready in {deadline}s:\n{self.output()}")
                ready, _, _ = select.select([read_fd], [], [], left)
                if ready:
                    chunk = os.read(read_fd, 64)
                    if not chunk:
                        code = self.proc.wait(5)
                        raise RuntimeError(f"mount exited before ready ({code}):\n{self.output()}")
                    line += chunk
            assert line == b"ready\n"
        finally:
            os.close(read_fd)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM: the server unmounts the overlay, then FUSE, and exits 0."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        assert code == 0, self.output()
        for point in (self.target, self.lower):
            assert str(point) not in mounted_below(point), f"{point} still mounted"
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Servers:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[MountServer] = []

    def start(self, flist: Path, target: Path, **kwargs) -> MountServer:  # type: ignore[no-untyped-def]
        server = MountServer(self.work, flist, target, **kwargs)
        self.started.append(server)
        return server.start()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    group = Servers(tmp_path)
    try:
        yield group
    finally:
        for server in reversed(group.started):
            server.kill()
        force_unmount_below(tmp_path)
        assert not mounted_below(tmp_path)


class HttpServer:
    """`python -m http.server` over a store directory: the HTTP store as any static server."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HttpServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([PY, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                          "--directory", str(self.root)], stdout=log, stderr=log)

        def answers() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            return False

        wait_for(answers, 10, what="http.server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def gets(self, chunk: str) -> int:
        return self.log.read_text(errors="replace").count(f"GET /{chunk[:2]}/{chunk}")


@pytest.fixture
def http_store(tmp_path: Path, built: Built) -> Iterator[HttpServer]:
    root = tmp_path / "http-store"
    shutil.copytree(built.store, root)
    server = HttpServer(root, tmp_path / "http.log")
    try:
        yield server.start()
    finally:
        if server.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                server.proc.send_signal(signal.SIGCONT)
        server.stop()


# --------------------------------------------------------------------------------- the build

@dataclass
class Built:
    source: Path
    flist: Path
    store: Path
    tree: dict[bytes, Meta]

    def read(self, rel: str) -> bytes:
        return (self.source / rel).read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("flist-build")
    source = base / "source"
    make_tree(source)
    tree = snapshot(source)
    store = base / "store"
    report = builder.build_from_dir(source, base / "tree.flist", DirStore(store))
    assert report.files > 0 and report.chunks > 0
    assert snapshot(source) == tree  # building reads, never touches
    return Built(source=source, flist=base / "tree.flist", store=store, tree=tree)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_state(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ tests

def test_mount_matches_source_byte_for_byte(built: Built, servers: Servers, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    server = servers.start(built.flist, target)
    info = next(m for m in mounts() if m.mountpoint == str(target))
    assert info.fstype == "fuse.flist" and info.source == "g8os-flist"
    with open("/proc/mounts") as table:
        options = set(next(line.split()[3] for line in table if line.split()[1] == str(target)).split(","))
    assert {"ro", "default_permissions", "allow_other"} <= options
    assert not {"nosuid", "nodev"} & options  # a container root needs its setuid files and devices

    mounted = snapshot(target)
    assert_same_tree(built.tree, mounted)

    # statfs (overlay needs it): the image's size, nothing free
    vfs = os.statvfs(target)
    sizes = {m.ino: m.size for m in built.tree.values() if m.kind == stat.S_IFREG}
    assert vfs.f_blocks * vfs.f_frsize >= sum(sizes.values()) and vfs.f_bfree == 0
    assert vfs.f_files == len({m.ino for m in built.tree.values()})

    # missing names (cached as negative entries) and writes
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            os.stat(target / "not-there")
    for attempt in (lambda: os.open(target / "tiny.txt", os.O_RDWR),
                    lambda: os.open(target / "new", os.O_WRONLY | os.O_CREAT),
                    lambda: os.mkdir(target / "newdir"), lambda: os.unlink(target / "tiny.txt"),
                    lambda: os.chmod(target / "tiny.txt", 0o600),
                    lambda: os.setxattr(target / "tiny.txt", "user.x", b"1"),
                    lambda: os.rename(target / "tiny.txt", target / "moved")):
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS

    # reads at every offset class: across chunk boundaries, past the end, inside holes
    fd = os.open(target / "big.bin", os.O_RDONLY)
    try:
        want = built.read("big.bin")
        for offset, size in ((0, 1), (CHUNK_SIZE - 10, 20), (CHUNK_SIZE, CHUNK_SIZE), (len(want) - 5, 100),
                             (len(want), 10), (3 * CHUNK_SIZE - 1, 2 * CHUNK_SIZE)):
            assert os.pread(fd, size, offset) == want[offset:offset + size]
    finally:
        os.close(fd)

    # inode numbers are the flist's own: the same after a restart of the server
    server.stop()
    servers.start(built.flist, target)
    again = snapshot(target, content=False)
    assert {p: m.ino for p, m in again.items()} == {p: m.ino for p, m in mounted.items()}


def test_overlay_writes_land_in_upper(built: Built, servers: Servers, tmp_path: Path) -> None:
    target, rw = tmp_path / "root", tmp_path / "rw"
    flist_digest = file_digest(built.flist)
    before_store = store_state(built.store)
    servers.start(built.flist, target, rw_dir=rw, store=f"dir://{built.store}")
    overlay = next(m for m in mounts() if m.mountpoint == str(target))
    assert overlay.fstype == "overlay"
    assert_same_tree(built.tree, snapshot(target), overlay=True)

    # writes of every kind
    with open(target / "tiny.txt", "ab") as f:
        f.write(b"appended\n")
    (target / "new-file").write_bytes(b"brand new\n")
    os.mkdir(target / "new-dir")
    os.unlink(target / "one-chunk")
    os.rename(target / "two-chunks", target / "renamed")
    os.chmod(target / "huge.bin", 0o600)                       # metadata only: metacopy, no data copy
    os.setxattr(target / "single.bin", "user.added", b"yes")
    os.symlink("new-file", target / "new-link")

    assert (target / "tiny.txt").read_bytes() == built.read("tiny.txt") + b"appended\n"
    assert not (target / "one-chunk").exists()
    assert (target / "renamed").read_bytes() == built.read("two-chunks")
    assert (target / "huge.bin").read_bytes() == built.read("huge.bin")
    assert os.getxattr(target / "single.bin", "user.added") == b"yes"

    upper = rw / "upper"
    assert (upper / "new-file").read_bytes() == b"brand new\n"
    assert (upper / "new-dir").is_dir()
    assert (upper / "tiny.txt").read_bytes() == built.read("tiny.txt") + b"appended\n"
    assert stat.S_ISCHR(os.lstat(upper / "one-chunk").st_mode)   # a whiteout
    metacopy = "metacopy=on" in overlay.super_options
    if metacopy:   # the chmod copied metadata only: the upper file holds no data
        assert os.lstat(upper / "huge.bin").st_blocks * 512 < CHUNK_SIZE
    # the lower, the flist and the store are untouched
    lower = snapshot(rw / "lower")
    assert_same_tree(built.tree, lower)
    assert file_digest(built.flist) == flist_digest
    assert store_state(built.store) == before_store
    # the cache holds verified plain chunks only
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert chunk_id(path.read_bytes()) == path.name


def test_tampered_chunk_is_eio_and_others_read(built: Built, servers: Servers, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(built.store, store)
    big, huge = built.read("big.bin"), built.read("huge.bin")
    bad_big = chunk_id(big[CHUNK_SIZE:2 * CHUNK_SIZE])              # chunk 1 of big.bin: other content
    good_blob = (store / bad_big[:2] / bad_big).read_bytes()
    (store / bad_big[:2] / bad_big).write_bytes(compress(b"evil" * 1000))
    bad_huge = chunk_id(huge[3 * CHUNK_SIZE:4 * CHUNK_SIZE])          # chunk 3 of huge.bin: truncated
    blob = (store / bad_huge[:2] / bad_huge).read_bytes()
    (store / bad_huge[:2] / bad_huge).write_bytes(blob[:len(blob) // 2])
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=f"dir://{store}")

    for name, bad_index in (("big.bin", 1), ("huge.bin", 3)):
        with pytest.raises(OSError) as caught:
            (target / name).read_bytes()
        assert caught.value.errno == errno.EIO
        fd = os.open(target / name, os.O_RDONLY)
        try:
            want = built.read(name)
            for index in range(len(want) // CHUNK_SIZE + 1):
                if index == bad_index:
                    with pytest.raises(OSError) as caught:
                        os.pread(fd, CHUNK_SIZE, index * CHUNK_SIZE)
                    assert caught.value.errno == errno.EIO
                else:   # the good chunks of the same file are served
                    part = os.pread(fd, CHUNK_SIZE, index * CHUNK_SIZE)
                    assert part == want[index * CHUNK_SIZE:(index + 1) * CHUNK_SIZE]
        finally:
            os.close(fd)
    for rel in ("one-chunk", "two-chunks", "sparse", "single.bin", "tiny.txt", "same-a"):
        assert (target / rel).read_bytes() == built.read(rel)
    assert not list((tmp_path / "cache").rglob(bad_big))   # nothing bad was cached

    # a repaired store serves again: failures are not remembered
    (store / bad_big[:2] / bad_big).write_bytes(good_blob)
    assert (target / "big.bin").read_bytes() == big


def read_sequentially(path: Path, block: int = CHUNK_SIZE) -> tuple[bytes, OSError | None, float]:
    """Bytes read until the first error, the error, and how long the failing read took."""
    got = bytearray()
    with open(path, "rb", buffering=0) as f:
        while True:
            started = time.monotonic()
            try:
                part = f.read(block)
            except OSError as exc:
                return bytes(got), exc, time.monotonic() - started
            if not part:
                return bytes(got), None, 0.0
            got += part


def test_store_stopped_mid_read_eio_in_time_then_recovers(built: Built, servers: Servers,
                                                           http_store: HttpServer, tmp_path: Path) -> None:
    timeout = 3.0
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=http_store.url, timeout=timeout)
    huge = built.read("huge.bin")
    with open(target / "huge.bin", "rb", buffering=0) as f:
        assert f.read(CHUNK_SIZE) == huge[:CHUNK_SIZE]
        http_store.stop()
        got = bytearray(huge[:CHUNK_SIZE])
        error, took = None, 0.0
        while True:
            started = time.monotonic()
            try:
                part = f.read(CHUNK_SIZE)
            except OSError as exc:
                error, took = exc, time.monotonic() - started
                break
            assert part, "the whole file was read with the store down"
            got += part
    assert error is not None and error.errno == errno.EIO
    assert took < timeout + 6, f"EIO after {took:.1f}s"
    assert bytes(got) == huge[:len(got)]      # what was served before the error is right

    http_store.start()                          # the same port again
    assert (target / "huge.bin").read_bytes() == huge


def test_frozen_store_eio_within_timeout(built: Built, servers: Servers, http_store: HttpServer,
                                          tmp_path: Path) -> None:
    """A store that accepts connections and never answers (SIGSTOP) must not hang readers."""
    timeout = 2.0
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=http_store.url, timeout=timeout)
    assert (target / "tiny.txt").read_bytes() == built.read("tiny.txt")   # inline: no store needed
    http_store.pause()
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            (target / "single.bin").read_bytes()
        took = time.monotonic() - started
        assert caught.value.errno == errno.EIO
        assert took < timeout + 6, f"EIO after {took:.1f}s"
        assert (target / "links" / "tiny-2").read_bytes() == built.read("tiny.txt")  # metadata still served
    finally:
        http_store.resume()
    assert (target / "single.bin").read_bytes() == built.read("single.bin")


def test_concurrent_readers_of_cold_chunk_fetch_once(built: Built, servers: Servers, http_store: HttpServer,
                                                     tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=http_store.url)
    want = built.read("single.bin")
    chunk = chunk_id(want)
    assert http_store.gets(chunk) == 0
    barrier = threading.Barrier(10)
    results: list[bytes | BaseException] = []

    def reader() -> None:
        try:
            barrier.wait(10)
            with open(target / "single.bin", "rb") as f:
                results.append(f.read())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 10 and all(r == want for r in results), [type(r) for r in results]
    assert http_store.gets(chunk) == 1


def test_offline_after_warm(built: Built, servers: Servers, http_store: HttpServer, tmp_path: Path) -> None:
    """Warmed by `g8os flist prefetch --all`, the mount reads everything with the store gone."""
    cache = tmp_path / "cache"
    result = run_cli("prefetch", str(built.flist), "--store", http_store.url, "--cache", str(cache), "--all")
    assert result.returncode == 0, result.stderr
    assert "chunks cached" in result.stdout
    http_store.stop()
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=http_store.url, cache=cache, timeout=2.0)
    assert_same_tree(built.tree, snapshot(target))


def test_two_overlays_share_one_fuse_server(built: Built, servers: Servers, tmp_path: Path) -> None:
    """A second container on the same flist is just a second overlay with the same lowerdir."""
    first, rw1 = tmp_path / "c1", tmp_path / "rw1"
    second, rw2 = tmp_path / "c2", tmp_path / "rw2"
    server = servers.start(built.flist, first, rw_dir=rw1, store=f"dir://{built.store}")
    mount_overlay(server.lower, second, rw2)
    try:
        fuse = [m for m in mounts() if m.fstype == "fuse.flist" and m.mountpoint.startswith(str(tmp_path))]
        assert [m.mountpoint for m in fuse] == [str(server.lower)]
        for root in (first, second):
            assert (root / "big.bin").read_bytes() == built.read("big.bin")
        (first / "tiny.txt").write_bytes(b"first\n")
        (second / "tiny.txt").write_bytes(b"second\n")
        (second / "only-second").write_bytes(b"2\n")
        assert (first / "tiny.txt").read_bytes() == b"first\n"
        assert (second / "tiny.txt").read_bytes() == b"second\n"
        assert not (first / "only-second").exists()
        assert (server.lower / "tiny.txt").read_bytes() == built.read("tiny.txt")
        assert (rw1 / "upper" / "tiny.txt").read_bytes() == b"first\n"
        assert (rw2 / "upper" / "only-second").read_bytes() == b"2\n"
        # the two containers share the server's page cache and inodes
        assert os.stat(first / "huge.bin").st_ino == os.stat(second / "huge.bin").st_ino
    except BaseException:
        unmount_overlay(second)
        raise
    # SIGTERM takes down every overlay stacked on the lower, then the lower
    server.stop()
    assert not mounted_below(tmp_path)


def test_restart_after_crash_clears_stale_mounts(built: Built, servers: Servers, tmp_path: Path) -> None:
    """A server killed outright leaves dead mounts (ENOTCONN); the one its supervisor starts next
    detaches them and serves the same paths again."""
    target, rw = tmp_path / "root", tmp_path / "rw"
    server = servers.start(built.flist, target, rw_dir=rw, store=f"dir://{built.store}")
    (target / "kept").write_bytes(b"survives in the upper dir\n")
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(10)
    with pytest.raises(OSError) as caught:
        os.stat(target / "big.bin")
    assert caught.value.errno == errno.ENOTCONN
    servers.start(built.flist, target, rw_dir=rw, store=f"dir://{built.store}")
    assert (target / "big.bin").read_bytes() == built.read("big.bin")
    assert (target / "kept").read_bytes() == b"survives in the upper dir\n"
    points = mounted_below(tmp_path)
    assert sorted(points) == sorted([str(target), str(rw / "lower")]), points


def test_second_server_on_a_live_mount_refuses(built: Built, servers: Servers, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    servers.start(built.flist, target)
    with pytest.raises(RuntimeError, match="already mounted"):
        servers.start(built.flist, target)
    assert (target / "tiny.txt").read_bytes() == built.read("tiny.txt")   # the first one still serves


def test_prefetch_list_warms_the_cache_at_mount(built: Built, servers: Servers, tmp_path: Path) -> None:
    flist = tmp_path / "prefetch.flist"
    builder.build_from_dir(built.source, flist, DirStore(built.store), prefetch=["huge.bin", "big.bin"])
    big, huge = built.read("big.bin"), built.read("huge.bin")
    wanted = {chunk_id(data[i:i + CHUNK_SIZE]) for data in (big, huge)
              for i in range(0, len(data), CHUNK_SIZE)}
    cache = tmp_path / "cache"
    servers.start(flist, tmp_path / "mnt", cache=cache, prefetch=True)

    def cached() -> bool:
        return wanted <= {p.name for p in cache.rglob("*") if p.is_file()}

    wait_for(cached, 30, what="the prefetch list in the cache")   # without a single read


def test_cli_mount_foreground(built: Built, tmp_path: Path) -> None:
    """`g8os flist mount` prints ready, serves, and unmounts on Ctrl-C."""
    target = tmp_path / "mnt"
    proc = subprocess.Popen([PY, "-m", "g8os.client.cli", "flist", "mount", str(built.flist), str(target),
                             "--store", f"dir://{built.store}", "--cache", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"ready\n"
        assert (target / "one-chunk").read_bytes() == built.read("one-chunk")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not mounted_below(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        force_unmount_below(tmp_path)


def test_readahead_raised_and_sequential_throughput(built: Built, servers: Servers, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    servers.start(built.flist, target, store=f"dir://{built.store}")
    info = next(m for m in mounts() if m.mountpoint == str(target))
    assert Path(f"/sys/class/bdi/{info.device}/read_ahead_kb").read_text().strip() == "1024"
    got, error, _ = read_sequentially(target / "huge.bin", 128 * 1024)
    assert error is None and got == built.read("huge.bin")


# ------------------------------------------------------------------------------------- CLI

def run_cli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "g8os.client.cli", "flist", *args], capture_output=True, text=True,
                          timeout=120, input=input)


def test_cli_create_inspect_ls_cat_verify(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = tmp_path / "cli.flist"
    result = run_cli("create", str(built.source), "-o", str(out), "--store", f"dir://{store}",
                     "--tag", "entrypoint=/bin/sh", "--tag", "version=1")
    assert result.returncode == 0, result.stderr
    assert out.exists() and "built from" in result.stdout

    result = run_cli("inspect", str(out), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["tags"] == {"entrypoint": "/bin/sh", "version": "1"}
    assert info["routes"] == [{"start": "00", "end": "ff", "url": f"dir://{store}"}]
    assert info["stats"]["bytes"] > 20 * MiB and info["version"] == str(FORMAT_VERSION)

    result = run_cli("ls", str(out), "/links", "-l")
    assert result.returncode == 0, result.stderr
    assert [line.split()[-1] for line in result.stdout.splitlines()] == ["big-again", "tiny-1", "tiny-2"]
    assert result.stdout.splitlines()[1].startswith("-rw-r--r--   3")
    result = run_cli("ls", str(out), "/", "--json")
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"big.bin", "rel-link", "dev", os.fsdecode(RAW_NAME)} <= names
    assert run_cli("ls", str(out), "/no/such").returncode == 1

    cache = tmp_path / "cache"
    for rel in ("big.bin", "tiny.txt", "sparse", "empty"):
        result = subprocess.run([PY, "-m", "g8os.client.cli", "flist", "cat", str(out), rel,
                                 "--cache", str(cache)], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == built.read(rel)

    result = run_cli("verify", str(out))
    assert result.returncode == 0, result.stderr
    assert " 0 missing, 0 corrupt" in result.stdout
    # one chunk corrupted, one removed: exit 1 and both named
    big = built.read("big.bin")
    corrupt, missing = chunk_id(big[:CHUNK_SIZE]), chunk_id(big[CHUNK_SIZE:2 * CHUNK_SIZE])
    (store / corrupt[:2] / corrupt).write_bytes(compress(b"not it"))
    (store / missing[:2] / missing).unlink()
    result = run_cli("verify", str(out), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["corrupt"] == [corrupt] and report["missing"] == [missing]

    # not an flist; a bad tag
    junk = tmp_path / "junk.flist"
    junk.write_bytes(os.urandom(1000))
    result = run_cli("inspect", str(junk))
    assert result.returncode == 2 and "error:" in result.stderr
    assert run_cli("create", str(built.source), "-o", str(tmp_path / "x.flist"), "--store", f"dir://{store}",
                   "--tag", "novalue").returncode == 2


def test_cli_create_from_tar_and_image(built: Built, tmp_path: Path) -> None:
    store = tmp_path / "store"
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(built.source / "big.bin", "big.bin")
        tar.add(built.source / "links", "links")
    result = run_cli("create", str(rootfs), "-o", str(tmp_path / "tar.flist"), "--store", f"dir://{store}",
                     "-q")
    assert result.returncode == 0, result.stderr
    listing = run_cli("ls", str(tmp_path / "tar.flist"))
    assert listing.stdout.split() == ["big.bin", "links"]

    # a docker-save archive: one layer, a config, manifest.json
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(built.source / "tiny.txt", "etc/motd")
    layer_digest = hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]}}).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    image = tmp_path / "image.tar"
    with tarfile.open(image, "w") as tar:
        tar.add(layer, f"{layer_digest}/layer.tar")
        manifest = [{"Config": f"{config_digest}.json", "RepoTags": ["t:1"],
                     "Layers": [f"{layer_digest}/layer.tar"]}]
        for name, body in ((f"{config_digest}.json", config),
                           ("manifest.json", json.dumps(manifest).encode())):
            member = tarfile.TarInfo(name)
            member.size = len(body)
            tar.addfile(member, __import__("io").BytesIO(body))
    result = run_cli("create", str(image), "-o", str(tmp_path / "image.flist"), "--store", f"dir://{store}")
    try:
        import g8os.fs.image  # noqa: F401
    except ImportError:
        assert result.returncode == 2 and "image support" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    cat = subprocess.run([PY, "-m", "g8os.client.cli", "flist", "cat", str(tmp_path / "image.flist"),
                          "/etc/motd", "--store", f"dir://{store}", "--cache", str(tmp_path / "cache")],
                         capture_output=True, timeout=60)
    assert cat.returncode == 0 and cat.stdout == built.read("tiny.txt")


def test_cli_json_errors_are_json(tmp_path):
    import json as _json
    import subprocess as _subprocess
    import sys as _sys

    bogus = tmp_path / "bogus.flist"
    bogus.write_bytes(b"not an flist")
    argv = [_sys.executable, "-m", "g8os.client.cli", "flist", "inspect", str(bogus), "--json"]
    done = _subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not an flist" in _json.loads(done.stdout)["error"]["message"]
