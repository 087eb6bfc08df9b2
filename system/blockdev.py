"""Block devices as the kernel shows them: sysfs facts, mounts, who holds a device, and the rules
that decide which devices g8os may change.

Everything here reads sysfs and /proc, or runs read-only probes (lsblk, blkid -p) — and only
probes devices the node is allowed to change: a device protected by rule (the node's root disk,
a disk outside `disk_manage`) is never opened by the node at all, not even to read it.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from g8os.messages.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from g8os.system import mountinfo
from g8os.system.mountinfo import Mount

SYS_BLOCK = Path("/sys/class/block")
SYS_BTRFS = Path("/sys/fs/btrfs")
# Kernel names of devices that are never disks, whatever the configuration says: RAM disks,
# compressed swap in RAM, floppies.
NOT_DISKS = ("ram*", "zram*", "fd*")
TOOL_TIMEOUT = 30.0
SANDBOX_MANAGE = ("loop*",)


# ------------------------------------------------------------------------------------------ names


def device_name(value: str) -> str:
    """`loop3`, `/dev/loop3` or a symlink to it → the kernel name `loop3`; NotFound otherwise."""
    text = value.strip()
    if not text:
        raise InvalidArgument("empty device name")
    if "\0" in text:
        raise InvalidArgument("device names must not contain NUL bytes")
    if not text.startswith("/"):
        if "/" in text or text in (".", ".."):
            raise InvalidArgument(f"not a device name: {value!r}")
        if (SYS_BLOCK / text).exists():
            return text
        text = f"/dev/{text}"
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise NotFound(f"no block device {value!r}")
    except OSError as exc:
        raise NotFound(f"cannot look at {value!r}: {exc.strerror}")
    import stat as _stat

    if not _stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f"{value!r} is not a block device")
    name = name_of_devno(os.major(st.st_rdev), os.minor(st.st_rdev))
    if name is None:
        raise NotFound(f"no block device {value!r} (its number is not in sysfs)")
    return name


def name_of_devno(major: int, minor: int) -> str | None:
    try:
        return Path(os.path.realpath(f"/sys/dev/block/{major}:{minor}")).name if \
            os.path.exists(f"/sys/dev/block/{major}:{minor}") else None
    except OSError:
        return None


def dev_path(name: str) -> str:
    return f"/dev/{name}"


def is_partition(name: str) -> bool:
    return (SYS_BLOCK / name / "partition").exists()


def disk_of(name: str) -> str:
    """The whole disk a partition belongs to (a whole disk is its own)."""
    if not is_partition(name):
        return name
    return Path(os.path.realpath(SYS_BLOCK / name)).parent.name


def partitions(disk: str) -> list[str]:
    """The kernel's partitions of `disk`, by partition number."""
    base = SYS_BLOCK / disk
    found = []
    try:
        for entry in base.iterdir():
            number = _read(entry / "partition")
            if number.isdigit():
                found.append((int(number), entry.name))
    except OSError:
        return []
    return [name for _, name in sorted(found)]


def partition_number(name: str) -> int:
    value = _read(SYS_BLOCK / name / "partition")
    return int(value) if value.isdigit() else 0


def partition_name(disk: str, number: int) -> str | None:
    for name in partitions(disk):
        if partition_number(name) == number:
            return name
    return None


