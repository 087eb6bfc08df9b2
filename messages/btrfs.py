"""btrfs.*: pools over several devices, their devices, subvolumes, quotas and snapshots (owner:
the DiskSupervisor). Names and arguments are G8OS 1.0's; its client sends the profiles of
`btrfs.create` as `metadata` and `data`.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from g8os.messages.disk import absolute_path, device, one_of
from g8os.messages.errors import InvalidArgument
from g8os.messages.registry import Owner, command
from g8os.messages.validate import no_nul, non_empty

PROFILES = ("raid0", "raid1", "raid1c3", "raid1c4", "raid5", "raid6", "raid10", "dup", "single", "")
LIMIT = re.compile(r"none|\d+(\.\d+)?[kKmMgGtTpPeE]?")


def devices(instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    if not value:
        raise InvalidArgument("must name at least one device", field=attribute.name)
    for index, item in enumerate(value):
        try:
            device(instance, attribute, item)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field=f"{attribute.name}[{index}]")
    if len(set(value)) != len(value):
        raise InvalidArgument("names a device twice", field=attribute.name)


def limit(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not LIMIT.fullmatch(value.strip()):
        raise InvalidArgument(f"not a size btrfs understands: {value!r} (like 10M, 1G, 1048576 or none)",
                              field=attribute.name)


@command("btrfs.list", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsList:
    """Every btrfs filesystem on the node's disks: label, uuid, devices, bytes used, mountpoints."""


@command("btrfs.info", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsInfo:
    """One mounted pool: its devices and the profile and usage of data, metadata and system."""

    mountpoint: str = attrs.field(validator=[non_empty, absolute_path])


@command("btrfs.create", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsCreate:
    """Make a btrfs pool over `devices` with data and metadata profiles (raid0/1/10/5/6, dup, single)."""

    label: str = attrs.field(default="", validator=no_nul)
    devices: list[str] = attrs.field(validator=devices)
    metadata: str = attrs.field(default="", validator=one_of(PROFILES))
    data: str = attrs.field(default="", validator=one_of(PROFILES))
    overwrite: bool = False


@command("btrfs.device_add", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsDeviceAdd:
    """Add devices to the pool mounted at `mountpoint`."""

    mountpoint: str = attrs.field(validator=[non_empty, absolute_path])
    devices: list[str] = attrs.field(validator=devices)
    # g8os adds: a device that holds a filesystem or a partition table is refused without it.
    force: bool = False


@command("btrfs.device_remove", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsDeviceRemove:
    """Move data off devices and remove them from the pool mounted at `mountpoint`."""

    mountpoint: str = attrs.field(validator=[non_empty, absolute_path])
    devices: list[str] = attrs.field(validator=devices)


@command("btrfs.subvol_create", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsSubvolCreate:
    """Create a subvolume at `path` (inside a mounted pool)."""

    path: str = attrs.field(validator=[non_empty, absolute_path])


@command("btrfs.subvol_list", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsSubvolList:
    """Subvolumes below `path`: ID, Gen, TopLevel, Path."""

    path: str = attrs.field(validator=[non_empty, absolute_path])


@command("btrfs.subvol_delete", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsSubvolDelete:
    """Delete the subvolume at `path`."""

    path: str = attrs.field(validator=[non_empty, absolute_path])


@command("btrfs.subvol_quota", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsSubvolQuota:
    """Limit the space the subvolume at `path` may use (quotas are enabled on the pool if needed)."""

    path: str = attrs.field(validator=[non_empty, absolute_path])
    limit: str = attrs.field(validator=[non_empty, limit])


@command("btrfs.subvol_snapshot", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class BtrfsSubvolSnapshot:
    """Snapshot the subvolume `source` to `destination`, read-only if asked."""

    source: str = attrs.field(validator=[non_empty, absolute_path])
    destination: str = attrs.field(validator=[non_empty, absolute_path])
    read_only: bool = False
