"""A real Thespian multiprocTCPBase actor system per test.

`plane` starts an ActorSystem on a free admin port; its finalizer shuts it down even when the test
failed, then checks that every process the system made is gone. The admin calls setsid(), and every
actor is forked from it, so all of them (and any orphan that outlived its parent) share the admin's
session: that session is what the finalizer checks, and leftovers are killed by pid, one by one.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import tree_harness`, in the test and in actors

from thespian.actors import ActorSystem
from tree_plane import Plane, free_port, session_members, wait_for

SHUTDOWN_GRACE = 15.0


def _admin(sid: int) -> int:
    """The admin: the member of the session whose parent is not one (the logger and the actors
    descend from it)."""
    members = session_members(sid)
    for pid in members:
        try:
            if psutil.Process(pid).ppid() not in members:
                return pid
        except psutil.NoSuchProcess:
            continue
    return 0


@pytest.fixture
def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    monkeypatch.setenv("THESPIAN_BASE_IPADDR", "127.0.0.1")
    monkeypatch.setenv("THESPLOG_FILE", str(tmp_path / "thespian.log"))
    monkeypatch.setenv("THESPLOG_THRESHOLD", "WARNING")
    os.mkfifo(tmp_path / "watch.fifo")
    before = {p.pid for p in psutil.Process().children()}
    # A pipe the test process holds while the system forks: no actor may keep it.
    canary_r, canary_w = os.pipe()
    canary = os.readlink(f"/proc/self/fd/{canary_r}")
    port = free_port()
    try:
        asys = ActorSystem("multiprocTCPBase", {"Admin Port": port},
                           logDefs={"version": 1, "root": {"level": "CRITICAL"}})
    except BaseException:
        os.close(canary_r)
        os.close(canary_w)
        raise
    sid = 0
    try:
        # Thespian forks an intermediate that calls setsid(), forks the admin and exits: its pid
        # names the session of every process of this system. Nobody joins it: reap it here.
        made = [c.pid for c in psutil.Process().children() if c.pid not in before]
        assert len(made) == 1, f"expected Thespian's one intermediate child, got {made}"
        sid = made[0]
        os.waitpid(sid, 0)
        admin_pid = wait_for(lambda: _admin(sid), 10, 0.02, "admin found")
        plane = Plane(asys, port, admin_pid, sid, tmp_path)
        plane.canary = canary
        yield plane
    finally:
        os.close(canary_r)
        os.close(canary_w)
        try:
            asys.shutdown()
        finally:
            _clean_up(sid, before)


def _describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"{pid} ({proc.name()}, ppid {proc.ppid()}, {proc.status()})"
    except psutil.NoSuchProcess:
        return f"{pid} (gone)"


def _clean_up(sid: int, before: set[int]) -> None:
    leftovers: list[str] = []
    if sid:
        try:
            wait_for(lambda: not session_members(sid), SHUTDOWN_GRACE, 0.05, "actor system gone")
        except TimeoutError:
            leftovers = [_describe(pid) for pid in session_members(sid)]
            for pid in session_members(sid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda: not session_members(sid), 10, 0.05, "leftovers killed")
    # Thespian's intermediate process (it forks the admin and exits) is never joined: reap it,
    # and only it and its like: children this test made, by pid.
    for child in psutil.Process().children():
        if child.pid in before:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, 0)
        except (psutil.Error, ChildProcessError):
            pass
    extra = [c.pid for c in psutil.Process().children() if c.pid not in before]
    assert not leftovers, f"processes of the actor system outlived its shutdown: {leftovers}"
    assert not extra, f"children of the test process remain: {extra}"
