"""Node facts against the real machine: shapes, types, JSON, and fresh namespaces."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import g8os
from g8os.system import info

pytestmark = pytest.mark.timeout(60)


def check_shape(value: dict[str, Any], shape: dict[str, type | tuple[type, ...]]) -> None:
    missing = set(shape) - set(value)
    assert not missing, f"missing {missing}"
    for key, kind in shape.items():
        assert isinstance(value[key], kind), (key, value[key])
        if kind is int or kind == (int, float):
            assert not isinstance(value[key], bool), key


def test_cpu() -> None:
    cpus = info.cpu()
    assert len(cpus) >= 1
    assert [c["cpu"] for c in cpus] == sorted(c["cpu"] for c in cpus)
    for c in cpus:
        check_shape(c, {"cpu": int, "vendorId": str, "family": str, "model": str, "stepping": int,
                        "physicalId": str, "coreId": str, "cores": int, "modelName": str,
                        "mhz": float, "cacheSize": int, "flags": list, "microcode": str})
        assert all(isinstance(f, str) for f in c["flags"])
    json.dumps(cpus)


def test_cpu_tolerates_odd_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
        "CPU revision\t: x\ncpu MHz\t\t: fast\ncache size\t: \n\n"
        "processor\t: 1\ngarbage line without colon\ncpu cores\t: many\n\n"
        "Hardware\t: some board\nSerial\t\t: 00\n")
    monkeypatch.setattr(info, "_PROC", tmp_path)
    cpus = info.cpu()
    assert [c["cpu"] for c in cpus] == [0, 1]  # the machine-wide block is not a CPU
    assert cpus[0]["flags"] == ["fp", "asimd"] and cpus[0]["vendorId"] == "0x41"
    assert cpus[0]["stepping"] == 0 and cpus[1]["cores"] == 1
    (tmp_path / "cpuinfo").unlink()
    assert len(info.cpu()) == (os.cpu_count() or 1)


def test_mem() -> None:
    m = info.mem()
    check_shape(m, {"total": int, "available": int, "used": int, "usedPercent": float, "free": int,
                    "active": int, "inactive": int, "wired": int, "buffers": int, "cached": int,
                    "shared": int, "slab": int, "dirty": int, "writeBack": int, "swapTotal": int,
                    "swapFree": int, "pageTables": int, "committedAS": int, "hugePageSize": int,
                    "hugePagesTotal": int})
    assert m["total"] > 0 and 0 <= m["available"] <= m["total"] and m["used"] <= m["total"]
    assert 0.0 <= m["usedPercent"] <= 100.0
    json.dumps(m)


def test_mem_tolerates_odd_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meminfo").write_text("Dirty: lots kB\nWriteback:\nHugePages_Total: 3\nMapped: 2 kB\n")
    monkeypatch.setattr(info, "_PROC", tmp_path)
    m = info.mem()
    assert (m["dirty"], m["writeBack"], m["hugePagesTotal"], m["mapped"]) == (0, 0, 3, 2048)


DISK_SHAPE: dict[str, type | tuple[type, ...]] = {
    "device": str, "mountpoint": str, "fstype": str, "opts": str,
    "total": int, "free": int, "used": int, "usedPercent": float,
}


def test_disk() -> None:
    disks = info.disk()
    for d in disks:
        check_shape(d, DISK_SHAPE)
        assert 0 <= d["free"] <= d["total"] and 0.0 <= d["usedPercent"] <= 100.0
    everything = info.disk(include_virtual=True)
    for d in everything:
        check_shape(d, DISK_SHAPE)
    assert "/proc" in {d["mountpoint"] for d in everything}
    assert len(everything) >= len(disks)
    json.dumps(everything)


def test_nic() -> None:
    nics = info.nic()
    by_name = {n["name"]: n for n in nics}
    assert set(by_name) == {name for _, name in socket.if_nameindex()}
    for n in nics:
        check_shape(n, {"index": int, "name": str, "hardwareaddr": str, "mtu": int, "flags": list,
                        "addrs": list, "speed": int, "carrier": bool, "operstate": str})
        for a in n["addrs"]:
            assert set(a) == {"addr"} and "/" in a["addr"]
            ipaddress.ip_interface(a["addr"])  # "ip/prefix", no IPv6 zone
    lo = by_name["lo"]
    assert "loopback" in lo["flags"] and lo["hardwareaddr"] == ""
    if "up" in lo["flags"]:
        assert {"addr": "127.0.0.1/8"} in lo["addrs"]
    json.dumps(nics)


def test_os_info() -> None:
    o = info.os_info()
    check_shape(o, {"hostname": str, "uptime": int, "bootTime": int, "procs": int, "os": str,
                    "platform": str, "platformFamily": str, "platformVersion": str,
                    "kernelVersion": str, "virtualizationSystem": str, "virtualizationRole": str,
                    "hostid": str})
    assert o["hostname"] == socket.gethostname() and o["os"] == "linux"
    assert 0 < o["bootTime"] <= time.time() and o["uptime"] >= 0 and o["procs"] >= 1
    assert o["kernelVersion"] == os.uname().release
    json.dumps(o)


PORT_SHAPE: dict[str, type | tuple[type, ...]] = {
    "network": str, "ip": str, "port": int, "unix": str, "pid": int}


def test_port_lists_our_listening_sockets(tmp_path: Path) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connected = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "s.sock"))
        unix.listen()
        connected.connect(tcp.getsockname())  # its client side is not listening
        ports = info.port()
        for p in ports:
            check_shape(p, PORT_SHAPE)
            assert p["network"] in {"tcp", "tcp6", "udp", "udp6", "unix"}
        me = os.getpid()
        assert {"network": "tcp", "ip": "127.0.0.1", "port": tcp.getsockname()[1], "unix": "",
                "pid": me} in ports
        assert {"network": "udp", "ip": "127.0.0.1", "port": udp.getsockname()[1], "unix": "",
                "pid": me} in ports
        assert {"network": "unix", "ip": "", "port": 0, "unix": str(tmp_path / "s.sock"),
                "pid": me} in ports
        assert not [p for p in ports if p["network"] == "tcp" and p["port"] == connected.getsockname()[1]]
        json.dumps(ports)
    finally:
        for s in (tcp, udp, unix, connected):
            s.close()


def test_port_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1")
        sock.listen()
        assert {"network": "tcp6", "ip": "::1", "port": sock.getsockname()[1], "unix": "",
                "pid": os.getpid()} in info.port()
    finally:
        sock.close()


def test_port_tolerates_odd_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n"
    (net / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4242 1\n"
        + "   1: ZZZZ:QQ 00000000:0000 0A 0 0 0 0 0 notanumber\n"
        + "short line\n")
    (net / "udp6").write_text(
        header + "   0: 00000000000000000000000001000000:0035 0000:0000 07 0 0 0 0 0 4343 1\n")
    (net / "unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 4444 /run/x.sock\n"
        "0000000000000000: 00000002 00000000 00000000 0001 03 4545 /run/connected.sock\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 4646\n"
        "0000000000000000: 00000002 00000000 zzzz 0001 01 4747 /bad\n")
    fds = tmp_path / "77" / "fd"
    fds.mkdir(parents=True)
    os.symlink("socket:[4242]", fds / "3")
    os.symlink("socket:[nope]", fds / "4")
    os.symlink("/dev/null", fds / "5")
    (tmp_path / "78").mkdir()  # a process that vanished: no fd directory
    (tmp_path / "self").mkdir()
    monkeypatch.setattr(info, "_PROC", tmp_path)
    assert info.port() == [
        {"network": "tcp", "ip": "127.0.0.1", "port": 8080, "unix": "", "pid": 77},
        {"network": "udp6", "ip": "::1", "port": 53, "unix": "", "pid": 0},
        {"network": "unix", "ip": "", "port": 0, "unix": "/run/x.sock", "pid": 0},
        {"network": "unix", "ip": "", "port": 0, "unix": "", "pid": 0},
    ]


def test_version() -> None:
    v = info.version()
    check_shape(v, {"branch": str, "revision": str, "dirty": bool, "version": str})
    assert v["version"] == g8os.__version__
    root = Path(g8os.__file__).resolve().parent
    if (root / ".git").exists() and shutil.which("git"):
        assert len(v["revision"]) == 40 and v["branch"]
    json.dumps(v)


def test_version_outside_a_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    info._source_version.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # no git at all
    try:
        assert info.version() == {"branch": "", "revision": "", "dirty": False,
                                  "version": g8os.__version__}
    finally:
        info._source_version.cache_clear()


def test_everything_in_fresh_namespaces() -> None:
    """In new network, PID and mount namespaces every function answers for those namespaces."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1)")
    script = (
        "import json\n"
        "from g8os.system import info, processes\n"
        "print(json.dumps({'cpu': info.cpu(), 'mem': info.mem(), 'disk': info.disk(),"
        " 'nic': info.nic(), 'os': info.os_info(), 'port': info.port(), 'version': info.version(),"
        " 'ps': processes.list_processes()}))\n"
    )
    done = subprocess.run([unshare, "--net", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=50)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert [n["name"] for n in facts["nic"]] == ["lo"]
    assert facts["nic"][0]["flags"] == ["loopback"] and facts["nic"][0]["addrs"] == []
    assert facts["port"] == []
    assert [p["pid"] for p in facts["ps"]] == [1]
    assert facts["os"]["procs"] == 1
    assert facts["cpu"] and facts["mem"]["total"] > 0
