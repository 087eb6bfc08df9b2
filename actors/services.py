"""ServiceSupervisor: the node's own daemons as light ProcessActors, redis-server first.

redis-server is protected: it restarts forever, with backoff. The supervisor is Ready only
once Redis answers, so the actors started after it find the bus up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from g8os.actors.base import Actor
from g8os.actors.process import Policy, ProcessActor, ProcessHost
from g8os.actors.supervision import Action, Backoff, Strategy, Supervisor, SupFlags
from g8os.messages.command import Command
from g8os.messages.errors import G8Error, NotFound
from g8os.messages.internal import ActorOp
from g8os.system import redis_server
from g8os.system.output import Message
from g8os.system.redisconn import connect

READY_POLL = 0.02
READY_TIMEOUT = 10.0
PROTECTED = Backoff(initial=0.5, factor=1.5, cap=60.0, reset_after=10.0)


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
        self.ready_since: dict[str, float] = {}
        self._lines: list[str] = []
        self._add("redis", redis_server.argv(redis_server.write_config(self.config)))
        self._redis_probe = connect(self.config.redis, timeout=0.5)
        self._probe_deadline = 0.0
        self._start_service("redis")
        return False  # Ready once redis answers (see _probe)

    def _add(self, name: str, argv: list[str]) -> None:
        command = Command(id=name, command="service", arguments={})
        policy = Policy(protected=True)
        self.processes[name] = ProcessActor(self, name, f"{self.path.rstrip('/')}/{name}", command, argv,
                                            policy=policy)
        self.services.add(policy.spec(name))

    def _start_service(self, name: str) -> None:
        process = self.processes[name]
        process.start()
        if process.state == "running":
            self.services.started(name)
            if name == "redis":
                self._probe_deadline = 0.0
                self.after(READY_POLL, "_probe", process.generation)

    def _probe(self, generation: int) -> None:
        process = self.processes["redis"]
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

    def process_message(self, process: ProcessActor, message: Message, flags: int) -> None:
        self._lines.append(f"{process.name}[{process.pid}] {message.text}")

    def after_message(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self.log(*lines)

    def process_failed_to_start(self, process: ProcessActor, error: G8Error) -> None:
        self.emit("/service/failed", process.path, error=error.message)
        self.after(PROTECTED.cap, "_retry_start", process.name)

    def _retry_start(self, name: str) -> None:
        if not self._stopping:
            self._start_service(name)

    def process_exited(self, process: ProcessActor) -> None:
        if self._stopping:
            return
        decision = self.services.exited(process.name, normal=process.succeeded, reason=process.last_error)
        self.emit("/service/exited", process.path, reason=process.last_error, delay=decision.delay)
        if decision.action == Action.RESTART:
            process.restarts += 1
            process.state = "backoff"
            self.after(decision.delay, "_restart_service", process.name, process.generation)

    def _restart_service(self, name: str, generation: int) -> None:
        process = self.processes.get(name)
        if process is not None and process.generation == generation and not self._stopping:
            self.emit("/service/restarted", process.path, restarts=process.restarts)
            self._start_service(name)

    def on_stop(self) -> None:
        self._stopping = True
        self.stop_processes(grace=3.0)
        for name in list(self.processes):
            self.drop_record(name)

    def light_nodes(self) -> list[dict[str, Any]]:
        return [self._service_node(p) for p in self.processes.values()]

    @staticmethod
    def _service_node(process: ProcessActor) -> dict[str, Any]:
        node = process.node()
        node["kind"] = "service"
        node["protected"] = True
        return node

    def light_op(self, op: ActorOp) -> Any:
        process = self.light_process(op.path)
        if op.op == "inspect":
            return self._service_node(process)
        if process.state != "running":
            raise NotFound(f"{op.path} is {process.state}, not running")
        signal_number = op.signal if op.op == "kill" else 15
        process.last_error = f"{op.op} by actor.{op.op}"
        process.kill(signal_number)
        return {"path": op.path, "pid": process.pid, "signal": signal_number}
