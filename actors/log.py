"""LogActor: the node log, `logger.*` and the events stream.

The node log is every message every job prints (forwarded by the JobSupervisor in batches, with
its level) and core0's own records (log lines of the actors, at a severity, and the tree's
events). The LogActor keeps the last BACKLOG records in memory, writes the file log (job messages
of FILE_LEVELS, core0's records at or above the verbosity `logger.set_level` chose), and copies
every record that passes a subscriber's level filter into its Redis list `logger:<queue>`
(`logger.subscribe`), bounded at LOGGER_LENGTH.

Events (`Event` batches from every actor) are written to the Redis stream `g8os:events`, bounded at
about `events_length` events (NodeConfig, 10 000 by default), in the order they happened: each
actor sends its events at most every 50 ms, so events are held for HOLD seconds and written sorted
by time, with a stream id taken from their own time (`<ms>-<seq>`), which is what
`events.list {since}` compares with.

Subscriptions and the verbosity live in Redis too, so a restarted LogActor keeps them. Redis starts
after the LogActor (the ServiceSupervisor runs it): until it answers, writes wait (bounded) and
are retried.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections import deque
from typing import Any, TextIO

import redis

from g8os.actors.base import Actor
from g8os.messages.command import Flag, stream_message
from g8os.messages.errors import NotFound, Unavailable
from g8os.messages.events import EVENTS_STREAM, EventsList, from_entry, matches
from g8os.messages.internal import Call, Event, Events, LogLines, Output, ReopenLogs
from g8os.messages.logger import (
    VERBOSITY,
    LoggerReopen,
    LoggerSetLevel,
    LoggerSubscribe,
    LoggerUnsubscribe,
)
from g8os.system.redisconn import connect

BACKLOG = 1000                  # records kept in memory, copied to a new subscriber first
LOGGER_LENGTH = 10_000          # a `logger:<queue>` list is trimmed to this many records
LOGGER_EXPIRY = 300             # seconds an unsubscribed list is kept for its reader to drain
HOLD = 0.25                     # seconds events wait so that late batches can be put in order
FLUSH_RETRY = 0.5               # seconds between attempts while Redis does not answer
PENDING_EVENTS = 20_000         # events waiting for Redis, at most (the oldest are dropped)
FILE_LEVELS = frozenset({2, 4, 7, 8, 9})   # job messages written to the file (the original's)
SUBSCRIPTIONS = "g8os:logger:subscriptions"  # hash: list name → JSON list of levels
VERBOSITY_KEY = "g8os:logger:level"
END_FLAGS = Flag.EXIT_SUCCESS | Flag.EXIT_ERROR
CORE0 = "core0"                 # the `command` of core0's own records

# core0's severities as record levels (docs/protocol.md, "Process output levels").
LEVEL_OF_SEVERITY = ((logging.CRITICAL, 9), (logging.ERROR, 8), (logging.WARNING, 7),
                     (logging.INFO, 5), (0, 11))
NAME_OF_SEVERITY = {number: name for name, number in VERBOSITY.items()}

# Severity of an event in the node log (the events stream has them all, whatever the verbosity).
EVENT_SEVERITY = {
    "/actor/failed": logging.ERROR, "/actor/escalated": logging.ERROR,
    "/actor/gave_up": logging.ERROR, "/service/failed": logging.ERROR,
    "/actor/restarting": logging.WARNING, "/service/exited": logging.WARNING,
    "/job/start": logging.DEBUG, "/job/end": logging.DEBUG,   # one each per job: many
}


def record_level(severity: int) -> int:
    return next(level for floor, level in LEVEL_OF_SEVERITY if severity >= floor)


def event_severity(event: Event) -> int:
    if event.topic == "/actor/exited":
        return logging.INFO if event.data.get("normal") else logging.WARNING
    return EVENT_SEVERITY.get(event.topic, logging.INFO)


# A record of the node log: (job id, level, text, epoch ns, flags) for a job's message, as the
# JobSupervisor sends it (kept as it came: there are many), or (CORE0, level, text, epoch ns, flags,
# path) for one of core0's own records (`path`: the actor that wrote it, or the event's subject).
Record = tuple[str, int, str, int, int] | tuple[str, int, str, int, int, str]


def record_json(record: Record) -> str:
    if len(record) == 5:  # job output: exactly the stream entry of the protocol
        job, level, text, epoch_ns, flags = record
        return stream_message(0, job, text, level, flags, epoch_ns)
    command, level, text, epoch_ns, flags, path = record
    return json.dumps({"core": 0, "command": command, "path": path,
                       "message": {"message": text, "epoch": epoch_ns, "meta": level << 16 | flags}})


def passes(levels: frozenset[int], record: Record) -> bool:
    """A subscriber's filter: its levels (none: all), and every end-of-job message (the original's)."""
    return not levels or record[1] in levels or bool(record[4] & END_FLAGS)


class LogActor(Actor):
    kind = "log"

    def on_start(self) -> bool:
        self.backlog: deque[Record] = deque(maxlen=BACKLOG)
        self.verbosity = logging.INFO
        self.subscriptions: dict[str, frozenset[int]] = {}
        self.to_lists: dict[str, list[str]] = {}      # list name → records waiting for Redis
        self.held: list[tuple[float, int, Event]] = []  # events in their hold window (a heap)
        self.ready_events: deque[Event] = deque(maxlen=PENDING_EVENTS)
        self._seq = itertools.count()
        self.last_event_ms = 0
        self.dropped_output = 0                        # job messages senders could not forward
        self.dropped_events = 0
        self.redis = connect(self.config.redis)
        self.events_length = self.config.events_length
        self.loaded = False
        self._retry_armed = False
        self._release_armed = False
        self._stamp_second = -1
        self._stamp = ""
        self.file: TextIO = self._open()
        self.directory["log"] = self.myAddress
        self._load()
        return True

    def on_directory(self) -> None:
        self.directory["log"] = self.myAddress

    def on_stop(self) -> None:
        if not hasattr(self, "held"):
            return
        self._release(everything=True)
        self._flush()
        if self.file is not sys.stderr:
            self.file.close()

    def node_info(self) -> dict[str, Any]:
        if not hasattr(self, "held"):
            return {}
        return {"backlog": len(self.backlog), "subscriptions": len(self.subscriptions),
                "level": NAME_OF_SEVERITY.get(self.verbosity, str(self.verbosity)),
                "events_waiting": len(self.held) + len(self.ready_events),
                "records_waiting": sum(len(v) for v in self.to_lists.values()),
                "dropped_output": self.dropped_output, "dropped_events": self.dropped_events}

    # ---- the file ----------------------------------------------------------------------------

    def _open(self) -> TextIO:
        path = getattr(self.config, "log_file", "")
        if not path:
            return sys.stderr
        # Block-buffered, flushed after each batch: a write(2) per line would cost more than
        # everything else done with a line here.
        return open(path, "a", buffering=1 << 16, encoding="utf-8")

    def _stamp_now(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        return self._stamp

    def _write_file(self, text: str) -> None:
        self.file.write(f"{self._stamp_now()} {text}\n")

    def receiveMsg_ReopenLogs(self, msg: ReopenLogs, sender: Any) -> None:
        self._reopen()

    def _reopen(self) -> None:
        if self.file is not sys.stderr:
            self.file.close()
        self.file = self._open()

    # ---- records -----------------------------------------------------------------------------

    def _to_subscribers(self, record: Record) -> None:
        text = None
        for name, levels in self.subscriptions.items():
            if passes(levels, record):
                if text is None:
                    text = record_json(record)
                self.to_lists.setdefault(name, []).append(text)

    def _core0(self, severity: int, path: str, text: str, epoch_ns: int | None = None) -> None:
        """One of core0's own records, if the verbosity lets it through."""
        if severity < self.verbosity:
            return
        self._write_file(f"{NAME_OF_SEVERITY.get(severity, 'INFO')} {path}: {text}" if path
                         else f"{NAME_OF_SEVERITY.get(severity, 'INFO')} {text}")
        record = (CORE0, record_level(severity), text, epoch_ns or time.time_ns(), 0, path)
        self.backlog.append(record)
        if self.subscriptions:
            self._to_subscribers(record)

    def receiveMsg_Output(self, msg: Output, sender: Any) -> None:
        records = msg.records
        stamp = self._stamp_now()
        lines = [f"{stamp} [{level}] {job}: {text}\n" for job, level, text, _epoch, _flags in records
                 if level in FILE_LEVELS and text]
        if lines:
            self.file.write("".join(lines))
        self.backlog.extend(records[-BACKLOG:])
        if self.subscriptions:
            for record in records:
                self._to_subscribers(record)
        if msg.dropped:
            self.dropped_output += msg.dropped
            self._core0(logging.WARNING, "", f"{msg.dropped} messages of job output were not logged: "
                                              f"jobs printed faster than the node log could take")

    def receiveMsg_LogLines(self, msg: LogLines, sender: Any) -> None:
        for line in msg.lines:
            path, sep, text = line.partition(": ")
            self._core0(msg.level, path if sep else "", text if sep else line)

    def receiveMsg_Events(self, msg: Events, sender: Any) -> None:
        self._hold(msg.events)

    def _send_reports(self, log: Any) -> None:
        """Our own events and lines are ours to write (see Actor._report); kept until started."""
        if not hasattr(self, "held"):
            return
        events, self._events_out = self._outgoing_events, []
        lines, self._lines_out = self._outgoing_lines, []
        self._hold(events)
        for severity, line in lines:
            path, _, text = line.partition(": ")
            self._core0(severity, path, text)

    # ---- events ------------------------------------------------------------------------------

    def _hold(self, events: Any) -> None:
        for event in events:
            heapq.heappush(self.held, (event.ts, next(self._seq), event))
        if self.held and not self._release_armed:
            self._release_armed = True
            self.after(HOLD, "_release_timer")

    def _release_timer(self) -> None:
        self._release_armed = False
        self._release()
        if self.held:
            self._release_armed = True
            self.after(HOLD / 2, "_release_timer")

    def _release(self, everything: bool = False) -> None:
        """Events older than the hold window go to the stream and the file, in time order."""
        horizon = time.time() - HOLD
        held = self.held
        while held and (everything or held[0][0] <= horizon):
            _ts, _seq, event = heapq.heappop(held)
            if len(self.ready_events) == self.ready_events.maxlen:
                self.dropped_events += 1
            self.ready_events.append(event)
            data = json.dumps(event.data, default=str)
            self._core0(event_severity(event), event.path, f"event {event.topic} {data[:2000]}",
                        int(event.ts * 1e9))

    # ---- Redis -------------------------------------------------------------------------------

    def _load(self) -> bool:
        """Subscriptions, verbosity and the stream's last id, from Redis (once it answers)."""
        if self.loaded:
            return True
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(SUBSCRIPTIONS)
            pipe.get(VERBOSITY_KEY)
            pipe.xrevrange(EVENTS_STREAM, count=1)
            subscriptions, verbosity, last = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            return False
        for name, levels in subscriptions.items():
            try:
                self.subscriptions[name.decode()] = frozenset(int(v) for v in json.loads(levels))
            except (ValueError, TypeError):
                continue
        if verbosity is not None and verbosity.decode() in VERBOSITY:
            self.verbosity = VERBOSITY[verbosity.decode()]
        if last:
            self.last_event_ms = max(self.last_event_ms, int(last[0][0].split(b"-")[0]))
        self.loaded = True
        return True

    def after_message(self) -> None:
        if not hasattr(self, "held"):
            return  # not started yet
        if (self.to_lists or self.ready_events) and not self._flush():
            self._arm_retry()
        self.file.flush()

    def _arm_retry(self) -> None:
        if not self._retry_armed:
            self._retry_armed = True
            self.after(FLUSH_RETRY, "_retry")

    def _retry(self) -> None:
        self._retry_armed = False  # after_message runs next and re-arms if Redis is still away

    def _flush(self) -> bool:
        """Write what waits for Redis in one pipeline; False when Redis did not take it."""
        if not self._load():
            self._trim_waiting()
            return False
        events = list(self.ready_events)
        pipe = self.redis.pipeline(transaction=False)
        ms = self.last_event_ms
        for event in events:
            # The event's own time is its id, kept increasing: `since` compares with it.
            ms = max(ms, int(event.ts * 1000))
            pipe.xadd(EVENTS_STREAM, _fields(event), id=f"{ms}-*", maxlen=self.events_length,
                      approximate=True)
        for name, records in self.to_lists.items():
            pipe.rpush(name, *records)
            pipe.ltrim(name, -LOGGER_LENGTH, -1)
        try:
            replies = pipe.execute(raise_on_error=False)[:len(events)]
            late = [event for event, reply in zip(events, replies, strict=True)
                    if isinstance(reply, redis.ResponseError)]
            if late:
                # The stream's top is ahead of these ids (a previous incarnation wrote it and we
                # could not read its last id): let Redis choose theirs.
                retry = self.redis.pipeline(transaction=False)
                for event in late:
                    retry.xadd(EVENTS_STREAM, _fields(event), maxlen=self.events_length, approximate=True)
                replies += retry.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            self._trim_waiting()
            return False
        for reply in replies:
            if isinstance(reply, bytes):
                self.last_event_ms = max(self.last_event_ms, int(reply.split(b"-")[0]))
        for _ in events:
            self.ready_events.popleft()
        self.to_lists = {}
        return True

    def _trim_waiting(self) -> None:
        for records in self.to_lists.values():
            del records[:-LOGGER_LENGTH]

    def _redis_call(self, what: str, *args: Any) -> Any:
        try:
            return getattr(self.redis, what)(*args)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError) as exc:
            raise Unavailable(f"the node's redis did not answer: {exc}") from exc

    # ---- logger.* ----------------------------------------------------------------------------

    def handle_logger_subscribe(self, request: LoggerSubscribe, call: Call) -> str:
        if not self._load():
            raise Unavailable("the node's redis did not answer")
        queue = request.queue or uuid.uuid4().hex
        name = queue if queue.startswith("logger:") else f"logger:{queue}"
        levels = frozenset(request.levels)
        known = name in self.subscriptions
        self._flush()  # records already waiting for this list keep their place before the backlog
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(SUBSCRIPTIONS, name, json.dumps(sorted(levels)))
        if not known:
            backlog = [record_json(r) for r in self.backlog if passes(levels, r)]
            if backlog:
                pipe.rpush(name, *backlog)
                pipe.ltrim(name, -LOGGER_LENGTH, -1)
            pipe.persist(name)  # a list left to expire by an earlier unsubscribe is ours again
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError) as exc:
            raise Unavailable(f"the node's redis did not answer: {exc}") from exc
        self.subscriptions[name] = levels
        return name

    def handle_logger_unsubscribe(self, request: LoggerUnsubscribe, call: Call) -> bool:
        if not self._load():
            raise Unavailable("the node's redis did not answer")
        name = request.queue if request.queue.startswith("logger:") else f"logger:{request.queue}"
        if name not in self.subscriptions:
            raise NotFound(f"no subscription {name}")
        self._flush()
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(SUBSCRIPTIONS, name)
            pipe.expire(name, LOGGER_EXPIRY)
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError) as exc:
            raise Unavailable(f"the node's redis did not answer: {exc}") from exc
        del self.subscriptions[name]
        self.to_lists.pop(name, None)
        return True

    def handle_logger_set_level(self, request: LoggerSetLevel, call: Call) -> dict[str, str]:
        level = request.level.upper()
        previous = NAME_OF_SEVERITY.get(self.verbosity, str(self.verbosity))
        self._redis_call("set", VERBOSITY_KEY, level)
        self.verbosity = VERBOSITY[level]
        self.log(f"log level {previous} -> {level}", level=logging.WARNING)
        return {"level": level, "previous": previous}

    def handle_logger_reopen(self, request: LoggerReopen, call: Call) -> bool:
        self._reopen()
        # PID 1 and the actor plane keep the same file open (their own lines, the plane's
        # tracebacks): SIGUSR1 makes PID 1 reopen its own and pass the signal on, as the original
        # core0 did to itself. Only when PID 1 is g8os's init (in agent mode it is not ours).
        if _pid1_is_ours():
            os.kill(1, signal.SIGUSR1)
        return True

    # ---- events.list -------------------------------------------------------------------------

    def handle_events_list(self, request: EventsList, call: Call) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        if request.since is None:
            # The last `limit` matching events, returned oldest first; the cursor is the newest id.
            top = self._redis_call("xrevrange", EVENTS_STREAM, "+", "-", 1)
            cursor = top[0][0].decode() if top else "0-0"
            end = "+"
            while len(found) < request.limit:
                chunk = self._redis_call("xrevrange", EVENTS_STREAM, end, "-", 500)
                for entry_id, fields in chunk:
                    event = from_entry(entry_id, fields)
                    if matches(event, request.topic, request.path):
                        found.append(event)
                        if len(found) == request.limit:
                            break
                if len(chunk) < 500:
                    break
                end = "(" + chunk[-1][0].decode()
            found.reverse()
            return {"events": found, "last": cursor}
        start, after = _since(request.since)
        cursor = start
        first = True
        while len(found) < request.limit:
            chunk = self._redis_call("xrange", EVENTS_STREAM, start if first else "(" + cursor, "+", 500)
            first = False
            for entry_id, fields in chunk:
                event = from_entry(entry_id, fields)
                if after is not None and event["ts"] <= after:
                    cursor = event["id"]
                    continue
                if entry_id.decode() == start and after is None:
                    continue  # `since` is exclusive
                cursor = event["id"]
                if matches(event, request.topic, request.path):
                    found.append(event)
                    if len(found) == request.limit:
                        break
            if len(chunk) < 500:
                break
        return {"events": found, "last": cursor}


def _since(since: Any) -> tuple[str, float | None]:
    """The first stream id to read from `since`, and the time events must be after (for a
    timestamp; None for a stream id, which is exclusive itself)."""
    if isinstance(since, str):
        if "-" in since:
            return since, None
        if "." not in since and int(since) >= 10**11:  # milliseconds: a stream id without seq
            return f"{since}-18446744073709551615", None
        since = float(since)
    seconds = float(since)
    # Ids are the events' own milliseconds: start at the millisecond of `since`, keep what is after.
    return f"{int(seconds * 1000)}-0", seconds


def _fields(event: Event) -> dict[str, str]:
    return {"ts": repr(event.ts), "topic": event.topic, "path": event.path,
            "data": json.dumps(event.data, default=str)}


def _pid1_is_ours() -> bool:
    try:
        with open("/proc/1/cmdline", "rb") as cmdline:
            return b"g8os.boot.init" in cmdline.read()
    except OSError:
        return False
