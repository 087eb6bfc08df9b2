"""A killed actor serving again: SIGKILL an actor's process, time until it answers.

Floor: Thespian's own kill → ChildActorExited → createActor → first reply, measured with a
bare parent/child pair in the same run. Target ≤ 20 ms.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

from thespian.actors import ActorSystem, ActorTypeDispatcher, ChildActorExited

from bench.common import connect, now, report, sandbox


class _Child(ActorTypeDispatcher):
    def receiveMsg_str(self, message, sender):
        self.send(sender, os.getpid())


class _Parent(ActorTypeDispatcher):
    def receiveMsg_str(self, message, sender):
        if message == "start":
            self.child = self.createActor(_Child)
            self.asker = sender
            self.send(self.child, "pid")
        elif message == "kill":
            self.killed_at = time.perf_counter()
            os.kill(self.pid, signal.SIGKILL)
            self.asker = sender

    def receiveMsg_int(self, message, sender):
        self.pid = message
        if hasattr(self, "killed_at"):
            self.send(self.asker, time.perf_counter() - self.killed_at)
        else:
            self.send(self.asker, message)

    def receiveMsg_ChildActorExited(self, message: ChildActorExited, sender):
        self.child = self.createActor(_Child)
        self.send(self.child, "pid")


def floor(rounds: int = 10) -> float:
    system = ActorSystem("multiprocTCPBase", {"Admin Port": 19811})
    try:
        parent = system.createActor(_Parent)
        system.ask(parent, "start", 10)
        times = sorted(system.ask(parent, "kill", 10) for _ in range(rounds))
        return times[len(times) // 2]
    finally:
        system.shutdown()


def tree(r) -> dict:
    return call(r, "actor.tree")


def call(r, command: str, arguments: dict | None = None, timeout: int = 10) -> dict:
    job = str(uuid.uuid4())
    r.rpush("core:default", json.dumps({"id": job, "command": command, "arguments": arguments or {}}))
    raw = r.brpoplpush(f"result:{job}", f"result:{job}", timeout)
    return json.loads(json.loads(raw)["data"])


def host_pid(keeper: int, node_pid: int) -> int:
    """Pids in actor.tree are the node's own (its PID namespace): translate before signalling."""
    import psutil

    for proc in psutil.Process(keeper).children(recursive=True):
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                nspid = next(line for line in status if line.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if int(nspid.split()[-1]) == node_pid:
            return proc.pid
    raise LookupError(node_pid)


def serve_time(r, pid: int, probe: tuple[str, dict]) -> float:
    """SIGKILL `pid`, then time until a probe command is answered (each probe waits ≤ 50 ms)."""
    t = now()
    os.kill(pid, signal.SIGKILL)
    while True:
        job = str(uuid.uuid4())
        r.rpush("core:default", json.dumps({"id": job, "command": probe[0], "arguments": probe[1]}))
        raw = r.brpoplpush(f"result:{job}", f"result:{job}", 1)
        if raw is not None and json.loads(raw)["state"] == "SUCCESS":
            return now() - t
        if now() - t > 30:
            raise TimeoutError("not back within 30 s")


def main() -> None:
    base = floor()
    rows = []
    with sandbox("brst") as info:
        r = connect(info)
        probes = {"/gateway": ("core.ping", {}), "/stats": ("info.version", {}),
                  "/jobs": ("core.system", {"name": "true"}), "/log": ("core.ping", {})}
        for path, probe in probes.items():
            # One kill per actor: a second quick failure of the same child is backed off on
            # purpose, and the root's intensity (10 restarts a minute) bounds the whole run.
            node = next(c for c in tree(r)["children"] if c["path"] == path)
            elapsed = serve_time(r, host_pid(int(info["pid"]), node["pid"]), probe)
            rows.append((f"{path} killed -> serving", f"{elapsed * 1000:.1f} ms", f"{base * 1000:.1f} ms",
                         f"{elapsed / base:.2f}x (target <= 20 ms)"))
            time.sleep(0.5)
    report("actor restart (SIGKILL to first answer)", rows)


if __name__ == "__main__":
    main()
