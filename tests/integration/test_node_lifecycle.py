"""A sandbox node as a whole: the private actor plane, orphan reaping, and a shutdown that
leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import psutil
import pytest
import redis
from wire import call, host_pid, push, result, wait_for

from g8os.system import linux

pytestmark = pytest.mark.timeout(120)


def node_processes(keeper_pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(keeper_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def pid1_of(keeper_pid: int) -> int:
    children = psutil.Process(keeper_pid).children()
    assert len(children) == 1
    return children[0].pid


def listening_ports(pid: int) -> set[int]:
    """TCP ports listening in the network namespace of `pid` (read from its /proc view)."""
    ports = set()
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


def can_connect(netns_fd: int, port: int) -> bool:
    with linux.in_netns(netns_fd), socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_actor_plane_is_unreachable_from_the_node_network(node):
    r = node.redis()
    tree = json.loads(call(r, "actor.tree")["data"])
    root_pid = host_pid(node.pid, tree["pid"])
    pid1 = pid1_of(node.pid)
    assert not linux.same_namespace("net", root_pid, pid1)
    actor_ports = listening_ports(root_pid)
    assert actor_ports, "the actor plane listens on no port?"
    plane_fd = linux.namespace_fd("net", root_pid)
    node_fd = linux.namespace_fd("net", pid1)
    try:
        # the test is meaningful: from inside the actor plane the ports answer
        assert any(can_connect(plane_fd, port) for port in actor_ports)
        # from the node's network (where Redis listens and containers attach) nothing does
        for port in actor_ports:
            assert not can_connect(node_fd, port), f"actor port {port} reachable from the node network"
        assert 6379 in listening_ports(pid1)  # Redis is on the node network, as it should
    finally:
        os.close(plane_fd)
        os.close(node_fd)


def test_jobs_run_on_the_node_network_not_the_actor_plane(node):
    r = node.redis()
    res = call(r, "bash", {"script": "readlink /proc/self/ns/net"})
    pid1 = pid1_of(node.pid)
    assert res["streams"][0] == os.readlink(f"/proc/{pid1}/ns/net")


def test_no_zombie_survives_orphaning_jobs(node):
    r = node.redis()
    jobs = [push(r, "bash", {"script": "sleep 0.2 & sleep 0.1 & echo started"}) for _ in range(10)]
    for job in jobs:
        assert result(r, job)["state"] == "SUCCESS"

    def no_orphans_left():
        procs = node_processes(node.pid)
        sleeping = [p for p in procs
                    if _safe_name(p) == "sleep" and _safe_status(p) not in ("", psutil.STATUS_ZOMBIE)]
        zombies = [p for p in procs if _safe_status(p) == psutil.STATUS_ZOMBIE]
        return not sleeping and not zombies

    wait_for(no_orphans_left, timeout=10, what="orphans reaped")


def _safe_name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _safe_status(proc: psutil.Process) -> str:
    try:
        return proc.status()
    except psutil.Error:
        return ""


def test_sigterm_leaves_nothing_behind(own_node):
    from g8os.boot import sandbox

    r = own_node.redis()
    push(r, "bash", {"script": "sleep 1000"})
    push(r, "bash", {"script": "sh -c 'sleep 1000 &'; sleep 1000"})
    wait_for(lambda: sum(_safe_name(p) == "sleep" for p in node_processes(own_node.pid)) >= 3,
             what="sleeps running")
    pid1 = pid1_of(own_node.pid)
    netns = os.stat(f"/proc/{pid1}/ns/net").st_ino
    procs = node_processes(own_node.pid)
    host_links = sorted(os.listdir("/sys/class/net"))
    with open("/proc/self/mountinfo") as info:
        host_mounts = info.read()
    started = time.monotonic()
    os.kill(pid1, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=30)
    elapsed = time.monotonic() - started
    assert not alive, f"left running: {[(p.pid, _safe_name(p)) for p in alive]}"
    assert elapsed < 25
    for proc in psutil.process_iter():
        try:
            assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino != netns
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    assert sorted(os.listdir("/sys/class/net")) == host_links
    with open("/proc/self/mountinfo") as info:
        assert info.read() == host_mounts
    wait_for(lambda: sandbox.status(own_node.name)["state"] in ("absent", "stale"), what="keeper gone")


def test_actor_admin_death_restarts_the_plane(own_node):
    r = own_node.redis()
    tree = json.loads(call(r, "actor.tree")["data"])
    admin = psutil.Process(host_pid(own_node.pid, tree["pid"])).ppid()
    assert psutil.Process(admin).name().startswith("g8:")  # never signal a host process
    os.kill(admin, signal.SIGKILL)

    def serving_again():
        try:
            probe = json.loads(call(r, "actor.tree", timeout=2)["data"])
        except (TimeoutError, redis.RedisError):
            return False
        return probe["pid"] != tree["pid"] and probe

    fresh = wait_for(serving_again, timeout=60, interval=0.2, what="plane restarted")
    assert {c["path"] for c in fresh["children"]} >= {"/log", "/services", "/jobs", "/stats", "/gateway"}
