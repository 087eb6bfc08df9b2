"""`g8os disk` and `g8os btrfs`: the node's disks from a shell (`disk.*`, `btrfs.*`).

    g8os disk list
    g8os disk mktable loop3 gpt
    g8os disk mkpart loop3 1MiB 50%
    g8os disk mkfs loop3p1 ext4 --label data
    g8os disk mount /dev/loop3p1 /mnt/data -o noatime
    g8os btrfs create data loop4 loop5 -m raid1 -d raid1
    g8os btrfs subvol quota /mnt/pool/vol 1G

Exit codes are the CLI's: 1 when the node refuses or the change fails (it says whether it rolled
back), 2 for bad arguments, 4 when the disk, partition or path does not exist.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from g8os.client.cli import _state, output_options
from g8os.client.render import human_bytes


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def _done(reply: Any, text: str) -> None:
    state = _state()
    if state.as_json:
        state.emit(reply)
    else:
        state.say(text)


def _protected(value: Any) -> str:
    return "" if not value else "yes"


# --------------------------------------------------------------------------------------------- disk


@click.group()
def disk() -> None:
    """Block devices: list, partition, format, mount, protect."""


@disk.command("list")
@output_options
def disk_list() -> None:
    """Every disk of the node with its partitions."""
    state = _state()
    with state.spinner("listing disks"):
        data = state.client().disk.list()
    if state.as_json:
        state.emit(data)
        return
    rows = data.get("blockdevices") or []
    if not rows:
        state.say("no disks")
        return
    table = _table("NAME", "SIZE", "TYPE", "MODEL", "ROTA", "TABLE", "FS", "LABEL", "MOUNTPOINTS",
                   "PROTECTED", right=("SIZE",))
    for row in rows:
        for entry, indent in [(row, ""), *[(c, "└─") for c in row.get("children") or []]]:
            table.add_row(indent + str(entry.get("name", "")), human_bytes(entry.get("size")),
                          str(entry.get("type") or ""), str(entry.get("model") or ""),
                          "" if indent else ("yes" if entry.get("rotational") else "no"),
                          str(entry.get("table") or ""), str(entry.get("fstype") or ""),
                          str(entry.get("label") or entry.get("partlabel") or ""),
                          ", ".join(entry.get("mountpoints") or []),
                          _protected(entry.get("protected")) if not indent else "")
    state.out.print(table)
    reasons = [f"{row['name']}: {row['protected']}" for row in rows if row.get("protected")]
    if reasons and not state.quiet:
        click.echo("protected: " + "; ".join(reasons), err=True)


@disk.command("info")
@output_options
@click.argument("disk_name", metavar="DISK")
@click.argument("part", required=False, default="")
def disk_info(disk_name: str, part: str) -> None:
    """Size, partition table and free space of DISK, or one PART of it."""
    state = _state()
    data = state.client().disk.getinfo(disk_name, part)
    if state.as_json:
        state.emit(data)
        return
    click.echo(f"{data.get('name', disk_name)}: {human_bytes(data.get('size'))} "
               f"({data.get('size')} bytes, {data.get('blocksize')}-byte blocks), "
               f"{data.get('start')}–{data.get('end')}")
    if not part:
        click.echo(f"table: {data.get('table') or 'none'}")
        for extent in data.get("free") or []:
            click.echo(f"free: {extent['start']}–{extent['end']} ({human_bytes(extent['size'])})")
        for child in data.get("children") or []:
            click.echo(f"{child.get('name')}: {human_bytes(child.get('size'))} {child.get('fstype') or ''}")
    if data.get("protected"):
        click.echo(f"protected: {data['protected']}")


@disk.command("mktable")
@output_options
@click.option("--force", is_flag=True, help="Even if the disk or its partitions hold filesystems.")
@click.argument("disk_name", metavar="DISK")
@click.argument("table_type", metavar="[TYPE]", default="gpt")
def disk_mktable(disk_name: str, table_type: str, force: bool) -> None:
    """Write a new, empty partition table (gpt by default, or msdos...)."""
    reply = _state().client().disk.mktable(disk_name, table_type, force=force)
    _done(reply, f"{reply.get('disk', disk_name)}: new {reply.get('table', table_type)} partition table")


@disk.command("mkpart", context_settings={"ignore_unknown_options": True})
@output_options
@click.option("--type", "part_type", type=click.Choice(["primary", "logical", "extended"]), default="primary",
              show_default=True)
@click.argument("disk_name", metavar="DISK")
@click.argument("start")
@click.argument("end")
def disk_mkpart(disk_name: str, start: str, end: str, part_type: str) -> None:
    """Add a partition from START to END (as parted takes them: 1MiB, 2048s, 50%, -1s)."""
    reply = _state().client().disk.mkpart(disk_name, start, end, part_type)
    _done(reply, f"{reply.get('device')}: partition {reply.get('number')}, {human_bytes(reply.get('size'))} "
                 f"({reply.get('start')}–{reply.get('end')})")


@disk.command("rmpart")
@output_options
@click.argument("disk_name", metavar="DISK")
@click.argument("number", type=click.IntRange(min=1))
def disk_rmpart(disk_name: str, number: int) -> None:
    """Remove partition NUMBER of DISK."""
    reply = _state().client().disk.rmpart(disk_name, number)
    _done(reply, f"{reply.get('disk', disk_name)}: partition {number} removed")


@disk.command("mkfs")
@output_options
@click.option("--label", "-L", default="", help="Filesystem label.")
@click.option("--overwrite", is_flag=True, help="Even if the device already holds something.")
@click.argument("device")
@click.argument("fstype", default="ext4", type=click.Choice(["ext4", "ext3", "ext2", "xfs", "btrfs", "vfat"]))
def disk_mkfs(device: str, fstype: str, label: str, overwrite: bool) -> None:
    """Make a filesystem on DEVICE (a disk or a partition)."""
    reply = _state().client().disk.mkfs(device, fstype, label=label, overwrite=overwrite)
    _done(reply, f"{reply.get('device')}: {reply.get('fstype')} {reply.get('uuid')}")


@disk.command("mount")
@output_options
@click.option("--options", "-o", default="", help="Comma-separated mount options (ro, noatime, subvol=x...).")
@click.argument("source")
@click.argument("target")
def disk_mount(source: str, target: str, options: str) -> None:
    """Mount the filesystem on SOURCE at TARGET (created if missing)."""
    reply = _state().client().disk.mount(source, target, options)
    _done(reply, f"{reply.get('source')} mounted at {reply.get('target')} ({reply.get('fstype')})")


@disk.command("umount")
@output_options
@click.argument("source")
def disk_umount(source: str) -> None:
    """Unmount a device (all its mounts) or the mount at a path."""
    reply = _state().client().disk.umount(source)
    _done(reply, "unmounted " + ", ".join(reply.get("unmounted") or []))


@disk.command("mounts")
@output_options
def disk_mounts() -> None:
    """The node's mounts, by source."""
    state = _state()
    data = state.client().disk.mounts()
    if state.as_json:
        state.emit(data)
        return
    table = _table("SOURCE", "MOUNTPOINT", "FS", "OPTIONS")
    for source, entries in data.items():
        for entry in entries:
            options = ",".join(k if v == "1" else f"{k}={v}" for k, v in (entry.get("options") or {}).items())
            table.add_row(source, entry.get("mountpoint", ""), entry.get("filesystem", ""), options[:80])
    state.out.print(table)


