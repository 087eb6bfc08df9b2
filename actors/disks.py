"""DiskSupervisor: the node's block devices, one light DiskActor each, and the disk.* and btrfs.*
commands.

Devices come and go without udev: the kernel's uevents (a NETLINK_KOBJECT_UEVENT socket, which
the kernel broadcasts into every network namespace, the actor plane's too) trigger a rescan of
/sys/class/block, and a slow timer rescans anyway. A loop device attached later is an actor
within milliseconds; one that is detached goes, and what was queued on it is answered.

Reads (disk.list, disk.getinfo, disk.mounts, btrfs.list/info/subvol_list) are answered here at
once. Changes go to the DiskActors of every disk they touch and run, one at a time per disk, in
helper processes that roll back what they did when they fail (system/diskops.py). A helper that
is killed (actor.kill on its disk) leaves undo records; a recovery helper applies them before
the disk takes anything else, the caller is told what happened, and the killed actor restarts
per its spec. Undo records live in the state directory: a node that crashes mid-change finds them
when it starts again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from g8os.actors.base import DEFERRED, Actor
from g8os.actors.disk import DiskActor, DiskOp
from g8os.actors.supervision import Backoff, Strategy, Supervisor, SupFlags
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
from g8os.messages.errors import (
    FailedPrecondition,
    G8Error,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_for_code,
)
from g8os.messages.internal import ActorOp, Call
from g8os.system import blockdev, diskops, partitions
from g8os.system import btrfs as btrfsfs
from g8os.system import spawn as spawner
from g8os.system.journal import Journal
from g8os.system.reaper import Reaper

SCAN_EVERY = 2.0          # seconds between rescans when no uevent says anything changed
UEVENT_DEBOUNCE = 0.05    # a burst of uevents (a table with 4 partitions) makes one rescan
NETLINK_KOBJECT_UEVENT = 15
LEFTOVER_WAIT = 10.0      # seconds to wait for a previous incarnation's helpers to be gone
READ_CHUNK = 65536
STDERR_KEEP = 16384
RESULT_KEEP = 600.0       # seconds a saved answer waits for its command to be sent again


class DiskSupervisor(Actor):
    kind = "disk_supervisor"
    # Disks are independent: one_for_one, never giving up (a device's actor lives as long as the
    # device); a disk whose actor keeps failing waits longer each time.
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=None,
                     backoff=Backoff(initial=0.2, factor=2.0, cap=10.0, reset_after=10.0))

    # ---- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> bool:
        state = Path(self.config.state_dir) / "disks"
        self.undo_dir = state / "undo"
        self.undo_dir.mkdir(parents=True, exist_ok=True)
        self.marks_file = state / "protected.json"
        self.marks: dict[str, str] = self._load_marks()
        self.disks: dict[str, DiskActor] = {}
        self.supervision = Supervisor(self.flags, ())
        self.helpers: dict[int, DiskOp] = {}
        self.draining: dict[int, tuple[DiskOp, int]] = {}   # helpers whose process group lives on
        self.by_fd: dict[int, tuple[DiskOp, int]] = {}
        self.root = blockdev.root_disks()
        self.journal = Journal(Path(self.config.runtime_dir) / "disks" / "helpers")
        self.reaper = Reaper()
        self.watch(self.reaper.fileno(), self._reap)
        self._rescan_armed = False
        self.uevents = self._open_uevents()
        self.awaiting: set[str] = set()   # disks a previous incarnation's helpers were changing
        self.leftovers = self._kill_leftovers()
        self._rescan()
        self.after(SCAN_EVERY, "_tick")
        if self.leftovers:
            self.after(0.02, "_await_leftovers", time.monotonic() + LEFTOVER_WAIT)
        else:
            self._recover_leftover_undo()
        return True

    def on_stop(self) -> None:
        # Each helper rolls back on SIGTERM and answers; what does not finish in time is killed
        # and its undo records wait for the next incarnation.
        running = [op for op in self.helpers.values() if op.pid]
        for op in running:
            op.killed_by = op.killed_by or "the disk supervisor stopped"
            _signal(op.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while self.helpers and time.monotonic() < deadline:
            for pid, _status in self.reaper.reap():
                op = self.helpers.pop(pid, None)
                if op is not None:
                    self.journal.drop(str(pid))
            if self.helpers:
                time.sleep(0.02)  # shutdown path only: the actor serves nothing else now
        for pid in list(self.helpers):
            spawner.signal_group(pid, signal.SIGKILL)
        if self.uevents is not None:
            self.uevents.close()

    # ---- devices coming and going ------------------------------------------------------------

    def _open_uevents(self) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK |
                                 socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
            sock.bind((0, 1))   # group 1: the kernel's own events (udev's would be group 2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError as exc:
            self.log(f"no kernel uevents ({exc}); devices are noticed by polling every {SCAN_EVERY:g}s")
            return None
        self.watch(sock.fileno(), self._uevent)
        return sock

    def _uevent(self) -> None:
        assert self.uevents is not None
        block = False
        while True:
            try:
                data = self.uevents.recv(65536)
            except BlockingIOError:
                break
            except OSError:   # ENOBUFS: events were lost; a rescan finds the truth anyway
                block = True
                break
            block = block or b"SUBSYSTEM=block" in data
        if block and not self._rescan_armed:
            self._rescan_armed = True
            self.after(UEVENT_DEBOUNCE, "_uevent_rescan")

    def _uevent_rescan(self) -> None:
        self._rescan_armed = False
        self._rescan()

    def _tick(self) -> None:
        if self._stopping:
            return
        self._rescan()
        self._prune_results()
        self.after(SCAN_EVERY, "_tick")

    def _prune_results(self) -> None:
        """Saved answers nobody asked for again: a re-sent command comes right after a restart,
        and a result outlives its command by 300 s (protocol.md), so 600 s is plenty."""
        folder = diskops.result_file(self.undo_dir, "x").parent
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            try:
                if now - entry.stat().st_mtime > RESULT_KEEP:
                    os.unlink(entry.path)
            except OSError:
                pass

    def _rescan(self) -> None:
        present = blockdev.scan()
        self.root = blockdev.root_disks() or self.root
        for name, actor in list(self.disks.items()):
            disk = present.get(name)
            if disk is None or disk.identity != actor.disk.identity:
                self._vanish(actor)
            else:
                actor.disk = disk
        policy = self._policy()
        for name, disk in sorted(present.items()):
            if name not in self.disks:
                self._add(disk)
            actor = self.disks.get(name)
            if actor is not None and not actor.gone:
                actor.protected = blockdev.protection(name, policy, whole=True)

    def _add(self, disk: blockdev.Disk) -> None:
        actor = DiskActor(disk.name, self._child_path(disk.name), disk)
        self.disks[disk.name] = actor
        self.supervision.add(actor.spec)
        self.supervision.started(disk.name)
        self.emit("/disk/added", actor.path, device=disk.path, size=disk.size,
                  backing_file=disk.backing_file or None)
        if diskops.undo_files(self.undo_dir, disk.name) or disk.name in self.awaiting:
            # Nothing may touch it before what an earlier operation left half done is rolled back.
            actor.state = "recovering"
            if not self.leftovers:
                self._start_recovery([disk.name], "undo records were left by an earlier operation")

    def _vanish(self, actor: DiskActor) -> None:
        if actor.gone:
            return
        actor.gone = True
        actor.state = "gone"
        for op in list(actor.queue):
            if op is not actor.current:
                self._drop(op, NotFound(f"{actor.name} vanished before {op.command} could run; "
                                        "nothing was changed"))
        if actor.current is None:
            self._remove(actor)

    def _remove(self, actor: DiskActor) -> None:
        if self.disks.get(actor.name) is actor:
            del self.disks[actor.name]
            if actor.name in self.supervision:
                self.supervision.remove(actor.name)
            self.emit("/disk/removed", actor.path, device=actor.disk.path)

    # ---- protection ---------------------------------------------------------------------------

    def _policy(self) -> blockdev.Policy:
        return blockdev.Policy(manage=blockdev.manage_patterns(self.config),
                               protect=tuple(getattr(self.config, "disk_protect", None) or ()),
                               marks=dict(self.marks), root=self.root)

    def _load_marks(self) -> dict[str, str]:
        try:
            data = json.loads(self.marks_file.read_text())
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_marks(self) -> None:
        tmp = self.marks_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.marks, indent=1, sort_keys=True))
        tmp.replace(self.marks_file)

    def _gate(self, names: Iterable[str], *, use: bool = True) -> blockdev.Policy:
        """Refuse (412) before queueing anything: protected devices, and (with `use`) devices the
        kernel holds. The helper checks again right before it changes anything."""
        policy = self._policy()
        for name in names:
            whole = not blockdev.is_partition(name)
            reason = blockdev.protection(name, policy, whole=whole)
            if reason:
                raise FailedPrecondition(f"refused: {reason}")
            if use:
                # No exclusive-open probe here: the disk may be busy with an earlier operation
                # of ours, which the probe would take for a foreign holder.
                busy = blockdev.in_use(name, whole=whole, probe=False)
                if busy:
                    raise FailedPrecondition(f"refused: {busy}")
        return policy

    def _reserved(self) -> list[str]:
        """core0's own directories: no disk is mounted on, above or inside them."""
        config = self.config
        paths = [config.state_dir, config.run_dir, getattr(config, "runtime_dir", ""),
                 os.path.dirname(getattr(config, "log_file", "") or ""),
                 os.path.dirname(getattr(getattr(config, "redis", None), "socket", "") or "")]
        return sorted({os.path.realpath(p) for p in paths if p})

    # ---- names ---------------------------------------------------------------------------------

    @staticmethod
    def _name(value: str, field: str) -> str:
        try:
            return blockdev.device_name(value)
        except InvalidArgument as exc:
            raise InvalidArgument(f"`arguments.{field}`: {exc.message}", field=f"arguments.{field}")

    def _whole(self, value: str, field: str = "disk") -> str:
        name = self._name(value, field)
        if blockdev.is_partition(name):
            raise InvalidArgument(f"`arguments.{field}`: {name} is a partition; give its disk "
                                  f"{blockdev.disk_of(name)}", field=f"arguments.{field}")
        return self._known(name)

    def _known(self, name: str) -> str:
        disk = blockdev.disk_of(name)
        actor = self.disks.get(disk)
        if actor is None or actor.gone or blockdev.identity(disk) != actor.disk.identity:
            self._rescan()   # a uevent on its way: this name may be another device by now
        if disk not in self.disks or self.disks[disk].gone:
            raise NotFound(f"{name} is not a disk of this node (not attached, empty, or a RAM disk)")
        return disk

    def _disks_of(self, names: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._known(n) for n in names))

    # ---- operations ----------------------------------------------------------------------------

    def _submit(self, call: Call, disks: tuple[str, ...], args: dict[str, Any]) -> Any:
        done = diskops.completed(self.undo_dir, call.command.id)
        if done is not None:
            # Sent again after the previous incarnation carried it out but died before answering.
            diskops.result_file(self.undo_dir, call.command.id).unlink(missing_ok=True)
            return done.get("value")
        op = DiskOp(command=call.command.command, job_id=call.command.id, args=args, disks=disks,
                    call=call, reply_to=call.reply_to or self.directory.get("gateway"))
        for name in disks:
            self.disks[name].queue.append(op)
        self._pump(disks)
        return DEFERRED

    def _pump(self, names: Iterable[str]) -> None:
        for name in list(names):
            actor = self.disks.get(name)
            if actor is None or not actor.can_start():
                continue
            op = actor.head()
            if op is None:
                actor.state = "running"
                continue
            holders = [self.disks.get(d) for d in op.disks]
            if all(h is not None and h.head() is op and h.can_start() for h in holders):
                self._start(op)
            else:
                actor.state = "waiting"

    def _start(self, op: DiskOp) -> None:
        request = {"op": op.command, "job": op.job_id, "args": op.args, "policy": self._policy().to_json(),
                   "undo_dir": str(self.undo_dir), "disks": list(op.disks), "parent": os.getpid(),
                   "identities": {d: self.disks[d].disk.identity for d in op.disks if d in self.disks}}
        try:
            proc = spawner.spawn([sys.executable, "-m", "g8os.system.diskops"],
                                 stdin=json.dumps(request).encode())
        except G8Error as exc:
            self._drop(op, exc)
            return
        op.pid, op.start_ticks, op.fds = proc.pid, proc.start_ticks, [proc.stdout, proc.stderr]
        op.started_at = time.monotonic()
        self.helpers[proc.pid] = op
        for index, fd in enumerate(op.fds):
            self.by_fd[fd] = (op, index)
            self.watch(fd, lambda fd=fd: self._readable(fd))
        self.journal.put(str(proc.pid), {"pid": proc.pid, "start_ticks": proc.start_ticks,
                                         "command": op.command, "disks": list(op.disks)})
        for name in op.disks:
            actor = self.disks[name]
            actor.current = op
            actor.state = "recovering" if op.command == "recover" else "busy"

    def _readable(self, fd: int) -> None:
        entry = self.by_fd.get(fd)
        if entry is None:
            self.unwatch(fd)
            return
        op, index = entry
        try:
            while True:
                data = os.read(fd, READ_CHUNK)
                if not data:
                    self._close_fd(fd)
                    return
                if index == 0:
                    op.stdout += data
                else:
                    op.stderr += data
                    del op.stderr[:-STDERR_KEEP]
                if len(data) < READ_CHUNK:
                    return
        except BlockingIOError:
            return
        except OSError:
            self._close_fd(fd)

    def _close_fd(self, fd: int) -> None:
        self.unwatch(fd)
        self.by_fd.pop(fd, None)
        try:
            os.close(fd)
        except OSError:
            pass

    def _reap(self) -> None:
        for pid, status in self.reaper.reap():
            op = self.helpers.pop(pid, None)
            if op is None:
                continue  # an orphan of a helper (parted, mkfs) reparented to us
            for fd in list(op.fds):
                if fd in self.by_fd:
                    self._readable(fd)
                    if fd in self.by_fd:
                        self._close_fd(fd)
            self.journal.drop(str(pid))
            pgid, op.pid = op.pid, 0
            self.draining[pgid] = (op, status)
            self._settle_when_gone(pgid)

    def _settle_when_gone(self, pgid: int) -> None:
        # The helper's children (parted, mkfs) must be gone too before anything else touches
        # the disk: a killed helper's child may still be writing.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            op, status = self.draining.pop(pgid)
            self._settle(op, status)
            return
        except PermissionError:
            pass
        self.after(0.02, "_settle_when_gone", pgid)

    def _settle(self, op: DiskOp, status: int) -> None:
        for name in op.disks:
            actor = self.disks.get(name)
            if actor is None:
                continue
            if actor.current is op:
                actor.current = None
                if actor.state in ("busy", "recovering", "waiting"):
                    actor.state = "running"
            if op in actor.queue:
                actor.queue.remove(op)
        result = _result(op)
        if op.command == "recover":
            self._recovered(op, result, status)
        elif result is None:
            self._interrupted(op, status)
        else:
            # An answer means the operation completed or rolled itself back; undo records left
            # by a helper killed right after answering describe a change that is done.
            diskops.recover(self.undo_dir, list(op.disks), discard=True)
            self._answer(op, result)
            diskops.result_file(self.undo_dir, op.job_id).unlink(missing_ok=True)
            if op.killed_disk:
                self._fail(op.killed_disk, op.killed_by)
        self._after_op(op.disks)

    def _after_op(self, names: Iterable[str]) -> None:
        names = list(names)
        for name in names:
            actor = self.disks.get(name)
            if actor is not None and actor.gone and actor.current is None:
                self._remove(actor)
        self._pump(names)

    def _interrupted(self, op: DiskOp, status: int) -> None:
        why = op.killed_by or _died(status, op.stderr)
        present = [d for d in op.disks if d in self.disks and not self.disks[d].gone]
        for name in op.disks:
            if name in self.disks:
                self.disks[name].last_error = why
        if not present:
            self._answer(op, {"ok": False, "code": 404, "message": (
                f"{op.command} was interrupted ({why}) and {', '.join(op.disks)} vanished; "
                "nothing left to restore")})
            return
        self._start_recovery(present, why, interrupted=op)

    def _start_recovery(self, names: list[str], why: str, interrupted: DiskOp | None = None) -> None:
        recovery = DiskOp(command="recover", job_id=interrupted.job_id if interrupted else "",
                          args={"disks": names, "discard": False}, disks=tuple(names),
                          interrupted=interrupted, report=why)
        for name in names:
            actor = self.disks[name]
            actor.queue.appendleft(recovery)
            if actor.current is None and actor.state != "backoff":
                actor.state = "recovering"
        if all(self.disks[n].current is None and self.disks[n].state != "backoff" for n in names):
            self._start(recovery)

    def _recovered(self, recovery: DiskOp, result: dict[str, Any] | None, status: int) -> None:
        ok = bool(result and result.get("ok"))
        report = result["value"]["report"] if ok and result else [
            f"the recovery did not finish ({recovery.killed_by or _died(status, recovery.stderr)}); "
            "it is tried again when the disk's actor restarts"]
        original = recovery.interrupted
        text = "; ".join(report) or "nothing had been changed yet"
        for name in recovery.disks:
            actor = self.disks.get(name)
            if actor is not None and actor.state == "recovering":
                actor.state = "running"
        done = diskops.completed(self.undo_dir, original.job_id) if original is not None else None
        if original is not None and done is not None:
            # Killed after the change was complete and its answer saved: it completed.
            self._answer(original, done)
            diskops.result_file(self.undo_dir, original.job_id).unlink(missing_ok=True)
        elif original is not None:
            where = ", ".join(original.disks)
            self._answer(original, {"ok": False, "code": Unavailable.code, "message": (
                f"{original.command} on {where} was interrupted: {recovery.report}. {text}")})
        self.emit("/disk/recovered", self._child_path(recovery.disks[0]), disks=list(recovery.disks),
                  report=report, ok=ok)
        failed = {original.killed_disk} if original is not None and original.killed_disk else set()
        if recovery.killed_disk:
            failed.add(recovery.killed_disk)
        if not ok:
            failed.update(recovery.disks)
        for name in failed:
            self._fail(name, (original.killed_by if original is not None and name == original.killed_disk
                              else recovery.killed_by) or "its recovery failed")

    def _fail(self, name: str, reason: str) -> None:
        """The disk's actor failed (actor.kill, a helper that died): restart it per its spec."""
        actor = self.disks.get(name)
        if actor is None or actor.gone or actor.state == "backoff":
            return
        actor.last_error = reason
        decision = self.supervision.exited(name, normal=False, reason=reason)
        actor.state = "backoff"
        self.emit("/disk/restarting", actor.path, reason=reason, delay=decision.delay)
        self.after(decision.delay, "_restart_actor", name, actor.generation)

    def _restart_actor(self, name: str, generation: int) -> None:
        actor = self.disks.get(name)
        if actor is None or actor.generation != generation or actor.state != "backoff" or self._stopping:
            return
        disk = blockdev.disk_info(name)
        if disk is None or disk.identity != actor.disk.identity:
            self._vanish(actor)
            return
        actor.disk = disk
        actor.restarted()
        self.supervision.started(name)
        self.emit("/disk/restarted", actor.path, restarts=actor.restarts)
        head = actor.head()
        if head is not None and head.command == "recover" and not head.pid:
            actor.state = "recovering"
            if all(self.disks.get(d) is not None and self.disks[d].current is None and
                   self.disks[d].state != "backoff" for d in head.disks):
                self._start(head)
            return
        if diskops.undo_files(self.undo_dir, name):
            self._start_recovery([name], "undo records were left by an interrupted operation")
            return
        self._pump([name])

    def _drop(self, op: DiskOp, error: G8Error) -> None:
        """Answer an operation that will not run, and take it out of every queue."""
        for name in op.disks:
            actor = self.disks.get(name)
            if actor is not None and op in actor.queue:
                actor.queue.remove(op)
        self._answer(op, {"ok": False, "code": error.code, "message": error.message,
                          "field": getattr(error, "field", "")})
        self._pump([d for d in op.disks if d in self.disks])

    def _answer(self, op: DiskOp, result: dict[str, Any]) -> None:
        ok = bool(result.get("ok"))
        message = str(result.get("message", ""))
        for name in op.disks:
            actor = self.disks.get(name)
            if actor is not None:
                actor.remember(op, ok, "completed" if ok else message)
        self.emit("/disk/operation", self._child_path(op.disks[0]) if op.disks else self.path,
                  command=op.command, ok=ok, disks=list(op.disks), error=None if ok else message[:300])
        if op.call is None:
            return
        if ok:
            self.reply(op.call, result.get("value"), sender=op.reply_to)
            return
        code = int(result.get("code") or 500)
        cls = error_for_code(code)
        critical = str(result.get("critical") or "")
        error: G8Error = (InvalidArgument(message, field=str(result.get("field") or ""))
                          if cls is InvalidArgument else cls(message, critical=critical))
        self.reply(op.call, error=error, sender=op.reply_to)

    # ---- what a previous incarnation left ---------------------------------------------------

    def _kill_leftovers(self) -> dict[int, int]:
        leftovers = {}
        for record in self.journal.records().values():
            pid = int(record.get("pid") or 0)
            if pid and spawner.process_start_ticks(pid) == record.get("start_ticks"):
                spawner.signal_group(pid, signal.SIGKILL)
                leftovers[pid] = int(record["start_ticks"])
                self.awaiting.update(record.get("disks") or [])
            self.journal.drop(str(pid))
        if leftovers:
            self.log(f"killed {len(leftovers)} disk helper(s) left by a previous incarnation")
        return leftovers

    def _await_leftovers(self, deadline: float) -> None:
        self.leftovers = {pid: ticks for pid, ticks in self.leftovers.items()
                          if spawner.process_start_ticks(pid) == ticks}
        if self.leftovers and time.monotonic() < deadline:
            self.after(0.02, "_await_leftovers", deadline)
            return
        self.leftovers = {}
        self._recover_leftover_undo()

    def _recover_leftover_undo(self) -> None:
        self.awaiting = set()
        for name, actor in sorted(self.disks.items()):
            if actor.current is not None or actor.gone:
                continue
            if diskops.undo_files(self.undo_dir, name):
                self._start_recovery([name], "undo records were left when the disk supervisor stopped")
            elif actor.state == "recovering":
                actor.state = "running"
                self._pump([name])

    # ---- reads ---------------------------------------------------------------------------------

    def _openable(self, policy: blockdev.Policy) -> list[str]:
        names = []
        for name, actor in self.disks.items():
            if not actor.gone and blockdev.rule_protection(name, policy) is None:
                names += [name, *blockdev.partitions(name)]
        return names

    def _rows(self, names: list[str]) -> list[dict[str, Any]]:
        policy = self._policy()
        rows = blockdev.lsblk(names)
        probes = blockdev.blkid([n for n in self._openable(policy) if blockdev.disk_of(n) in names])
        fstypes = {blockdev.mount_device(m): m.fstype for m in blockdev.mounts()}
        for row in rows:
            name = row.get("name") or row.get("kname") or ""
            actor = self.disks.get(name)
            _enrich(row, probes, fstypes)
            for child in row.get("children") or []:
                _enrich(child, probes, fstypes)
                child["protected"] = blockdev.protection(child.get("name", ""), policy) or False
            row["blocksize"] = blockdev.logical_block_size(name)
            row["partitions"] = [c.get("name") for c in row.get("children") or []]
            row["protected"] = blockdev.protection(name, policy, whole=True) or False
            row["actor"] = actor.path if actor else None
            row["state"] = actor.state if actor else None
            row["operation"] = actor.current.command if actor and actor.current else None
        return rows

    def handle_disk_list(self, request: DiskList, call: Call) -> Any:
        self._rescan()
        names = sorted(n for n, a in self.disks.items() if not a.gone)
        return {"blockdevices": self._rows(names) if names else []}

    def handle_disk_getinfo(self, request: DiskGetinfo, call: Call) -> Any:
        disk = self._whole(request.disk)
        policy = self._policy()
        size = blockdev.size_bytes(disk)
        block = blockdev.logical_block_size(disk)
        rows = self._rows([disk])
        row = rows[0] if rows else {"name": disk}
        readable = blockdev.rule_protection(disk, policy) is None
        if not request.part:
            table = partitions.read_table(disk) if readable else None
            row.update(start=0, end=size - 1, size=size, blocksize=block,
                       table=table["table"] if table else None,
                       free=partitions.free_space(table) if table and table["table"] else
                       ([{"start": 0, "end": size - 1, "size": size}] if table else None))
            return row
        part = self._name(request.part, "part")
        if blockdev.disk_of(part) != disk or part == disk:
            raise NotFound(f"{part} is not a partition of {disk}")
        child = next((c for c in row.get("children") or [] if c.get("name") == part), {"name": part})
        start = blockdev.start_bytes(part)
        length = blockdev.size_bytes(part)
        child.update(start=start, end=start + length - 1, size=length, blocksize=block,
                     number=blockdev.partition_number(part), free=[])
        return child

    def handle_disk_mounts(self, request: DiskMounts, call: Call) -> Any:
        found: dict[str, list[dict[str, Any]]] = {}
        for mount in blockdev.mounts():
            options: dict[str, str] = {}
            for option in f"{mount.options},{mount.super_options}".split(","):
                if option:
                    key, _, value = option.partition("=")
                    options[key] = value or "1"
            found.setdefault(mount.source, []).append(
                {"mountpoint": mount.mountpoint, "filesystem": mount.fstype, "options": options})
        return found

    def handle_btrfs_list(self, request: BtrfsList, call: Call) -> Any:
        return btrfsfs.pools(self._openable(self._policy()))

    def handle_btrfs_info(self, request: BtrfsInfo, call: Call) -> Any:
        btrfsfs.pool_at(request.mountpoint)
        if not os.path.exists(request.mountpoint):
            raise NotFound(f"{request.mountpoint} does not exist")
        return btrfsfs.info(request.mountpoint)

    def handle_btrfs_subvol_list(self, request: BtrfsSubvolList, call: Call) -> Any:
        if not os.path.exists(request.path):
            raise NotFound(f"{request.path} does not exist")
        btrfsfs.pool_at(request.path)
        return btrfsfs.subvolumes(request.path)

    # ---- protection marks --------------------------------------------------------------------

    def handle_disk_protect(self, request: DiskProtect, call: Call) -> Any:
        name = self._name(request.disk, "disk")
        self._known(name)
        self.marks[name] = blockdev.identity(name)
        self._save_marks()
        self._rescan()
        self.emit("/disk/protected", self._child_path(blockdev.disk_of(name)), device=name)
        return {"disk": blockdev.dev_path(name), "protected": True}

    def handle_disk_unprotect(self, request: DiskUnprotect, call: Call) -> Any:
        name = self._name(request.disk, "disk")
        if name not in self.marks:
            reason = blockdev.rule_protection(name, self._policy())
            if reason:
                raise FailedPrecondition(f"{name} is protected by rule, not by a mark: {reason}")
            raise NotFound(f"{name} carries no disk.protect mark")
        del self.marks[name]
        self._save_marks()
        self._rescan()
        return {"disk": blockdev.dev_path(name), "protected": False}

    # ---- changes -------------------------------------------------------------------------------

    def handle_disk_mktable(self, request: DiskMktable, call: Call) -> Any:
        disk = self._whole(request.disk)
        self._gate([disk])
        return self._submit(call, (disk,), {"disk": disk, "table_type": request.table_type,
                                            "force": request.force})

    def handle_disk_mkpart(self, request: DiskMkpart, call: Call) -> Any:
        disk = self._whole(request.disk)
        self._gate([disk])
        return self._submit(call, (disk,), {"disk": disk, "start": request.start, "end": request.end,
                                            "part_type": request.part_type})

    def handle_disk_rmpart(self, request: DiskRmpart, call: Call) -> Any:
        disk = self._whole(request.disk)
        self._gate([disk])
        return self._submit(call, (disk,), {"disk": disk, "number": request.number})

    def handle_disk_mkfs(self, request: DiskMkfs, call: Call) -> Any:
        name = self._name(request.disk, "disk")
        disk = self._known(name)
        self._gate([name])
        return self._submit(call, (disk,), {"disk": name, "fstype": request.fstype, "label": request.label,
                                            "overwrite": request.overwrite})

    def handle_disk_mount(self, request: DiskMount, call: Call) -> Any:
        name = self._name(request.source, "source")
        self._known(name)
        policy = self._gate([name], use=False)
        probe = blockdev.signature(name)
        members = [name]
        if probe.get("TYPE") == "btrfs":
            members = diskops.btrfs_members(probe.get("UUID", ""), policy) or [name]
            self._gate(members, use=False)
        return self._submit(call, self._disks_of(members), {"source": name, "target": request.target,
                                                             "options": request.options,
                                                             "reserved": self._reserved()})

    def handle_disk_umount(self, request: DiskUmount, call: Call) -> Any:
        chosen = diskops.umount_targets(request.source, self._policy())
        names: list[str] = []
        for mount in chosen:
            device = blockdev.mount_device(mount)
            pool = blockdev.pool_of(device) if device else None
            names += list(pool.devices) if pool else [device] if device else []
        return self._submit(call, self._disks_of(names), {"source": request.source})

    def handle_btrfs_create(self, request: BtrfsCreate, call: Call) -> Any:
        names = [self._name(d, f"devices[{i}]") for i, d in enumerate(request.devices)]
        disks = self._disks_of(names)
        self._gate(names)
        return self._submit(call, disks, {"label": request.label, "devices": names,
                                          "metadata": request.metadata, "data": request.data,
                                          "overwrite": request.overwrite})

    def _pool_disks(self, path: str, field: str) -> tuple[blockdev.Pool, list[str]]:
        if not os.path.exists(path) and field == "mountpoint":
            raise NotFound(f"{path} does not exist")
        _mount, pool = btrfsfs.pool_at(path)
        self._gate(pool.devices, use=False)
        return pool, list(pool.devices)

    def handle_btrfs_device_add(self, request: BtrfsDeviceAdd, call: Call) -> Any:
        _pool, members = self._pool_disks(request.mountpoint, "mountpoint")
        names = [self._name(d, f"devices[{i}]") for i, d in enumerate(request.devices)]
        self._gate(names)
        return self._submit(call, self._disks_of([*members, *names]), {
            "mountpoint": request.mountpoint, "devices": names, "force": request.force})

    def handle_btrfs_device_remove(self, request: BtrfsDeviceRemove, call: Call) -> Any:
        pool, members = self._pool_disks(request.mountpoint, "mountpoint")
        names = [self._name(d, f"devices[{i}]") for i, d in enumerate(request.devices)]
        for name in names:
            if name not in pool.devices:
                raise NotFound(f"{name} is not a device of the pool at {request.mountpoint}")
        return self._submit(call, self._disks_of(members), {"mountpoint": request.mountpoint,
                                                            "devices": names})

    def _on_pool(self, call: Call, path: str, args: dict[str, Any]) -> Any:
        _pool, members = self._pool_disks(path, "path")
        return self._submit(call, self._disks_of(members), args)

    def handle_btrfs_subvol_create(self, request: BtrfsSubvolCreate, call: Call) -> Any:
        return self._on_pool(call, request.path, {"path": request.path})

    def handle_btrfs_subvol_delete(self, request: BtrfsSubvolDelete, call: Call) -> Any:
        return self._on_pool(call, request.path, {"path": request.path})

    def handle_btrfs_subvol_quota(self, request: BtrfsSubvolQuota, call: Call) -> Any:
        return self._on_pool(call, request.path, {"path": request.path, "limit": request.limit})

    def handle_btrfs_subvol_snapshot(self, request: BtrfsSubvolSnapshot, call: Call) -> Any:
        return self._on_pool(call, request.source, {"source": request.source,
                                                    "destination": request.destination,
                                                    "read_only": request.read_only})

    # ---- the tree ------------------------------------------------------------------------------

    def node_info(self) -> dict[str, Any]:
        return {"disks": len(self.disks), "busy": sum(1 for a in self.disks.values() if a.current),
                "queued": sum(len(a.queue) for a in self.disks.values()),
                "uevents": self.uevents is not None, "manage": list(blockdev.manage_patterns(self.config))}

    def light_nodes(self) -> list[dict[str, Any]]:
        return [self.disks[name].node() for name in sorted(self.disks)]

    def _actor_at(self, path: str) -> DiskActor:
        name = path[len(self.path.rstrip("/")) + 1:]
        actor = self.disks.get(name)
        if actor is None or "/" in name:
            raise NotFound(f"no actor at {path}")
        return actor

    def light_op(self, op: ActorOp) -> Any:
        actor = self._actor_at(op.path)
        if op.op == "inspect":
            node = actor.inspect()
            node["events"] = [{"ts": e.ts, "topic": e.topic, "data": e.data}
                              for e in self.events if e.path == actor.path][-20:]
            return node
        if op.op not in ("kill", "restart"):
            raise NotFound(f"unknown operation {op.op}")
        if actor.state in ("backoff", "gone"):
            raise NotFound(f"{op.path} is {actor.state}, not running")
        current = actor.current
        if op.op == "kill":
            reason = f"killed by actor.kill (signal {op.signal})"
            if current is not None and current.pid:
                current.killed_by, current.killed_disk = reason, actor.name
                spawner.signal_group(current.pid, op.signal)
                return {"path": op.path, "pid": current.pid, "signal": op.signal,
                        "operation": current.command}
            self._fail(actor.name, reason)
            return {"path": op.path, "pid": None, "signal": op.signal, "operation": None}
        reason = "restarted by actor.restart"
        if current is not None and current.pid:
            # SIGTERM: the helper rolls back and answers; SIGKILL after the grace period.
            current.killed_by, current.killed_disk = reason, actor.name
            _signal(current.pid, signal.SIGTERM)
            self.after(actor.spec.shutdown, "_kill_late", current.pid, current.start_ticks)
            return {"path": op.path, "pid": current.pid, "restarting": True}
        self._fail(actor.name, reason)
        return {"path": op.path, "pid": None, "restarting": True}

    def _kill_late(self, pid: int, start_ticks: int) -> None:
        if pid in self.helpers and spawner.process_start_ticks(pid) == start_ticks:
            spawner.signal_group(pid, signal.SIGKILL)


