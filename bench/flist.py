"""The flist engine against its floors, all in one run on this machine.

1. Headline: a ~300 MB root filesystem (built here from the host's /usr trees, nothing else in it).
   Floor: download its image archive (tar.zst over HTTP on loopback) and extract it, then read a few
   files. Measured: fetch the .flist over the same HTTP server, mount it cold (empty chunk cache,
   dropped page cache) with the chunks on that server, and read the same files. Twice: through the
   fork server core0 keeps warm (`g8os.fs.forkserver`), and with a cold `python -m g8os.fs.mount`
   process (interpreter start and imports included). Targets: time and bytes both <= 10 % of the
   floor's.
2. Warm sequential read of a 256 MiB file through the mount vs the native file (target >= 50 %).
3. `stat` of 10k files through the mount (warm) vs native (target <= 1.5x). Also printed, without a
   target: walking the same tree (readdir + stat), where every readdir goes to the server.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.common import report
from g8os.fs.builder import build_from_dir
from g8os.fs.forkserver import request_mount
from g8os.fs.store import DirStore

TREES = ["usr/lib/python3.11", "usr/share/perl", "usr/lib/x86_64-linux-gnu/perl", "usr/share/locale",
         "usr/include", "usr/share/zoneinfo", "usr/lib/gcc", "usr/libexec"]
TARGET_BYTES = 300 * 2**20
ROUNDS = 3
PROBE = ["usr/lib/python3.11/json/__init__.py", "usr/lib/python3.11/json/decoder.py",
         "usr/lib/python3.11/json/scanner.py", "usr/lib/python3.11/json/encoder.py",
         "usr/lib/python3.11/os.py", "usr/lib/python3.11/re/__init__.py"]


class _Counting(http.server.SimpleHTTPRequestHandler):
    served = 0
    requests = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        data = source.read()
        with self.lock:
            _Counting.served += len(data)
            _Counting.requests += 1
        outputfile.write(data)


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    handler = lambda *a, **k: _Counting(*a, directory=str(root), **k)  # noqa: E731
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_rootfs(dest: Path) -> int:
    """Copy host trees until ~300 MB: a realistic mix of many small and some large files."""
    total = 0
    for tree in TREES:
        source = Path("/") / tree
        if not source.is_dir() or total >= TARGET_BYTES:
            continue
        shutil.copytree(source, dest / tree, symlinks=True, dirs_exist_ok=True)
        total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    for probe in PROBE:
        target = dest / probe
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(os.urandom(2048))
    return total


def drop_caches() -> None:
    """Cold caches, and no earlier round's writeback left to slow this one down."""
    os.sync()
    with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as knob:
        knob.write("3\n")


