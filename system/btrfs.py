"""btrfs pools, devices, subvolumes, quotas and snapshots, through btrfs-progs.

Nothing here scans every block device of the machine (as `btrfs filesystem show` without an
argument does): unmounted pools are read from the superblocks of the devices the node may open
(`dump_super`), mounted ones through their mountpoint (ioctls on the mounted filesystem).
Replies keep the shapes of G8OS 1.0 (`label`, `uuid`, `total_devices`, `used`, `devices`
with `dev_id`, `size`, `used`, `path`; subvolumes as `ID`, `Gen`, `TopLevel`, `Path`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from g8os.messages.errors import FailedPrecondition, NotFound
from g8os.system import blockdev

_SHOW_HEAD = re.compile(r"Label:\s+(?:'(?P<label>.*)'|none)\s+uuid:\s+(?P<uuid>[0-9a-f-]+)")
_SHOW_TOTAL = re.compile(r"Total devices\s+(\d+)\s+FS bytes used\s+(\d+)")
_SHOW_DEV = re.compile(r"devid\s+(\d+)\s+size\s+(\d+)\s+used\s+(\d+)\s+path\s+(\S+)(\s+MISSING)?")
_SHOW_MISSING = re.compile(r"\*\*\*\s+Some devices missing")
_DF = re.compile(r"(\w+),\s*([\w/]+):\s+total=(\d+),\s+used=(\d+)")
_SUBVOL = re.compile(r"ID\s+(\d+)\s+gen\s+(\d+)\s+top level\s+(\d+)\s+path\s+(.+)")


def btrfs(*args: str, timeout: float = 120.0) -> str:
    return blockdev.run(["btrfs", *args], timeout=timeout).stdout


# ------------------------------------------------------------------------------------------ reading


def dump_super(name: str) -> dict[str, str]:
    """The primary superblock of one device, read from that device only."""
    proc = blockdev.run(["btrfs", "inspect-internal", "dump-super", blockdev.dev_path(name)], check=False)
    fields: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith((" ", "\t")):
            fields[parts[0]] = parts[1].strip()
    if fields.get("magic", "").split()[0:1] != ["_BHRfS_M"]:
        return {}
    return fields


def parse_show(text: str) -> list[dict[str, Any]]:
    """`btrfs filesystem show --raw` → [{label, uuid, total_devices, used, devices}]."""
    pools: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        head = _SHOW_HEAD.search(line)
        if head:
            current = {"label": head.group("label") or "", "uuid": head.group("uuid"),
                       "total_devices": 0, "used": 0, "devices": []}
            pools.append(current)
            continue
        if current is None:
            continue
        total = _SHOW_TOTAL.search(line)
        if total:
            current["total_devices"], current["used"] = int(total.group(1)), int(total.group(2))
            continue
        dev = _SHOW_DEV.search(line)
        if dev:
            entry: dict[str, Any] = {"dev_id": int(dev.group(1)), "size": int(dev.group(2)),
                                     "used": int(dev.group(3)), "path": dev.group(4)}
            if dev.group(5):
                entry["missing"] = True
            current["devices"].append(entry)
        if _SHOW_MISSING.search(line):
            current["missing"] = True
    return pools


def show_mounted(mountpoint: str) -> dict[str, Any]:
    pools = parse_show(btrfs("filesystem", "show", "--raw", mountpoint))
    if not pools:
        raise NotFound(f"no btrfs filesystem at {mountpoint}")
    return pools[0]


def parse_df(text: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, profile, total, used in _DF.findall(text):
        key = {"Data": "data", "System": "system", "Metadata": "metadata",
               "GlobalReserve": "globalreserve"}.get(kind)
        if key:
            out[key] = {"profile": profile.lower(), "total": int(total), "used": int(used)}
    return out


def pools(candidates: Iterable[str]) -> list[dict[str, Any]]:
    """Every btrfs filesystem on the `candidates` (device names the node may open) or mounted
    in the node: label, uuid, total_devices, used, devices, and g8os's `mountpoints`."""
    all_mounts = blockdev.mounts()
    by_uuid: dict[str, dict[str, Any]] = {}
    for mount in all_mounts:
        if mount.fstype != "btrfs":
            continue
        name = blockdev.mount_device(mount)
        pool = blockdev.pool_of(name) if name else None
        if pool is None or pool.uuid in by_uuid:
            if pool is not None:
                by_uuid[pool.uuid]["mountpoints"].append(mount.mountpoint)
            continue
        try:
            shown = show_mounted(mount.mountpoint)
        except (FailedPrecondition, NotFound):
            continue
        shown["mountpoints"] = [mount.mountpoint]
        by_uuid[pool.uuid] = shown
    probes = blockdev.blkid(sorted(set(candidates)))
    for name, probe in sorted(probes.items()):
        if probe.get("TYPE") != "btrfs":
            continue
        uuid = probe.get("UUID", "")
        if uuid in by_uuid and by_uuid[uuid]["mountpoints"]:
            continue
        sb = dump_super(name)
        if not sb:
            continue
        pool = by_uuid.setdefault(uuid, {"label": sb.get("label", ""), "uuid": uuid,
                                         "total_devices": int(sb.get("num_devices", "0") or 0),
                                         "used": int(sb.get("bytes_used", "0") or 0), "devices": [],
                                         "mountpoints": []})
        pool["devices"].append({"dev_id": int(sb.get("dev_item.devid", "0") or 0),
                                "size": int(sb.get("dev_item.total_bytes", "0") or 0),
                                "used": int(sb.get("dev_item.bytes_used", "0") or 0),
                                "path": blockdev.dev_path(name)})
    for pool in by_uuid.values():
        pool["devices"].sort(key=lambda d: d["dev_id"])
        if len(pool["devices"]) < pool["total_devices"]:
            pool["missing"] = True
    return sorted(by_uuid.values(), key=lambda p: (p["label"], p["uuid"]))


