"""`client.btrfs`: btrfs pools, their devices, subvolumes, quotas and snapshots.

    client.btrfs.create("data", ["loop3", "loop4"], "raid1", "raid1")
    client.disk.mount("/dev/loop3", "/mnt/data")
    client.btrfs.subvol_create("/mnt/data/vol")
    client.btrfs.subvol_quota("/mnt/data/vol", "1G")
    client.btrfs.subvol_snapshot("/mnt/data/vol", "/mnt/data/vol@1", read_only=True)

Method names and arguments are those of the G8OS 1.0 client (`g8core`): `create` sends the
profiles as `metadata` and `data`; `device_add`/`device_remove` take the devices as arguments.
"""

from __future__ import annotations

from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.btrfs import (
    BtrfsCreate,
    BtrfsDeviceAdd,
    BtrfsDeviceRemove,
    BtrfsInfo,
    BtrfsList,
    BtrfsSubvolCreate,
    BtrfsSubvolDelete,
    BtrfsSubvolList,
    BtrfsSubvolQuota,
    BtrfsSubvolSnapshot,
)


class BtrfsManager(Namespace):
    """The `btrfs.*` commands."""

    def list(self) -> list[dict[str, Any]]:
        """Every btrfs filesystem: label, uuid, total_devices, used, devices (dev_id, size, used,
        path), mountpoints."""
        return self._call(BtrfsList)

    def info(self, mountpoint: str) -> dict[str, Any]:
        """The pool mounted at `mountpoint`, with `data`, `metadata`, `system`, `globalreserve`
        (profile, total, used)."""
        return self._call(BtrfsInfo, mountpoint=mountpoint)

    def create(self, label: str, devices: list[str], metadata_profile: str = "", data_profile: str = "",
               overwrite: bool = False) -> dict[str, Any]:
        """Make a pool over `devices` (raid0, raid1, raid1c3, raid1c4, raid5, raid6, raid10, dup,
        single, or "" for btrfs's default). Devices that hold anything are refused unless `overwrite`."""
        return self._call(BtrfsCreate, label=label, devices=list(devices), metadata=metadata_profile,
                          data=data_profile, overwrite=overwrite)

    def device_add(self, mountpoint: str, *devices: str, force: bool = False) -> Any:
        """Add `devices` to the pool mounted at `mountpoint`."""
        if not devices:
            return None
        return self._call(BtrfsDeviceAdd, mountpoint=mountpoint, devices=list(devices), force=force)

    def device_remove(self, mountpoint: str, *devices: str) -> Any:
        """Move the data off `devices` and remove them from the pool mounted at `mountpoint`."""
        if not devices:
            return None
        return self._call(BtrfsDeviceRemove, mountpoint=mountpoint, devices=list(devices))

    def subvol_create(self, path: str) -> Any:
        """Create a subvolume at `path`."""
        return self._call(BtrfsSubvolCreate, path=path)

    def subvol_list(self, path: str) -> list[dict[str, Any]]:
        """Subvolumes below `path`: `ID`, `Gen`, `TopLevel`, `Path` (as G8OS 1.0 named them)."""
        return self._call(BtrfsSubvolList, path=path)

    def subvol_delete(self, path: str) -> Any:
        """Delete the subvolume at `path`."""
        return self._call(BtrfsSubvolDelete, path=path)

    def subvol_quota(self, path: str, limit: str) -> dict[str, Any]:
        """Limit the subvolume at `path` to `limit` (`"10M"`, `"1G"`, bytes, or `"none"`); quotas
        are enabled on the pool first if they are not. Returns its qgroup."""
        return self._call(BtrfsSubvolQuota, path=path, limit=limit)

    def subvol_snapshot(self, source: str, destination: str, read_only: bool = False) -> dict[str, Any]:
        """Snapshot subvolume `source` to `destination` (read-only if asked)."""
        return self._call(BtrfsSubvolSnapshot, source=source, destination=destination, read_only=read_only)
