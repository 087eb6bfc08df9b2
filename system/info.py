"""Facts about the node for info.*: plain JSON-able dicts shaped like the original core0's answers.

core0 returned gopsutil's structs, so field names are gopsutil's JSON names (camelCase) and units
are its units (bytes, MHz, KB for cache size, seconds for uptime). Everything is read from /proc
and /sys of the caller's namespaces, so inside a fresh network or PID namespace the answers are
those of that namespace. No function raises on an odd or vanishing /proc entry: it is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

import g8os

_PROC = Path("/proc")
_SYS_NET = Path("/sys/class/net")


def _read(path: str | Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _read_int(path: str | Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def _to_int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


def _to_float(text: str, default: float = 0.0) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return default


# --- cpu -----------------------------------------------------------------------------------------

def _cpu_entry(fields: dict[str, str], index: int) -> dict[str, Any]:
    cache = fields.get("cache size", "").split()
    mhz = _to_float(fields.get("cpu MHz", "0"))
    number = _to_int(fields.get("processor", str(index)), index)
    # gopsutil prefers the nominal maximum over the momentary frequency /proc/cpuinfo shows.
    max_khz = _read_int(f"/sys/devices/system/cpu/cpu{number}/cpufreq/cpuinfo_max_freq")
    if max_khz:
        mhz = max_khz / 1000.0
    return {
        "cpu": number,
        "vendorId": fields.get("vendor_id", fields.get("CPU implementer", "")),
        "family": fields.get("cpu family", fields.get("CPU architecture", "")),
        "model": fields.get("model", fields.get("CPU part", "")),
        "stepping": _to_int(fields.get("stepping", fields.get("CPU revision", "0"))),
        "physicalId": fields.get("physical id", ""),
        "coreId": fields.get("core id", ""),
        "cores": _to_int(fields.get("cpu cores", "1"), 1),
        "modelName": fields.get("model name", ""),
        "mhz": mhz,
        "cacheSize": _to_int(cache[0]) if cache else 0,
        "flags": (fields.get("flags") or fields.get("Features") or "").split(),
        "microcode": fields.get("microcode", ""),
    }


def cpu() -> list[dict[str, Any]]:
    """One entry per logical CPU, as gopsutil's cpu.Info()."""
    entries: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    text = _read(_PROC / "cpuinfo") or ""
    # Blocks are separated by blank lines; on some architectures a trailing block holds
    # machine-wide fields (no `processor`), which is not a CPU.
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "processor" in fields:
                entries.append(_cpu_entry(fields, len(entries)))
            fields = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if not entries:  # no readable /proc/cpuinfo: at least say how many CPUs there are
        count = psutil.cpu_count() or os.cpu_count() or 1
        entries = [_cpu_entry({}, i) for i in range(count)]
    return entries


# --- memory --------------------------------------------------------------------------------------

# /proc/meminfo fields (kB) under their gopsutil JSON names.
_MEMINFO = {
    "Dirty": "dirty", "Writeback": "writeBack", "WritebackTmp": "writeBackTmp",
    "SReclaimable": "sreclaimable", "SUnreclaim": "sunreclaim", "PageTables": "pageTables",
    "SwapCached": "swapCached", "CommitLimit": "commitLimit", "Committed_AS": "committedAS",
    "HighTotal": "highTotal", "HighFree": "highFree", "LowTotal": "lowTotal", "LowFree": "lowFree",
    "SwapTotal": "swapTotal", "SwapFree": "swapFree", "Mapped": "mapped",
    "VmallocTotal": "vmallocTotal", "VmallocUsed": "vmallocUsed", "VmallocChunk": "vmallocChunk",
    "Hugepagesize": "hugePageSize",
}
_MEMINFO_COUNTS = {"HugePages_Total": "hugePagesTotal", "HugePages_Free": "hugePagesFree"}


