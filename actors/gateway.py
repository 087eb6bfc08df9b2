"""GatewayActor: the edge between Redis and the actor tree.

A consumer thread owns the blocking side: it moves commands from `core:default` to an in-flight
list (so a gateway that dies mid-way loses nothing: its next incarnation re-reads that list),
validates them against the registry, and settles each batch in one atomic script (STEP): the
flag created or a duplicate dropped, whatever needs no other actor answered on the spot
(`core.ping`, unknown commands, bad arguments), and each process job moved to the
JobSupervisor's queue, which publishes its results itself. Builtins owned by an actor go to
the actor thread through a wake-up pipe and on as Thespian calls; their answers are published
here and only then do they leave the in-flight list.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import traceback
from typing import Any, NamedTuple

import redis

from g8os import __version__
from g8os.actors.base import Actor
from g8os.messages import registry
from g8os.messages.command import (
    DEFAULT_QUEUE,
    MAX_COMMAND_BYTES,
    RESULT_TTL,
    Command,
    DropCommand,
    Flag,
    Level,
    Result,
    State,
    stream_message,
)
from g8os.messages.errors import G8Error, InvalidArgument, Unavailable
from g8os.messages.internal import Call, CallReply
from g8os.messages.registry import Kind, Owner
from g8os.system import bootconfig
from g8os.system.redisconn import INFLIGHT, JOB_QUEUE, STEP, Outbox, connect

BATCH = 128                 # commands taken from Redis per round trip under load
CALL_TIMEOUT = 60.0         # an owner that never answers a builtin: 503 after this
RETRY = (0.05, 2.0)         # reconnect backoff of the consumer thread (initial, cap)


class Routed:
    """A validated, accepted command on its way to its owner."""

    __slots__ = ("command", "info", "raw", "recovering", "request", "sent_at")

    def __init__(self, command: Command, info: registry.CommandInfo, request: Any, raw: bytes,
                 recovering: bool) -> None:
        self.command, self.info, self.request, self.raw = command, info, request, raw
        self.recovering = recovering
        self.sent_at = 0.0


class Verdict(NamedTuple):
    """What the gateway makes of one command: answer it now, or route it to its owner."""

    id: str
    answer: Result | None
    route: Routed | None
    stream: bool


class GatewayActor(Actor):
    kind = "gateway"

    def on_start(self) -> bool:
        registry.load()
        # Extensions of the boot config are commands too (read once by the plane, see bootconfig).
        bootconfig.install(bootconfig.current(self.config.config_dir))
        self.outbox = Outbox(connect(self.config.redis))
        self.handoff: collections.deque[Routed] = collections.deque()
        self.waiting: dict[str, list[Routed]] = {}       # owner → commands until it is reachable
        self.unacked: dict[str, Routed] = {}             # builtin job id → routed, until answered
        self._owners: dict[str, Any] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self._wake_r, self._on_wake)
        self._stop = threading.Event()
        self._stats = collections.Counter()
        self._thread = threading.Thread(target=self._consume, name="gateway-consumer", daemon=True)
        self._thread.start()
        self.after(1.0, "_sweep")
        return True

    def on_stop(self) -> None:
        self._stop.set()

    def after_message(self) -> None:
        self.outbox.flush()

    # ---- the consumer thread -------------------------------------------------------------------

    def _consume(self) -> None:
        delay = RETRY[0]
        recovered = False
        conn: redis.Redis | None = None
        batch: list[bytes] = []
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.config.redis, timeout=5.0)
                    step = conn.register_script(STEP)
                    batch = []
                if not recovered:
                    self._process(conn, step, conn.lrange(INFLIGHT, 0, -1), recovering=True, take=0)
                    recovered = True
                if not batch:
                    first = conn.blmove(DEFAULT_QUEUE, INFLIGHT, 1, "LEFT", "RIGHT")
                    if first is None:
                        continue
                    batch = [first]
                # The next batch is taken in the same round trip that answers this one.
                batch = self._process(conn, step, batch, recovering=False, take=BATCH)
                delay = RETRY[0]
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
                conn = None
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY[1])
            except redis.ResponseError:
                conn = None  # e.g. NOSCRIPT after a redis restart: reconnect and re-register
                self._stop.wait(delay)
            except Exception:
                self._stats["thread_errors"] += 1
                self._last_thread_error = traceback.format_exc()
                batch = []
                self._stop.wait(delay)

    def _process(self, conn: redis.Redis, step: Any, items: list[bytes], *, recovering: bool,
                 take: int) -> list[bytes]:
        """Validate a batch, then accept, answer or drop each command and take the next batch,
        in one atomic round trip (the STEP script). Returns the next batch."""
        args: list[Any] = [RESULT_TTL, take, 1 if recovering else 0]
        judged: list[tuple[bytes, Result | None, Routed | None]] = []
        for raw in items:
            verdict = self._judge(raw)
            if verdict is None:  # dropped: no id to answer to
                args += ["", "", raw, "", ""]
                judged.append((raw, None, None))
                continue
            command_id, answer, route, stream = verdict
            entry = _end_entry(answer) if answer is not None and stream else ""
            # Process jobs are handed to the JobSupervisor inside the step, through its queue.
            target = JOB_QUEUE if route is not None and route.info.kind == Kind.PROCESS else ""
            args += [command_id, answer.to_json() if answer is not None else "", raw, entry, target]
            judged.append((raw, answer, None if target else route))
        replies = step(keys=[DEFAULT_QUEUE, INFLIGHT], args=args, client=conn)
        following, statuses = list(replies[-1]), replies[:-1]
        handed = 0
        for (_raw, _answer, route), status in zip(judged, statuses, strict=True):
            if status in (0, 2):
                self._stats["duplicates"] += 1  # dropped by the step, as the protocol says
            elif route is not None and status == 1:
                route.recovering = recovering
                self.handoff.append(route)
                handed += 1
        if handed:
            os.write(self._wake_w, b"\0")
        return following

    def _judge(self, raw: bytes) -> Verdict | None:
        """(id, answer-now, or route) for one command; None when the protocol drops it."""
        if len(raw) > 64 * 1024 * 1024:
            self._stats["dropped"] += 1
            return None
        try:
            body = json.loads(raw)
            command_id = Command.peek_id(body)
        except (ValueError, UnicodeDecodeError, DropCommand):
            self._stats["dropped"] += 1
            return None
        name = body.get("command") if isinstance(body.get("command"), str) else ""
        stream = body.get("stream") is True
        try:
            if len(raw) > MAX_COMMAND_BYTES:
                raise InvalidArgument(f"command is {len(raw)} bytes; the limit is {MAX_COMMAND_BYTES}")
            command = Command.from_wire(body)
        except InvalidArgument as exc:
            return Verdict(command_id, Result.failure(None, job_id=command_id, name=name, code=exc.code,
                                                      message=exc.message), None, stream)
        info = registry.lookup(command.command)
        if info is None:
            return Verdict(command_id, Result.failure(command, code=404, state=State.UNKNOWN_CMD,
                                                      message=f"unknown command {command.command!r}"),
                           None, stream)
        try:
            request = registry.parse_arguments(info, command.arguments)
        except InvalidArgument as exc:
            return Verdict(command_id, Result.failure(command, code=exc.code, message=exc.message), None,
                           stream)
        if info.owner == Owner.GATEWAY:
            return Verdict(command_id, Result.builtin(command, f"PONG {__version__}"), None, stream)
        return Verdict(command_id, None, Routed(command, info, request, raw, False), stream)

    # ---- the actor thread: routing and replies --------------------------------------------------

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        batch: dict[str, list[Routed]] = collections.defaultdict(list)
        while self.handoff:
            route = self.handoff.popleft()
            batch[route.info.owner].append(route)
        for owner, routes in batch.items():
            self._route(owner, routes)

    def _route(self, owner: str, routes: list[Routed]) -> None:
        address = self.directory.get(owner)
        if address is None:
            self.waiting.setdefault(owner, []).extend(routes)
            return
        now = time.monotonic()
        for route in routes:
            route.sent_at = now
            self.unacked[route.command.id] = route
            self.send(address, Call(route.command, route.request, reply_to=self.myAddress))

    def on_directory(self) -> None:
        moved = [owner for owner, address in self.directory.items()
                 if owner in self._owners and self._owners[owner] != address]
        self._owners = dict(self.directory)
        # Builtins an owner had not answered go to its new incarnation (they are idempotent
        # reads or are checked again there).
        resend: dict[str, list[Routed]] = collections.defaultdict(list)
        for route in list(self.unacked.values()):
            if route.info.owner in moved:
                route.recovering = True
                resend[route.info.owner].append(route)
        for owner, routes in self.waiting.items():
            resend[owner].extend(routes)
        self.waiting = {}
        for owner, routes in resend.items():
            self._route(owner, routes)

    def call_reply(self, msg: CallReply, sender: Any) -> None:
        route = self.unacked.pop(msg.job_id, None)
        if route is None:
            return
        self._publish(route, msg)

    def _publish(self, route: Routed, reply: CallReply) -> None:
        command = route.command
        start = int((time.time() - (time.monotonic() - route.sent_at)) * 1000) if route.sent_at else None
        if reply.ok:
            result = Result.builtin(command, reply.value, starttime=start)
        else:
            result = Result.failure(command, code=reply.code or 500, message=reply.message,
                                    critical=reply.critical, starttime=start)
        if command.stream:
            self.outbox.stream(command.id, [_end_entry(result)])
        self.outbox.result(result)
        self.outbox.add("lrem", INFLIGHT, route.raw)

    def _sweep(self) -> None:
        """Builtins whose owner never answered get a 503; a lost reply must not hang a client."""
        now = time.monotonic()
        for job_id, route in list(self.unacked.items()):
            if route.sent_at and now - route.sent_at > CALL_TIMEOUT \
                    and route.command.command != "core.subscribe":  # a subscription lasts its job
                del self.unacked[job_id]
                error: G8Error = Unavailable(f"{route.info.owner} did not answer within {CALL_TIMEOUT:g}s")
                self._publish(route, CallReply(job_id, False, code=error.code, message=error.message))
        self.after(1.0, "_sweep")

    def node_info(self) -> dict[str, Any]:
        return {"unacked": len(self.unacked), "waiting": sum(len(v) for v in self.waiting.values()),
                "thread_alive": self._thread.is_alive(), **dict(self._stats)}


def _end_entry(result: Result) -> str:
    flag = Flag.EXIT_SUCCESS if result.state == State.SUCCESS else Flag.EXIT_ERROR
    return stream_message(0, result.id, result.data, Level.RESULT_JSON, flag)
