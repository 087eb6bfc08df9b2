"""Our thin layer over Thespian: every heavy actor of g8os derives from `Actor`.

What it replaces or adds to Thespian (research/thespian.md §4–§5):
- "let it crash": an exception in a handler is reported to the parent (`ChildFailed`) and the
  actor exits; Thespian's retry-with-deepcopy and PoisonMessage-to-the-sender never happen.
- children keyed by name (addresses change on restart and are not hashable), started in order
  with a Ready handshake and a start timeout, de-duplicated exit notices, restarts decided by
  `actors.supervision`, heartbeats that SIGKILL a hung child, ordered stop with a grace period.
- a child never outlives its parent process (PR_SET_PDEATHSIG) and drops inherited descriptors.
- fd watches and timers with callbacks: the ThespianWatch is returned from every receive (or
  Thespian silently drops it) and `wakeupAfter` payloads name the callback.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import attrs
from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from g8os.actors.supervision import (
    Action,
    ChildSpec,
    Decision,
    Restart,
    Supervisor,
    SupFlags,
)
from g8os.messages.errors import G8Error, Internal, NotFound
from g8os.messages.internal import (
    ActorOp,
    Call,
    CallReply,
    ChildFailed,
    Directory,
    Event,
    Events,
    Init,
    LogLines,
    Metrics,
    Output,
    Ping,
    Pong,
    Ready,
    Stop,
    Stopped,
    TreeReply,
    TreeRequest,
)
from g8os.system import linux

HEARTBEAT = 2.0          # seconds between pings to each child
HEARTBEAT_MISSES = 3     # a child that misses this many pings in a row is hung: SIGKILL
START_TIMEOUT = 15.0     # a child must answer Ready within this
REPORT_EVERY = 0.05      # seconds between batches of events / log lines sent to the log actor
# What waits for the next batch is bounded: job output for the node log (a job printing faster
# than the log can take loses its oldest lines there; its own stream keeps them), and reports
# held while the log actor is not known yet.
OUTPUT_PENDING = 20_000          # job messages
OUTPUT_PENDING_BYTES = 8 << 20   # their text
REPORTS_PENDING = 2_000          # events, log lines, metric samples
KILL_DELAY = 0.05        # actor.kill answers before the signal is sent
TREE_MARGIN = 0.05       # each level of the tree answers this long before its asker's deadline
TREE_TIMEOUT = 0.5       # children that do not answer a tree request in time are shown unresponsive


class Deferred:
    """Returned by a command handler that will answer later with `reply()`."""


DEFERRED = Deferred()


@attrs.frozen
class HeavySpec:
    """A child actor: its class and how it is supervised."""

    name: str
    cls: type
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0

    def supervision(self) -> ChildSpec:
        return ChildSpec(name=self.name, restart=self.restart, shutdown=self.shutdown)


@attrs.define
class ChildRecord:
    spec: HeavySpec
    address: Any = None
    pid: int = 0
    state: str = "down"              # starting | running | stopping | backoff | down | failed
    generation: int = 0
    started_at: float = 0.0
    last_error: str = ""
    missed_pings: int = 0
    normal_exit: bool = False
    stop_callbacks: list[Callable[[], None]] = attrs.field(factory=list)


@attrs.define
class _TreeGather:
    reply_to: Any
    corr: str
    pending: set[str]
    node: dict[str, Any]
    children: dict[str, dict[str, Any]]
    done: bool = False


class Actor(ActorTypeDispatcher):
    """Base of every heavy actor. Subclasses declare `kind`, `flags` and `child_specs()`."""

    kind: ClassVar[str] = "actor"
    flags: ClassVar[SupFlags] = SupFlags()
    # Keep one idle child process ready to become whichever child fails next: creating an actor
    # costs Thespian ~15–40 ms (the admin forks it), taking over a spare about 1 ms.
    keeps_spare: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        _follow_parent()
        self.name = ""
        self.path = "/"
        self.parent: Any = None
        self.config: Any = None
        self.directory: dict[str, Any] = {}
        self.born = time.monotonic()
        self.children: dict[str, ChildRecord] = {}
        self.sup = Supervisor(self.flags, ())
        self.events: deque[Event] = deque(maxlen=200)
        self._watches: dict[int, Callable[[], None]] = {}
        self._timer_seq = itertools.count(1)
        self._ping_seq = 0
        self._gathers: dict[str, _TreeGather] = {}
        self._stopping = False
        self._stop_done: Callable[[], None] | None = None
        self._corr = itertools.count(1)
        self._spare: Any = None
        # Job output waiting for the next report (log_output, on the hot path: plain attributes).
        self._output_out: list[tuple[str, int, str, int, int]] = []
        self._output_bytes = 0
        self._output_dropped = 0
        self._report_armed = False

    # ---- hooks for subclasses -------------------------------------------------------------

    def child_specs(self) -> list[HeavySpec]:
        """Static children, started in this order after `on_start`."""
        return []

    def on_start(self) -> bool:
        """Acquire resources. Return False to report Ready later with `ready()`."""
        return True

    def on_stop(self) -> None:
        """Release resources; children are already stopped."""

    def on_directory(self) -> None:
        """The root's children moved (a restart): refresh anything keyed on their addresses."""

    def after_message(self) -> None:
        """Called after every message: flush what the handlers batched (Redis writes)."""

    def node_info(self) -> dict[str, Any]:
        """Extra fields of this actor's node in `actor.tree` / `actor.inspect`."""
        return {}

    def light_nodes(self) -> list[dict[str, Any]]:
        """Tree nodes of the light actors this actor hosts."""
        return []

    def light_op(self, op: ActorOp) -> Any:
        """actor.kill / inspect / restart of a light actor below this one; NotFound if none."""
        raise NotFound(f"no actor at {op.path}")

    # ---- Thespian entry point -------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        try:
            if isinstance(message, WatchMessage):
                for fd in message.ready:
                    callback = self._watches.get(fd)
                    if callback is not None:
                        callback()
            elif isinstance(message, WakeupMessage):
                self._on_timer(message.payload)
            elif isinstance(message, ActorExitRequest):
                self._on_exit_request()
            elif isinstance(message, PoisonMessage):
                pass  # our handlers never raise into Thespian, so a poison is someone else's bug
            else:
                super().receiveMessage(message, sender)
            self.after_message()
        except Exception:  # let it crash: tell the parent why, then go
            self.crash(traceback.format_exc())
        return ThespianWatch(list(self._watches)) if self._watches else None

    # ---- fd watches and timers -----------------------------------------------------------

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        self._watches[fd] = callback

    def unwatch(self, fd: int) -> None:
        self._watches.pop(fd, None)

    def after(self, delay: float, method: str, *args: Any) -> None:
        """Call `self.<method>(*args)` after `delay` seconds (timers cannot be cancelled:
        callers check a generation number)."""
        self.wakeupAfter(timedelta(seconds=max(0.0, delay)), payload=(method, args))

    def _on_timer(self, payload: Any) -> None:
        if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[0], str):
            getattr(self, payload[0])(*payload[1])

    # ---- lifecycle as a child ------------------------------------------------------------

    def receiveMsg_Init(self, msg: Init, sender: Any) -> None:
        self.name, self.path, self.config = msg.name, msg.path, msg.config
        self.parent = sender
        self.directory = dict(msg.directory)
        # A child never outlives its parent; if the parent is already gone, go too.
        linux.set_pdeathsig(signal.SIGKILL)
        if msg.parent_pid and os.getppid() != msg.parent_pid:
            os._exit(1)
        linux.set_process_name(f"g8:{self.name or 'root'}"[:15])
        signal.set_wakeup_fd(-1)  # a wakeup fd forked in from the node process is not ours
        self._close_inherited_fds()
        self._init_at = time.time()  # `/actor/started` carries this time, sent with `/actor/ready`
        for spec in self.child_specs():
            self.sup.add(spec.supervision())
            self.children[spec.name] = ChildRecord(spec)
        if self.on_start():
            self.ready()

    def ready(self) -> None:
        """Resources acquired: start own children in order, then tell the parent."""
        self._start_pending_children()
        self.after(HEARTBEAT, "_heartbeat")

    def _start_pending_children(self) -> None:
        for record in self.children.values():
            if record.state == "starting":
                return  # ordered start: wait for its Ready
            if record.state == "down":
                self._start_child(record)
                return
        if self.parent is not None and not getattr(self, "_announced", False):
            self._announced = True
            self.send(self.parent, Ready(self.name, os.getpid()))
            # Both reported now, in one batch: an event at Init would arm a report timer in every
            # new actor (Thespian handles an exit with a timer pending differently).
            started = Event(self.__dict__.get("_init_at", time.time()), "/actor/started", self.path,
                            {"pid": os.getpid(), "kind": self.kind})
            self.events.append(started)
            self._outgoing_events.append(started)
            self.emit("/actor/ready", self.path, pid=os.getpid())
        self._ensure_spare()

    def _ensure_spare(self) -> None:
        if self.keeps_spare and self._spare is None and not self._stopping and all(
                r.state == "running" for r in self.children.values()):
            self._spare = self.createActor(Spare)

    def _close_inherited_fds(self) -> None:
        """Drop the pipes and sockets forked in from siblings and from whoever started Thespian."""
        try:
            transport = self._myRef.transport
            keep = set(transport.protectedFileNumList())
            keep.update(s.socket.fileno() for s in getattr(transport, "_openSockets", {}).values()
                        if getattr(s, "socket", None) is not None)
        except Exception:
            return  # unknown transport internals: keep everything rather than break it
        keep.update({0, 1, 2})
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep:
                continue
            try:
                kind = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if kind.startswith(("pipe:", "socket:")):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def crash(self, error: str) -> None:
        """Report an unhandled error to the parent and exit (the parent restarts us per spec):
        own children first, in reverse start order, then own resources, once."""
        if self.__dict__.get("_crashed"):
            return
        self._crashed = True
        if self.parent is not None:
            self.send(self.parent, ChildFailed(self.name, error))

        def release_and_exit() -> None:
            self._stopping = True
            try:
                self.on_stop()
            except Exception:
                pass
            self.send(self.myAddress, ActorExitRequest(recursive=False))

        if any(r.address is not None for r in self.children.values()):
            self.stop_all(release_and_exit)
        else:
            release_and_exit()

    def _on_exit_request(self) -> None:
        # An exit we did not ask for through crash() or Stop: the actor ended itself, or Thespian
        # ends it (system shutdown, SIGTERM). That is a normal exit: release resources and say so.
        if not self._stopping:
            self._stopping = True
            self.on_stop()
            if self.parent is not None:
                self.send(self.parent, Stopped(self.name))

    def receiveMsg_Ping(self, msg: Ping, sender: Any) -> None:
        self.send(sender, Pong(self.name, msg.seq))

    def receiveMsg_Directory(self, msg: Directory, sender: Any) -> None:
        self.directory = dict(msg.addresses)
        self.on_directory()
        if self._reports_held():
            self._schedule_report()  # reports held while the log actor was not known
        for record in self.children.values():
            if record.address is not None and record.state in ("starting", "running"):
                self.send(record.address, msg)

    def receiveMsg_Stop(self, msg: Stop, sender: Any) -> None:
        self.stop_all(lambda: self._finish_stop(sender))

    def _finish_stop(self, requester: Any) -> None:
        self._stopping = True
        try:
            self.on_stop()
        finally:
            self.send(requester, Stopped(self.name))
            self.send(self.myAddress, ActorExitRequest(recursive=False))

    # ---- children ------------------------------------------------------------------------

    def _start_child(self, record: ChildRecord) -> None:
        record.generation += 1
        record.state = "starting"
        record.missed_pings = 0
        record.normal_exit = False
        record.pid = 0
        role = None
        if self._spare is not None and getattr(self, "_announced", False):
            record.address, self._spare, role = self._spare, None, record.spec.cls
        else:
            record.address = self.createActor(record.spec.cls)
        path = f"{self.path.rstrip('/')}/{record.spec.name}"
        self.send(record.address, Init(record.spec.name, path, os.getpid(), self.config,
                                       self.directory, role))
        self.after(START_TIMEOUT, "_start_deadline", record.spec.name, record.generation)

    def _start_deadline(self, name: str, generation: int) -> None:
        record = self.children.get(name)
        if record and record.generation == generation and record.state == "starting":
            record.last_error = f"not ready within {START_TIMEOUT:g}s"
            self.send(record.address, ActorExitRequest())

    def receiveMsg_Ready(self, msg: Ready, sender: Any) -> None:
        record = self.children.get(msg.name)
        if record is None or record.address != sender:
            return
        record.pid, record.state, record.started_at = msg.pid, "running", time.monotonic()
        self.sup.started(msg.name)
        self.child_ready(msg.name)
        if self._reports_held():
            self._schedule_report()  # the root learns the log actor's address here
        self._start_pending_children()
        self._ensure_spare()

    def child_ready(self, name: str) -> None:
        """A child (re)started and answers; the root publishes the new directory here."""

    def receiveMsg_ChildFailed(self, msg: ChildFailed, sender: Any) -> None:
        record = self.children.get(msg.name)
        if record is not None and record.address == sender:
            record.last_error = _last_line(msg.error)
            self.emit("/actor/failed", self._child_path(msg.name), error=msg.error[-2000:])

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        if self._spare is not None and msg.childAddress == self._spare:
            self._spare = None  # the idle spare died: make another once the tree is steady
            self._ensure_spare()
            return
        record = next((r for r in self.children.values() if r.address == msg.childAddress), None)
        if record is None:
            return  # Thespian reports some exits twice; the second finds no child
        record.address = None
        was = record.state
        record.state = "down"
        if was == "stopping":
            self.sup.stopped(record.spec.name)
            callbacks, record.stop_callbacks = record.stop_callbacks, []
            for callback in callbacks:
                callback()
            return
        if self._stopping:
            return
        normal = record.normal_exit
        reason = record.last_error or ("exited normally" if normal else
                                       "killed" if was == "running" else f"exited while {was}")
        self.emit("/actor/exited", self._child_path(record.spec.name), reason=reason, normal=normal,
                  pid=record.pid or None)
        if was == "starting":
            # It died before its Ready: a failed start, restarted with backoff and counted
            # against the intensity like any failure (OTP: a child whose init fails).
            self.sup.started(record.spec.name)
        self.apply(self.sup.exited(record.spec.name, normal=normal, reason=reason))

    def apply(self, decision: Decision) -> None:
        """Carry out a supervision decision for heavy children."""
        if decision.action == Action.ESCALATE:
            self.emit("/actor/escalated", self.path, reason=decision.reason)
            self.stop_all(lambda: self.crash(f"gave up: {decision.reason}"))
            return
        for name in decision.remove:
            self.children.pop(name, None)
        if decision.action != Action.RESTART:
            if decision.reason:
                self.emit("/actor/gave_up", self.path, reason=decision.reason)
            return
        self.emit("/actor/restarting", self.path, reason=decision.reason, children=list(decision.restart),
                  delay=decision.delay)
        for name in decision.restart:
            record = self.children.get(name)
            if record is not None and record.address is None:
                record.state = "backoff"

        def stopped_in_order(remaining: list[str]) -> None:
            # Siblings stop one after another (decision.stop is in reverse start order); only
            # then, after the backoff, do the children start again, in start order.
            if remaining:
                def next_one() -> None:
                    record = self.children.get(remaining[0])
                    if record is not None:
                        record.state = "backoff"
                    stopped_in_order(remaining[1:])
                self.stop_child(remaining[0], next_one)
                return
            self.after(decision.delay, "_restart", tuple(decision.restart))

        stopped_in_order(list(decision.stop))

    def _restart(self, names: tuple[str, ...]) -> None:
        if self._stopping:
            return
        for name in names:
            record = self.children.get(name)
            if record is not None and record.state in ("backoff", "down"):
                record.state = "down"
                self.emit("/actor/restarted", self._child_path(name), restarts=self.sup.restarts(name))
        self._start_pending_children()  # in start order, each after the previous one's Ready

    def stop_child(self, name: str, then: Callable[[], None] | None = None) -> None:
        """Polite stop (children first, in order), then SIGKILL after the spec's grace period."""
        record = self.children.get(name)
        if record is None or record.address is None:
            if record is not None:
                record.state = "down"
            if then:
                then()
            return
        if then:
            record.stop_callbacks.append(then)
        if record.state == "stopping":
            return
        record.state = "stopping"
        if record.spec.shutdown <= 0 and record.pid:
            _kill(record.pid, signal.SIGKILL)
            return
        self.send(record.address, Stop())
        self.after(record.spec.shutdown, "_stop_deadline", name, record.generation)

    def _stop_deadline(self, name: str, generation: int) -> None:
        record = self.children.get(name)
        if record and record.generation == generation and record.state == "stopping" and record.pid:
            _kill(record.pid, signal.SIGKILL)

    def receiveMsg_Stopped(self, msg: Stopped, sender: Any) -> None:
        record = self.children.get(msg.name)
        if record is not None and record.address == sender and record.state != "stopping":
            record.normal_exit = True  # it ended itself: the ChildActorExited that follows is normal

    def stop_all(self, then: Callable[[], None]) -> None:
        """Stop every child in reverse start order, one after the other, then call `then`."""
        self._stopping = True
        if self._spare is not None:
            self.send(self._spare, ActorExitRequest())
            self._spare = None
        running = [n for n in reversed(self.sup.start_order())
                   if n in self.children and self.children[n].address is not None]
        # children in backoff never come back once we stop
        for record in self.children.values():
            if record.address is None:
                record.state = "down"

        def next_one(remaining: list[str]) -> None:
            if not remaining:
                then()
                return
            self.stop_child(remaining[0], lambda: next_one(remaining[1:]))

        next_one(running)

    def _heartbeat(self) -> None:
        if self._stopping:
            return
        self._ping_seq += 1
        for record in self.children.values():
            if record.state != "running" or record.address is None:
                continue
            record.missed_pings += 1
            if record.missed_pings > HEARTBEAT_MISSES and record.pid:
                record.last_error = f"hung: missed {HEARTBEAT_MISSES} heartbeats"
                _kill(record.pid, signal.SIGKILL)
                continue
            self.send(record.address, Ping(self._ping_seq))
        self.after(HEARTBEAT, "_heartbeat")

    def receiveMsg_Pong(self, msg: Pong, sender: Any) -> None:
        record = self.children.get(msg.name)
        if record is not None:
            record.missed_pings = 0

    def _child_path(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    # ---- events and log ------------------------------------------------------------------

    def emit(self, topic: str, path: str, **data: Any) -> None:
        event = Event(time.time(), topic, path, data)
        self.events.append(event)
        self._outgoing_events.append(event)
        self._schedule_report()

    def log(self, *lines: str, level: int = logging.INFO) -> None:
        """core0's own records for the node log, at a severity of Python's `logging`."""
        self._outgoing_lines.extend((level, f"{self.path}: {line}") for line in lines)
        self._schedule_report()

    def log_output(self, job: str, level: int, text: str, epoch_ns: int, flags: int = 0) -> None:
        """One message of a job's output for the node log. On the hot path of every line a job
        prints: a tuple appended here, the batch sent with the next report."""
        out = self._output_out
        out.append((job, level, text, epoch_ns, flags))
        self._output_bytes += len(text)
        if self._output_bytes > OUTPUT_PENDING_BYTES or len(out) > OUTPUT_PENDING:
            self._drop_output()
        if not self._report_armed:
            self._schedule_report()

    def _drop_output(self) -> None:
        out = self._output_out
        drop = max(len(out) - OUTPUT_PENDING, 0, len(out) // 4)
        self._output_bytes -= sum(len(record[2]) for record in out[:drop])
        del out[:drop]
        self._output_dropped += drop

    def metric(self, key: str, value: float, op: str, tags: dict[str, str], ts: float) -> None:
        """One statsd sample for the StatsActor's aggregator (batched like the reports)."""
        self._outgoing_metrics.append((key, value, op, tags, ts))
        self._schedule_report()

    @property
    def _outgoing_events(self) -> list[Event]:
        return self.__dict__.setdefault("_events_out", [])

    @property
    def _outgoing_lines(self) -> list[tuple[int, str]]:
        return self.__dict__.setdefault("_lines_out", [])

    @property
    def _outgoing_metrics(self) -> list[tuple[str, float, str, dict[str, str], float]]:
        return self.__dict__.setdefault("_metrics_out", [])

    def _reports_held(self) -> bool:
        return any(self.__dict__.get(name) for name in ("_events_out", "_lines_out", "_output_out",
                                                         "_metrics_out"))

    def _schedule_report(self) -> None:
        # Events and log lines go to the log actor at most every REPORT_EVERY seconds, batched:
        # Thespian's TCP transport moves ~1000 messages/s per link, and an actor that queues
        # more than 950 sends stops reading its own mailbox (tx-only mode).
        if self.__dict__.get("_report_armed"):
            return
        wait = REPORT_EVERY - (time.monotonic() - self.__dict__.get("_reported_at", 0.0))
        if wait <= 0:
            self._report()
        else:
            self._report_armed = True
            self.after(wait, "_report_timer")

    def _report_timer(self) -> None:
        self._report_armed = False
        self._report()

    def _report(self) -> None:
        self._reported_at = time.monotonic()
        log = self.directory.get("log")
        if log is None:
            # Not known yet (the root before its log child is ready): hold a bounded amount
            # until the directory names it.
            for name in ("_events_out", "_lines_out"):
                del self.__dict__.setdefault(name, [])[:-REPORTS_PENDING]
        else:
            self._send_reports(log)  # the log actor overrides it to keep its own reports
        metrics = self._outgoing_metrics
        if metrics:
            stats = self.directory.get("stats")
            if stats is None:  # the StatsActor starts after the JobSupervisor: hold a few
                del metrics[:-REPORTS_PENDING]
            else:
                self._metrics_out = []
                if stats != self.myAddress:
                    self.send(stats, Metrics(tuple(metrics)))

    def _send_reports(self, log: Any) -> None:
        events, self._events_out = self._outgoing_events, []
        lines, self._lines_out = self._outgoing_lines, []
        output, self._output_out = self._output_out, []
        dropped, self._output_dropped, self._output_bytes = self._output_dropped, 0, 0
        if events:
            self.send(log, Events(tuple(events)))
        by_level: dict[int, list[str]] = {}
        for level, line in lines:
            by_level.setdefault(level, []).append(line)
        for level, texts in by_level.items():
            self.send(log, LogLines(tuple(texts), level))
        if output or dropped:
            self.send(log, Output(tuple(output), dropped))

    # ---- commands ------------------------------------------------------------------------

    def receiveMsg_Call(self, msg: Call, sender: Any) -> None:
        reply_to = msg.reply_to or sender
        handler = getattr(self, "handle_" + msg.command.command.replace(".", "_").replace("-", "_"), None)
        try:
            if handler is None:
                raise Internal(f"{self.path} has no handler for {msg.command.command}")
            value = handler(msg.request, msg)
        except G8Error as exc:
            self.send(reply_to, CallReply(msg.command.id, False, code=exc.code, message=exc.message,
                                          critical=exc.critical, corr=msg.corr))
            return
        except Exception as exc:
            self.send(reply_to, CallReply(msg.command.id, False, code=500, message=str(exc) or repr(exc),
                                          critical=traceback.format_exc()[-4000:], corr=msg.corr))
            return
        if value is not DEFERRED:
            self.send(reply_to, CallReply(msg.command.id, True, value=value, corr=msg.corr))

    def reply(self, call: Call, value: Any = None, *, error: G8Error | None = None,
              sender: Any = None) -> None:
        target = call.reply_to or sender
        if error is None:
            self.send(target, CallReply(call.command.id, True, value=value, corr=call.corr))
        else:
            self.send(target, CallReply(call.command.id, False, code=error.code, message=error.message,
                                        critical=error.critical, corr=call.corr))

    # ---- introspection -------------------------------------------------------------------

    def tree_node(self) -> dict[str, Any]:
        now = time.monotonic()
        node = {
            "path": self.path, "name": self.name or "/", "kind": self.kind, "tier": "heavy",
            "pid": os.getpid(), "state": "stopping" if self._stopping else "running",
            "uptime": round(now - self.born, 3), "restarts": 0, "last_error": "",
            "strategy": str(self.flags.strategy), "children": [],
        }
        node.update(self.node_info())
        return node

    def _child_stub(self, record: ChildRecord) -> dict[str, Any]:
        """What the parent knows of a child that cannot answer for itself."""
        return {
            "path": self._child_path(record.spec.name), "name": record.spec.name,
            "kind": getattr(record.spec.cls, "kind", "actor"), "tier": "heavy", "pid": record.pid or None,
            "state": record.state, "uptime": round(time.monotonic() - record.started_at, 3)
            if record.state == "running" else 0, "children": [],
        }

    def receiveMsg_TreeRequest(self, msg: TreeRequest, sender: Any) -> None:
        # Each level answers a margin before its asker's deadline, so a hung grandchild shows as
        # unresponsive while its healthy parent still answers in time.
        now = time.time()
        deadline = (msg.deadline - TREE_MARGIN) if msg.deadline else now + TREE_TIMEOUT
        node = self.tree_node()
        node["children"] = self.light_nodes()
        gather = _TreeGather(sender, msg.corr, set(), node, {})
        for name, record in self.children.items():
            stub = self._child_stub(record)
            stub["restarts"] = self.sup.restarts(name)
            stub["last_error"] = record.last_error
            gather.children[name] = stub
            if record.state == "running" and record.address is not None:
                gather.pending.add(name)
                self.send(record.address, TreeRequest(f"{msg.corr}/{name}", deadline))
        self._gathers[msg.corr] = gather
        if gather.pending:
            self.after(max(0.0, deadline - now), "_tree_deadline", msg.corr)
        else:
            self._tree_done(gather)

    def receiveMsg_TreeReply(self, msg: TreeReply, sender: Any) -> None:
        corr, _, name = msg.corr.rpartition("/")
        gather = self._gathers.get(corr)
        if gather is None or name not in gather.pending:
            return
        gather.pending.discard(name)
        stub = gather.children[name]
        node = dict(msg.node)
        node["restarts"], node["last_error"] = stub["restarts"], stub["last_error"]
        gather.children[name] = node
        if not gather.pending:
            self._tree_done(gather)

    def _tree_deadline(self, corr: str) -> None:
        gather = self._gathers.get(corr)
        if gather is not None:
            for name in gather.pending:
                gather.children[name]["state"] = "unresponsive"
            self._tree_done(gather)

    def _tree_done(self, gather: _TreeGather) -> None:
        if gather.done:
            return
        gather.done = True
        self._gathers.pop(gather.corr, None)
        order = self.sup.start_order()
        gather.node["children"] += [gather.children[n] for n in order if n in gather.children]
        self.tree_ready(gather.corr, gather.node, gather.reply_to)

    def tree_ready(self, corr: str, node: dict[str, Any], reply_to: Any) -> None:
        self.send(reply_to, TreeReply(corr, node))

    def receiveMsg_ActorOp(self, msg: ActorOp, sender: Any) -> None:
        """Route actor.kill / inspect / restart towards the owner of the path."""
        try:
            value = self.actor_op(msg, sender)
        except G8Error as exc:
            self.send(sender, CallReply("", False, code=exc.code, message=exc.message, corr=msg.corr))
            return
        if value is not DEFERRED:
            self.send(sender, CallReply("", True, value=value, corr=msg.corr))

    def actor_op(self, msg: ActorOp, sender: Any) -> Any:
        mine = self.path.rstrip("/")
        rest = msg.path[len(mine):].strip("/")
        if not msg.path.startswith(mine + "/") and msg.path != self.path:
            raise NotFound(f"no actor at {msg.path}")
        head = rest.split("/", 1)[0]
        record = self.children.get(head)
        if record is None:
            return self.light_op(msg)
        if "/" in rest:
            if record.address is None or record.state != "running":
                raise NotFound(f"{self._child_path(head)} is {record.state}; cannot reach {msg.path}")
            self.send(record.address, msg)
            self._forwarded[msg.corr] = sender
            return DEFERRED
        return self.heavy_child_op(record, msg)

    @property
    def _forwarded(self) -> dict[str, Any]:
        forwarded = self.__dict__.setdefault("_forwarded_ops", {})
        return forwarded

    def receiveMsg_CallReply(self, msg: CallReply, sender: Any) -> None:
        """Replies to forwarded actor ops travel back the way they came."""
        origin = self._forwarded.pop(msg.corr, None)
        if origin is not None:
            self.send(origin, msg)
        else:
            self.call_reply(msg, sender)

    def call_reply(self, msg: CallReply, sender: Any) -> None:
        """A reply to a call this actor made itself (override where calls are made)."""

    def heavy_child_op(self, record: ChildRecord, msg: ActorOp) -> Any:
        name = record.spec.name
        if msg.op == "inspect":
            node = self._child_stub(record)
            node.update(restarts=self.sup.restarts(name), last_error=record.last_error,
                        spec={"restart": str(record.spec.restart), "shutdown": record.spec.shutdown},
                        consecutive_failures=self.sup.consecutive_failures(name),
                        events=[attrs.asdict(e) for e in self.events
                                if e.path == self._child_path(name)][-20:])
            return node
        if record.state != "running" or not record.pid:
            raise NotFound(f"{self._child_path(name)} is {record.state}, not running")
        if msg.op == "kill":
            # Answer first, kill on the next tick: the answer may have to travel through the
            # very actor being killed (actor.kill /gateway).
            self.after(KILL_DELAY, "_kill_child", name, record.generation, msg.signal)
            return {"path": self._child_path(name), "pid": record.pid, "signal": msg.signal}
        if msg.op == "restart":
            pid = record.pid

            def start_again() -> None:
                self.sup.stopped(name)
                self.emit("/actor/restarted", self._child_path(name), reason="actor.restart")
                self._start_child(record)

            self.stop_child(name, start_again)
            return {"path": self._child_path(name), "pid": pid, "restarting": True}
        raise NotFound(f"unknown operation {msg.op}")

    def _kill_child(self, name: str, generation: int, sig: int) -> None:
        record = self.children.get(name)
        if record and record.generation == generation and record.pid:
            record.last_error = f"killed by actor.kill (signal {sig})"
            _kill(record.pid, sig)

    def next_corr(self) -> str:
        return f"{os.getpid()}.{next(self._corr)}"


class Spare(Actor):
    """An idle child that becomes another actor on its Init (its `role`): Thespian fixes an
    actor's class at creation, so the spare swaps its own class before initialising."""

    kind = "spare"

    def receiveMsg_Init(self, msg: Init, sender: Any) -> None:
        if msg.role is None or not issubclass(msg.role, Actor) or issubclass(msg.role, Spare):
            return
        self.__class__ = msg.role
        msg.role.__init__(self)  # the new role's state; Thespian keeps only `_myRef` on us
        self.receiveMsg_Init(msg, sender)


def _follow_parent() -> None:
    """Die with the process that forked us, from the first moment: a child whose parent dies
    before our Init arrives would otherwise be orphaned for good. Runs in the new actor's own
    process (Thespian builds the actor object after the fork)."""
    import multiprocessing

    parent = getattr(multiprocessing.current_process(), "_parent_pid", None)
    if not parent or parent == os.getpid():
        return  # not a forked actor process (a test constructing one in-process)
    linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before we could ask to follow it


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
