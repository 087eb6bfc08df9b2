"""`client.disk`: the node's block devices, partition tables, filesystems and mounts.

    client.disk.list()["blockdevices"]            # lsblk rows, partitions under "children"
    client.disk.mktable("loop3", "gpt")
    client.disk.mkpart("loop3", "1MiB", "50%")     # {"number": 1, "device": "/dev/loop3p1", ...}
    client.disk.mkfs("/dev/loop3p1", "ext4", label="data")
    client.disk.mount("/dev/loop3p1", "/mnt/data", ["noatime"])
    client.disk.umount("/mnt/data")

Method names and arguments are those of the G8OS 1.0 client (`g8core`); `mkfs`, `protect`,
`unprotect` and the `force`/`overwrite` flags are g8os's. A change that is refused (the disk is
protected, mounted, part of a mounted btrfs pool, or holds the node's root) raises the
FailedPrecondition result error; one that fails says whether it rolled back.
"""

from __future__ import annotations

from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.disk import (
    DiskGetinfo,
    DiskList,
    DiskMkfs,
    DiskMkpart,
    DiskMktable,
    DiskMount,
    DiskMounts,
    DiskProtect,
    DiskRmpart,
    DiskUmount,
    DiskUnprotect,
)


class DiskManager(Namespace):
    """The `disk.*` commands. A disk is named `loop3`, `sda` or `/dev/loop3`."""

    def list(self) -> dict[str, Any]:
        """Every disk of the node: `{"blockdevices": [row, ...]}`, lsblk's fields per row (size, type,
        model, serial, rota, mountpoints, fstype, label...) plus `rotational`, `filesystem`, `labels`,
        `table`, `blocksize`, `partitions` (names; full rows under `children`), `protected`, `actor`."""
        return self._call(DiskList)

    def getinfo(self, disk: str, part: str = "") -> dict[str, Any]:
        """Size, start, end, block size, partition table and free extents of `disk`, or of its
        partition `part` (`loop3p1`)."""
        return self._call(DiskGetinfo, disk=disk, part=part)

    def mktable(self, disk: str, table_type: str = "gpt", *, force: bool = False) -> dict[str, Any]:
        """Write a new empty partition table (`gpt`, `msdos`, ... as parted names them). A disk
        whose partitions hold filesystems is refused unless `force`."""
        return self._call(DiskMktable, disk=disk, table_type=table_type, force=force)

    def mkpart(self, disk: str, start: int | str, end: int | str,
               part_type: str = "primary") -> dict[str, Any]:
        """Add a partition from `start` to `end`, as parted takes them (`"1MiB"`, `"2048s"`, `"50%"`,
        or an int in MB); `part_type` is primary, logical or extended (msdos tables). Returns the new
        partition: number, device, start, end and size in bytes."""
        return self._call(DiskMkpart, disk=disk, start=start, end=end, part_type=part_type)

    def rmpart(self, disk: str, number: int) -> dict[str, Any]:
        """Remove partition `number` (from 1)."""
        return self._call(DiskRmpart, disk=disk, number=number)

    def mkfs(self, disk: str, fstype: str = "ext4", *, label: str = "",
             overwrite: bool = False) -> dict[str, Any]:
        """Make a filesystem (ext4, ext3, ext2, xfs, btrfs, vfat) on a disk or partition. One that
        already holds a filesystem or a table is refused unless `overwrite`."""
        return self._call(DiskMkfs, disk=disk, fstype=fstype, label=label, overwrite=overwrite)

    def mount(self, source: str, target: str, options: list[str] | str | None = None) -> dict[str, Any]:
        """Mount the filesystem on `source` at `target` (created if missing) with mount `options`
        (a list, or a comma-separated string as G8OS 1.0 sent them)."""
        value = ",".join(options) if isinstance(options, list | tuple) else (options or "")
        return self._call(DiskMount, source=source, target=target, options=value)

    def umount(self, source: str) -> dict[str, Any]:
        """Unmount a device (every mount of it, or of its btrfs pool) or the mount at path `source`."""
        return self._call(DiskUmount, source=source)

    def mounts(self) -> dict[str, list[dict[str, Any]]]:
        """The node's mounts by source: `{source: [{mountpoint, filesystem, options}]}`."""
        return self._call(DiskMounts)

    def protect(self, disk: str) -> dict[str, Any]:
        """Mark a disk or partition protected: no command changes it until `unprotect`."""
        return self._call(DiskProtect, disk=disk)

    def unprotect(self, disk: str) -> dict[str, Any]:
        """Remove a `protect` mark (protection by rule stays)."""
        return self._call(DiskUnprotect, disk=disk)
