"""DiskActor: the light actor that owns one block device (a whole disk and its partitions).

It lives inside the DiskSupervisor (its host), has its own path (`/disks/loop3`), state, restart
spec and history, and shows in the actor tree like a heavy actor. It serializes every change to
its device: operations wait in its queue and run one at a time, each in a helper process
(`system/diskops.py`) that the actor owns while it runs — so the actor answers `actor.inspect`
while parted works, and `actor.kill` on it kills a real process in the middle of a real change.

An operation that holds several disks (a btrfs pool over loop3 and loop4) sits in the queue of
each of them and starts only when it is first in all of them: queues are appended to in one
step, so they all agree on the order and two such operations never wait for each other.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import attrs

from g8os.actors.supervision import ChildSpec, Restart
from g8os.system import blockdev

HISTORY = 20          # operations remembered per disk (actor.inspect)
SHUTDOWN = 10.0       # grace for a running operation to roll back on SIGTERM before SIGKILL


@attrs.define(eq=False)
class DiskOp:
    """One command on one or more disks, run by one helper process."""

    command: str                         # wire name (disk.mkpart), or "recover"
    job_id: str
    args: dict[str, Any]
    disks: tuple[str, ...]               # the disks it holds, in the order named
    call: Any = None                     # the Call to answer (None: internal, e.g. a recovery)
    reply_to: Any = None
    queued_at: float = attrs.field(factory=time.monotonic)
    started_at: float = 0.0
    pid: int = 0
    start_ticks: int = 0
    fds: list[int] = attrs.field(factory=list)
    stdout: bytearray = attrs.field(factory=bytearray)
    stderr: bytearray = attrs.field(factory=bytearray)
    killed_by: str = ""                  # why we signalled it (actor.kill, actor.restart, shutdown)
    killed_disk: str = ""                # the disk whose actor was killed
    interrupted: DiskOp | None = None    # for a recovery: the operation it rolls back
    report: str = ""                     # for a recovery: why it ran

    @property
    def running(self) -> bool:
        return self.pid != 0

    def summary(self) -> dict[str, Any]:
        return {"command": self.command, "id": self.job_id, "disks": list(self.disks),
                "pid": self.pid or None,
                "seconds": round(time.monotonic() - (self.started_at or self.queued_at), 3)}


class DiskActor:
    """One whole disk under supervision: its queue of operations, state and history."""

    kind = "disk"

    def __init__(self, name: str, path: str, disk: blockdev.Disk) -> None:
        self.name, self.path, self.disk = name, path, disk
        self.spec = ChildSpec(name=name, restart=Restart.PERMANENT, shutdown=SHUTDOWN)
        # running (idle) | waiting (its next operation waits for another disk) | busy |
        # recovering (rolling back an interrupted operation) | backoff (restarting) | gone
        self.state = "running"
        self.queue: deque[DiskOp] = deque()
        self.current: DiskOp | None = None
        self.generation = 0
        self.restarts = 0
        self.started_at = time.monotonic()
        self.last_error = ""
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.done = 0
        self.gone = False
        self.protected: str | None = None    # why, when protected (refreshed by the host)

    # ---- the queue ---------------------------------------------------------------------------

    def head(self) -> DiskOp | None:
        return self.queue[0] if self.queue else None

    def can_start(self) -> bool:
        return self.current is None and self.state in ("running", "waiting")

    def remember(self, op: DiskOp, ok: bool, outcome: str) -> None:
        self.done += 1
        self.history.append({"command": op.command, "id": op.job_id, "ok": ok, "outcome": outcome[:300],
                             "seconds": round(time.monotonic() - (op.started_at or op.queued_at), 3),
                             "at": round(time.time(), 3)})

    def restarted(self) -> None:
        """Back from a failure: a new incarnation with fresh facts and an empty slate."""
        self.generation += 1
        self.restarts += 1
        self.started_at = time.monotonic()
        self.state = "running"

    # ---- introspection -----------------------------------------------------------------------

    def node(self) -> dict[str, Any]:
        op = self.current
        return {
            "path": self.path, "name": self.name, "kind": self.kind, "tier": "light",
            "pid": op.pid if op is not None and op.pid else None, "state": self.state,
            "restarts": self.restarts,
            "uptime": round(time.monotonic() - self.started_at, 3) if self.state != "backoff" else 0,
            "last_error": self.last_error, "children": [],
            "device": self.disk.path, "size": self.disk.size, "type": self.disk.kind,
            "backing_file": self.disk.backing_file or None,
            "protected": self.protected or False,
            "operation": op.command if op is not None else None,
            "queued": len(self.queue) - (1 if op is not None else 0), "operations": self.done,
            "partitions": blockdev.partitions(self.name),
            "spec": {"restart": str(self.spec.restart), "shutdown": self.spec.shutdown},
        }

    def inspect(self) -> dict[str, Any]:
        node = self.node()
        node.update(model=self.disk.model or None,
                    serial=self.disk.serial or None,
                    current=self.current.summary() if self.current is not None else None,
                    queue=[op.summary() for op in self.queue if op is not self.current],
                    history=list(self.history))
        return node