def mem() -> dict[str, Any]:
    """Memory in bytes, as gopsutil's mem.VirtualMemory()."""
    vm = psutil.virtual_memory()
    result: dict[str, Any] = {
        "total": vm.total,
        "available": vm.available,
        "used": vm.used,
        "usedPercent": vm.percent,
        "free": vm.free,
        "active": getattr(vm, "active", 0),
        "inactive": getattr(vm, "inactive", 0),
        "wired": getattr(vm, "wired", 0),
        "laundry": 0,
        "buffers": getattr(vm, "buffers", 0),
        "cached": getattr(vm, "cached", 0),
        "shared": getattr(vm, "shared", 0),
        "slab": getattr(vm, "slab", 0),
    }
    for name in (*_MEMINFO.values(), *_MEMINFO_COUNTS.values()):
        result[name] = 0
    for line in (_read(_PROC / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        if key in _MEMINFO:
            result[_MEMINFO[key]] = _to_int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        elif key in _MEMINFO_COUNTS:
            result[_MEMINFO_COUNTS[key]] = _to_int(parts[0])
    return result


# --- disks ---------------------------------------------------------------------------------------

# statvfs on a network filesystem whose server is gone blocks forever; info.disk must not.
_NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "afs",
                         "fuse.sshfs", "fuse.glusterfs", "9p"})


def disk(include_virtual: bool = False) -> list[dict[str, Any]]:
    """Mounted filesystems, as gopsutil's disk.Partitions(false), plus their sizes in bytes.

    `include_virtual` also lists virtual filesystems (proc, sysfs, cgroup, ...).
    """
    try:
        partitions = psutil.disk_partitions(all=include_virtual)
    except OSError:
        partitions = []
    result: list[dict[str, Any]] = []
    for part in partitions:
        entry: dict[str, Any] = {
            "device": part.device, "mountpoint": part.mountpoint,
            "fstype": part.fstype, "opts": part.opts,
            "total": 0, "free": 0, "used": 0, "usedPercent": 0.0,
        }
        if part.fstype not in _NETWORK_FS:
            with contextlib.suppress(OSError):
                st = os.statvfs(part.mountpoint)
                total = st.f_blocks * st.f_frsize
                free = st.f_bavail * st.f_frsize
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                # As df: the share of the space non-root users can use that is used.
                usable = used + free
                entry.update(total=total, free=free, used=used,
                             usedPercent=round(used * 100.0 / usable, 2) if usable else 0.0)
        result.append(entry)
    return result


# --- network interfaces --------------------------------------------------------------------------

# Go's net.Flags names (what gopsutil reports) for the SIOCGIFFLAGS bits psutil names.
_GO_FLAGS = {"up": "up", "broadcast": "broadcast", "loopback": "loopback",
             "pointopoint": "pointtopoint", "multicast": "multicast", "running": "running"}


def _prefix_len(netmask: str | None, family: int) -> int:
    full = 32 if family == socket.AF_INET else 128
    if not netmask:
        return full
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return full


def _sysfs_is_ours(index_of: dict[str, int]) -> bool:
    """Whether /sys/class/net shows this network namespace.

    sysfs shows the namespace of whoever mounted it, so after unshare(CLONE_NEWNET) without a
    fresh sysfs mount it describes the old namespace's interfaces under the same names.
    """
    try:
        names = os.listdir(_SYS_NET)
    except OSError:
        return False
    return {n: _read_int(_SYS_NET / n / "ifindex") for n in names} == index_of