@disk.command("protect")
@output_options
@click.argument("device")
def disk_protect(device: str) -> None:
    """Mark DEVICE protected: no command changes it until `unprotect`."""
    reply = _state().client().disk.protect(device)
    _done(reply, f"{reply.get('disk')}: protected")


@disk.command("unprotect")
@output_options
@click.argument("device")
def disk_unprotect(device: str) -> None:
    """Remove the protection mark of DEVICE."""
    reply = _state().client().disk.unprotect(device)
    _done(reply, f"{reply.get('disk')}: no longer marked protected")


# --------------------------------------------------------------------------------------------- btrfs

PROFILES = click.Choice(["raid0", "raid1", "raid1c3", "raid1c4", "raid5", "raid6", "raid10", "dup", "single",
                         ""])


@click.group()
def btrfs() -> None:
    """btrfs pools, devices, subvolumes, quotas and snapshots."""


@btrfs.command("list")
@output_options
def btrfs_list() -> None:
    """Every btrfs filesystem on the node's disks."""
    state = _state()
    data = state.client().btrfs.list()
    if state.as_json:
        state.emit(data)
        return
    if not data:
        state.say("no btrfs filesystems")
        return
    table = _table("LABEL", "UUID", "DEVICES", "USED", "MOUNTPOINTS", right=("USED",))
    for pool in data:
        devices = ", ".join(d.get("path", "") for d in pool.get("devices") or [])
        table.add_row(pool.get("label") or "", pool.get("uuid", ""), devices, human_bytes(pool.get("used")),
                      ", ".join(pool.get("mountpoints") or []))
    state.out.print(table)


