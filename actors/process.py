"""ProcessActor: the light actor that owns one supervised OS process, and ProcessHost, the
part of a heavy actor that hosts many of them (the JobSupervisor, the ServiceSupervisor).

A light actor has its own address (`/jobs/<id>`), state, restart spec and history, and shows in
the actor tree like a heavy one; it costs a dict entry and two pipes instead of an OS process.
The host owns the SIGCHLD reaper and the fd watches and routes events to its light actors.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from g8os.actors.base import DEFERRED
from g8os.actors.supervision import ChildSpec, Restart
from g8os.messages.command import Command, Flag, Level, Result, State, now_ms, stream_message
from g8os.messages.errors import G8Error, NotFound
from g8os.messages.internal import Call
from g8os.system import spawn as spawner
from g8os.system.journal import Journal
from g8os.system.output import JobOutput, Message
from g8os.system.reaper import Reaper

READ_CHUNK = 65536
RECENT_MESSAGES = 100       # replayed to a late core.subscribe


@attrs.define
class Policy:
    """How a process is re-run: the protocol's job fields plus the internal `protected`."""

    max_restart: int = 0            # at most this many runs in all after non-SUCCESS exits
    recurring_period: int = 0       # re-run this many seconds after each exit
    protected: bool = False         # re-run forever, with backoff (services such as redis)
    max_time: int = 0               # SIGKILL the group after this many seconds → TIMEOUT

    def spec(self, name: str) -> ChildSpec:
        restart = (Restart.PERMANENT if self.protected or self.recurring_period
                   else Restart.TRANSIENT if self.max_restart else Restart.TEMPORARY)
        return ChildSpec(name=name, restart=restart, shutdown=5.0)


