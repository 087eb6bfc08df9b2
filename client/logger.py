"""`client.logger`: the node log (every job's output, core0's own records) and core0's verbosity.

    queue = client.logger.subscribe(None, 7, 8, 9)     # warnings and errors of the whole node
    for record in client.logger.records(queue, idle=5):
        print(record.job, record.level, record.text)
    client.logger.unsubscribe(queue)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import attrs

from g8os.client.transport import SLICE, Message, Namespace, Timeout
from g8os.messages.command import Flag
from g8os.messages.logger import LoggerReopen, LoggerSetLevel, LoggerSubscribe, LoggerUnsubscribe

CORE0 = "core0"


@attrs.frozen
class LogRecord:
    """One record of a `logger:<queue>` list: a job's message, or one of core0's own."""

    job: str           # the job's id, or "core0" for core0's own records
    path: str          # core0's records: the actor (or the event's subject); "" for a job's
    container: int
    text: str
    level: int
    flags: int
    epoch: int         # nanoseconds since the epoch

    @classmethod
    def from_json(cls, text: str | bytes) -> LogRecord:
        body = json.loads(text)
        message = Message.from_entry(body)  # a stream entry, with core0's `path` added
        return cls(job=message.job, path=str(body.get("path") or ""), container=message.container,
                   text=message.text, level=message.level, flags=message.flags, epoch=message.epoch)

    @property
    def core0(self) -> bool:
        """One of core0's own records (a log line of an actor, or an event)."""
        return self.job == CORE0 and bool(self.path)

    @property
    def end(self) -> bool:
        """The last message of a job (these pass every level filter)."""
        return bool(self.flags & (Flag.EXIT_SUCCESS | Flag.EXIT_ERROR))

    @property
    def time(self) -> float:
        return self.epoch / 1e9

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class LoggerManager(Namespace):
    """The `logger.*` commands, and `records()` to read a subscription."""

    def subscribe(self, queue: str | None = None, *levels: int) -> str:
        """Copy every log record of the node whose level is in `levels` (none: every level) into
        the Redis list `logger:<queue>` (a new name if `queue` is None); returns the list's name.
        The node first copies its backlog (its last 1000 records), then every new record; the
        list keeps the last 10 000. Subscribing again to a queue changes its levels."""
        return self._call(LoggerSubscribe, queue=queue, levels=[int(level) for level in levels])

    def unsubscribe(self, queue: str) -> bool:
        """Stop the subscription `queue` (`logger:<name>` or `<name>`); the list expires 5 minutes
        later. NotFound if there is no such subscription."""
        return self._call(LoggerUnsubscribe, queue=queue)

    def set_level(self, level: str) -> dict[str, str]:
        """core0's own verbosity in the node log: CRITICAL, ERROR, WARNING, NOTICE, INFO or DEBUG.
        Returns the new and the previous level."""
        return self._call(LoggerSetLevel, level=level)

    def reopen(self) -> bool:
        """Reopen core0's log file (after it was moved away, e.g. by logrotate)."""
        return self._call(LoggerReopen)

    def records(self, queue: str, timeout: float | None = None, *,
                idle: float | None = None) -> Iterator[LogRecord]:
        """Pop and yield the records of subscription `queue` as they arrive.

        Runs until `timeout` seconds have passed (None: for ever) or, with `idle`, until nothing
        arrived for `idle` seconds. The list is consumed: one reader per subscription.
        """
        connection = self._client.connection  # type: ignore[attr-defined]
        key = queue if queue.startswith("logger:") else f"logger:{queue}"
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            wait = SLICE if idle is None else idle - (time.monotonic() - quiet_since)
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    return
                raise Timeout(f"{key}: no end after {timeout:g}s")
            value = connection.pop(key, wait)
            if value is None:
                continue
            quiet_since = time.monotonic()
            yield LogRecord.from_json(value)