@btrfs.command("info")
@output_options
@click.argument("mountpoint")
def btrfs_info(mountpoint: str) -> None:
    """The pool mounted at MOUNTPOINT: devices, profiles and usage."""
    state = _state()
    data = state.client().btrfs.info(mountpoint)
    if state.as_json:
        state.emit(data)
        return
    click.echo(f"{data.get('label') or '(no label)'} {data.get('uuid')}: "
               f"{data.get('total_devices')} devices, {human_bytes(data.get('used'))} used")
    table = _table("KIND", "PROFILE", "TOTAL", "USED", right=("TOTAL", "USED"))
    for kind in ("data", "metadata", "system", "globalreserve"):
        entry = data.get(kind) or {}
        table.add_row(kind, entry.get("profile", ""), human_bytes(entry.get("total")),
                      human_bytes(entry.get("used")))
    state.out.print(table)
    devices = _table("DEVID", "PATH", "SIZE", "USED", right=("SIZE", "USED"))
    for device in data.get("devices") or []:
        devices.add_row(str(device.get("dev_id")), device.get("path", ""), human_bytes(device.get("size")),
                        human_bytes(device.get("used")))
    state.out.print(devices)


@btrfs.command("create")
@output_options
@click.option("--metadata", "-m", type=PROFILES, default="", help="Metadata profile.")
@click.option("--data", "-d", type=PROFILES, default="", help="Data profile.")
@click.option("--overwrite", is_flag=True, help="Even if a device already holds something.")
@click.argument("label")
@click.argument("devices", nargs=-1, required=True)
def btrfs_create(label: str, devices: tuple[str, ...], metadata: str, data: str, overwrite: bool) -> None:
    """Make a btrfs pool LABEL over DEVICES."""
    reply = _state().client().btrfs.create(label, list(devices), metadata, data, overwrite)
    on = ", ".join(reply.get("devices") or [])
    _done(reply, f"btrfs {reply.get('label') or ''} {reply.get('uuid')} on {on}")


@btrfs.command("device-add")
@output_options
@click.option("--force", is_flag=True, help="Even if a device already holds something.")
@click.argument("mountpoint")
@click.argument("devices", nargs=-1, required=True)
def btrfs_device_add(mountpoint: str, devices: tuple[str, ...], force: bool) -> None:
    """Add DEVICES to the pool mounted at MOUNTPOINT."""
    reply = _state().client().btrfs.device_add(mountpoint, *devices, force=force)
    _done(reply, f"{mountpoint}: {len((reply or {}).get('devices') or [])} devices")


@btrfs.command("device-remove")
@output_options
@click.argument("mountpoint")
@click.argument("devices", nargs=-1, required=True)
def btrfs_device_remove(mountpoint: str, devices: tuple[str, ...]) -> None:
    """Move data off DEVICES and remove them from the pool mounted at MOUNTPOINT."""
    reply = _state().client().btrfs.device_remove(mountpoint, *devices)
    _done(reply, f"{mountpoint}: {len((reply or {}).get('devices') or [])} devices")


@btrfs.group("subvol")
def subvol() -> None:
    """Subvolumes: create, list, delete, quota, snapshot."""


@subvol.command("create")
@output_options
@click.argument("path")
def subvol_create(path: str) -> None:
    """Create a subvolume at PATH."""
    _done(_state().client().btrfs.subvol_create(path), f"subvolume {path}")


@subvol.command("list")
@output_options
@click.argument("path")
def subvol_list(path: str) -> None:
    """Subvolumes below PATH."""
    state = _state()
    data = state.client().btrfs.subvol_list(path)
    if state.as_json:
        state.emit(data)
        return
    table = _table("ID", "GEN", "TOP", "PATH", right=("ID", "GEN", "TOP"))
    for entry in data:
        table.add_row(str(entry.get("ID")), str(entry.get("Gen")), str(entry.get("TopLevel")),
                      entry.get("Path", ""))
    state.out.print(table)


@subvol.command("delete")
@output_options
@click.argument("path")
def subvol_delete(path: str) -> None:
    """Delete the subvolume at PATH."""
    _done(_state().client().btrfs.subvol_delete(path), f"deleted subvolume {path}")


@subvol.command("quota")
@output_options
@click.argument("path")
@click.argument("limit")
def subvol_quota(path: str, limit: str) -> None:
    """Limit the subvolume at PATH to LIMIT (10M, 1G, bytes, none)."""
    reply = _state().client().btrfs.subvol_quota(path, limit)
    _done(reply, f"{path}: limit {limit} (qgroup {reply.get('qgroup')})")


@subvol.command("snapshot")
@output_options
@click.option("--read-only", "-r", is_flag=True, help="Make the snapshot read-only.")
@click.argument("source")
@click.argument("destination")
def subvol_snapshot(source: str, destination: str, read_only: bool) -> None:
    """Snapshot the subvolume SOURCE to DESTINATION."""
    reply = _state().client().btrfs.subvol_snapshot(source, destination, read_only)
    _done(reply, f"snapshot {destination} of {source}" + (" (read-only)" if reply.get("read_only") else ""))


COMMANDS = [disk, btrfs]