class ProcessActor:
    """One OS process under supervision, with the protocol's job semantics."""

    kind = "process"

    def __init__(self, host: ProcessHost, name: str, path: str, command: Command, argv: list[str], *,
                 env: dict[str, str] | None = None, cwd: str = "", stdin: bytes = b"",
                 policy: Policy | None = None, container: int = 0) -> None:
        self.host, self.name, self.path = host, name, path
        self.command, self.argv, self.env, self.cwd, self.stdin = command, argv, env, cwd, stdin
        self.policy = policy or Policy()
        self.container = container
        self.state = "queued"          # queued | running | backoff | waiting | stopping | ended
        self.pid = 0
        self.start_ticks = 0
        self.fds: list[int] = []
        self.runs = 0
        self.restarts = 0
        self.first_start_ms = 0
        self.started_at = 0.0
        self.last_error = ""
        self.exit_status = 0
        self.exit_signal = 0
        self.killed_by: State | None = None    # KILLED / TIMEOUT when we ended it on purpose
        self.kill_reason = ""
        self.unscheduled = False
        self.restart_requested = False   # actor.restart: run again whatever the spec says
        self.ps: Any = None                 # psutil.Process, kept for cpu_percent between listings
        self.output = JobOutput()
        self.recent: deque[Message] = deque(maxlen=RECENT_MESSAGES)
        self.followers: list[Callable[[Message, int], None]] = []
        self.generation = 0
        self.mailbox: deque[Any] = deque(maxlen=64)

    # ---- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self.generation += 1
        self.killed_by, self.kill_reason = None, ""
        self.output = JobOutput()
        try:
            proc = spawner.spawn(self.argv, env=self.env, cwd=self.cwd or None, stdin=self.stdin,
                                 netns_fd=self.host.node_netns)
        except G8Error as exc:
            self.state = "ended"
            self.host.process_failed_to_start(self, exc)
            return
        self.pid, self.start_ticks = proc.pid, proc.start_ticks
        self.fds = [proc.stdout, proc.stderr]
        self.runs += 1
        self.state = "running"
        self.started_at = time.monotonic()
        if not self.first_start_ms:
            self.first_start_ms = now_ms()
        self.host.process_started(self)
        if self.policy.max_time:
            self.host.after(self.policy.max_time, "_process_deadline", self.name, self.generation)

    def read(self, fd: int) -> None:
        stream = 1 if self.fds and fd == self.fds[0] else 2
        try:
            while True:
                data = os.read(fd, READ_CHUNK)
                if not data:
                    self._close_fd(fd)
                    break
                self._publish(self.output.feed(stream, data))
                if len(data) < READ_CHUNK:
                    break
        except BlockingIOError:
            pass

    def _close_fd(self, fd: int) -> None:
        self.host.unwatch(fd)
        if fd in self.fds:
            self.fds[self.fds.index(fd)] = -1
        try:
            os.close(fd)
        except OSError:
            pass

    def _publish(self, messages: list[Message]) -> None:
        for message in messages:
            self.recent.append(message)
            self.host.process_message(self, message, 0)
            for follower in self.followers:
                follower(message, 0)

    def exited(self, status: int) -> None:
        """The process ended: drain its pipes, then let the host decide what comes next."""
        for fd in list(self.fds):
            if fd >= 0:
                self.read(fd)
                if fd in self.fds:
                    self._close_fd(fd)
        self._publish(self.output.close())
        self.exit_status, self.exit_signal = spawner.exit_code(status)
        # Background children of the job live on, as in core0 (a job may start a daemon); the
        # host is their subreaper and reaps them when they end.
        self.pid = 0
        self.state = "stopping"
        if self.exit_signal:
            self.last_error = f"killed by {spawner.signal_name(self.exit_signal)}"
        elif self.exit_status:
            self.last_error = f"exited with status {self.exit_status}"
        self.host.process_exited(self)

    @property
    def succeeded(self) -> bool:
        return self.killed_by is None and self.exit_status == 0 and self.exit_signal == 0

    def kill(self, sig: int, *, as_state: State | None = None, reason: str = "") -> bool:
        """Signal the whole process group; with `as_state` the job ends in that state."""
        if self.state != "running" or not self.pid:
            return False
        if as_state is not None:
            self.killed_by, self.kill_reason = as_state, reason
        return spawner.signal_group(self.pid, sig)

    # ---- results ---------------------------------------------------------------------------

    def result(self) -> Result:
        if self.killed_by is not None:
            state, code = self.killed_by, 999 if self.exit_signal else 1000 + self.exit_status
        elif self.succeeded:
            state, code = State.SUCCESS, 0
        else:
            state = State.ERROR
            code = 999 if self.exit_signal else 1000 + self.exit_status
        start = self.first_start_ms or now_ms()
        critical = self.output.critical or self.kill_reason
        return Result(id=self.command.id, command=self.command.command, state=state, code=code,
                      data=self.output.result_data, level=self.output.result_level,
                      streams=self.output.streams, critical=critical, starttime=start,
                      time=max(0, now_ms() - start), tags=self.command.tags, container=self.container)

    def end_message(self) -> tuple[str, int]:
        """The stream's last message: empty, level 1 + EXIT_SUCCESS or level 2 + EXIT_ERROR."""
        if self.killed_by is None and self.succeeded:
            return stream_message(self.container, self.command.id, "", Level.STDOUT,
                                  Flag.EXIT_SUCCESS), Flag.EXIT_SUCCESS
        return stream_message(self.container, self.command.id, "", Level.STDERR,
                              Flag.EXIT_ERROR), Flag.EXIT_ERROR

    # ---- persistence and introspection -----------------------------------------------------

    def record(self) -> dict[str, Any]:
        return {
            "command": self.command.to_wire(), "argv": self.argv, "env": self.env, "cwd": self.cwd,
            "policy": {"max_restart": self.policy.max_restart,
                       "recurring_period": self.policy.recurring_period,
                       "protected": self.policy.protected, "max_time": self.policy.max_time},
            "pid": self.pid, "start_ticks": self.start_ticks, "runs": self.runs,
            "first_start_ms": self.first_start_ms, "state": self.state,
        }

    def node(self) -> dict[str, Any]:
        return {
            "path": self.path, "name": self.name, "kind": self.kind, "tier": "light",
            "pid": self.pid or None, "state": self.state, "restarts": self.restarts, "runs": self.runs,
            "uptime": round(time.monotonic() - self.started_at, 3) if self.state == "running" else 0,
            "last_error": self.last_error, "command": self.command.command,
            "argv": self.argv[:20], "children": [],
            "spec": {"restart": str(self.policy.spec(self.name).restart),
                     "max_restart": self.policy.max_restart, "recurring_period": self.policy.recurring_period,
                     "protected": self.policy.protected, "max_time": self.policy.max_time},
        }


