"""The fork server: flist servers forked from a warm parent, each bound to its client's lease.

Real FUSE and overlay mounts, a real fork server process; every mount a test makes is removed
even when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from wire import wait_for

pytestmark = pytest.mark.timeout(120)

if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
    pytest.skip("needs root and /dev/fuse", allow_module_level=True)

from g8os.fs.builder import build_from_dir  # noqa: E402
from g8os.fs.forkserver import MountFailed, request_mount  # noqa: E402
from g8os.fs.mount import mounts  # noqa: E402
from g8os.fs.store import DirStore  # noqa: E402


def mounted_below(root: Path) -> list[str]:
    prefix = str(root) + "/"
    return [m.mountpoint for m in mounts() if m.mountpoint.startswith(prefix)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    source = tmp_path / "src"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "hostname").write_bytes(b"forked\n")
    (source / "big.bin").write_bytes(os.urandom(3 << 20))
    build_from_dir(source, tmp_path / "a.flist", DirStore(tmp_path / "store"), routes=[])
    (tmp_path / "junk.flist").write_bytes(b"not an flist at all")
    try:
        yield tmp_path
    finally:
        for point in sorted(mounted_below(tmp_path), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def server(work: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    path = str(work / "fork.sock")
    proc = subprocess.Popen([sys.executable, "-m", "g8os.fs.forkserver", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def options(work: Path) -> dict[str, str]:
    return {"store": f"dir://{work / 'store'}", "cache": str(work / "cache"), "workdir": str(work / "db")}


def raw_request(path: str, payload: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_mount_read_release_unmounts(work: Path, server) -> None:
    _proc, path = server
    with request_mount(path, str(work / "a.flist"), str(work / "mnt"), **options(work)) as lease:
        assert lease.pid > 0 and alive(lease.pid)
        assert (work / "mnt" / "etc" / "hostname").read_bytes() == b"forked\n"
        assert (work / "mnt" / "big.bin").read_bytes() == (work / "src" / "big.bin").read_bytes()
        lease.release()
        assert lease.wait(30) == 0
    assert mounted_below(work) == []
    wait_for(lambda: not alive(lease.pid), 10, what="the server reaped")


def test_overlay_through_fork_server(work: Path, server) -> None:
    _proc, path = server
    with request_mount(path, str(work / "a.flist"), str(work / "root"), rw_dir=str(work / "rw"),
                       **options(work)) as lease:
        (work / "root" / "etc" / "hostname").write_bytes(b"changed\n")
        assert (work / "rw" / "upper" / "etc" / "hostname").read_bytes() == b"changed\n"
        assert (work / "rw" / "lower" / "etc" / "hostname").read_bytes() == b"forked\n"
        lease.release()
        assert lease.wait(30) == 0
    assert mounted_below(work) == []


def test_client_gone_unmounts(work: Path, server) -> None:
    """Closing the connection without a word (a client that died) is giving the lease up."""
    _proc, path = server
    lease = request_mount(path, str(work / "a.flist"), str(work / "mnt"), **options(work))
    pid = lease.pid
    lease.file.close()
    lease.sock.close()
    wait_for(lambda: not alive(pid) and mounted_below(work) == [], 30, what="unmounted after the client left")


def test_two_mounts_at_once_are_independent(work: Path, server) -> None:
    _proc, path = server
    with request_mount(path, str(work / "a.flist"), str(work / "m1"), **options(work)) as one, \
            request_mount(path, str(work / "a.flist"), str(work / "m2"), **options(work)) as two:
        assert one.pid != two.pid
        one.release()
        assert one.wait(30) == 0
        assert (work / "m2" / "etc" / "hostname").read_bytes() == b"forked\n"
        assert str(work / "m1") not in mounted_below(work)


def test_failed_start_says_why(work: Path, server) -> None:
    _proc, path = server
    with pytest.raises(MountFailed, match="not an flist"):
        request_mount(path, str(work / "junk.flist"), str(work / "mnt"), **options(work))
    with pytest.raises(MountFailed, match="No such file"):
        request_mount(path, str(work / "missing.flist"), str(work / "mnt"), **options(work))
    assert mounted_below(work) == []


@pytest.mark.parametrize("payload, field", [
    (b"{not json\n", "JSON"),
    (b"[1, 2]\n", "arguments"),
    (b'{"target": "/x"}\n', "flist"),
    (b'{"flist": "rel.flist", "target": "/x"}\n', "flist"),
    (b'{"flist": "/a.flist", "target": 5}\n', "target"),
    (b'{"flist": "/a.flist", "target": "/x", "quota": "lots"}\n', "quota"),
    (b'{"flist": "/a.flist", "target": "/x", "timeout": 0}\n', "timeout"),
    (b'{"flist": "/a.flist", "target": "/x", "surprise": 1}\n', "surprise"),
])
def test_bad_requests_are_refused_and_the_server_keeps_serving(work: Path, server, payload: bytes,
                                                               field: str) -> None:
    proc, path = server
    answers = raw_request(path, payload)
    assert len(answers) == 1 and field in answers[0]["error"], answers
    assert proc.poll() is None
    with request_mount(path, str(work / "a.flist"), str(work / "mnt"), **options(work)) as lease:
        assert (work / "mnt" / "etc" / "hostname").read_bytes() == b"forked\n"
        lease.release()
        assert lease.wait(30) == 0


def test_stopping_the_fork_server_stops_its_servers(work: Path, server) -> None:
    proc, path = server
    leases = [request_mount(path, str(work / "a.flist"), str(work / f"m{i}"), **options(work))
              for i in range(2)]
    try:
        pids = [lease.pid for lease in leases]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert [lease.wait(5) for lease in leases] == [0, 0]
        assert not any(alive(pid) for pid in pids)
        assert mounted_below(work) == [] and not os.path.exists(path)
    finally:
        for lease in leases:
            lease.close()


def test_servers_die_with_a_killed_fork_server(work: Path, server) -> None:
    """SIGKILL gives the fork server no chance: PR_SET_PDEATHSIG still stops its servers, and they
    unmount on the way out."""
    proc, path = server
    lease = request_mount(path, str(work / "a.flist"), str(work / "mnt"), **options(work))
    try:
        pid = lease.pid
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not alive(pid) and mounted_below(work) == [], 30, what="the orphaned server gone")
    finally:
        with contextlib.suppress(OSError):
            lease.close()


def test_cli_mount_via_fork_server(work: Path, server) -> None:
    """`g8os flist mount --via SOCKET` prints ready, serves, and gives the lease up on SIGTERM."""
    _proc, path = server
    cli = subprocess.Popen([sys.executable, "-m", "g8os.client.cli", "flist", "mount", str(work / "a.flist"),
                            str(work / "mnt"), "--store", f"dir://{work / 'store'}", "--cache",
                            str(work / "cache"), "--via", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert cli.stdout is not None and cli.stdout.readline() == "ready\n"
        assert (work / "mnt" / "etc" / "hostname").read_bytes() == b"forked\n"
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(30) == 0
        assert mounted_below(work) == []
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)


def test_cli_mount_via_missing_fork_server(work: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "g8os.client.cli", "flist", "mount", str(work / "a.flist"),
                             str(work / "mnt"), "--via", str(work / "nobody.sock")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "no fork server" in result.stderr