def _read(path: Path | str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _read_int(path: Path | str) -> int:
    value = _read(path)
    try:
        return int(value)
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class Disk:
    """A whole disk as sysfs shows it."""

    name: str
    major: int
    minor: int
    size: int                 # bytes
    kind: str                 # disk | loop
    model: str
    serial: str
    rotational: bool
    removable: bool
    read_only: bool
    backing_file: str         # loop devices only
    identity: str             # tells this device from another that later takes the same name

    @property
    def path(self) -> str:
        return dev_path(self.name)


def size_bytes(name: str) -> int:
    # /sys/.../size is always in 512-byte sectors, whatever the logical block size.
    return _read_int(SYS_BLOCK / name / "size") * 512


def start_bytes(name: str) -> int:
    """Where a partition starts on its disk (/sys gives 512-byte sectors here too)."""
    return _read_int(SYS_BLOCK / name / "start") * 512


def logical_block_size(name: str) -> int:
    return _read_int(SYS_BLOCK / disk_of(name) / "queue" / "logical_block_size") or 512


def loop_backing_file(name: str) -> str:
    return _read(SYS_BLOCK / name / "loop" / "backing_file")


def identity(name: str) -> str:
    """What makes this device this device: a loop device is its backing file (by inode, as a path
    can be reused), a disk its serial/wwn and size. A different identity under the same name is a
    different device: nothing recorded about the old one (an undo, a protection mark) applies."""
    if is_partition(name):
        return f"{identity(disk_of(name))}:part{partition_number(name)}"
    if name.startswith("loop"):
        backing = loop_backing_file(name)
        try:
            st = os.stat(backing.removesuffix(" (deleted)")) if backing else None
        except OSError:
            st = None
        inode = f"{st.st_dev}:{st.st_ino}" if st else "?"
        offset = _read(SYS_BLOCK / name / "loop" / "offset")
        return f"loop:{backing}:{inode}:{offset}:{size_bytes(name)}"
    device = SYS_BLOCK / name / "device"
    serial = _read(device / "serial") or _read(device / "wwid") or _read(SYS_BLOCK / name / "wwid")
    return f"disk:{_read(device / 'model')}:{serial}:{size_bytes(name)}"


def disk_info(name: str) -> Disk | None:
    """The whole disk `name`, or None if it is not a disk g8os lists (a partition, a RAM disk, an
    empty loop device, a device of size 0)."""
    base = SYS_BLOCK / name
    if not base.exists() or is_partition(name) or any(fnmatch.fnmatch(name, p) for p in NOT_DISKS):
        return None
    size = size_bytes(name)
    backing = loop_backing_file(name) if name.startswith("loop") else ""
    if size == 0 or (name.startswith("loop") and not backing):
        return None
    dev = _read(base / "dev")
    major, _, minor = dev.partition(":")
    device = base / "device"
    return Disk(
        name=name, major=int(major or 0), minor=int(minor or 0), size=size,
        kind="loop" if name.startswith("loop") else "disk",
        model=_read(device / "model"), serial=_read(device / "serial") or _read(base / "wwid"),
        rotational=_read(base / "queue" / "rotational") == "1",
        removable=_read(base / "removable") == "1", read_only=_read(base / "ro") == "1",
        backing_file=backing, identity=identity(name),
    )


def scan() -> dict[str, Disk]:
    """Every whole disk present now. Cheap (sysfs only): the DiskSupervisor calls it on every
    uevent and on a timer."""
    found: dict[str, Disk] = {}
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return found
    for name in names:
        disk = disk_info(name)
        if disk is not None:
            found[name] = disk
    return found


def holders(name: str) -> list[str]:
    try:
        return sorted(os.listdir(SYS_BLOCK / name / "holders"))
    except OSError:
        return []


def slaves(name: str) -> list[str]:
    try:
        return sorted(os.listdir(SYS_BLOCK / name / "slaves"))
    except OSError:
        return []


# ------------------------------------------------------------------------------------------ mounts


def mounts() -> list[Mount]:
    """The mounts of this process's mount namespace (the node's), in mount order."""
    try:
        return mountinfo.mounts()
    except OSError as exc:
        raise Internal(f"cannot read {mountinfo.MOUNTINFO}: {exc.strerror}") from None


def mount_device(mount: Mount) -> str | None:
    """The kernel name of the block device behind a mount, or None (tmpfs, proc...). btrfs shows
    an anonymous device number, so its source path is used instead."""
    if mount.major != 0:
        name = name_of_devno(mount.major, mount.minor)
        if name is not None:
            return name
    if mount.source.startswith("/dev/"):
        try:
            return device_name(mount.source)
        except Exception:
            return None
    return None


def mountpoints_of(names: Iterable[str], all_mounts: Sequence[Mount] | None = None) -> list[Mount]:
    wanted = set(names)
    return [m for m in (mounts() if all_mounts is None else all_mounts) if mount_device(m) in wanted]


def mount_for_path(path: str, all_mounts: Sequence[Mount] | None = None) -> Mount | None:
    """The mount that holds `path` (the longest mountpoint prefix; the last one mounted wins)."""
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in (mounts() if all_mounts is None else all_mounts):
        point = mount.mountpoint.rstrip("/") or "/"
        if (target == point or target.startswith(point.rstrip("/") + "/") or point == "/") and (
                best is None or len(point) >= len(best.mountpoint.rstrip("/") or "/")):
            best = mount
    return best


def root_disks() -> frozenset[str]:
    """The whole disks under the node's root filesystem (through dm/md layers too)."""
    root = None
    for mount in mounts():
        if mount.mountpoint == "/":
            root = mount  # the last mount on / is the one in effect
    if root is None:
        return frozenset()
    name = mount_device(root)
    if name is None:
        return frozenset()
    return frozenset(_underlying_disks(name))


def _underlying_disks(name: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    if name in seen:
        return set()
    seen.add(name)
    disk = disk_of(name)
    below = slaves(disk)
    if not below:
        return {disk}
    found: set[str] = {disk}
    for lower in below:
        found |= _underlying_disks(lower, seen)
    return found


# ------------------------------------------------------------------------------------------ btrfs pools


@dataclass(frozen=True)
class Pool:
    """A mounted btrfs filesystem as the kernel knows it (/sys/fs/btrfs/<uuid>)."""

    uuid: str
    label: str
    devices: tuple[str, ...]      # kernel names of its member devices


def mounted_pools() -> list[Pool]:
    pools = []
    try:
        entries = os.listdir(SYS_BTRFS)
    except OSError:
        return pools
    for entry in entries:
        devices_dir = SYS_BTRFS / entry / "devices"
        if not devices_dir.is_dir():
            continue
        try:
            members = tuple(sorted(os.listdir(devices_dir)))
        except OSError:
            members = ()
        pools.append(Pool(uuid=entry, label=_read(SYS_BTRFS / entry / "label"), devices=members))
    return pools


def pool_of(name: str) -> Pool | None:
    for pool in mounted_pools():
        if name in pool.devices:
            return pool
    return None


def pool_mounts(pool: Pool, all_mounts: Sequence[Mount] | None = None) -> list[Mount]:
    return [m for m in (mounts() if all_mounts is None else all_mounts)
            if m.fstype == "btrfs" and mount_device(m) in pool.devices]


# ------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Policy:
    """Which devices the node may change. Built by the DiskSupervisor from the node's config and
    its protection marks; passed to each helper so the rules are checked again where the change
    is made."""

    manage: tuple[str, ...]               # glob patterns over kernel names
    protect: tuple[str, ...] = ()         # always protected, by configuration
    marks: dict[str, str] = field(default_factory=dict)     # disk.protect: name → identity
    root: frozenset[str] = frozenset()    # disks under the node's root filesystem

    def to_json(self) -> dict[str, Any]:
        return {"manage": list(self.manage), "protect": list(self.protect), "marks": self.marks,
                "root": sorted(self.root)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(manage=tuple(data["manage"]), protect=tuple(data.get("protect", ())),
                   marks=dict(data.get("marks", {})), root=frozenset(data.get("root", ())))


def manage_patterns(config: Any) -> tuple[str, ...]:
    """`disk_manage` from the node's config; unset: loop devices only in a sandbox (the host's own
    disks are never a sandbox's to change), every disk otherwise."""
    patterns = getattr(config, "disk_manage", None)
    if patterns is None:
        return SANDBOX_MANAGE if getattr(config, "mode", "sandbox") == "sandbox" else ("*",)
    return tuple(patterns)


def rule_protection(name: str, policy: Policy) -> str | None:
    """Why the rules (not a mark) protect the whole disk `name`, or None. Such a device is never
    opened by the node."""
    disk = disk_of(name) if (SYS_BLOCK / name).exists() else name
    if disk in policy.root or name in policy.root:
        return f"{disk} holds the node's root filesystem"
    if not any(fnmatch.fnmatch(disk, p) for p in policy.manage):
        return (f"{disk} is not managed by this node (disk_manage: {', '.join(policy.manage) or 'none'})")
    if any(fnmatch.fnmatch(disk, p) or fnmatch.fnmatch(name, p) for p in policy.protect):
        return f"{name} is protected by the node's configuration (disk_protect)"
    return None


def protection(name: str, policy: Policy, *, whole: bool = False) -> str | None:
    """Why `name` may not be changed by any command, or None. `whole`: the change covers the
    whole disk (its table), so a mark on any of its partitions protects it too."""
    reason = rule_protection(name, policy)
    if reason:
        return reason
    disk = disk_of(name) if (SYS_BLOCK / name).exists() else name
    candidates = [name, disk] + (partitions(disk) if whole else [])
    for candidate in dict.fromkeys(candidates):
        mark = policy.marks.get(candidate)
        if mark is not None and (not (SYS_BLOCK / candidate).exists() or mark in ("", identity(candidate))):
            return f"{candidate} is marked protected (disk.protect)"
    return None


def in_use(name: str, *, whole: bool = False, probe: bool = True) -> str | None:
    """Why the kernel holds `name` (mounted, a member of a mounted btrfs pool, a swap area,
    held by device-mapper/md), or None. `whole`: `name` is a disk and any use of one of its
    partitions counts. `probe`: also try an exclusive open, which finds what this mount
    namespace cannot see (a mount made in another namespace)."""
    targets = [name] + (partitions(name) if whole else [])
    all_mounts = mounts()
    for target in targets:
        pool = pool_of(target)
        if pool is not None:
            points = (", ".join(m.mountpoint for m in pool_mounts(pool, all_mounts))
                      or "another mount namespace")
            label = f" '{pool.label}'" if pool.label else ""
            return f"{target} is part of the mounted btrfs pool{label} ({pool.uuid}) at {points}"
        mounted = mountpoints_of([target], all_mounts)
        if mounted:
            return f"{target} is mounted at {', '.join(m.mountpoint for m in mounted)}"
        held = holders(target)
        if held:
            return f"{target} is held by {', '.join(held)}"
    swaps = _read("/proc/swaps").splitlines()[1:]
    for line in swaps:
        source = line.split()[0] if line.split() else ""
        for target in targets:
            if source == dev_path(target):
                return f"{target} is in use as swap"
    if probe:
        for target in targets:
            try:
                fd = os.open(dev_path(target), os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return f"{target} is in use (held open exclusively: mounted in another mount namespace?)"
                if exc.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
                    raise NotFound(f"{target} vanished")
                continue
            os.close(fd)
    return None


def check_changeable(name: str, policy: Policy, *, whole: bool) -> None:
    """FailedPrecondition if `name` is protected or in use: the one gate before any change."""
    reason = protection(name, policy, whole=whole)
    if reason:
        raise FailedPrecondition(f"refused: {reason}")
    busy = in_use(name, whole=whole)
    if busy:
        raise FailedPrecondition(f"refused: {busy}")


# ------------------------------------------------------------------------------------------ probes


def run(argv: Sequence[str], *, timeout: float = TOOL_TIMEOUT, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; a failure is an error that quotes the tool's stderr."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C"})
    except FileNotFoundError:
        raise Internal(f"{argv[0]} is not installed on this node")
    except subprocess.TimeoutExpired:
        raise Internal(f"{' '.join(argv)} did not finish within {timeout:g}s")
    if check and proc.returncode != 0:
        raise ToolError(argv, proc)
    return proc


class ToolError(FailedPrecondition):
    """A tool refused or failed: its own words, cleaned of noise."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        text = tool_message(proc.stderr) or tool_message(proc.stdout) or f"exit status {proc.returncode}"
        super().__init__(f"{os.path.basename(argv[0])} failed: {text}")
        self.returncode = proc.returncode

    def __reduce__(self):
        return (FailedPrecondition, (self.message,), {"critical": self.critical})


def tool_message(text: str) -> str:
    # parted calls udevadm, which a node without udev lacks; that noise is not the error.
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "udevadm" not in line and not line.startswith("NOTE:")
             and not line.startswith("      -")]
    # The first lines say what went wrong; a usage text that follows them does not.
    return " ".join(lines[:3])[:500]


def blkid(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Low-level probe (`blkid -p`: no cache, no udev) of the given devices: TYPE, LABEL, UUID,
    PTTYPE, PTUUID, PART_ENTRY_*. Only for devices the rules let the node open."""
    if not names:
        return {}
    proc = run(["blkid", "-p", "-o", "export", *[dev_path(n) for n in names]], check=False)
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in [*proc.stdout.splitlines(), ""]:
        if not line.strip():
            if current.get("DEVNAME"):
                found[Path(current["DEVNAME"]).name] = current
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return found


def signature(name: str) -> dict[str, str]:
    """What `name` holds (filesystem, partition table, RAID member...), or {} when blank."""
    probe = blkid([name]).get(name, {})
    return {k: v for k, v in probe.items() if k in ("TYPE", "UUID", "LABEL", "PTTYPE", "PTUUID", "USAGE")}


def lsblk(names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`lsblk --json --bytes -O` rows (with `children`). lsblk reads sysfs and the mount table; it
    opens no device (without udev it does not probe filesystems: see `blkid`)."""
    argv = ["lsblk", "--json", "--bytes", "-O", *[dev_path(n) for n in names]]
    proc = run(argv, check=False)
    if proc.returncode != 0 and not proc.stdout.strip():
        if names and any(not (SYS_BLOCK / n).exists() for n in names):
            raise NotFound(f"no block device {', '.join(names)}")
        raise Internal(f"lsblk failed: {tool_message(proc.stderr)}")
    try:
        return json.loads(proc.stdout).get("blockdevices", [])
    except ValueError:
        raise Internal("lsblk printed something that is not JSON")
