"""disk.*: block devices, partition tables, filesystems and mounts (owner: the DiskSupervisor).

Names and arguments are G8OS 1.0's (`disk.list`, `disk.mktable {disk, table_type}`, ...): a disk
is named as the original named it (`sda`, `loop3`) or by its path (`/dev/loop3`). g8os adds
`disk.mkfs`, `disk.protect`, `disk.unprotect`, and `force`/`overwrite` where a change would
destroy data.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from g8os.messages.errors import InvalidArgument
from g8os.messages.registry import Owner, command
from g8os.messages.validate import no_nul, non_empty, positive

TABLE_TYPES = ("aix", "amiga", "bsd", "dvh", "gpt", "mac", "msdos", "pc98", "sun", "loop")
PART_TYPES = ("primary", "logical", "extended")
FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "vfat")
# A device: a kernel name (loop3, sda, nvme0n1p2) or a path under /dev.
DEVICE = re.compile(r"(/dev/)?[A-Za-z0-9][A-Za-z0-9_.:+-]*(/[A-Za-z0-9_.:+-]+)*")
# A position as parted takes it: a number with an optional unit, or a percentage; negative
# counts back from the end of the disk.
POSITION = re.compile(r"-?\d+(\.\d+)?(s|B|b|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)?")


def one_of(choices: tuple[str, ...]) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            names = ", ".join(c or '""' for c in choices)
            raise InvalidArgument(f"must be one of {names}; got {value!r}", field=attribute.name)
    return check


def device(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not DEVICE.fullmatch(value) or "/../" in f"{value}/" or value.startswith("/dev/."):
        raise InvalidArgument(f"must be a device name like loop3 or /dev/loop3; got {value!r}",
                              field=attribute.name)


def optional_device(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value != "":
        device(instance, attribute, value)


def position(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An int (megabytes, as parted reads a bare number) or a string parted takes."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgument("must be an integer (MB) or a string like '1MiB', '2048s' or '50%'",
                              field=attribute.name)
    text = str(value).strip()
    if not POSITION.fullmatch(text):
        raise InvalidArgument(f"not a position parted understands: {value!r} (like '1MiB', '2048s', '50%')",
                              field=attribute.name)
    if text.endswith("%") and not 0 <= float(text[:-1]) <= 100:
        raise InvalidArgument(f"a percentage is between 0% and 100%; got {value!r}", field=attribute.name)


def absolute_path(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.startswith("/"):
        raise InvalidArgument(f"must be an absolute path; got {value!r}", field=attribute.name)
    if "\0" in value:
        raise InvalidArgument("must not contain NUL bytes", field=attribute.name)


def source(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A device (name or /dev path) or an absolute path (a mountpoint)."""
    if value.startswith("/") and not value.startswith("/dev/"):
        absolute_path(_, attribute, value)
    else:
        device(_, attribute, value)


def mount_options(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A comma-separated string (G8OS 1.0's client sends one) or a list of options."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidArgument("must be a comma-separated string or a list of strings", field=attribute.name)
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9_.=:/@+-]*", item.strip()):
            raise InvalidArgument(f"not a mount option: {item!r}", field=attribute.name)


@command("disk.list", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskList:
    """Every disk of the node (no RAM disks, no empty loop devices) as lsblk rows with partitions."""


@command("disk.getinfo", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskGetinfo:
    """Size, start, end, block size, partition table and free space of a disk or one partition."""

    disk: str = attrs.field(validator=[non_empty, device])
    part: str = attrs.field(default="", validator=optional_device)


@command("disk.mktable", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskMktable:
    """Write a new, empty partition table (parted's `mktable`)."""

    disk: str = attrs.field(validator=[non_empty, device])
    table_type: str = attrs.field(default="gpt", validator=one_of(TABLE_TYPES))
    # g8os adds: a disk whose partitions (or itself) hold a filesystem is refused without it.
    force: bool = False


@command("disk.mkpart", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskMkpart:
    """Add one partition from `start` to `end` (as parted takes them: 1MiB, 2048s, 50%, MB)."""

    disk: str = attrs.field(validator=[non_empty, device])
    start: Any = attrs.field(validator=position)
    end: Any = attrs.field(validator=position)
    part_type: str = attrs.field(default="primary", validator=one_of(PART_TYPES))


@command("disk.rmpart", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskRmpart:
    """Remove partition `number` (from 1) from the disk's table."""

    disk: str = attrs.field(validator=[non_empty, device])
    number: int = attrs.field(validator=positive)


@command("disk.mkfs", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskMkfs:
    """Make a filesystem on a disk or partition (g8os adds)."""

    disk: str = attrs.field(validator=[non_empty, device])
    fstype: str = attrs.field(default="ext4", validator=one_of(FILESYSTEMS))
    label: str = attrs.field(default="", validator=no_nul)
    overwrite: bool = False


@command("disk.mount", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskMount:
    """Mount a device's filesystem on `target` (created if missing) with mount `options`."""

    source: str = attrs.field(validator=[non_empty, device])
    target: str = attrs.field(validator=[non_empty, absolute_path])
    options: Any = attrs.field(default="", validator=mount_options)


@command("disk.umount", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskUmount:
    """Unmount a device (every mount of it, or of its btrfs pool) or the mount at a path."""

    source: str = attrs.field(validator=[non_empty, source])


@command("disk.mounts", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskMounts:
    """The node's mounts by source: {device: [{mountpoint, filesystem, options}]}."""


@command("disk.protect", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskProtect:
    """Mark a disk or partition protected: no command changes it until disk.unprotect (g8os adds)."""

    disk: str = attrs.field(validator=[non_empty, device])


@command("disk.unprotect", owner=Owner.DISKS)
@attrs.frozen(kw_only=True)
class DiskUnprotect:
    """Remove a disk.protect mark; protection by rule (root disk, disk_manage) stays (g8os adds)."""

    disk: str = attrs.field(validator=[non_empty, device])