def _result(op: DiskOp) -> dict[str, Any] | None:
    """The helper's answer: its last line of output that is a JSON object with `ok`."""
    for line in reversed(bytes(op.stdout).decode(errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "ok" in value:
            return value
    return None


def _died(status: int, stderr: bytearray) -> str:
    code, sig = spawner.exit_code(status)
    how = f"killed by {spawner.signal_name(sig)}" if sig else f"exited with status {code}"
    tail = bytes(stderr).decode(errors="replace").strip().splitlines()[-1:] if stderr else []
    return f"the disk helper {how}" + (f": {tail[0][:300]}" if tail else "")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _enrich(row: dict[str, Any], probes: dict[str, dict[str, str]], fstypes: dict[str | None, str]) -> None:
    """Fill what lsblk leaves empty without udev from a blkid probe (devices the node may open),
    and add the plain names G8OS users look for."""
    name = row.get("name") or ""
    probe = probes.get(name, {})
    for key, probe_key in (("fstype", "TYPE"), ("label", "LABEL"), ("uuid", "UUID"), ("pttype", "PTTYPE"),
                           ("ptuuid", "PTUUID"), ("partuuid", "PART_ENTRY_UUID"),
                           ("partlabel", "PART_ENTRY_NAME"), ("parttype", "PART_ENTRY_TYPE"),
                           ("fsver", "VERSION")):
        if row.get(key) in (None, "") and probe.get(probe_key):
            row[key] = probe[probe_key]
    if row.get("fstype") in (None, "") and fstypes.get(name):
        row["fstype"] = fstypes[name]
    row["mountpoints"] = [m for m in row.get("mountpoints") or [] if m]
    row["rotational"] = bool(row.get("rota"))
    row["filesystem"] = row.get("fstype")
    row["table"] = row.get("pttype")
    row["labels"] = [v for v in (row.get("label"), row.get("partlabel")) if v]
