"""One change to disks, run in its own process (`python -m g8os.system.diskops`).

The DiskActor that owns a device runs each change here, so that the actor stays responsive
while parted or mkfs work, and so that killing the actor mid-operation (actor.kill) kills a
real process in the middle of a real change. Protocol: one JSON request on stdin
(`{"op", "args", "policy", "undo_dir"}`), one JSON result line on stdout
(`{"ok": true, "value": ...}` or `{"ok": false, "code", "message", "critical"}`).

Every operation either completes or leaves the devices as they were, and says which: before the
first change it writes an undo record per disk into `undo_dir` (fsynced); a failure, or SIGTERM,
rolls the records back here; a helper killed outright leaves them for the DiskActor's recovery
(`recover`). A completed operation saves its answer (fsynced) before it drops its records, so
recovery never rolls back a change that completed, and a command sent again after its answer was
lost (the DiskSupervisor died) gets that answer instead of running twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import sys
import traceback
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from g8os.messages.errors import AlreadyExists, FailedPrecondition, G8Error, InvalidArgument, NotFound
from g8os.system import blockdev, linux, partitions
from g8os.system import btrfs as btrfsfs

FORBIDDEN_TARGETS = ("/proc", "/sys", "/dev")
MKFS = {
    "ext4": lambda dev, label, uid: ["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-U", uid,
                                     *(["-L", label] if label else []), dev],
    "ext3": lambda dev, label, uid: ["mkfs.ext3", "-q", "-F", "-E", "nodiscard", "-U", uid,
                                     *(["-L", label] if label else []), dev],
    "ext2": lambda dev, label, uid: ["mkfs.ext2", "-q", "-F", "-E", "nodiscard", "-U", uid,
                                     *(["-L", label] if label else []), dev],
    "xfs": lambda dev, label, uid: ["mkfs.xfs", "-q", "-f", "-K", "-m", f"uuid={uid}",
                                    *(["-L", label] if label else []), dev],
    "btrfs": lambda dev, label, uid: ["mkfs.btrfs", "-q", "-f", "-K", "-U", uid,
                                      *(["-L", label] if label else []), dev],
    "vfat": lambda dev, label, uid: ["mkfs.vfat", "-i", uid.replace("-", "")[:8],
                                     *(["-n", label] if label else []), dev],
}
MOUNT_FLAGS = {
    "ro": linux.MS_RDONLY, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV,
    "noexec": linux.MS_NOEXEC, "sync": 16, "dirsync": 128, "noatime": 1024, "nodiratime": 2048,
    "relatime": 1 << 21, "strictatime": 1 << 24, "lazytime": 1 << 25, "silent": 1 << 15,
}
# Options of mount(8) or fstab that are not mount(2) flags nor filesystem options.
MOUNT_IGNORED = ("auto", "noauto", "defaults", "rw", "user", "nouser", "users", "_netdev", "nofail",
                 "suid", "dev", "exec", "async", "atime", "diratime", "norelatime", "loud")


class Interrupted(BaseException):
    """SIGTERM: stop now, roll back, answer."""


def _on_term(signum: int, frame: Any) -> None:
    raise Interrupted()


# ------------------------------------------------------------------------------------------ undo


class Context:
    """What one operation changed so far, as undo records on disk."""

    def __init__(self, undo_dir: Path, policy: blockdev.Policy, op: str, job: str = "") -> None:
        self.undo_dir = undo_dir
        self.policy = policy
        self.op = op
        self.job = job
        self.files: list[Path] = []
        self._seq = itertools.count(1)
        undo_dir.mkdir(parents=True, exist_ok=True)

    def record(self, disk: str, header: dict[str, Any], body: bytes = b"") -> None:
        """Write one undo record, durably, before the change it undoes."""
        path = self.undo_dir / f"{disk}.{os.getpid()}.{next(self._seq):03d}.undo"
        header = {**header, "op": self.op, "disk": disk, "job": self.job}
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(json.dumps(header).encode() + b"\n" + body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.undo_dir)
        self.files.append(path)

    def save_regions(self, disk: str) -> None:
        regions = partitions.Regions.save(disk)
        header, body = regions.to_bytes()
        self.record(disk, {"kind": "regions", **header}, body)

    def rollback(self) -> list[str]:
        """Undo every record of this operation, newest first; say what happened to each."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second SIGTERM must not stop the undo
        report = []
        for path in reversed(self.files):
            report.append(restore_file(path))
        self.files = []
        return report

    def discard(self) -> None:
        for path in self.files:
            _unlink(path)
        self.files = []


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def read_record(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    return json.loads(head), body


def restore_file(path: Path) -> str:
    """Apply one undo record and remove it; a sentence saying what was done."""
    try:
        header, body = read_record(path)
    except (OSError, ValueError) as exc:
        _unlink(path)
        return f"an unreadable undo record was dropped ({exc})"
    try:
        return restore(header, body)
    except G8Error as exc:
        return f"could not roll back {header.get('disk')}: {exc.message}"
    except Exception as exc:  # the undo must go on with the other records
        return f"could not roll back {header.get('disk')}: {exc!r}"
    finally:
        _unlink(path)


def restore(header: dict[str, Any], body: bytes) -> str:
    kind, disk = header["kind"], header["disk"]
    if kind == "regions":
        if not (blockdev.SYS_BLOCK / disk).exists() or blockdev.identity(disk) != header["identity"]:
            return f"{disk} vanished; nothing to restore on it"
        partitions.Regions.from_bytes(header, body).restore()
        return f"{disk} restored: its partition table is as it was"
    if kind == "signature":
        name = header["device"]
        if not (blockdev.SYS_BLOCK / name).exists():
            return f"{name} vanished; nothing to wipe"
        probe = blockdev.signature(name)
        if probe.get("UUID", "").lower() == header["uuid"].lower():
            blockdev.run(["wipefs", "-q", "-a", "-t", header["fstype"], blockdev.dev_path(name)], check=False)
        if header.get("chunks"):
            _restore_plain(partitions.Regions.from_bytes({**header, "disk": name}, body))
        if header.get("before"):
            return (f"{name}: the partial {header['fstype']} filesystem was wiped; the "
                    f"{header['before']} it held was overwritten as asked (overwrite)")
        return f"{name} is blank again, as it was"
    if kind == "mount":
        target = header["target"]
        mounted = [m for m in blockdev.mounts() if m.mountpoint == target]
        if mounted and len(mounted) > header.get("before", 0):
            linux.umount(target)
        for created in reversed(header.get("created", [])):
            try:
                os.rmdir(created)
            except OSError:
                pass
        return f"{header['source']} is not mounted at {target}, as before"
    if kind == "quota":
        uuid = header["uuid"]
        if not header["was_enabled"] and btrfsfs.quota_enabled(uuid):
            btrfsfs.quota_disable(header["mountpoint"])
            return f"quotas of {header['mountpoint']} are disabled again, as they were"
        return f"quotas of {header['mountpoint']} are as they were"
    if kind == "device_add":
        added = [d for d in header["devices"] if d in btrfsfs.members(header["uuid"])]
        wiped = []
        for name in header["devices"]:
            if name in added or not (blockdev.SYS_BLOCK / name).exists():
                continue
            if blockdev.signature(name).get("UUID", "").lower() == header["uuid"].lower():
                blockdev.run(["wipefs", "-q", "-a", "-t", "btrfs", blockdev.dev_path(name)], check=False)
                wiped.append(name)
        if added:
            return (f"{', '.join(added)} did join the pool at {header['mountpoint']} before the "
                    "operation was cut short (the kernel completed it)")
        return f"{', '.join(header['devices'])} did not join the pool; " + \
            (f"{', '.join(wiped)} wiped blank again" if wiped else "nothing to undo")
    if kind == "atomic":
        return header.get("after", "the kernel carries this change out whole or not at all")
    return f"unknown undo record {kind!r} dropped"


def _restore_plain(regions: partitions.Regions) -> None:
    """Write saved bytes back to a partition or a disk without touching the kernel's table."""
    fd = os.open(blockdev.dev_path(regions.disk), os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
    try:
        for offset, data in regions.chunks:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def undo_files(undo_dir: Path, disk: str) -> list[Path]:
    return sorted(undo_dir.glob(f"{disk}.*.undo"))


def result_file(undo_dir: Path, job: str) -> Path:
    """Where a completed operation's answer is kept until it has been delivered: a command that
    the gateway sends again (its owner restarted before answering) gets it instead of running
    twice. Named by a hash: job ids are the clients' strings."""
    return undo_dir.parent / "results" / f"{hashlib.sha256(job.encode()).hexdigest()[:32]}.json"


def completed(undo_dir: Path, job: str) -> dict[str, Any] | None:
    try:
        return json.loads(result_file(undo_dir, job).read_text()) if job else None
    except (OSError, ValueError):
        return None


def save_result(undo_dir: Path, job: str, result: dict[str, Any]) -> None:
    path = result_file(undo_dir, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        out.write(json.dumps(result, default=str))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def recover(undo_dir: Path, disks: list[str], discard: bool) -> list[str]:
    """After a helper died: roll back every undo record left for these disks, newest first —
    except those of an operation whose answer was saved (it completed: its records are dropped),
    and all of them with `discard`."""
    report = []
    for disk in disks:
        for path in reversed(undo_files(undo_dir, disk)):
            try:
                job = read_record(path)[0].get("job", "")
            except (OSError, ValueError):
                job = ""
            if discard or (job and result_file(undo_dir, job).exists()):
                _unlink(path)
            else:
                report.append(restore_file(path))
        for tmp in undo_dir.glob(f"{disk}.*.tmp"):
            _unlink(tmp)   # a record torn while written: its change had not started
    return report


# ------------------------------------------------------------------------------------------ helpers


def _name(value: str, field: str) -> str:
    try:
        return blockdev.device_name(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"`arguments.{field}`: {exc.message}", field=f"arguments.{field}")


def _disk(value: str, field: str = "disk") -> str:
    name = _name(value, field)
    if blockdev.is_partition(name):
        raise InvalidArgument(f"`arguments.{field}`: {name} is a partition; give its disk "
                              f"{blockdev.disk_of(name)}", field=f"arguments.{field}")
    return name


def _check(name: str, policy: blockdev.Policy) -> None:
    blockdev.check_changeable(name, policy, whole=not blockdev.is_partition(name))


def _held_signature(name: str) -> str:
    probe = blockdev.signature(name)
    if probe.get("TYPE"):
        label = f", label '{probe['LABEL']}'" if probe.get("LABEL") else ""
        return f"a filesystem ({probe['TYPE']}{label})"
    if probe.get("PTTYPE"):
        return f"a {probe['PTTYPE']} partition table"
    if not blockdev.is_partition(name) and blockdev.partitions(name):
        return "partitions"
    return ""


def _record_signature(ctx: Context, name: str, fstype: str, uid: str, before: str) -> None:
    header: dict[str, Any] = {"kind": "signature", "device": name, "fstype": fstype, "uuid": uid,
                              "before": before}
    body = b""
    if not before:
        # A blank device gets its first and last MiB back too: it ends exactly as it began.
        regions = partitions.Regions.save(name) if not blockdev.is_partition(name) else _plain_regions(name)
        saved, body = regions.to_bytes()
        header["chunks"] = saved["chunks"]
    ctx.record(blockdev.disk_of(name), header, body)


def _plain_regions(name: str) -> partitions.Regions:
    size = blockdev.size_bytes(name)
    spans = [(0, min(partitions.EDGE, size))]
    if size > partitions.EDGE:
        start = max(partitions.EDGE, size - partitions.EDGE)
        spans.append((start, size - start))
    fd = os.open(blockdev.dev_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [(offset, partitions._pread_all(fd, length, offset)) for offset, length in spans]
    finally:
        os.close(fd)
    return partitions.Regions(disk=name, identity=blockdev.identity(blockdev.disk_of(name)), chunks=chunks)


def openable(policy: blockdev.Policy) -> list[str]:
    """Every disk and partition the rules let the node open (to probe it)."""
    names = []
    for disk in blockdev.scan():
        if blockdev.rule_protection(disk, policy) is None:
            names += [disk, *blockdev.partitions(disk)]
    return names


def btrfs_members(uuid: str, policy: blockdev.Policy) -> list[str]:
    """The devices (among those the node may open) that hold the btrfs filesystem `uuid`."""
    if not uuid:
        return []
    return sorted(name for name, probe in blockdev.blkid(openable(policy)).items()
                  if probe.get("TYPE") == "btrfs" and probe.get("UUID", "").lower() == uuid.lower())


def _vanished(disks: list[str], identities: dict[str, str]) -> list[str]:
    """The disks that are gone, or are now another device (a loop device detached and attached
    to another file) than the one the operation was asked for."""
    return [d for d in disks if blockdev.disk_info(d) is None or
            (d in identities and blockdev.identity(d) != identities[d])]


# ------------------------------------------------------------------------------------------ operations


def op_mktable(ctx: Context, args: dict[str, Any]) -> Any:
    disk = _disk(args["disk"])
    _check(disk, ctx.policy)
    if not args.get("force"):
        # A new table makes every partition, and a filesystem on the disk itself, unreachable.
        probes = blockdev.blkid([disk, *blockdev.partitions(disk)])
        for name, probe in sorted(probes.items()):
            if probe.get("TYPE"):
                raise FailedPrecondition(f"refused: {name} holds {_held_signature(name)}; pass force "
                                         f"to make a new table anyway")
    ctx.save_regions(disk)
    table = partitions.mktable(disk, args["table_type"])
    return {"disk": blockdev.dev_path(disk), "table": table["table"] or args["table_type"],
            "partitions": table["partitions"]}


def op_mkpart(ctx: Context, args: dict[str, Any]) -> Any:
    disk = _disk(args["disk"])
    _check(disk, ctx.policy)
    start = partitions.valid_position(args["start"])
    end = partitions.valid_position(args["end"])
    part_type = args.get("part_type") or "primary"
    partitions.check_mkpart(partitions.read_table(disk), disk, part_type)
    ctx.save_regions(disk)
    return partitions.mkpart(disk, part_type, start, end)


def op_rmpart(ctx: Context, args: dict[str, Any]) -> Any:
    disk = _disk(args["disk"])
    _check(disk, ctx.policy)
    number = int(args["number"])
    if number not in {p["number"] for p in partitions.read_table(disk)["partitions"]}:
        raise NotFound(f"{disk} has no partition {number}")
    ctx.save_regions(disk)
    table = partitions.rmpart(disk, number)
    return {"disk": blockdev.dev_path(disk), "removed": number, "partitions": table["partitions"]}


def op_mkfs(ctx: Context, args: dict[str, Any]) -> Any:
    name = _name(args["disk"], "disk")
    _check(name, ctx.policy)
    fstype, label = args["fstype"], args.get("label") or ""
    before = _held_signature(name)
    if before and not args.get("overwrite"):
        raise FailedPrecondition(f"refused: {name} holds {before}; pass overwrite to replace it")
    uid = str(uuidlib.uuid4())
    _record_signature(ctx, name, fstype, uid, before)
    blockdev.run(MKFS[fstype](blockdev.dev_path(name), label, uid), timeout=600)
    probe = blockdev.signature(name)
    if probe.get("TYPE") != fstype:
        raise FailedPrecondition(f"mkfs.{fstype} ran but {name} holds {probe.get('TYPE') or 'nothing'}")
    if not blockdev.is_partition(name):
        partitions.sync_kernel(name)   # a whole-disk filesystem leaves no partitions behind
    return {"device": blockdev.dev_path(name), "fstype": fstype, "uuid": probe.get("UUID", uid),
            "label": probe.get("LABEL", label)}


def _mount_options(options: Any) -> tuple[int, str, list[str]]:
    items = options if isinstance(options, list) else str(options or "").split(",")
    flags, data, kept = 0, [], []
    for raw in items:
        option = str(raw).strip()
        if not option or option in MOUNT_IGNORED:
            continue
        kept.append(option)
        if option in MOUNT_FLAGS:
            flags |= MOUNT_FLAGS[option]
        elif option in ("bind", "rbind", "move", "remount", "shared", "private", "slave", "unbindable"):
            raise InvalidArgument(f"`arguments.options`: {option} is not for disk.mount",
                                  field="arguments.options")
        else:
            data.append(option)
    return flags, ",".join(data), kept


def _check_target(target: str, reserved: list[str]) -> str:
    if not target.startswith("/"):
        raise InvalidArgument("`arguments.target`: must be an absolute path", field="arguments.target")
    real = os.path.realpath(target)
    if real == "/" or any(real == p or real.startswith(p + "/") for p in FORBIDDEN_TARGETS):
        raise FailedPrecondition(f"refused: {target} is not a place to mount a disk")
    for own in reserved:
        # A mount on, above or inside core0's own directories would hide its state (redis data,
        # sockets, job records) from core0 itself.
        if real == own or own.startswith(real.rstrip("/") + "/") or real.startswith(own + "/"):
            raise FailedPrecondition(f"refused: a mount at {target} would cover core0's own state ({own})")
    if os.path.exists(real) and not os.path.isdir(real):
        raise FailedPrecondition(f"refused: {target} exists and is not a directory")
    if any(m.mountpoint == real for m in blockdev.mounts()):
        raise FailedPrecondition(f"refused: {target} is already a mount point")
    return real


def op_mount(ctx: Context, args: dict[str, Any]) -> Any:
    name = _name(args["source"], "source")
    reason = blockdev.protection(name, ctx.policy)
    if reason:
        raise FailedPrecondition(f"refused: {reason}")
    target = _check_target(args["target"], list(args.get("reserved") or []))
    flags, data, kept = _mount_options(args.get("options"))
    probe = blockdev.signature(name)
    fstype = probe.get("TYPE")
    if not fstype:
        raise FailedPrecondition(f"{name} holds no filesystem to mount"
                                 + (f" (a {probe['PTTYPE']} partition table)" if probe.get("PTTYPE") else ""))
    if fstype == "btrfs":
        # The kernel must know every member of a multi-device pool before it can mount it.
        btrfsfs.scan_devices(btrfs_members(probe.get("UUID", ""), ctx.policy) or [name])
    created = []
    probe_dir = target
    while not os.path.exists(probe_dir):
        created.append(probe_dir)
        probe_dir = os.path.dirname(probe_dir)
    before = sum(1 for m in blockdev.mounts() if m.mountpoint == target)
    ctx.record(blockdev.disk_of(name), {"kind": "mount", "source": blockdev.dev_path(name), "target": target,
                                        "created": created, "before": before})
    for path in reversed(created):
        os.mkdir(path, 0o755)
    try:
        linux.mount(blockdev.dev_path(name), target, fstype, flags, data or None)
    except OSError as exc:
        raise FailedPrecondition(f"mount {blockdev.dev_path(name)} on {target} ({fstype}) failed: "
                                 f"{os.strerror(exc.errno) if exc.errno else exc}")
    return {"source": blockdev.dev_path(name), "target": target, "fstype": fstype, "options": kept}


def umount_targets(source: str, policy: blockdev.Policy) -> list[blockdev.Mount]:
    """The mounts `disk.umount {source}` means: every mount of a device (or of its btrfs pool),
    or the one mount at a path. Refuses mounts the node may not touch."""
    all_mounts = blockdev.mounts()
    if source.startswith("/dev/") or not source.startswith("/"):
        name = _name(source, "source")
        pool = blockdev.pool_of(name)
        chosen = (blockdev.pool_mounts(pool, all_mounts) if pool
                  else blockdev.mountpoints_of([name], all_mounts))
        if not chosen:
            raise NotFound(f"{name} is not mounted")
    else:
        real = os.path.realpath(source)
        chosen = [m for m in all_mounts if m.mountpoint == real][-1:]
        if not chosen:
            raise NotFound(f"nothing is mounted at {source}")
    for mount in chosen:
        device = blockdev.mount_device(mount)
        if device is None:
            raise FailedPrecondition(f"refused: {mount.mountpoint} is a {mount.fstype} mount, not a disk")
        if mount.mountpoint == "/":
            raise FailedPrecondition("refused: / is the node's root filesystem")
        reason = blockdev.protection(device, policy)
        if reason:
            raise FailedPrecondition(f"refused: {reason}")
    return chosen


def op_umount(ctx: Context, args: dict[str, Any]) -> Any:
    chosen = umount_targets(args["source"], ctx.policy)
    done = []
    for mount in reversed(chosen):
        ctx.record(blockdev.disk_of(blockdev.mount_device(mount) or ""),  # type: ignore[arg-type]
                   {"kind": "atomic", "after": f"umount of {mount.mountpoint} happened whole or not at all"})
        try:
            linux.umount(mount.mountpoint)
        except OSError as exc:
            raise FailedPrecondition(f"umount {mount.mountpoint} failed: {os.strerror(exc.errno)}"
                                     + (" (a process has files open there)" if exc.errno == 16 else "")
                                     + (f"; already unmounted: {', '.join(done)}" if done else ""))
        done.append(mount.mountpoint)
    return {"unmounted": done}


def op_btrfs_create(ctx: Context, args: dict[str, Any]) -> Any:
    names = [_name(d, f"devices[{i}]") for i, d in enumerate(args["devices"])]
    if len(set(names)) != len(names):
        raise InvalidArgument("`arguments.devices`: a device is listed twice", field="arguments.devices")
    held = {}
    for name in names:
        _check(name, ctx.policy)
        held[name] = _held_signature(name)
    if not args.get("overwrite"):
        for name, what in held.items():
            if what:
                raise FailedPrecondition(f"refused: {name} holds {what}; pass overwrite to replace it")
    uid = str(uuidlib.uuid4())
    for name in names:
        _record_signature(ctx, name, "btrfs", uid, held[name])
    btrfsfs.mkfs(names, label=args.get("label") or "", metadata=args.get("metadata") or "",
                 data=args.get("data") or "", uuid=uid, force=True)
    for name in names:
        if blockdev.signature(name).get("UUID", "").lower() != uid:
            raise FailedPrecondition(f"mkfs.btrfs ran but {name} does not hold the new filesystem")
        if not blockdev.is_partition(name):
            partitions.sync_kernel(name)
    return {"label": args.get("label") or "", "uuid": uid, "total_devices": len(names),
            "devices": [blockdev.dev_path(n) for n in names],
            "metadata": args.get("metadata") or "", "data": args.get("data") or ""}


def _pool_mount(mountpoint: str) -> tuple[blockdev.Mount, blockdev.Pool]:
    if not mountpoint.startswith("/"):
        raise InvalidArgument("`arguments.mountpoint`: must be an absolute path",
                              field="arguments.mountpoint")
    return btrfsfs.pool_at(mountpoint)


def _check_pool(pool: blockdev.Pool, policy: blockdev.Policy) -> None:
    for member in pool.devices:
        reason = blockdev.protection(member, policy)
        if reason:
            raise FailedPrecondition(f"refused: the pool {pool.label or pool.uuid} has a protected "
                                     f"member: {reason}")


def op_btrfs_device_add(ctx: Context, args: dict[str, Any]) -> Any:
    mount, pool = _pool_mount(args["mountpoint"])
    _check_pool(pool, ctx.policy)
    names = [_name(d, f"devices[{i}]") for i, d in enumerate(args["devices"])]
    for name in names:
        if name in pool.devices:
            raise AlreadyExists(f"{name} is already in the pool at {mount.mountpoint}")
        _check(name, ctx.policy)
        what = _held_signature(name)
        if what and not args.get("force"):
            raise FailedPrecondition(f"refused: {name} holds {what}; pass force to add it anyway")
    ctx.record(blockdev.disk_of(names[0]), {"kind": "device_add", "mountpoint": mount.mountpoint,
                                            "uuid": pool.uuid, "devices": names})
    btrfsfs.device_add(mount.mountpoint, names)
    missing = [n for n in names if n not in btrfsfs.members(pool.uuid)]
    if missing:
        raise FailedPrecondition(f"btrfs device add ran but {', '.join(missing)} is not in the pool")
    return btrfsfs.show_mounted(mount.mountpoint)


def op_btrfs_device_remove(ctx: Context, args: dict[str, Any]) -> Any:
    mount, pool = _pool_mount(args["mountpoint"])
    _check_pool(pool, ctx.policy)
    names = [_name(d, f"devices[{i}]") for i, d in enumerate(args["devices"])]
    for name in names:
        if name not in pool.devices:
            raise NotFound(f"{name} is not a device of the pool at {mount.mountpoint}")
    ctx.record(blockdev.disk_of(names[0]), {
        "kind": "atomic", "after": "btrfs moves data off a device and drops it in one transaction: "
                                   "a removal cut short leaves the device in the pool, its data whole"})
    btrfsfs.device_remove(mount.mountpoint, names)
    return btrfsfs.show_mounted(mount.mountpoint)


def _abs(path: str, field: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"`arguments.{field}`: must be an absolute path", field=f"arguments.{field}")
    return os.path.normpath(path)


def _pool_path(path: str, policy: blockdev.Policy) -> tuple[blockdev.Mount, blockdev.Pool]:
    mount, pool = btrfsfs.pool_at(path)
    _check_pool(pool, policy)
    return mount, pool


def op_btrfs_subvol_create(ctx: Context, args: dict[str, Any]) -> Any:
    path = _abs(args["path"], "path")
    _mount, pool = _pool_path(path, ctx.policy)
    if os.path.lexists(path):
        raise AlreadyExists(f"{path} already exists")
    if not os.path.isdir(os.path.dirname(path)):
        raise NotFound(f"{os.path.dirname(path)} does not exist")
    ctx.record(blockdev.disk_of(pool.devices[0]),
               {"kind": "atomic", "after": f"subvolume {path} was created whole or not at all"})
    btrfsfs.subvol_create(path)
    return {"path": path}


def op_btrfs_subvol_delete(ctx: Context, args: dict[str, Any]) -> Any:
    path = _abs(args["path"], "path")
    mount, pool = _pool_path(path, ctx.policy)
    if not os.path.exists(path):
        raise NotFound(f"no subvolume {path}")
    if not btrfsfs.is_subvolume(path) or os.path.realpath(path) == mount.mountpoint:
        raise FailedPrecondition(f"refused: {path} is not a subvolume of the pool")
    ctx.record(blockdev.disk_of(pool.devices[0]),
               {"kind": "atomic", "after": f"subvolume {path} was deleted whole or not at all"})
    btrfsfs.subvol_delete(path)
    return {"path": path}


def op_btrfs_subvol_quota(ctx: Context, args: dict[str, Any]) -> Any:
    path = _abs(args["path"], "path")
    limit = args["limit"]
    mount, pool = _pool_path(path, ctx.policy)
    if not btrfsfs.is_subvolume(path):
        raise FailedPrecondition(f"refused: {path} is not a subvolume")
    was_enabled = btrfsfs.quota_enabled(pool.uuid)
    ctx.record(blockdev.disk_of(pool.devices[0]), {"kind": "quota", "mountpoint": mount.mountpoint,
                                                   "uuid": pool.uuid, "was_enabled": was_enabled})
    if not was_enabled:
        btrfsfs.quota_enable(mount.mountpoint)
    btrfsfs.qgroup_limit(path, limit)
    return {"path": path, "limit": limit, **btrfsfs.qgroup_of(path)}


def op_btrfs_subvol_snapshot(ctx: Context, args: dict[str, Any]) -> Any:
    source = _abs(args["source"], "source")
    destination = _abs(args["destination"], "destination")
    _mount, pool = _pool_path(source, ctx.policy)
    if not btrfsfs.is_subvolume(source):
        raise FailedPrecondition(f"refused: {source} is not a subvolume")
    if os.path.lexists(destination):
        raise AlreadyExists(f"{destination} already exists")
    _dest_mount, dest_pool = btrfsfs.pool_at(destination)
    if dest_pool.uuid != pool.uuid:
        raise FailedPrecondition(f"refused: {destination} is not on the pool of {source}")
    ctx.record(blockdev.disk_of(pool.devices[0]),
               {"kind": "atomic", "after": f"snapshot {destination} was made whole or not at all"})
    btrfsfs.subvol_snapshot(source, destination, bool(args.get("read_only")))
    return {"source": source, "destination": destination, "read_only": btrfsfs.is_read_only(destination)}


def op_recover(ctx: Context, args: dict[str, Any]) -> Any:
    return {"report": recover(ctx.undo_dir, list(args["disks"]), bool(args.get("discard")))}


OPS: dict[str, Callable[[Context, dict[str, Any]], Any]] = {
    "disk.mktable": op_mktable, "disk.mkpart": op_mkpart, "disk.rmpart": op_rmpart, "disk.mkfs": op_mkfs,
    "disk.mount": op_mount, "disk.umount": op_umount,
    "btrfs.create": op_btrfs_create, "btrfs.device_add": op_btrfs_device_add,
    "btrfs.device_remove": op_btrfs_device_remove, "btrfs.subvol_create": op_btrfs_subvol_create,
    "btrfs.subvol_delete": op_btrfs_subvol_delete, "btrfs.subvol_quota": op_btrfs_subvol_quota,
    "btrfs.subvol_snapshot": op_btrfs_subvol_snapshot, "recover": op_recover,
}


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request; never raises (the answer says what went wrong)."""
    op = request["op"]
    ctx = Context(Path(request["undo_dir"]), blockdev.Policy.from_json(request["policy"]), op,
                  request.get("job", ""))
    disks = list(request.get("disks", []))
    identities = dict(request.get("identities") or {})
    gone = _vanished(disks, identities)
    if gone and op != "recover":
        return {"ok": False, "code": 404, "message": f"{', '.join(gone)} vanished before {op} could run; "
                                                     "nothing was changed"}
    try:
        value = OPS[op](ctx, request["args"])
        return {"ok": True, "value": value, "undo": [str(p) for p in ctx.files]}
    except BaseException as exc:
        interrupted = isinstance(exc, Interrupted)
        report = ctx.rollback()
        gone = _vanished(disks, identities)
        if interrupted:
            code, message = 503, f"{op} was interrupted (SIGTERM)"
        elif gone:
            code, message = 404, f"{', '.join(gone)} vanished during {op}"
        elif isinstance(exc, G8Error):
            code, message = exc.code, exc.message
        else:
            code, message = 500, f"{op} failed: {exc!r}"
        outcome = "; ".join(report) if report else "nothing was changed"
        message = message.rstrip(". ")
        critical = traceback.format_exc()[-3000:] if code == 500 else ""
        return {"ok": False, "code": code, "message": f"{message}. {outcome}", "critical": critical,
                "field": getattr(exc, "field", "")}


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    try:
        request = json.loads(sys.stdin.read())
    except ValueError as exc:
        print(json.dumps({"ok": False, "code": 500, "message": f"bad request to the disk helper: {exc}"}))
        return 0
    # Roll back and go if the DiskSupervisor dies: a change must not go on with nobody to answer.
    linux.set_pdeathsig(signal.SIGTERM)
    if request.get("parent") and os.getppid() != request["parent"]:
        return 1
    result = run(request)
    undo = result.pop("undo", [])
    if result["ok"] and request.get("job") and request["op"] != "recover":
        # Durably done before the undo records go: from here on, recovery drops them instead of
        # rolling back, and a re-sent command gets this answer instead of running twice.
        save_result(Path(request["undo_dir"]), request["job"], result)
    for path in undo:
        _unlink(Path(path))
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