def info(mountpoint: str) -> dict[str, Any]:
    """One mounted pool in detail: its devices and the profile and usage of each block group kind."""
    fs = show_mounted(mountpoint)
    fs.update(parse_df(btrfs("filesystem", "df", "--raw", mountpoint)))
    fs.setdefault("data", {"profile": "", "total": 0, "used": 0})
    fs.setdefault("metadata", {"profile": "", "total": 0, "used": 0})
    fs.setdefault("system", {"profile": "", "total": 0, "used": 0})
    fs.setdefault("globalreserve", {"profile": "", "total": 0, "used": 0})
    fs["mountpoint"] = mountpoint
    return fs


def subvolumes(path: str) -> list[dict[str, Any]]:
    """Subvolumes below `path` (`btrfs subvolume list -o`), as G8OS 1.0 named the fields."""
    out = []
    for line in btrfs("subvolume", "list", "-o", path).splitlines():
        match = _SUBVOL.search(line)
        if match:
            out.append({"ID": int(match.group(1)), "Gen": int(match.group(2)),
                        "TopLevel": int(match.group(3)), "Path": match.group(4).strip()})
    return out


def is_subvolume(path: str) -> bool:
    # The root of every subvolume has inode number 256 on btrfs.
    try:
        return os.stat(path).st_ino == 256 and blockdev.mount_for_path(path).fstype == "btrfs"  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return False


def is_read_only(path: str) -> bool:
    return "ro=true" in blockdev.run(["btrfs", "property", "get", "-ts", path, "ro"], check=False).stdout


def quota_enabled(uuid: str) -> bool:
    return (blockdev.SYS_BTRFS / uuid / "qgroups").is_dir()


def pool_at(path: str) -> tuple[blockdev.Mount, blockdev.Pool]:
    """The mounted btrfs pool that holds `path` (or would hold it: its parent for a new path)."""
    probe = path
    while not os.path.exists(probe) and probe not in ("/", ""):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    mount = blockdev.mount_for_path(probe)
    if mount is None or mount.fstype != "btrfs":
        where = f"{mount.fstype} at {mount.mountpoint}" if mount else "no mount"
        raise FailedPrecondition(f"{path} is not on a mounted btrfs filesystem ({where})")
    name = blockdev.mount_device(mount)
    pool = blockdev.pool_of(name) if name else None
    if pool is None:
        raise FailedPrecondition(f"cannot tell which btrfs pool is mounted at {mount.mountpoint}")
    return mount, pool


# ------------------------------------------------------------------------------------------ changes


def mkfs(devices: Sequence[str], *, label: str, metadata: str, data: str, uuid: str, force: bool) -> None:
    argv = ["mkfs.btrfs", "-q", "-K", "-U", uuid]   # -K: no discard; it would destroy data on failure too
    if force:
        argv.append("-f")
    if label:
        argv += ["-L", label]
    if metadata:
        argv += ["-m", metadata]
    if data:
        argv += ["-d", data]
    blockdev.run([*argv, *[blockdev.dev_path(d) for d in devices]], timeout=300)


def scan_devices(names: Sequence[str]) -> None:
    """Register these devices with the kernel (only these are opened), so a multi-device pool
    can be mounted."""
    if names:
        blockdev.run(["btrfs", "device", "scan", *[blockdev.dev_path(n) for n in names]], check=False)


def device_add(mountpoint: str, names: Sequence[str]) -> None:
    btrfs("device", "add", "-K", "-f", *[blockdev.dev_path(n) for n in names], mountpoint, timeout=600)


def device_remove(mountpoint: str, names: Sequence[str]) -> None:
    btrfs("device", "remove", *[blockdev.dev_path(n) for n in names], mountpoint, timeout=3600)


def subvol_create(path: str) -> None:
    btrfs("subvolume", "create", path)


def subvol_delete(path: str) -> None:
    btrfs("subvolume", "delete", path)


def subvol_snapshot(source: str, destination: str, read_only: bool) -> None:
    btrfs("subvolume", "snapshot", *(["-r"] if read_only else []), source, destination)


def quota_enable(mountpoint: str) -> None:
    btrfs("quota", "enable", mountpoint)


def quota_disable(mountpoint: str) -> None:
    btrfs("quota", "disable", mountpoint)


def qgroup_limit(path: str, limit: str) -> None:
    btrfs("qgroup", "limit", limit, path)


def qgroup_of(path: str) -> dict[str, Any]:
    """The subvolume's own qgroup (0/<id>): referenced and exclusive bytes, and its limits."""
    subvol_id = blockdev.run(["btrfs", "inspect-internal", "rootid", path]).stdout.strip()
    text = btrfs("qgroup", "show", "-r", "-e", "--raw", path)
    for line in text.splitlines():
        cols = line.split()
        if cols and cols[0] == f"0/{subvol_id}" and len(cols) >= 5:
            def number(value: str) -> int | None:
                return int(value) if value.isdigit() else None
            return {"qgroup": cols[0], "referenced": number(cols[1]), "exclusive": number(cols[2]),
                    "max_referenced": number(cols[3]), "max_exclusive": number(cols[4])}
    return {"qgroup": f"0/{subvol_id}"}


def members(uuid: str) -> list[str]:
    try:
        return sorted(os.listdir(Path(blockdev.SYS_BTRFS) / uuid / "devices"))
    except OSError:
        return []
