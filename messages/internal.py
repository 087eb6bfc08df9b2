"""Messages of the private actor plane (pickled by Thespian, never seen by clients).

Lifecycle (parent ↔ child): Init → Ready, Ping → Pong, Stop → Stopped, ChildFailed.
Commands (gateway → owner): Call → CallReply. Process jobs travel through Redis instead
(system/redisconn.py: JOB_QUEUE), to keep bulk traffic off Thespian's acknowledged transport.
Introspection: TreeRequest → TreeReply, ActorOp → CallReply.
"""

from __future__ import annotations

from typing import Any

import attrs

from g8os.messages.command import Command


@attrs.frozen
class Init:
    """First message a parent sends a new child: who it is and where it stands."""

    name: str
    path: str
    parent_pid: int
    config: Any                      # boot.config.NodeConfig
    directory: dict[str, Any] = attrs.field(factory=dict)   # name → ActorAddress of the root's children
    role: type | None = None         # for a warm spare: the actor class it becomes


@attrs.frozen
class Ready:
    name: str
    pid: int


@attrs.frozen
class ChildFailed:
    """Sent by a child just before it exits on an unhandled error ("let it crash")."""

    name: str
    error: str


@attrs.frozen
class Ping:
    seq: int


@attrs.frozen
class Pong:
    name: str
    seq: int


@attrs.frozen
class Stop:
    """Stop in order: own children in reverse start order, then own resources, then exit."""

    reason: str = "stop requested"


@attrs.frozen
class Stopped:
    name: str


@attrs.frozen
class Directory:
    """Where the root's children are now (addresses change on every restart)."""

    addresses: dict[str, Any]


@attrs.frozen
class Call:
    """Run one builtin command on the actor that owns it; answered with a CallReply."""

    command: Command
    request: Any                     # the validated request object (messages.*)
    reply_to: Any = None             # ActorAddress; defaults to the sender
    corr: str = ""                   # correlation for intermediate hops (actor.* forwarding)


@attrs.frozen
class CallReply:
    job_id: str
    ok: bool
    value: Any = None                # JSON-able, when ok
    code: int = 0                    # G8Error code, when not ok
    message: str = ""
    critical: str = ""
    corr: str = ""


@attrs.frozen
class TreeRequest:
    corr: str
    deadline: float = 0.0            # epoch seconds by which the asker must have its answer


@attrs.frozen
class TreeReply:
    corr: str
    node: dict[str, Any]


@attrs.frozen
class ActorOp:
    """actor.kill / actor.inspect / actor.restart travelling down the tree to the owner of `path`."""

    op: str                          # kill | inspect | restart
    path: str
    signal: int
    corr: str


@attrs.frozen
class Event:
    """A state change in the tree or of a job (g8os adds `events`)."""

    ts: float
    topic: str                       # /actor/started, /actor/restarted, /job/end, ...
    path: str
    data: dict[str, Any] = attrs.field(factory=dict)


# Batches carry a short repr: Thespian formats every message it sends or receives (str() for its
# debug log line, even when that log is off), which for a batch of 20 000 records cost more than
# pickling and sending it.


@attrs.frozen(repr=False)
class Events:
    events: tuple[Event, ...]

    def __repr__(self) -> str:
        return f"Events({len(self.events)} events)"


@attrs.frozen(repr=False)
class LogLines:
    """core0's own lines for the node log, batched."""

    lines: tuple[str, ...]
    level: int = 20                  # their severity, as Python's logging numbers (20 INFO)

    def __repr__(self) -> str:
        return f"LogLines({len(self.lines)} lines, level {self.level})"


@attrs.frozen(repr=False)
class Output:
    """Job output for the node log, batched: (job id, level, text, epoch ns, flags) per message."""

    records: tuple[tuple[str, int, str, int, int], ...]
    dropped: int = 0                 # messages the sender had to drop since its last batch

    def __repr__(self) -> str:
        return f"Output({len(self.records)} records, {self.dropped} dropped)"


@attrs.frozen(repr=False)
class Metrics:
    """Level-10 (statsd) samples for the StatsActor, batched: (key, value, op, tags, epoch s)."""

    samples: tuple[tuple[str, float, str, dict[str, str], float], ...]

    def __repr__(self) -> str:
        return f"Metrics({len(self.samples)} samples)"


@attrs.frozen
class ReopenLogs:
    pass


@attrs.frozen
class Shutdown:
    """From the node process to the root: stop the whole tree in order."""

    reason: str = "shutdown"
