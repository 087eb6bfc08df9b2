"""The flist engine against its floors, all in one run on this machine.

1. Headline: a ~300 MB root filesystem (built here from the host's /usr trees). Floor: download the
   full image archive (tar.zst over HTTP on loopback) and extract it. Measured: mount the flist
   cold over the same HTTP server and run a small program that reads a few files. Targets: time
   and bytes transferred both ≤ 10 % of the floor's.
2. Warm sequential read of a 256 MiB file through the mount vs the native file (target ≥ 50 %).
3. `stat` of 10k files through the mount (warm) vs native (target ≤ 1.5×).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socketserver
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
from g8os.fs.store import DirStore

TREES = ["usr/lib/python3.11", "usr/share/perl", "usr/lib/x86_64-linux-gnu/perl", "usr/share/locale",
         "usr/include", "usr/share/zoneinfo", "usr/lib/gcc", "usr/libexec"]
TARGET_BYTES = 300 * 2**20
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
    with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as knob:
        knob.write("3\n")


@contextlib.contextmanager
def mounted(flist: Path, target: Path, store: str, cache: Path) -> Iterator[float]:
    """Mount in a child process; yields the seconds from start to ready."""
    target.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "g8os.fs.mount", str(flist), str(target), "--store", store,
                             "--cache", str(cache), "--no-prefetch"], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip().startswith("ready"):
                break
        else:
            raise RuntimeError("mount did not become ready")
        yield time.perf_counter() - start
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def read_all(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 20):
            pass
    return time.perf_counter() - start


def stat_tree(root: Path) -> float:
    start = time.perf_counter()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.lstat(os.path.join(dirpath, name))
    return time.perf_counter() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="g8os-bench-flist-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        size = make_rootfs(rootfs)
        big = rootfs / "big.bin"
        with open(big, "wb") as out:
            for _ in range(256):
                out.write(os.urandom(1 << 20))
        small = rootfs / "small"
        for d in range(100):
            (small / f"d{d:03}").mkdir(parents=True)
            for f in range(100):
                (small / f"d{d:03}" / f"f{f:03}").write_bytes(b"x" * 1024)
        store_root = work / "store"
        flist = work / "root.flist"
        build_from_dir(rootfs, flist, DirStore(store_root), routes=[])
        archive = work / "root.tar.zst"
        subprocess.run(["tar", "-C", str(rootfs), "-I", "zstd -3 -T0", "-cf", str(archive), "."], check=True)
        archive_root = work / "archive"
        archive_root.mkdir()
        shutil.move(str(archive), archive_root / "root.tar.zst")

        with http_server(archive_root) as url:
            drop_caches()
            _Counting.served = 0
            start = time.perf_counter()
            extract = work / "extracted"
            extract.mkdir()
            with urllib.request.urlopen(f"{url}/root.tar.zst") as response, \
                    open(work / "download.tar.zst", "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            subprocess.run(["tar", "-C", str(extract), "-I", "zstd", "-xf", str(work / "download.tar.zst")],
                           check=True)
            for probe in PROBE:
                (extract / probe).read_bytes()
            full_time, full_bytes = time.perf_counter() - start, _Counting.served
        shutil.rmtree(extract, ignore_errors=True)

        with http_server(store_root) as url:
            drop_caches()
            _Counting.served = 0
            _Counting.requests = 0
            start = time.perf_counter()
            with mounted(flist, work / "mnt", url, work / "cache") as ready:
                for probe in PROBE:
                    (work / "mnt" / probe).read_bytes()
                lazy_time, lazy_bytes = time.perf_counter() - start, _Counting.served
                fetches = _Counting.requests
                # warm reads and stats, same mount
                read_all(work / "mnt" / "big.bin")
                warm_mount = min(read_all(work / "mnt" / "big.bin") for _ in range(3))
                warm_native = min(read_all(big) for _ in range(3))
                stat_tree(work / "mnt" / "small")
                stat_mount = min(stat_tree(work / "mnt" / "small") for _ in range(3))
                stat_native = min(stat_tree(small) for _ in range(3))

        mb = 256
        report(f"flist ({size / 2**20:.0f} MB root filesystem, HTTP store on loopback)", [
            ("start + read a few files, cold", f"{lazy_time:.3f} s", f"{full_time:.3f} s",
             f"{lazy_time / full_time * 100:.1f} % (target <= 10 %; mount ready in {ready:.3f} s)"),
            ("bytes transferred", f"{lazy_bytes / 2**20:.2f} MiB", f"{full_bytes / 2**20:.1f} MiB",
             f"{lazy_bytes / full_bytes * 100:.2f} % (target <= 10 %; {fetches} requests)"),
            ("warm sequential read 256 MiB", f"{mb / warm_mount:.0f} MiB/s", f"{mb / warm_native:.0f} MiB/s",
             f"{warm_native / warm_mount * 100:.0f} % of native (target >= 50 %)"),
            ("stat of 10k files, warm", f"{stat_mount:.3f} s", f"{stat_native:.3f} s",
             f"{stat_mount / stat_native:.2f}x (target <= 1.5x)"),
        ])
    finally:
        subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
