"""JobSupervisor: runs the node's jobs (core.system, bash) as light ProcessActors.

It writes what its jobs produce to Redis itself (stream entries and results, batched per
message through an Outbox): bulk output never crosses the actor plane. Each job's record is
kept in the state dir while it lives, so a restarted JobSupervisor kills what its previous
incarnation left running and either re-runs each job per its spec or gives it an ERROR result:
no job is ever left without a result.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import psutil
import redis

from g8os.actors.base import DEFERRED, Actor
from g8os.actors.process import Policy, ProcessActor, ProcessHost
from g8os.actors.supervision import Action, Strategy, Supervisor, SupFlags
from g8os.messages import registry
from g8os.messages.command import Command, Flag, Result, State, flag_key, result_key, stream_message
from g8os.messages.config import ExtensionRequest
from g8os.messages.core import Bash, Subscribe, System
from g8os.messages.errors import G8Error, InvalidArgument, NotFound, Unavailable
from g8os.messages.internal import ActorOp, Call, CallReply
from g8os.messages.job import JobKill, JobKillAll, JobList, JobUnschedule
from g8os.system import bootconfig, redis_server
from g8os.system.output import Message, parse_statsd
from g8os.system.redisconn import JOB_INFLIGHT, JOB_QUEUE, Outbox, QueueConsumer, connect

RETRY_FLUSH = 0.2
FINISHED_MEMORY = 10_000
# How long a core.subscribe to a job accepted but not yet taken from JOB_QUEUE waits for it. The
# subscription travels as a call and the job through Redis: nothing orders the two.
PENDING_SUBSCRIPTION = 5.0
SUBSCRIBED = "subscribed:"   # the corr of a core.subscribe passed on to the ServiceSupervisor


class JobSupervisor(ProcessHost, Actor):
    kind = "job_supervisor"
    # Jobs are independent: one_for_one, and no intensity (each job bounds itself by max_restart).
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=None)

    def on_start(self) -> bool:
        self.init_host(Path(self.config.runtime_dir) / "jobs")
        boot = bootconfig.current(self.config.config_dir)
        bootconfig.install(boot)  # extension commands
        # core.subscribe and job.kill of these go to the ServiceSupervisor, which runs them
        self.service_ids = {redis_server.SERVICE, *(s.id for s in boot.startup)}
        self.jobs = Supervisor(self.flags, ())
        self.outbox = Outbox(connect(self.config.redis))
        self.queues: dict[str, deque[ProcessActor]] = {}
        self.queue_owner: dict[str, str] = {}
        self.pending_subscriptions: dict[str, list[Call]] = {}   # job id → calls waiting for it
        self.relayed: dict[str, tuple[Call, Any]] = {}  # corr → (call passed to /services, whom to answer)
        self._services_seen = self.directory.get("services")
        self._retry_pending = False
        self.unpublished: set[str] = set()   # jobs whose record holds a result not yet in Redis
        # Ids of jobs that ended lately: a job re-sent after a gateway or JobSupervisor restart
        # may arrive after its first copy ended; it must not run twice.
        self.finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        for record in self.leftover_records():
            self._recover(record)
        # Jobs arrive through Redis (the gateway moves each accepted process job to JOB_QUEUE in
        # the same atomic step that accepts it): a thread takes them, the actor runs them.
        self._incoming: collections.deque[tuple[list[bytes], bool]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self._wake_r, self._take_jobs)
        self.consumer = QueueConsumer(self.config.redis, JOB_QUEUE, JOB_INFLIGHT, self._delivered)
        self.consumer.start()
        return True

    def on_stop(self) -> None:
        if hasattr(self, "consumer"):
            self.consumer.stop.set()
        self.stop_processes(grace=2.0)
        self.outbox.flush()

    def after_message(self) -> None:
        if self.outbox.flush():
            for name in self.unpublished:
                self.drop_record(name)
            self.unpublished.clear()
            return
        if not self._retry_pending:
            self._retry_pending = True
            self.after(RETRY_FLUSH, "_retry_flush")

    def _retry_flush(self) -> None:
        self._retry_pending = False  # after_message() runs next and re-arms if still failing

    # ---- accepting jobs --------------------------------------------------------------------

    def _delivered(self, items: list[bytes], recovering: bool) -> None:
        """On the consumer thread: hand a batch to the actor thread."""
        if items:
            self._incoming.append((items, recovering))
            os.write(self._wake_w, b"\0")

    def _take_jobs(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._incoming:
            items, recovering = self._incoming.popleft()
            for raw in items:
                self._submit(raw, recovering)

    def _submit(self, raw: bytes, recovering: bool) -> None:
        try:
            command = Command.from_wire(json.loads(raw))
            info = registry.lookup(command.command)
            if info is None:
                raise InvalidArgument(f"unknown command {command.command!r}")
            request = registry.parse_arguments(info, command.arguments)
        except Exception as exc:  # judged by the gateway already: only a foreign writer gets here
            self.log(f"dropped a malformed job from {JOB_QUEUE}: {exc}")
            self.outbox.add("lrem", JOB_INFLIGHT, raw)
            return
        if not self._known(command.id, recovering):
            try:
                self._accept(command, request)
            except Exception as exc:  # one bad job must not take the others down with us
                self._reject(command, exc)
        self.outbox.add("lrem", JOB_INFLIGHT, raw)

    def _known(self, job_id: str, recovering: bool) -> bool:
        """Re-sent after a restart and already ours, or already ended."""
        if job_id in self.processes or job_id in self.finished:
            return True
        if not recovering:
            return False
        try:
            return bool(self.outbox.conn.exists(result_key(job_id)))
        except redis.RedisError:
            return False  # Redis is down: the job's records decide (it is not ours: run it)

    def _reject(self, command: Command, exc: Exception) -> None:
        self.processes.pop(command.id, None)
        if command.id in self.jobs:
            self.jobs.remove(command.id)
        if isinstance(exc, G8Error):
            result = Result.failure(command, code=exc.code, message=exc.message, critical=exc.critical)
        else:
            result = Result.failure(command, code=500, message=f"could not start the job: {exc!r}",
                                    critical=traceback.format_exc()[-4000:])
        self.outbox.result(result)
        self.drop_record(command.id)
        self.finished[command.id] = None
        for call in self.pending_subscriptions.pop(command.id, []):
            self.reply(call, {"id": command.id, "state": str(result.state)}, sender=self.reply_address(call))

    def _accept(self, command: Command, request: Any, *, runs: int = 0, first_start_ms: int = 0) -> None:
        if isinstance(request, System):
            argv, env, cwd, stdin = [request.name, *request.args], request.env, request.dir, request.stdin
        elif isinstance(request, Bash):
            argv, env, cwd, stdin = ["sh", "-c", request.script], None, "", request.stdin
        elif isinstance(request, ExtensionRequest):  # an [extension.<name>] of the boot config
            argv, env, cwd, stdin = request.process()
        else:
            raise InvalidArgument(f"{command.command} is not a process command")
        policy = Policy(max_restart=command.max_restart or 0, recurring_period=command.recurring_period or 0,
                        max_time=command.max_time or 0)
        process = ProcessActor(self, command.id, f"{self.path.rstrip('/')}/{command.id}", command, argv,
                               env=env, cwd=cwd, stdin=stdin.encode(), policy=policy)
        process.runs, process.first_start_ms = runs, first_start_ms
        self.processes[command.id] = process
        self.jobs.add(policy.spec(command.id))
        for call in self.pending_subscriptions.pop(command.id, []):
            self.subscribe(process, call)
        if command.queue:
            waiting = self.queues.setdefault(command.queue, deque())
            if command.queue in self.queue_owner:
                waiting.append(process)
                self.save_record(process)
                return
            self.queue_owner[command.queue] = command.id
        self._run(process)

    def _run(self, process: ProcessActor) -> None:
        process.start()
        if process.state == "running":
            self.jobs.started(process.name)
            self.emit("/job/start", process.path, pid=process.pid, run=process.runs,
                      command=process.command.command)

    # ---- what processes report ---------------------------------------------------------------

    def process_message(self, process: ProcessActor, message: Message, flags: int) -> None:
        if process.command.stream:
            self.outbox.stream(process.name, [stream_message(
                process.container, process.name, message.text, message.level, flags, message.epoch_ns)])
        # The node log takes every message (batched to the LogActor); metrics go to the StatsActor.
        self.log_output(process.name, message.level, message.text, message.epoch_ns, flags)
        if message.level == 10:
            stat = parse_statsd(message.text)
            if stat is not None:
                self.metric(stat.key, stat.value, stat.op, stat.tags, message.epoch_ns / 1e9)

    def process_failed_to_start(self, process: ProcessActor, error: G8Error) -> None:
        self._finish(process, Result.failure(process.command, code=error.code, message=error.message,
                                             critical=error.critical))

    def process_exited(self, process: ProcessActor) -> None:
        name = process.name
        if process.restart_requested:
            process.restart_requested = False
            process.restarts += 1
            self.emit("/job/restarted", process.path, reason="actor.restart")
            self._run(process)
            return
        if process.killed_by is not None or process.unscheduled:
            self.jobs.stopped(name)
            self._finish(process, process.result())
            return
        decision = self.jobs.exited(name, normal=process.succeeded, reason=process.last_error)
        if process.policy.recurring_period:
            process.state = "waiting"
            self.after(process.policy.recurring_period, "_rerun", name, process.generation)
            return
        restart = decision.action == Action.RESTART and name in decision.restart
        if restart and process.policy.max_restart and process.runs >= process.policy.max_restart:
            restart = False
        if not restart:
            self._finish(process, process.result())
            return
        process.restarts += 1
        process.state = "backoff"
        self.emit("/job/restarting", process.path, reason=decision.reason, delay=decision.delay)
        self.save_record(process)
        self.after(decision.delay, "_rerun", name, process.generation)

    def _rerun(self, name: str, generation: int) -> None:
        process = self.processes.get(name)
        if process is None or process.generation != generation or process.state not in ("waiting", "backoff"):
            return
        if process.unscheduled:
            self._finish(process, process.result())
            return
        self._run(process)

    def _finish(self, process: ProcessActor, result: Result) -> None:
        """The job's one result: publish it, end its stream, release its queue and followers."""
        process.state = "ended"
        self.finished[process.name] = None
        if len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)
        if process.command.stream:
            entry, _flag = process.end_message()
            self.outbox.stream(process.name, [entry])
        # The end of the job in the node log too: log subscribers see every job end, whatever
        # levels they chose (as in the original).
        if result.state == State.SUCCESS:
            self.log_output(process.name, 1, "", time.time_ns(), Flag.EXIT_SUCCESS)
        else:
            self.log_output(process.name, 2, "", time.time_ns(), Flag.EXIT_ERROR)
        self.outbox.result(result)
        self.processes.pop(process.name, None)
        if process.name in {s.name for s in self.jobs.specs()}:
            self.jobs.remove(process.name)
        if self.outbox.flush():
            self.drop_record(process.name)
        else:
            # Redis is down: keep the result with the record until the outbox gets through.
            self.save_record(process, result=result.to_json())
            self.unpublished.add(process.name)
        self.emit("/job/end", process.path, state=str(result.state), code=result.code)
        self.end_subscriptions(process.name, str(result.state))
        queue = process.command.queue
        if queue and self.queue_owner.get(queue) == process.name:
            del self.queue_owner[queue]
            waiting = self.queues.get(queue)
            while waiting:
                following = waiting.popleft()
                if following.name in self.processes and following.state == "queued":
                    self.queue_owner[queue] = following.name
                    self._run(following)
                    break
            if not waiting:
                self.queues.pop(queue, None)

    # ---- recovery after a crash of this supervisor --------------------------------------------

    def _recover(self, record: dict[str, Any]) -> None:
        try:
            command = Command.from_wire(record["command"])
        except Exception:
            return
        if "result" in record:
            self.outbox.add("result", command.id, record["result"])
            self.unpublished.add(command.id)
            self.finished[command.id] = None
            return
        self.drop_record(command.id)
        policy = record.get("policy", {})
        runs = record.get("runs", 0)
        restartable = policy.get("protected") or policy.get("recurring_period") or (
            policy.get("max_restart") and runs < policy["max_restart"])
        info = registry.lookup(command.command)
        if restartable and info is not None:
            # The record holds the whole command (stdin included): run it again as it was asked.
            request = registry.parse_arguments(info, command.arguments)
            self.emit("/job/restarting", f"{self.path}/{command.id}", reason="job supervisor restarted")
            self._accept(command, request, runs=runs, first_start_ms=record.get("first_start_ms", 0))
            return
        pid = record.get("pid")
        lost = f"process {pid} was killed with it" if record.get("was_alive") else "its process was lost"
        self.finished[command.id] = None
        self.outbox.result(Result.failure(
            command, code=500, message="the job supervisor died while the job ran",
            critical=f"job supervisor {self.path} restarted; {lost}",
            starttime=record.get("first_start_ms") or None))

    # ---- commands ------------------------------------------------------------------------------

    def _job(self, job_id: str) -> ProcessActor:
        process = self.processes.get(job_id)
        if process is None:
            raise NotFound(f"no job {job_id!r}")
        return process

    def handle_job_list(self, request: JobList, call: Call) -> list[dict[str, Any]]:
        processes = [self._job(request.id)] if request.id else list(self.processes.values())
        return [_job_info(p) for p in processes]

    def handle_job_kill(self, request: JobKill, call: Call) -> bool:
        if request.id not in self.processes:
            ended = self._end_subscription(request.id, call)
            if ended is not None:
                return ended
        process = self._job(request.id)
        if process.state == "running":
            return process.kill(request.signal, as_state=State.KILLED,
                                reason=f"killed by job.kill (signal {request.signal})")
        process.killed_by = State.KILLED
        process.kill_reason = f"killed by job.kill while {process.state} (it was not running)"
        self._finish(process, process.result())
        return True

    def handle_job_killall(self, request: JobKillAll, call: Call) -> list[str]:
        killed = []
        for process in list(self.processes.values()):
            if process.policy.protected:
                continue
            self.handle_job_kill(JobKill(id=process.name, signal=request.signal), call)
            killed.append(process.name)
        return killed

    def handle_job_unschedule(self, request: JobUnschedule, call: Call) -> bool:
        process = self._job(request.id)
        process.unscheduled = True
        if process.state in ("waiting", "backoff"):
            self._finish(process, process.result())
        return True

    def handle_core_subscribe(self, request: Subscribe, call: Call) -> Any:
        if request.id not in self.processes:
            self._take_jobs()  # a delivery already on the consumer thread's side is taken first
        if request.id not in self.processes and request.id in self.service_ids:
            return self._to_services(call, f"{SUBSCRIBED}{call.command.id}")
        if request.id not in self.processes and self._accepted_not_taken(request.id):
            self.pending_subscriptions.setdefault(request.id, []).append(call)
            self.after(PENDING_SUBSCRIPTION, "_pending_expired", request.id, call.command.id)
            return DEFERRED
        return self.subscribe(self._job(request.id), call)

    def _to_services(self, call: Call, corr: str) -> Any:
        """A command about a startup service (the ServiceSupervisor runs those) is passed on; its
        answer comes back through us (call_reply). A subscription is passed on again to a
        restarted ServiceSupervisor (on_directory): it follows the service's next run."""
        services = self.directory.get("services")
        if services is None:
            raise Unavailable("the service supervisor is not reachable (restarting?); try again")
        self.relayed[corr] = (call, self.reply_address(call))
        self.send(services, Call(call.command, call.request, reply_to=self.myAddress, corr=corr))
        return DEFERRED

    def call_reply(self, msg: CallReply, sender: Any) -> None:
        entry = self.relayed.pop(msg.corr, None)
        if entry is not None:
            self.send(entry[1], msg)

    def on_directory(self) -> None:
        services = self.directory.get("services")
        if services is None or services == self._services_seen:
            return
        self._services_seen = services
        for corr, (call, _reply_to) in list(self.relayed.items()):
            if corr.startswith(SUBSCRIBED):
                self.send(services, Call(call.command, call.request, reply_to=self.myAddress, corr=corr))
            else:
                del self.relayed[corr]  # its answer died with the old incarnation: the gateway says 503

    def _accepted_not_taken(self, job_id: str) -> bool:
        """Accepted by the gateway (its flag exists) and without a result yet: on its way to us."""
        if job_id in self.finished:
            return False
        try:
            pipe = self.outbox.conn.pipeline(transaction=False)
            pipe.exists(flag_key(job_id))
            pipe.exists(result_key(job_id))
            flagged, ended = pipe.execute()
        except (redis.RedisError, OSError):
            return False
        return bool(flagged) and not ended

    def _pending_expired(self, job_id: str, subscriber: str) -> None:
        waiting = self.pending_subscriptions.get(job_id, [])
        for call in [c for c in waiting if c.command.id == subscriber]:
            waiting.remove(call)
            self.reply(call, error=NotFound(f"no job {job_id!r}"), sender=self.reply_address(call))
        if not waiting:
            self.pending_subscriptions.pop(job_id, None)

    def _end_subscription(self, subscriber: str, call: Call) -> Any:
        """job.kill of a core.subscribe job: it stops following and ends now. None: `subscriber`
        is not a subscription."""
        for target, waiting in self.pending_subscriptions.items():
            for pending in waiting:
                if pending.command.id == subscriber:
                    waiting.remove(pending)
                    self.reply(pending, {"id": target, "state": "unsubscribed"},
                               sender=self.reply_address(pending))
                    return True
        if f"{SUBSCRIBED}{subscriber}" in self.relayed:  # it follows a service
            return self._to_services(call, f"kill:{call.command.id}")
        return True if self.end_subscription(subscriber) else None

    # ---- introspection -------------------------------------------------------------------------

    def node_info(self) -> dict[str, Any]:
        return {"jobs": len(self.processes), "queues": {q: len(w) for q, w in self.queues.items()},
                "outbox": len(self.outbox),
                "pending_subscriptions": sum(len(w) for w in self.pending_subscriptions.values())}

    def light_nodes(self) -> list[dict[str, Any]]:
        return [p.node() for p in self.processes.values()]

    def light_op(self, op: ActorOp) -> Any:
        process = self.light_process(op.path)
        if op.op == "inspect":
            node = process.node()
            node["recent"] = [{"level": m.level, "text": m.text[:200]} for m in list(process.recent)[-10:]]
            return node
        if op.op == "kill":
            if process.state != "running":
                raise NotFound(f"{op.path} is {process.state}, not running")
            process.kill_reason = f"light actor {op.path} failed by actor.kill"
            process.last_error = process.kill_reason
            process.kill(op.signal)
            return {"path": op.path, "pid": process.pid, "signal": op.signal}
        if op.op == "restart":
            if process.state != "running":
                raise NotFound(f"{op.path} is {process.state}, not running")
            process.restart_requested = True
            process.kill(signal.SIGTERM)
            return {"path": op.path, "restarting": True}
        raise NotFound(f"unknown operation {op.op}")


def _job_info(process: ProcessActor) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": process.name, "cmd": process.command.to_wire(), "state": process.state,
        "pid": process.pid or None,
        "runs": process.runs, "restarts": process.restarts, "starttime": process.first_start_ms,
        "cpu": 0.0, "rss": 0, "vms": 0, "swap": 0,
    }
    if process.pid:
        try:
            # The same psutil.Process across calls, so cpu_percent measures since the last listing.
            if process.ps is None or process.ps.pid != process.pid:
                process.ps = psutil.Process(process.pid)
            proc = process.ps
            with proc.oneshot():
                memory = proc.memory_full_info()
                info.update(cpu=proc.cpu_percent(None), rss=memory.rss, vms=memory.vms,
                            swap=getattr(memory, "swap", 0))
        except psutil.Error:
            pass
    return info