def nic() -> list[dict[str, Any]]:
    """Network interfaces of this network namespace, as core0's info.nic (gopsutil + speed).

    Names, flags, MTU, speed and addresses come from netlink/ioctl (psutil, socket), which always
    answer for the caller's namespace; only carrier and operstate come from sysfs, when it is ours.
    """
    try:
        index_of = {name: index for index, name in socket.if_nameindex()}
    except OSError:
        index_of = {}
    try:
        addrs = psutil.net_if_addrs()
    except OSError:
        addrs = {}
    try:
        stats = psutil.net_if_stats()
    except OSError:
        stats = {}
    sysfs = _sysfs_is_ours(index_of)
    result: list[dict[str, Any]] = []
    for name in sorted(set(index_of) | set(stats) | set(addrs)):
        stat = stats.get(name)
        psutil_flags = stat.flags.split(",") if stat is not None and stat.flags else []
        flags = [_GO_FLAGS[f] for f in psutil_flags if f in _GO_FLAGS]
        running = "running" in psutil_flags
        hwaddr = ""
        if_addrs: list[dict[str, str]] = []
        for a in addrs.get(name, []):
            if a.family == psutil.AF_LINK:
                hwaddr = a.address or ""
            elif a.family in (socket.AF_INET, socket.AF_INET6):
                ip = a.address.split("%", 1)[0]  # drop an IPv6 zone (fe80::1%eth0)
                if_addrs.append({"addr": f"{ip}/{_prefix_len(a.netmask, a.family)}"})
        if hwaddr == "00:00:00:00:00:00":  # loopback and tunnels: gopsutil reports none
            hwaddr = ""
        carrier: int | None = None
        operstate = ""
        if sysfs:
            carrier = _read_int(_SYS_NET / name / "carrier")  # EINVAL while the link is down
            operstate = (_read(_SYS_NET / name / "operstate") or "").strip()
        result.append({
            "index": index_of.get(name, 0),
            "name": name,
            "hardwareaddr": hwaddr,
            "mtu": stat.mtu if stat is not None else 0,
            "flags": flags,
            "addrs": if_addrs,
            # psutil asks ethtool; 0 when the driver cannot tell (virtio, veth) or the link is down
            "speed": stat.speed if stat is not None and stat.speed > 0 else 0,
            "carrier": bool(carrier) if carrier is not None else running,
            "operstate": operstate or ("up" if running else "down"),
        })
    result.sort(key=lambda entry: entry["index"])  # Go's net.Interfaces() order
    return result


# --- os ------------------------------------------------------------------------------------------

def _os_release() -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = _read(path)
        if text is None:
            continue
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip("\"'")
        return values
    return {}


# ID / ID_LIKE -> gopsutil's platformFamily
_FAMILIES = {
    "debian": "debian", "ubuntu": "debian", "linuxmint": "debian", "raspbian": "debian",
    "fedora": "fedora", "rhel": "rhel", "centos": "rhel", "rocky": "rhel", "almalinux": "rhel",
    "ol": "rhel", "amzn": "rhel", "opensuse": "suse", "sles": "suse", "suse": "suse",
    "arch": "arch", "manjaro": "arch", "alpine": "alpine", "gentoo": "gentoo",
}


def _virtualization() -> tuple[str, str]:
    """(system, role) as gopsutil's host.Virtualization(): the innermost layer wins."""
    if Path("/.dockerenv").exists() or Path("/.dockerinit").exists():
        return "docker", "guest"
    environ = _read(_PROC / "1" / "environ") or ""
    if "container=lxc" in environ:
        return "lxc", "guest"
    if "container=systemd-nspawn" in environ:
        return "systemd-nspawn", "guest"
    cgroup = _read(_PROC / "self" / "cgroup") or ""
    for marker, system in (("docker", "docker"), ("lxc", "lxc"), ("kubepods", "docker")):
        if marker in cgroup:
            return system, "guest"
    if Path("/proc/vz").exists() and not Path("/proc/bc").exists():
        return "openvz", "guest"
    if Path("/proc/xen").exists():
        caps = _read("/proc/xen/capabilities") or ""
        return "xen", "host" if "control_d" in caps else "guest"
    vendor = " ".join(filter(None, (_read(f"/sys/class/dmi/id/{n}") for n in
                                    ("sys_vendor", "product_name", "bios_vendor")))).lower()
    for marker, system in (("qemu", "kvm"), ("kvm", "kvm"), ("vmware", "vmware"),
                           ("virtualbox", "vbox"), ("microsoft", "hyperv"), ("xen", "xen"),
                           ("amazon ec2", "kvm"), ("google", "kvm")):
        if marker in vendor:
            return system, "guest"
    cpuinfo = _read(_PROC / "cpuinfo") or ""
    if " hypervisor" in cpuinfo:  # a VM the DMI tables do not name (e.g. firecracker)
        return "kvm", "guest"
    modules = _read(_PROC / "modules") or ""
    if "kvm" in modules:
        return "kvm", "host"
    if "vboxdrv" in modules:
        return "vbox", "host"
    return "", ""


def _host_id() -> str:
    for path in ("/sys/class/dmi/id/product_uuid", "/etc/machine-id",
                 "/proc/sys/kernel/random/boot_id"):
        text = (_read(path) or "").strip().lower()
        if text:
            return text
    return ""


