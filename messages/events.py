"""events.*: state changes of the actor tree and of jobs, kept in the stream `g8os:events` (g8os adds)."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import _fail, in_range, matches

# Where core0 keeps the events; clients may follow it with XREAD BLOCK (docs/events.md).
EVENTS_STREAM = "g8os:events"

STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
TIMESTAMP = re.compile(r"\d{1,12}(\.\d+)?")
# A topic or an actor path, as a prefix: `/actor`, `/job/end`, `/jobs`, `/jobs/web`.
PREFIX = r"/[^\x00\r\n]{0,1023}"


def _since(_: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(attribute, f"expected a stream id or a timestamp, got {type(value).__name__}")
    if isinstance(value, str) and not (STREAM_ID.fullmatch(value) or TIMESTAMP.fullmatch(value)):
        _fail(attribute, f"must be a stream id like 1700000000000-0 or epoch seconds, got {value!r}")
    if isinstance(value, int | float) and not 0 <= value < 1e11:
        _fail(attribute, f"must be epoch seconds, got {value}")


@command("events.list", owner=Owner.LOG)
@attrs.frozen(kw_only=True)
class EventsList:
    """Events after `since` (a stream id or epoch seconds), oldest first, filtered by topic and path."""

    # A stream id (`1700000000123-0`, or only its milliseconds) or epoch seconds (a number, or its
    # text). Events strictly after it; absent: the last `limit` events.
    since: Any = attrs.field(default=None, validator=_since)
    topic: str | None = attrs.field(default=None, validator=matches(PREFIX, "a topic like /actor/exited"))
    path: str | None = attrs.field(default=None, validator=matches(PREFIX, "an actor path like /jobs"))
    limit: int = attrs.field(default=100, validator=in_range(1, 10_000))


def under(value: str, prefix: str) -> bool:
    """`prefix` names `value` or one of its ancestors, segment by segment (`/job` takes
    `/job/end`, not `/jobs`)."""
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or value == prefix or value.startswith(prefix + "/")


def matches(event: dict[str, Any], topic: str | None = None, path: str | None = None) -> bool:
    """The filter of `events.list` (and of a client following the stream)."""
    return ((topic is None or under(event["topic"], topic))
            and (path is None or under(event["path"], path)))


def from_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """An event as `events.list` returns it, from a `g8os:events` entry (XRANGE, XREAD)."""
    try:
        data = json.loads(fields.get(b"data", b"{}"))
    except ValueError:
        data = {}
    return {"id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            "ts": float(fields.get(b"ts", b"0")), "topic": fields.get(b"topic", b"").decode(),
            "path": fields.get(b"path", b"").decode(), "data": data}
