"""process.list / process.kill against real processes this test starts (and only those)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from g8os.messages.errors import FailedPrecondition, InvalidArgument, NotFound
from g8os.system import processes
from g8os.system.processes import kill_process, list_processes

pytestmark = pytest.mark.timeout(60)

SHAPE: dict[str, type | tuple[type, ...]] = {
    "pid": int, "ppid": int, "name": str, "cmdline": list, "createtime": int, "cpu": dict,
    "rss": int, "vms": int, "swap": int, "ofd": int, "state": str,
}


def check_shape(p: dict[str, Any]) -> None:
    assert set(p) == set(SHAPE)
    for key, kind in SHAPE.items():
        assert isinstance(p[key], kind), (key, p[key])
    assert all(isinstance(arg, str) for arg in p["cmdline"])
    assert set(p["cpu"]) == {"user", "system", "percent"}
    assert all(isinstance(v, float) and v >= 0 for v in p["cpu"].values())
    assert p["ofd"] >= -1 and p["rss"] >= 0 and p["vms"] >= 0 and p["swap"] >= 0


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def pid_max() -> int:
    # No process ever has pid_max itself (pids are below it).
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def test_list_one_process(sleeper: subprocess.Popen[bytes]) -> None:
    # exec sets the name before the arguments: wait for both
    wait_for(lambda: list_processes(sleeper.pid)[0]["cmdline"] == ["sleep", "60"])
    (p,) = list_processes(sleeper.pid)
    check_shape(p)
    assert p["pid"] == sleeper.pid and p["ppid"] == os.getpid()
    assert p["cmdline"] == ["sleep", "60"]
    assert abs(p["createtime"] - time.time() * 1000) < 60_000
    assert p["state"] in {"sleeping", "running"} and p["ofd"] >= 0
    json.dumps(p)


def test_list_all_processes(sleeper: subprocess.Popen[bytes]) -> None:
    everything = list_processes()
    pids = [p["pid"] for p in everything]
    assert pids == sorted(pids) and len(set(pids)) == len(pids)
    assert {sleeper.pid, os.getpid()} <= set(pids)
    for p in everything:
        check_shape(p)
    me = next(p for p in everything if p["pid"] == os.getpid())
    assert me["cmdline"] and me["rss"] > 0
    json.dumps(everything)


def test_list_missing_pid() -> None:
    for pid in (pid_max(), 0, -5, 2**40):
        with pytest.raises(NotFound):
            list_processes(pid)


def test_list_skips_processes_that_vanish(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen(["sleep", "60"])
    gone = psutil.Process(child.pid)
    child.kill()
    child.wait(timeout=10)
    me = psutil.Process(os.getpid())
    monkeypatch.setattr(psutil, "process_iter", lambda *a, **kw: iter([gone, me]))
    assert [p["pid"] for p in list_processes()] == [os.getpid()]


def test_zombie_is_listed() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: list_processes(child.pid)[0]["state"] == "zombie")
        (p,) = list_processes(child.pid)
        check_shape(p)
        assert p["cmdline"] == []
    finally:
        child.wait(timeout=10)


def test_cpu_percent_of_a_busy_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # Each listing reports the use since the previous one: a spinning process shows it.
        wait_for(lambda: list_processes(child.pid)[0]["cpu"]["percent"] > 20)
        # user time counts in clock ticks (10 ms): it may still read 0 on the first busy sample
        wait_for(lambda: list_processes(child.pid)[0]["cpu"]["user"] > 0)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_samples_forget_dead_processes(sleeper: subprocess.Popen[bytes]) -> None:
    list_processes()
    assert any(pid == sleeper.pid for pid, _ in processes._samples)
    sleeper.kill()
    sleeper.wait(timeout=10)
    list_processes()
    assert not any(pid == sleeper.pid for pid, _ in processes._samples)


def test_kill(sleeper: subprocess.Popen[bytes]) -> None:
    kill_process(sleeper.pid, 0)  # existence check only
    assert sleeper.poll() is None
    kill_process(sleeper.pid, signal.SIGTERM)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    with pytest.raises(NotFound):
        kill_process(sleeper.pid, signal.SIGTERM)
    with pytest.raises(NotFound):
        list_processes(sleeper.pid)


def test_kill_missing_pid() -> None:
    for pid in (pid_max(), 2**40):
        with pytest.raises(NotFound):
            kill_process(pid, 0)


def test_kill_refuses_protected_pids() -> None:
    # Signal 0 so that even a broken refusal would harm nothing.
    for pid, why in ((1, "init"), (os.getpid(), "g8os itself"), (os.getppid(), "parent")):
        with pytest.raises(FailedPrecondition, match=why):
            kill_process(pid, 0)


def test_kill_refuses_groups_and_bad_signals(sleeper: subprocess.Popen[bytes]) -> None:
    for pid in (0, -1, -sleeper.pid):
        with pytest.raises(InvalidArgument):
            kill_process(pid, 0)
    for sig in (-1, 1000):
        with pytest.raises(InvalidArgument):
            kill_process(sleeper.pid, sig)
    assert sleeper.poll() is None
