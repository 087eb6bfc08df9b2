"""StatsActor: facts about the node (info.*) and its OS processes (process.*).

The actor lives in the private actor-plane network namespace; facts about the network are
read from inside the node's namespace.
"""

from __future__ import annotations

import os
from typing import Any

from g8os.actors.base import Actor
from g8os.messages.errors import FailedPrecondition, InvalidArgument, NotFound
from g8os.messages.internal import Call
from g8os.messages.process import ProcessKill, ProcessList
from g8os.system import info, processes
from g8os.system.linux import in_netns, same_namespace


class StatsActor(Actor):
    kind = "stats"

    def on_start(self) -> bool:
        try:
            self.node_netns: int | None = os.open("/proc/1/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.node_netns = None
        return True

    def handle_info_cpu(self, request: Any, call: Call) -> Any:
        return info.cpu()

    def handle_info_mem(self, request: Any, call: Call) -> Any:
        return info.mem()

    def handle_info_disk(self, request: Any, call: Call) -> Any:
        return info.disk()

    def handle_info_nic(self, request: Any, call: Call) -> Any:
        with in_netns(self.node_netns):
            return info.nic()

    def handle_info_os(self, request: Any, call: Call) -> Any:
        return info.os_info()

    def handle_info_port(self, request: Any, call: Call) -> Any:
        with in_netns(self.node_netns):
            return info.port()

    def handle_info_version(self, request: Any, call: Call) -> Any:
        return info.version()

    def handle_process_list(self, request: ProcessList, call: Call) -> Any:
        return processes.list_processes(_pid(request.pid, request.id))

    def handle_process_kill(self, request: ProcessKill, call: Call) -> Any:
        pid = _pid(request.pid, request.id)
        if pid is None:
            raise InvalidArgument("`arguments.pid`: is required", field="arguments.pid")
        if pid == 1 or _in_actor_plane(pid):
            raise FailedPrecondition(f"pid {pid} is part of core0 itself; use actor.kill for fault injection")
        processes.kill_process(pid, request.signal)
        return True


def _pid(pid: int | None, legacy_id: str | None) -> int | None:
    """`pid`, or G8OS 1.0's `id` (a pid in a string)."""
    if pid is not None:
        return pid
    if legacy_id is None or legacy_id == "":
        return None
    if legacy_id.isdigit():
        return int(legacy_id)
    raise NotFound(f"no process {legacy_id!r} (give a pid)")


def _in_actor_plane(pid: int) -> bool:
    """Processes of the private actor plane are core0 itself, not node processes."""
    try:
        return same_namespace("net", pid)
    except OSError:
        return False
