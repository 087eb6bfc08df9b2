"""The wire envelope of the G8OS protocol: the command object clients push to `core:<queue>`,
the result object core0 publishes at `result:<id>`, and the stream message.

See docs/protocol.md. Field names and meanings are the original core0's; these classes are the
only place they are spelled.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Any

import attrs

from g8os.messages.errors import InvalidArgument

# Redis keys and lists of the protocol.
DEFAULT_QUEUE = "core:default"
RESULT_TTL = 300  # seconds a result and its flag stay after the job ends
STREAM_TTL = 60
STREAM_LENGTH = 1000
STREAM_LINES = 100  # lines of stdout/stderr kept in a result


def result_key(job_id: str) -> str:
    return f"result:{job_id}"


def flag_key(job_id: str) -> str:
    return f"result:{job_id}:flag"


def stream_key(job_id: str) -> str:
    return f"stream:{job_id}"


class State(enum.StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    KILLED = "KILLED"
    UNKNOWN_CMD = "UNKNOWN_CMD"


class Level(enum.IntEnum):
    """Message levels of process output (the `N::` prefixes)."""

    STDOUT = 1
    STDERR = 2
    PUBLIC = 3
    OPERATOR = 4
    LOG = 5
    STRUCTURED_LOG = 6
    WARNING = 7
    OPS_ERROR = 8
    CRITICAL = 9
    STATSD = 10
    DEBUG = 11
    RESULT_JSON = 20
    RESULT_YAML = 21
    RESULT_TOML = 22
    RESULT_HRD = 23
    JOB = 30


RESULT_LEVELS = frozenset({20, 21, 22, 23, 30})


class Flag(enum.IntFlag):
    """Low 16 bits of a stream message's `meta`."""

    STREAM = 0x1
    EXIT_SUCCESS = 0x2
    EXIT_ERROR = 0x4


def meta(level: int, flags: int = 0) -> int:
    return (level << 16) | flags


# Limits on what a client may send, so a hostile payload cannot exhaust the node.
MAX_COMMAND_BYTES = 8 * 1024 * 1024
MAX_ID_LENGTH = 256


class DropCommand(Exception):
    """The protocol says to drop this command without a result (no usable id)."""


def _opt_int(raw: dict[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"`{name}`: expected integer, got {type(value).__name__}", field=name)
    if value < 0:
        raise InvalidArgument(f"`{name}`: must not be negative", field=name)
    return value


@attrs.frozen(kw_only=True)
class Command:
    """A command as pushed by a client. Unknown fields are ignored."""

    id: str
    command: str
    arguments: dict[str, Any] = attrs.field(factory=dict)
    queue: str | None = None
    max_time: int | None = None
    stream: bool = False
    tags: list[str] | None = None
    recurring_period: int | None = None
    max_restart: int | None = None

    @classmethod
    def peek_id(cls, raw: Any) -> str:
        """The job id of a decoded payload, or DropCommand if it has none usable."""
        if not isinstance(raw, dict):
            raise DropCommand("payload is not a JSON object")
        job_id = raw.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise DropCommand("missing or empty id")
        if len(job_id) > MAX_ID_LENGTH or any(c in job_id for c in "\0\n\r"):
            raise DropCommand("id too long or not printable")
        return job_id

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Command:
        """Validate a decoded command object; InvalidArgument names the first bad field."""
        job_id = cls.peek_id(raw)
        name = raw.get("command")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("`command`: expected a non-empty string", field="command")
        arguments = raw.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidArgument(f"`arguments`: expected object, got {type(arguments).__name__}",
                                  field="arguments")
        queue = raw.get("queue") or None
        if queue is not None and not isinstance(queue, str):
            raise InvalidArgument("`queue`: expected string", field="queue")
        stream = raw.get("stream") or False
        if not isinstance(stream, bool):
            raise InvalidArgument("`stream`: expected boolean", field="stream")
        tags = raw.get("tags")
        if isinstance(tags, str):  # before 1.1 tags were one string
            tags = [tags] if tags else None
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise InvalidArgument("`tags`: expected a list of strings", field="tags")
        return cls(
            id=job_id, command=name, arguments=arguments, queue=queue,
            max_time=_opt_int(raw, "max_time") or None, stream=stream, tags=tags,
            recurring_period=_opt_int(raw, "recurring_period") or None,
            max_restart=_opt_int(raw, "max_restart") or None,
        )

    def to_wire(self) -> dict[str, Any]:
        return attrs.asdict(self)



def now_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.define(kw_only=True)
class Result:
    """The result object published at `result:<id>` when a job ends for good."""

    id: str
    command: str
    state: State
    code: int = 0
    data: str = ""
    level: int = 0
    streams: list[str] = attrs.field(factory=lambda: ["", ""])
    critical: str = ""
    starttime: int = attrs.field(factory=now_ms)
    time: int = 0
    tags: list[str] | None = None
    container: int = 0

    @classmethod
    def builtin(cls, command: Command, value: Any, *, starttime: int | None = None) -> Result:
        """A builtin's successful result: level 20 with the JSON text of the value."""
        start = starttime if starttime is not None else now_ms()
        return cls(id=command.id, command=command.command, state=State.SUCCESS, code=0,
                   data=json.dumps(value), level=int(Level.RESULT_JSON), starttime=start,
                   time=max(0, now_ms() - start), tags=command.tags)

    @classmethod
    def failure(cls, command: Command | None, *, job_id: str = "", name: str = "", code: int,
                message: str, state: State = State.ERROR, critical: str = "",
                starttime: int | None = None) -> Result:
        """An error result: level 20 with the JSON text of the message, as builtins answer."""
        start = starttime if starttime is not None else now_ms()
        return cls(id=command.id if command else job_id, command=command.command if command else name,
                   state=state, code=code, data=json.dumps(message), level=int(Level.RESULT_JSON),
                   critical=critical, starttime=start, time=max(0, now_ms() - start),
                   tags=command.tags if command else None)

    def to_json(self) -> str:
        # By hand rather than attrs.asdict: this runs for every job, on the hot path.
        return json.dumps({
            "id": self.id, "command": self.command, "state": str(self.state), "code": self.code,
            "data": self.data, "level": self.level, "streams": self.streams, "critical": self.critical,
            "starttime": self.starttime, "time": self.time, "tags": self.tags, "container": self.container,
        })

    @classmethod
    def from_json(cls, text: str | bytes) -> Result:
        body = json.loads(text)
        fields = {f.name for f in attrs.fields(cls)}
        body = {k: v for k, v in body.items() if k in fields}
        body["state"] = State(body["state"])
        return cls(**body)


def stream_message(container: int, job_id: str, text: str, level: int, flags: int = 0,
                   epoch_ns: int | None = None) -> str:
    """One entry of `stream:<id>` (and of logger lists)."""
    return json.dumps({
        "core": container,
        "command": job_id,
        "message": {
            "message": text,
            "epoch": epoch_ns if epoch_ns is not None else time.time_ns(),
            "meta": meta(level, flags),
        },
    })