@contextlib.contextmanager
def mounted(flist: Path, target: Path, store: str, cache: Path, workdir: Path) -> Iterator[None]:
    """A cold `python -m g8os.fs.mount` process, until it says ready."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "g8os.fs.mount", str(flist), str(target), "--store", store,
                             "--cache", str(cache), "--workdir", str(workdir), "--no-prefetch"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip().startswith("ready"):
                break
        else:
            raise RuntimeError("mount did not become ready")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def forkserver(socket_path: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "g8os.fs.forkserver", str(socket_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("the fork server did not start")
        yield str(socket_path)
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def leased(socket_path: str, flist: Path, target: Path, store: str, cache: Path,
           workdir: Path) -> Iterator[None]:
    """A mount forked by the fork server, until released."""
    target.mkdir(parents=True, exist_ok=True)
    lease = request_mount(socket_path, str(flist), str(target), store=store, cache=str(cache),
                          workdir=str(workdir), prefetch=False)
    try:
        yield
    finally:
        lease.release()
        with contextlib.suppress(Exception):
            lease.wait(30)
        lease.close()


def read_all(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 20):
            pass
    return time.perf_counter() - start


def walk_tree(root: Path) -> float:
    start = time.perf_counter()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.lstat(os.path.join(dirpath, name))
    return time.perf_counter() - start


def stat_paths(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        os.lstat(path)
    return time.perf_counter() - start


def fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def full_download(url: str, work: Path) -> tuple[float, int]:
    """The floor, cold: download the image archive, extract it, read the probes."""
    drop_caches()
    _Counting.served = 0
    start = time.perf_counter()
    extract = work / "extracted"
    extract.mkdir()
    fetch(f"{url}/root.tar.zst", work / "download.tar.zst")
    subprocess.run(["tar", "-C", str(extract), "-I", "zstd", "-xf", str(work / "download.tar.zst")],
                   check=True)
    for probe in PROBE:
        (extract / probe).read_bytes()
    seconds = time.perf_counter() - start
    shutil.rmtree(extract, ignore_errors=True)
    (work / "download.tar.zst").unlink()
    return seconds, _Counting.served


def lazy_start(how: str, url: str, fork: str, run: Path, workdir: Path) -> tuple[float, int, int, float]:
    """Cold: fetch the flist, mount it (through the fork server or a new process), read the probes.
    (seconds, bytes served, requests, seconds until mounted)."""
    drop_caches()
    _Counting.served = _Counting.requests = 0
    run.mkdir()
    start = time.perf_counter()
    fetch(f"{url}/root.flist", run / "root.flist")
    if how == "fork server":
        mount = leased(fork, run / "root.flist", run / "mnt", f"{url}/store", run / "cache", workdir)
    else:
        mount = mounted(run / "root.flist", run / "mnt", f"{url}/store", run / "cache", workdir)
    with mount:
        ready = time.perf_counter() - start
        for probe in PROBE:
            (run / "mnt" / probe).read_bytes()
        seconds = time.perf_counter() - start
    return seconds, _Counting.served, _Counting.requests, ready


def build(root: Path, flist: Path, store: Path) -> None:
    build_from_dir(root, flist, DirStore(store), routes=[])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="g8os-bench-flist-", dir="/var/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="g8os-bench-flist-", dir="/dev/shm"))  # core0's runtime dir is a tmpfs
    try:
        rootfs = work / "rootfs"
        size = make_rootfs(rootfs)
        served = work / "served"         # what the HTTP server offers: archive, flist, chunks
        store_root = served / "store"
        build(rootfs, served / "root.flist", store_root)
        subprocess.run(["tar", "-C", str(rootfs), "-I", "zstd -3 -T0", "-cf", str(served / "root.tar.zst"),
                        "."], check=True)
        big_root, small_root = work / "big", work / "small"
        big_root.mkdir()
        with open(big_root / "big.bin", "wb") as out:
            for _ in range(256):
                out.write(os.urandom(1 << 20))
        for d in range(100):
            (small_root / f"d{d:03}").mkdir(parents=True)
            for f in range(100):
                (small_root / f"d{d:03}" / f"f{f:03}").write_bytes(b"x" * 1024)
        build(big_root, work / "big.flist", store_root)
        build(small_root, work / "small.flist", store_root)

        with http_server(served) as url, forkserver(shm / "fork.sock") as fork:
            # Rounds interleave the floor and both lazy paths, so a noisy neighbour hits all three
            # alike; medians are reported.
            floor: list[tuple[float, int]] = []
            lazy: dict[str, list[tuple[float, int, int, float]]] = {"fork server": [], "cold process": []}
            for round_ in range(ROUNDS):
                floor.append(full_download(url, work))
                for how in lazy:
                    lazy[how].append(lazy_start(how, url, fork, work / f"{how.replace(' ', '-')}-{round_}",
                                                shm / f"{how.replace(' ', '-')}-{round_}"))

            with leased(fork, work / "big.flist", work / "big-mnt", f"dir://{store_root}", work / "cache",
                        shm / "big"):
                read_all(work / "big-mnt" / "big.bin")
                warm_mount = min(read_all(work / "big-mnt" / "big.bin") for _ in range(3))
                warm_native = min(read_all(big_root / "big.bin") for _ in range(3))
            with leased(fork, work / "small.flist", work / "small-mnt", f"dir://{store_root}", work / "cache",
                        shm / "small"):
                mounted_paths = [os.path.join(d, f) for d, _, fs in os.walk(work / "small-mnt") for f in fs]
                native_paths = [os.path.join(d, f) for d, _, fs in os.walk(small_root) for f in fs]
                stat_mount = min(stat_paths(mounted_paths) for _ in range(5))
                stat_native = min(stat_paths(native_paths) for _ in range(5))
                walk_mount = min(walk_tree(work / "small-mnt") for _ in range(3))
                walk_native = min(walk_tree(small_root) for _ in range(3))

        mb = 256
        rows = []
        full_time, full_bytes = statistics.median(t for t, _ in floor), floor[0][1]
        for how, runs in lazy.items():
            seconds = statistics.median(t for t, *_ in runs)
            _, sent, requests, _ = runs[0]
            ready = statistics.median(r for *_, r in runs)
            rows += [
                (f"start + read a few files, cold ({how})", f"{seconds:.3f} s", f"{full_time:.3f} s",
                 f"{seconds / full_time * 100:.1f} % (target <= 10 %; mounted at {ready:.3f} s; "
                 f"medians of {ROUNDS})"),
                (f"bytes transferred ({how})", f"{sent / 2**20:.2f} MiB", f"{full_bytes / 2**20:.1f} MiB",
                 f"{sent / full_bytes * 100:.2f} % (target <= 10 %; {requests} requests incl. the flist)"),
            ]
        rows += [
            ("warm sequential read 256 MiB", f"{mb / warm_mount:.0f} MiB/s", f"{mb / warm_native:.0f} MiB/s",
             f"{warm_native / warm_mount * 100:.0f} % of native (target >= 50 %)"),
            (f"stat of {len(mounted_paths)} files, warm", f"{stat_mount:.3f} s", f"{stat_native:.3f} s",
             f"{stat_mount / stat_native:.2f}x (target <= 1.5x)"),
            ("walk: readdir + stat, warm", f"{walk_mount:.3f} s", f"{walk_native:.3f} s",
             f"{walk_mount / walk_native:.2f}x (no target; readdir is not cached by the kernel)"),
        ]
        report(f"flist ({size / 2**20:.0f} MB root filesystem, HTTP store on loopback)", rows)
    finally:
        for mnt in work.glob("*/mnt"), work.glob("*-mnt"):
            for path in mnt:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
