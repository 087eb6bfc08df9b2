"""RootActor: the top of the tree, under PID 1's watch.

Its children are independent node services (one_for_one): each finds its peers through the
directory the root publishes after every (re)start, so no restart has to cascade. If they fail
too often the root gives up, the node process exits and PID 1 restarts the whole plane.
"""

from __future__ import annotations

from typing import Any

from g8os.actors.base import DEFERRED, Actor, HeavySpec
from g8os.actors.disks import DiskSupervisor
from g8os.actors.files import FilesActor
from g8os.actors.gateway import GatewayActor
from g8os.actors.jobs import JobSupervisor
from g8os.actors.log import LogActor
from g8os.actors.services import ServiceSupervisor
from g8os.actors.stats import StatsActor
from g8os.actors.supervision import Strategy, SupFlags
from g8os.messages.actor import ActorInspect, ActorKill, ActorRestart, ActorTree
from g8os.messages.errors import FailedPrecondition, NotFound
from g8os.messages.internal import (
    ActorOp,
    Call,
    CallReply,
    Directory,
    Init,
    ReopenLogs,
    Shutdown,
    Stopped,
    TreeRequest,
)


class RootActor(Actor):
    kind = "root"
    flags = SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=60.0)
    keeps_spare = True

    def child_specs(self) -> list[HeavySpec]:
        # Start order: the log first (everyone reports to it), redis before its users, the
        # gateway last so that no command is consumed before its owner can take it.
        return [
            HeavySpec("log", LogActor),
            HeavySpec("services", ServiceSupervisor, shutdown=10.0),
            HeavySpec("jobs", JobSupervisor, shutdown=10.0),
            HeavySpec("stats", StatsActor),
            HeavySpec("files", FilesActor),
            HeavySpec("disks", DiskSupervisor, shutdown=15.0),
            HeavySpec("gateway", GatewayActor),
        ]

    def receiveMsg_Init(self, msg: Init, sender: Any) -> None:
        self.calls: dict[str, tuple[Call, Any]] = {}
        super().receiveMsg_Init(msg, sender)

    def child_ready(self, name: str) -> None:
        self.directory = {n: r.address for n, r in self.children.items()
                          if r.address is not None and r.state == "running"}
        self.directory["root"] = self.myAddress
        update = Directory(dict(self.directory))
        for record in self.children.values():
            if record.address is not None and record.state in ("running", "starting"):
                self.send(record.address, update)

    def receiveMsg_Shutdown(self, msg: Shutdown, sender: Any) -> None:
        self.emit("/node/shutdown", self.path, reason=msg.reason)
        self.stop_all(lambda: self.send(sender, Stopped(self.name or "root")))

    def receiveMsg_ReopenLogs(self, msg: ReopenLogs, sender: Any) -> None:
        log = self.directory.get("log")
        if log is not None:
            self.send(log, msg)

    # ---- actor.* ------------------------------------------------------------------------------

    def handle_actor_tree(self, request: ActorTree, call: Call) -> Any:
        corr = self.next_corr()
        self.calls[corr] = (call, call.reply_to)
        self.receiveMsg_TreeRequest(TreeRequest(corr), self.myAddress)
        return DEFERRED

    def tree_ready(self, corr: str, node: dict[str, Any], reply_to: Any) -> None:
        pending = self.calls.pop(corr, None)
        if pending is None:
            super().tree_ready(corr, node, reply_to)
            return
        call, target = pending
        found = _find(node, call.request.path)
        if found is None:
            self.reply(call, error=NotFound(f"no actor at {call.request.path}"), sender=target)
        else:
            self.reply(call, found, sender=target)

    def handle_actor_inspect(self, request: ActorInspect, call: Call) -> Any:
        if request.path == "/":
            node = self.tree_node()
            node["children"] = [self._child_stub(r) for r in self.children.values()]
            node["events"] = [{"ts": e.ts, "topic": e.topic, "path": e.path, "data": e.data}
                              for e in list(self.events)[-20:]]
            return node
        return self._op("inspect", request.path, 0, call)

    def handle_actor_kill(self, request: ActorKill, call: Call) -> Any:
        if request.path == "/":
            raise FailedPrecondition("the root is not killed through itself: send SIGTERM to the node")
        return self._op("kill", request.path, request.signal, call)

    def handle_actor_restart(self, request: ActorRestart, call: Call) -> Any:
        if request.path == "/":
            raise FailedPrecondition("the root is not restarted through itself: restart the node "
                                     "(core0 sandbox down, then up)")
        return self._op("restart", request.path, 15, call)

    def _op(self, op: str, path: str, signal: int, call: Call) -> Any:
        corr = self.next_corr()
        self.calls[corr] = (call, call.reply_to)
        value = self.actor_op(ActorOp(op, path, signal, corr), self.myAddress)
        if value is DEFERRED:
            return DEFERRED
        self.calls.pop(corr, None)
        return value

    def call_reply(self, msg: CallReply, sender: Any) -> None:
        pending = self.calls.pop(msg.corr, None)
        if pending is None:
            return
        call, target = pending
        self.send(target or sender, CallReply(call.command.id, msg.ok, msg.value, msg.code, msg.message,
                                              msg.critical))


def _find(node: dict[str, Any], path: str) -> dict[str, Any] | None:
    if node.get("path") == path:
        return node
    for child in node.get("children", []):
        if path == child.get("path") or path.startswith(child.get("path", "").rstrip("/") + "/"):
            found = _find(child, path)
            if found is not None:
                return found
    return None