def os_info() -> dict[str, Any]:
    """Host facts, as gopsutil's host.Info()."""
    try:
        boot = int(psutil.boot_time())
    except (OSError, RuntimeError):
        boot = 0
    try:
        procs = len(psutil.pids())
    except OSError:
        procs = 0
    release = _os_release()
    platform_id = release.get("ID", "")
    family = _FAMILIES.get(platform_id, "")
    if not family:
        for like in release.get("ID_LIKE", "").split():
            if like in _FAMILIES:
                family = _FAMILIES[like]
                break
    virt_system, virt_role = _virtualization()
    return {
        "hostname": socket.gethostname(),
        "uptime": max(0, int(time.time()) - boot) if boot else 0,
        "bootTime": boot,
        "procs": procs,
        "os": platform.system().lower(),
        "platform": platform_id,
        "platformFamily": family,
        "platformVersion": release.get("VERSION_ID", ""),
        "kernelVersion": platform.release(),
        "kernelArch": platform.machine(),
        "virtualizationSystem": virt_system,
        "virtualizationRole": virt_role,
        "hostid": _host_id(),
    }


# --- listening sockets ---------------------------------------------------------------------------

# TCP_LISTEN, and UDP's TCP_CLOSE (07) which is how /proc/net/udp shows a bound, unconnected socket.
_LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}
_UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON: the unix socket is listening


def _hex_ip(text: str) -> str:
    """An address of /proc/net/tcp*: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(text)
    data = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(data) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, data)


def _socket_pids() -> dict[int, int]:
    """inode of each socket -> pid of a process holding it (the lowest pid wins)."""
    owners: dict[int, int] = {}
    try:
        pids = sorted((int(n) for n in os.listdir(_PROC) if n.isdigit()), reverse=True)
    except OSError:
        return owners
    for pid in pids:
        fd_dir = _PROC / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                with contextlib.suppress(ValueError):
                    owners[int(target[8:-1])] = pid
    return owners


def port() -> list[dict[str, Any]]:
    """Listening sockets of this network namespace, as core0's info.port.

    Read from /proc/net rather than psutil.net_connections because psutil cannot tell a
    listening unix socket from a connected one.
    """
    found: list[tuple[dict[str, Any], int]] = []
    for network, state in _LISTENING.items():
        for line in (_read(_PROC / "net" / network) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != state:
                continue
            try:
                ip, _, hex_port = fields[1].partition(":")
                entry = {"network": network, "ip": _hex_ip(ip), "port": int(hex_port, 16),
                         "unix": "", "pid": 0}
                inode = int(fields[9])
            except ValueError:
                continue
            found.append((entry, inode))
    for line in (_read(_PROC / "net" / "unix") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            flags = int(fields[3], 16)
            inode = int(fields[6])
        except ValueError:
            continue
        if not flags & _UNIX_ACCEPTCON:
            continue
        path = fields[7] if len(fields) > 7 else ""  # unnamed, or abstract as @name
        found.append(({"network": "unix", "ip": "", "port": 0, "unix": path, "pid": 0}, inode))
    if found:
        owners = _socket_pids()
        for entry, inode in found:
            entry["pid"] = owners.get(inode, 0)
    return [entry for entry, _ in found]


# --- version -------------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
            stdin=subprocess.DEVNULL,
            # Never take .git/index.lock: someone may be committing in this tree right now.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def _source_version() -> tuple[str, str, bool]:
    root = Path(g8os.__file__).resolve().parent
    # Only a checkout that tracks g8os's own files counts, not some repository that happens
    # to contain an installed copy (a venv inside a project).
    if not _git(root, "ls-files", "--", "__init__.py"):
        return "", "", False
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD") or ""
    revision = _git(root, "rev-parse", "HEAD") or ""
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return branch, revision, bool(status)


def version() -> dict[str, Any]:
    """g8os version and the git state of its source tree (computed once per process)."""
    try:
        branch, revision, dirty = _source_version()
    except Exception:  # a version answer must never fail
        branch, revision, dirty = "", "", False
    return {"branch": branch, "revision": revision, "dirty": dirty, "version": g8os.__version__}
