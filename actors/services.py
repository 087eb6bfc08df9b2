"""ServiceSupervisor: the node's own daemons as light ProcessActors — redis-server first, then
the startup services of the boot configuration — and `config.get`.

redis-server is protected: it restarts forever, with backoff. The supervisor is Ready only
once Redis answers, so the actors started after it find the bus up.

Startup services (`[startup.<id>]`, read once per start of the actor plane: system/bootconfig.py,
docs/config.md) start after that, in dependency order: a service starts once every service it
names in `after` is running by that service's readiness rule (`running_match` seen in its
output, else `running_delay` seconds alive, or a successful exit), and once its `condition`
holds. One that fails for good before it is running (or whose condition is false) releases its
dependants as failed, with the reason. Each is a light actor at /services/<id>, supervised like
a job (protected, max_restart, recurring_period) with this supervisor's backoff; its output goes
to the node log and its result, when it ends for good, to `result:<id>` as a job's would. At
shutdown they stop one by one in the reverse of their start order, redis-server last.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import attrs
import redis

from g8os.actors.base import Actor
from g8os.actors.process import Policy, ProcessActor, ProcessHost
from g8os.actors.supervision import Action, Backoff, Strategy, Supervisor, SupFlags
from g8os.messages.command import Command, Result, State, flag_key, result_key
from g8os.messages.config import ConfigGet
from g8os.messages.core import Subscribe
from g8os.messages.errors import G8Error, NotFound
from g8os.messages.internal import ActorOp, Call
from g8os.messages.job import JobKill
from g8os.system import bootconfig, redis_server
from g8os.system import spawn as spawner
from g8os.system.bootconfig import CONDITION_TIMEOUT, PSEUDO_DEPENDENCIES, Startup
from g8os.system.output import Message
from g8os.system.redisconn import Outbox, connect

READY_POLL = 0.02
READY_TIMEOUT = 10.0
PROTECTED = Backoff(initial=0.5, factor=1.5, cap=60.0, reset_after=10.0)
REDIS = redis_server.SERVICE
RETRY_FLUSH = 0.2
# At shutdown each startup service gets SIGTERM and this long to exit before SIGKILL, and all of
# them together this long: the root kills this actor 10 s after asking it to stop, and
# redis-server (stopped last) must still get its turn.
STOP_GRACE = 3.0
STOP_BUDGET = 6.0
STOP_ALL = 9.0      # redis-server's turn ends here at the latest (at least 1 s of it)
# Node secrets never leave the node through config.get: keys whose name says they hold one.
SECRET_KEY = re.compile(r"password|secret|token|credential", re.IGNORECASE)


class Unit:
    """A startup service: its spec, its light actor, and where it stands in the boot."""

    def __init__(self, spec: Startup, process: ProcessActor) -> None:
        self.spec = spec
        self.process = process
        self.status = "pending"   # pending | starting | running | done | failed | skipped
        self.reason = ""          # why it waits, failed or was skipped
        self.ready = False        # running by its readiness rule: its dependants may start
        self.started = False      # its first start happened (in this incarnation)
        self.condition_held = False
        self.checker: ProcessActor | None = None   # its condition, while it runs
        self.matcher = re.compile(spec.running_match) if spec.running_match else None


class ServiceSupervisor(ProcessHost, Actor):
    kind = "service_supervisor"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=None, backoff=PROTECTED)

    def on_start(self) -> bool:
        self.init_host(Path(self.config.runtime_dir) / "services")
        for record in self.leftover_records():
            if record.get("was_alive"):
                self.log(f"killed {record['argv'][0]} (pid {record['pid']}) left by a previous incarnation")
            self.drop_record(record["command"]["id"])
        self.services = Supervisor(self.flags, ())
        self._lines: list[str] = []
        self.units: dict[str, Unit] = {}           # in start order: dependencies first
        self.checks: dict[str, Unit] = {}          # condition checker name → its service
        self.started_order: list[str] = []         # startup services, in the order they first started
        self.booted = False
        self._advancing = self._advance_again = self._retry_pending = False
        self.outbox = Outbox(connect(self.config.redis))
        self.boot = bootconfig.current(self.config.config_dir)
        self._add(REDIS, Command(id=REDIS, command="service", arguments={}),
                  redis_server.argv(redis_server.write_config(self.config)), policy=Policy(protected=True))
        for spec in self.boot.startup:
            argv, env, cwd, stdin = spec.process()
            process = self._add(spec.id, spec.job(), argv, env=env, cwd=cwd, stdin=stdin.encode(),
                                policy=Policy(max_restart=spec.max_restart,
                                              recurring_period=spec.recurring_period,
                                              protected=spec.protected))
            self.units[spec.id] = Unit(spec, process)
        for error in self.boot.errors:
            self.log(f"boot config: {error}")
            self.emit("/service/config_error", self.path, **error.to_dict())
        self._redis_probe = connect(self.config.redis, timeout=0.5)
        self._start_service(REDIS)
        return False  # Ready once redis answers (see _probe)

    def _add(self, name: str, command: Command, argv: list[str], *, policy: Policy,
             env: dict[str, str] | None = None, cwd: str = "", stdin: bytes = b"") -> ProcessActor:
        process = ProcessActor(self, name, f"{self.path.rstrip('/')}/{name}", command, argv, env=env,
                               cwd=cwd, stdin=stdin, policy=policy)
        self.processes[name] = process
        self.services.add(policy.spec(name))
        return process

    def _start_service(self, name: str) -> None:
        process = self.processes[name]
        process.start()
        if process.state != "running":
            return  # it could not start: process_failed_to_start() has dealt with it
        self.services.started(name)
        if name == REDIS:
            self.after(READY_POLL, "_probe", process.generation)
            return
        unit = self.units[name]
        self.emit("/service/started", process.path, pid=process.pid, run=process.runs)
        if not unit.ready and unit.matcher is None and unit.spec.running_delay >= 0:
            self.after(unit.spec.running_delay, "_delay_elapsed", name, process.generation)

    def _probe(self, generation: int) -> None:
        process = self.processes[REDIS]
        if process.generation != generation or process.state != "running":
            return
        try:
            self._redis_probe.ping()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            self.after(READY_POLL, "_probe", generation)
            return
        except redis.ResponseError:
            pass  # answering at all is enough (e.g. loading)
        process.state = "running"
        self.emit("/service/ready", process.path, pid=process.pid)
        if not getattr(self, "_announced", False):
            self.ready()
        if not self.booted:
            # The startup services may use Redis (and publish their results there): they start
            # once it answers, and only once per incarnation. redis-server gets its flag as they
            # do: a running service, followed as a job (`g8os logs redis`).
            self.booted = True
            self._reset_job(REDIS)
            self._advance()

    # ---- the boot: dependencies, conditions, readiness --------------------------------------

    def _advance(self) -> None:
        """Start every pending service whose dependencies are all running; fail each one whose
        dependency failed. Re-entrant calls (a start that fails at once) loop here instead."""
        if self._advancing:
            self._advance_again = True
            return
        self._advancing = True
        try:
            again = True
            while again and not self._stopping:
                self._advance_again = False
                self._advance_once()
                again = self._advance_again
        finally:
            self._advancing = False

    def _advance_once(self) -> None:
        # Units are in dependency order, so a failure reaches every dependant in this one pass.
        for unit in self.units.values():
            if unit.status != "pending" or unit.checker is not None:
                continue
            blocked, waiting = "", []
            for dependency in unit.spec.after:
                if dependency in PSEUDO_DEPENDENCIES:
                    continue
                other = self.units.get(dependency)
                if other is None:
                    blocked = f"dependency `{dependency}` is not valid (see config.get errors)"
                    break
                if other.status in ("failed", "skipped"):
                    blocked = f"dependency `{dependency}` {other.status}: {other.reason}"
                    break
                if not other.ready:
                    waiting.append(dependency)
            if blocked:
                self._fail_unstarted(unit, "failed", blocked)
            elif waiting:
                unit.reason = "waiting for " + ", ".join(waiting)
            elif unit.spec.condition and not unit.condition_held:
                self._check_condition(unit)
            else:
                self._first_start(unit)

    def _first_start(self, unit: Unit) -> None:
        name = unit.spec.id
        unit.status, unit.reason, unit.started = "starting", "", True
        self.started_order.append(name)
        self._reset_job(name)
        self._start_service(name)

    def _reset_job(self, name: str) -> None:
        """The service's job keys start afresh: the flag (known, running) without the result a
        previous run left (Redis keeps its data across a restart of the plane)."""
        try:
            pipe = self.outbox.conn.pipeline(transaction=True)
            pipe.delete(result_key(name), flag_key(name))
            pipe.rpush(flag_key(name), "")
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.log(f"{name}: could not reset its job keys: {exc}")

    def _check_condition(self, unit: Unit) -> None:
        name = f"{unit.spec.id}:condition"
        command = Command(id=name, command="bash", arguments={"script": unit.spec.condition})
        checker = ProcessActor(self, name, unit.process.path, command, ["sh", "-c", unit.spec.condition])
        unit.checker, unit.reason = checker, f"checking its condition `{unit.spec.condition}`"
        self.checks[name] = unit
        checker.start()
        if checker.state == "running":
            self.after(CONDITION_TIMEOUT, "_condition_deadline", name, checker.generation)

    def _condition_deadline(self, name: str, generation: int) -> None:
        unit = self.checks.get(name)
        checker = unit.checker if unit is not None else None
        if checker is not None and checker.generation == generation and checker.state == "running":
            checker.last_error = f"did not answer within {CONDITION_TIMEOUT}s"
            checker.kill(signal.SIGKILL)

    def _condition_done(self, unit: Unit, checker: ProcessActor, error: str = "") -> None:
        self.checks.pop(checker.name, None)
        self.drop_record(checker.name)
        unit.checker = None
        if not error and checker.succeeded:
            unit.condition_held = True
            unit.reason = ""
            self._advance()
            return
        why = error or checker.last_error or "false"
        self._fail_unstarted(unit, "skipped", f"condition `{unit.spec.condition}` is false ({why})")

    def _delay_elapsed(self, name: str, generation: int) -> None:
        unit = self.units[name]
        if unit.process.generation == generation and unit.process.state == "running":
            self._ready(unit)

    def _ready(self, unit: Unit) -> None:
        if unit.ready or self._stopping:
            return
        unit.ready, unit.status, unit.reason = True, "running", ""
        self.emit("/service/ready", unit.process.path, pid=unit.process.pid or None)
        self.log(f"{unit.spec.id} is running")
        self._advance()

    def _fail_unstarted(self, unit: Unit, status: str, reason: str) -> None:
        """A service that never ran: failed (its dependency did) or skipped (its condition)."""
        name = unit.spec.id
        unit.status, unit.reason = status, reason
        unit.process.state = "ended"
        unit.process.last_error = reason
        self.services.remove(name)
        self._reset_job(name)
        # 412: a precondition of the service does not hold.
        self.outbox.result(Result.failure(unit.process.command, code=412, message=reason, critical=reason))
        self.end_subscriptions(name, str(State.ERROR))
        self.emit(f"/service/{status}", unit.process.path, reason=reason)
        self.log(f"{name} {status}: {reason}")
        self._advance()

    def _end(self, unit: Unit, result: Result) -> None:
        """A started service ended for good: its result, and its dependants released if it never
        got to run."""
        name, process = unit.spec.id, unit.process
        process.state = "ended"
        self.services.remove(name)
        self.drop_record(name)
        if result.state == State.SUCCESS:
            unit.status, unit.reason = "done", ""
        else:
            unit.status = "failed"
            unit.reason = process.last_error or result.critical or f"{result.state} ({result.code})"
        self.outbox.result(result)
        self.end_subscriptions(name, str(result.state))
        self.emit("/service/ended", process.path, state=str(result.state), code=result.code,
                  reason=unit.reason)
        self.log(f"{name} {unit.status}" + (f": {unit.reason}" if unit.reason else ""))
        self._advance()

    # ---- what processes report ---------------------------------------------------------------

    def process_message(self, process: ProcessActor, message: Message, flags: int) -> None:
        self._lines.append(f"{process.name}[{process.pid}] {message.text}")
        unit = self.units.get(process.name)
        if unit is not None and not unit.ready and unit.matcher is not None \
                and unit.matcher.search(message.text):
            self._ready(unit)

    def after_message(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self.log(*lines)
        outbox = getattr(self, "outbox", None)
        if outbox is not None and not outbox.flush() and not self._retry_pending:
            self._retry_pending = True  # Redis is down: try again soon (after_message runs next)
            self.after(RETRY_FLUSH, "_retry_flush")

    def _retry_flush(self) -> None:
        self._retry_pending = False

    def process_failed_to_start(self, process: ProcessActor, error: G8Error) -> None:
        checked = self.checks.get(process.name)
        if checked is not None:
            self._condition_done(checked, process, error=f"cannot run it: {error.message}")
            return
        self.emit("/service/failed", process.path, error=error.message)
        unit = self.units.get(process.name)
        if unit is None:  # redis-server
            self.after(PROTECTED.cap, "_retry_start", process.name)
            return
        process.last_error = error.message
        if not process.policy.protected:
            self._end(unit, Result.failure(process.command, code=error.code, message=error.message,
                                           critical=error.critical or error.message))
            return
        # Protected: try again, with the same backoff as a process that keeps dying at once.
        self.services.started(process.name)
        decision = self.services.exited(process.name, normal=False, reason=error.message)
        unit.reason = error.message
        process.state = "backoff"
        self.after(decision.delay, "_restart_service", process.name, process.generation)

    def _retry_start(self, name: str) -> None:
        if not self._stopping:
            self._start_service(name)

    def process_exited(self, process: ProcessActor) -> None:
        if self._stopping:
            return
        checked = self.checks.get(process.name)
        if checked is not None:
            self._condition_done(checked, process)
            return
        unit = self.units.get(process.name)
        if unit is not None and process.restart_requested:
            process.restart_requested = False
            process.restarts += 1
            self.services.stopped(process.name)
            self.emit("/service/restarted", process.path, reason="actor.restart")
            self._start_service(process.name)
            return
        if unit is not None and process.succeeded and not unit.ready:
            self._ready(unit)  # a successful exit: a one-shot service did its work
        decision = self.services.exited(process.name, normal=process.succeeded, reason=process.last_error)
        if unit is not None and unit.spec.recurring_period:
            process.state = "waiting"
            self.emit("/service/exited", process.path, reason=process.last_error,
                      delay=unit.spec.recurring_period)
            self.after(unit.spec.recurring_period, "_restart_service", process.name, process.generation)
            return
        restart = decision.action == Action.RESTART and process.name in decision.restart
        if restart and process.policy.max_restart and process.runs >= process.policy.max_restart:
            restart = False
        if restart:
            self.emit("/service/exited", process.path, reason=process.last_error, delay=decision.delay)
            process.restarts += 1
            process.state = "backoff"
            self.after(decision.delay, "_restart_service", process.name, process.generation)
            return
        if unit is not None:
            self._end(unit, process.result())

    def _restart_service(self, name: str, generation: int) -> None:
        process = self.processes.get(name)
        if process is not None and process.generation == generation and not self._stopping \
                and process.state in ("backoff", "waiting"):
            self.emit("/service/restarted", process.path, restarts=process.restarts)
            self._start_service(name)

    # ---- shutdown: reverse start order, redis-server last --------------------------------------

    def on_stop(self) -> None:
        self._stopping = True
        if not hasattr(self, "units"):
            return  # on_start never ran to the end: nothing of ours is running
        for unit in self.checks.values():
            if unit.checker is not None and unit.checker.pid:
                spawner.signal_group(unit.checker.pid, signal.SIGKILL)
        started = time.monotonic()
        deadline = started + STOP_BUDGET
        for name in reversed(self.started_order):
            process = self.processes[name]
            if process.state == "running" and process.pid:
                grace = min(STOP_GRACE, max(0.1, deadline - time.monotonic()))
                self.log(f"stopping {name} (pid {process.pid})")
                self._stop_one(process, grace)
        self.outbox.flush()  # results published while Redis is still there
        redis_process = self.processes[REDIS]
        if redis_process.state == "running" and redis_process.pid:
            self._stop_one(redis_process, max(1.0, min(STOP_GRACE, started + STOP_ALL - time.monotonic())))
        self.stop_processes(grace=0.5)  # anything left (a process that raced the above)
        for name in [*self.processes, *self.checks]:
            self.drop_record(name)

    def _stop_one(self, process: ProcessActor, grace: float) -> None:
        """SIGTERM its process group, wait for it up to `grace`, then SIGKILL. Shutdown path only:
        the actor serves nothing else any more, so it may wait here."""
        spawner.signal_group(process.pid, signal.SIGTERM)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
            if sig == signal.SIGKILL:
                spawner.signal_group(process.pid, signal.SIGKILL)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                for pid, _status in self.reaper.reap():
                    gone = self.by_pid.pop(pid, None)
                    if gone is not None and gone.pid == pid:
                        gone.pid, gone.state = 0, "ended"   # never signal a pid that may be reused
                if not process.pid:
                    return
                time.sleep(0.01)

    # ---- core.subscribe and its job.kill, passed on by the JobSupervisor ----------------------

    def handle_core_subscribe(self, request: Subscribe, call: Call) -> Any:
        process = self.processes.get(request.id)
        if process is None:
            raise NotFound(f"no service {request.id!r}")
        # The same subscription again: the JobSupervisor restarted and passed it on once more.
        # It goes on where it was, without the recent output a second time.
        again = self.end_subscription(call.command.id, answer=False)
        return self.subscribe(process, call, replay=not again)

    def handle_job_kill(self, request: JobKill, call: Call) -> bool:
        """Only for the subscriptions to a service (a service is stopped by actor.kill)."""
        if self.end_subscription(request.id):
            return True
        raise NotFound(f"no subscription {request.id!r} to a service")

    # ---- config.get ------------------------------------------------------------------------------

    def handle_config_get(self, request: ConfigGet, call: Call) -> Any:
        document = {
            "node": self._node_settings(),
            "startup": [self._startup_entry(unit) for unit in self.units.values()],
            "extensions": [extension.to_dict() for extension in self.boot.extensions],
            "errors": [error.to_dict() for error in self.boot.errors],
        }
        return document[request.section] if request.section else document

    def _node_settings(self) -> dict[str, Any]:
        settings = _public(attrs.asdict(self.config) if attrs.has(type(self.config)) else {})
        redis_settings = settings.get("redis")
        if isinstance(redis_settings, dict):
            redis_settings["auth"] = bool(getattr(self.config.redis, "password", ""))
        settings["config_files"] = list(self.boot.files)
        return settings

    def _startup_entry(self, unit: Unit) -> dict[str, Any]:
        entry = unit.spec.to_dict()
        entry.update(state=self._state(unit), reason=unit.reason, ready=unit.ready,
                     pid=unit.process.pid or None, runs=unit.process.runs, restarts=unit.process.restarts)
        return entry

    # ---- introspection -------------------------------------------------------------------------

    @staticmethod
    def _state(unit: Unit) -> str:
        """What a service is doing, for the tree and config.get: its boot status, or what its
        process is doing between two runs."""
        if unit.status in ("starting", "running") and unit.process.state in ("backoff", "waiting"):
            return unit.process.state
        return unit.status

    def light_nodes(self) -> list[dict[str, Any]]:
        return [self._service_node(p) for p in self.processes.values()]

    def _service_node(self, process: ProcessActor) -> dict[str, Any]:
        node = process.node()
        node["kind"] = "service"
        node["protected"] = process.policy.protected
        unit = self.units.get(process.name)
        if unit is not None:
            node.update(state=self._state(unit), ready=unit.ready, after=list(unit.spec.after),
                        reason=unit.reason)
            if unit.reason and not node["last_error"]:
                node["last_error"] = unit.reason
        return node

    def light_op(self, op: ActorOp) -> Any:
        process = self.light_process(op.path)
        if op.op == "inspect":
            node = self._service_node(process)
            node["recent"] = [{"level": m.level, "text": m.text[:200]} for m in list(process.recent)[-10:]]
            return node
        if process.state != "running":
            raise NotFound(f"{op.path} is {process.state}, not running")
        signal_number = op.signal if op.op == "kill" else 15
        if op.op == "restart" and process.name in self.units:
            process.restart_requested = True  # run again, whatever its spec says
        process.last_error = (f"killed by actor.kill (signal {signal_number})" if op.op == "kill"
                              else f"{op.op} by actor.{op.op}")
        process.kill(signal_number)
        return {"path": op.path, "pid": process.pid, "signal": signal_number}


def _public(value: Any) -> Any:
    """`value` without the entries whose key names a secret (the Redis password, above all)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not SECRET_KEY.search(str(k))}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value