class ProcessHost:
    """Mixin for a heavy actor that hosts ProcessActors (it must have no child actors)."""

    node_netns: int | None = None

    def init_host(self, records_dir: Path | None) -> None:
        self.processes: dict[str, ProcessActor] = {}
        # core.subscribe calls by watched name: (call, whom to answer, subscriber id)
        self.subscriptions: dict[str, list[tuple[Call, Any, str]]] = {}
        self.by_pid: dict[int, ProcessActor] = {}
        self.by_fd: dict[int, ProcessActor] = {}
        # One append-only journal per host (on a tmpfs): a record costs one write(2).
        self.journal = Journal(records_dir / "journal") if records_dir is not None else None
        self.reaper = Reaper()
        self.watch(self.reaper.fileno(), self._reap)  # type: ignore[attr-defined]
        try:
            self.node_netns = os.open("/proc/1/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.node_netns = None

    def _reap(self) -> None:
        for pid, status in self.reaper.reap():
            process = self.by_pid.pop(pid, None)
            if process is not None and process.pid == pid:
                process.exited(status)

    def process_started(self, process: ProcessActor) -> None:
        self.by_pid[process.pid] = process
        for fd in process.fds:
            self.by_fd[fd] = process
            self.watch(fd, lambda fd=fd: self._readable(fd))  # type: ignore[attr-defined]
        self.save_record(process)

    def _readable(self, fd: int) -> None:
        process = self.by_fd.get(fd)
        if process is None:
            self.unwatch(fd)  # type: ignore[attr-defined]
            return
        process.read(fd)

    def unwatch(self, fd: int) -> None:  # overrides Actor.unwatch to forget the fd's owner too
        self.by_fd.pop(fd, None)
        super().unwatch(fd)  # type: ignore[misc]

    def light_process(self, path: str) -> ProcessActor:
        """The light actor at `path` (one below this host), or NotFound."""
        process = self.processes.get(path[len(self.path.rstrip("/")) + 1:])  # type: ignore[attr-defined]
        if process is None:
            raise NotFound(f"no actor at {path}")
        return process

    def _process_deadline(self, name: str, generation: int) -> None:
        process = self.processes.get(name)
        if process is not None and process.generation == generation and process.state == "running":
            process.kill(signal.SIGKILL, as_state=State.TIMEOUT,
                         reason=f"max_time of {process.policy.max_time}s exceeded")

    # ---- core.subscribe: a process's output copied to a subscriber's stream -------------------

    def subscribe(self, target: ProcessActor, call: Call, *, replay: bool = True) -> Any:
        """Copy `target`'s recent and coming output to the stream of the subscribing command; it
        is answered when the process ends for good (end_subscriptions) or is unsubscribed."""
        subscriber = call.command.id
        outbox = self.outbox  # type: ignore[attr-defined]

        def forward(message: Message, flags: int) -> None:
            outbox.stream(subscriber, [stream_message(
                target.container, target.name, message.text, message.level, flags, message.epoch_ns)])

        forward.subscriber = subscriber  # type: ignore[attr-defined]
        for message in target.recent if replay else ():
            forward(message, 0)
        target.followers.append(forward)
        self.subscriptions.setdefault(target.name, []).append((call, self.reply_address(call), subscriber))
        return DEFERRED

    def end_subscriptions(self, name: str, state: str) -> None:
        """`name` ended for good: each of its subscriptions gets its answer."""
        for call, sender, _subscriber in self.subscriptions.pop(name, []):
            self.reply(call, {"id": name, "state": state}, sender=sender)  # type: ignore[attr-defined]

    def end_subscription(self, subscriber: str, *, answer: bool = True) -> bool:
        """job.kill of a subscribing command: it stops following and is answered now (unless
        not `answer`)."""
        for target, subscriptions in self.subscriptions.items():
            for entry in subscriptions:
                call, sender, sub_id = entry
                if sub_id == subscriber:
                    subscriptions.remove(entry)
                    watched = self.processes.get(target)
                    if watched is not None:
                        watched.followers = [f for f in watched.followers
                                             if getattr(f, "subscriber", None) != subscriber]
                    if answer:
                        self.reply(call, {"id": target, "state": "unsubscribed"},  # type: ignore[attr-defined]
                                   sender=sender)
                    return True
        return False

    def reply_address(self, call: Call) -> Any:
        return call.reply_to or self.directory.get("gateway")  # type: ignore[attr-defined]

    # hooks the host implements
    def process_message(self, process: ProcessActor, message: Message, flags: int) -> None: ...
    def process_exited(self, process: ProcessActor) -> None: ...
    def process_failed_to_start(self, process: ProcessActor, error: G8Error) -> None: ...

    # ---- records: the desired state of each process, outliving the host ---------------------

    def save_record(self, process: ProcessActor, **extra: Any) -> None:
        if self.journal is not None:
            self.journal.put(process.name, {**process.record(), **extra})

    def drop_record(self, name: str) -> None:
        if self.journal is not None:
            self.journal.drop(name)

    def leftover_records(self) -> list[dict[str, Any]]:
        """Records a previous incarnation left: its processes are killed (they must not outlive
        their supervisor) and each record is returned for the host to restart or to fail."""
        if self.journal is None:
            return []
        records = []
        for record in self.journal.records().values():
            pid = record.get("pid") or 0
            record["was_alive"] = bool(pid and spawner.process_start_ticks(pid) == record.get("start_ticks"))
            if record["was_alive"]:
                spawner.signal_group(pid, signal.SIGKILL)
            records.append(record)
        return records

    def stop_processes(self, grace: float = 2.0) -> None:
        """SIGTERM every process group, wait up to `grace`, SIGKILL what is left (shutdown path)."""
        running = [p for p in self.processes.values() if p.state == "running" and p.pid]
        for process in running:
            spawner.signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            for pid, _status in self.reaper.reap():
                running = [p for p in running if p.pid != pid]
            if running:
                time.sleep(0.01)  # shutdown path only: the actor is exiting and serves nothing else
        for process in running:
            spawner.signal_group(process.pid, signal.SIGKILL)
