"""The actor layer (actors/base.py) on a real Thespian multiprocTCPBase system: processes, pids, signals.

Each test builds a small tree of `tree_harness` actors under a test root (asked `Init('', '/', 0,
config)`, answering `Ready`, as boot/node.py does), acts on real processes (signals, a FIFO, blocked
handlers) and checks what the layer did: pids, the journal the actors write (in event order, across
processes), the tree and the actor ops answered through the root.

"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import tree_harness as th
from tree_plane import alive, session_members, wait_for, walk

from g8os.actors import base
from g8os.actors.base import HeavySpec
from g8os.actors.supervision import Restart
from g8os.messages.internal import ChildFailed, Init, Ready, Stop, Stopped

pytestmark = pytest.mark.timeout(120)


def seq(events: list[dict], *kinds: str, skip: str = "") -> list[tuple[str, str]]:
    """(ev, path) of the journal events of the given kinds, in order (without path `skip`)."""
    return [(e["ev"], e["path"]) for e in events if e["ev"] in kinds and e["path"] != skip]


def started(*paths: str) -> list[tuple[str, str]]:
    return [step for path in paths for step in (("init", path), ("up", path))]


def in_session(plane, comm: str) -> list[int]:
    """Live processes of this actor system named `comm` (actors are named g8:<name>)."""
    pids = []
    for pid in session_members(plane.sid):
        try:
            if psutil.Process(pid).name() == comm:
                pids.append(pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def state(plane, path: str) -> str | None:
    node = plane.node(path)
    return node["state"] if node else None


def three(cls: type = th.Probe, **kwargs) -> list[HeavySpec]:
    return [HeavySpec(n, cls, **kwargs) for n in ("a", "b", "c")]


# ---- start ---------------------------------------------------------------------------------------


def test_ordered_start_each_child_after_the_previous_is_ready(plane):
    # Every actor sleeps 0.15 s in on_start: a child started before its elder sibling's Ready
    # would show its init before that sibling's "up".
    paths = ["/", "/a", "/mid", "/mid/m1", "/mid/m2", "/c"]
    ready = plane.start(
        {"/": [HeavySpec("a", th.Probe), HeavySpec("mid", th.Probe), HeavySpec("c", th.Probe)],
         "/mid": [HeavySpec("m1", th.Probe), HeavySpec("m2", th.Probe)]},
        start_sleep=dict.fromkeys(paths, 0.15))
    # Read at once: the root answered Ready only after every actor of the tree was up.
    events = plane.journal()
    assert seq(events, "init", "up") == started(*paths)
    pid = {e["path"]: e["pid"] for e in events if e["ev"] == "init"}
    assert ready.pid == pid["/"] == plane.root_pid
    assert psutil.Process(pid["/"]).ppid() == plane.admin_pid
    for path in ("/a", "/mid", "/c"):
        assert psutil.Process(pid[path]).ppid() == pid["/"]
    for path in ("/mid/m1", "/mid/m2"):
        assert psutil.Process(pid[path]).ppid() == pid["/mid"]
    assert psutil.Process(pid["/mid/m1"]).name() == "g8:m1"
    tree = plane.tree()
    assert {n["path"]: n["pid"] for n in walk(tree)} == pid
    assert all(n["state"] == "running" for n in walk(tree))


# ---- crashes and strategies ----------------------------------------------------------------------


def test_exception_in_handler_sends_child_failed_and_one_for_one_restarts_only_it(plane):
    plane.start({"/": three()})
    before = {p: plane.pid(p) for p in ("/a", "/b", "/c")}
    mark = plane.mark()
    plane.tell("/b", "raise", "in-b")
    b = plane.wait_restarted("/b", before["/b"])
    wait_for(lambda: not alive(before["/b"]), 5, what="old /b gone")
    events = plane.since(mark)
    # The parent got ChildFailed carrying the whole traceback, from the failing process.
    failed = [e for e in events if e["ev"] == "child-failed"]
    assert len(failed) == 1 and failed[0]["path"] == "/" and failed[0]["child"] == "b"
    error = failed[0]["error"]
    assert error.startswith("Traceback (most recent call last)")
    assert "receiveMsg_Poke" in error and error.rstrip().endswith("RuntimeError: boom in-b")
    assert b["last_error"] == "RuntimeError: boom in-b"
    inspected = plane.op("inspect", "/b").value
    assert [e["data"]["error"] for e in inspected["events"] if e["topic"] == "/actor/failed"] == [error]
    # one_for_one: only b went down and came back (once: Thespian did not retry the message).
    assert seq(events, "init", "up") == started("/b")
    assert {e["path"] for e in events if e["ev"] == "stop"} == {"/b"}
    assert {p: plane.pid(p) for p in ("/a", "/c")} == {"/a": before["/a"], "/c": before["/c"]}
    assert [(n["path"], n["restarts"]) for n in plane.tree()["children"]] == [
        ("/a", 0), ("/b", 1), ("/c", 0)]


def test_a_crashing_actor_releases_its_resources_once(plane):
    plane.start({"/": [HeavySpec("a", th.Probe)]})
    a = plane.pid("/a")
    plane.tell("/a", "raise", "once")
    plane.wait_restarted("/a", a)
    assert len(plane.journal(ev="stop", path="/a")) == 1


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(plane):
    # b takes 0.2 s to start: its younger siblings are surely down by its Ready (see the slow
    # sibling test below for what happens otherwise).
    plane.start({"/": [HeavySpec("sup", th.RestForOne)],
                 "/sup": [HeavySpec(n, th.Probe) for n in ("a", "b", "c", "d")]},
                start_sleep={"/sup/b": 0.2})
    before = {n: plane.pid(f"/sup/{n}") for n in "abcd"}
    mark = plane.mark()
    plane.tell("/sup/b", "raise", "rest")
    for n in "bcd":
        plane.wait_restarted(f"/sup/{n}", before[n])
    assert plane.pid("/sup/a") == before["a"]
    assert not any(alive(before[n]) for n in "bcd")
    events = plane.since(mark)
    # The younger siblings were stopped, then all three start in start order, each after the
    # previous one's Ready.
    assert {p for _, p in seq(events, "stop", skip="/sup/b")} == {"/sup/c", "/sup/d"}
    assert seq(events, "init", "up") == started("/sup/b", "/sup/c", "/sup/d")
    restarts = {n["path"]: n["restarts"] for n in plane.node("/sup")["children"]}
    assert restarts == {"/sup/a": 0, "/sup/b": 1, "/sup/c": 1, "/sup/d": 1}


def test_rest_for_one_waits_for_a_slow_sibling_to_stop_then_restarts_it(plane):
    plane.start({"/": [HeavySpec("sup", th.RestForOne)], "/sup": three()},
                stop_sleep={"/sup/c": 0.5})  # c takes 0.5 s to stop
    before = {n: plane.pid(f"/sup/{n}") for n in "abc"}
    mark = plane.mark()
    plane.tell("/sup/b", "raise", "slow sibling")
    wait_for(lambda: not alive(before["c"]), 5, what="old /sup/c stopped")
    wait_for(lambda: plane.running("/sup/b", before["b"]), 5, what="/sup/b restarted")
    # c must come back too, and only after it was down may b start again.
    plane.wait_restarted("/sup/c", before["c"], timeout=5)
    assert seq(plane.since(mark), "init", "up", "stop", skip="/sup/b")[:1] == [("stop", "/sup/c")]
    assert seq(plane.since(mark), "init", "up") == started("/sup/b", "/sup/c")


def test_one_for_all_restarts_every_child(plane):
    # b takes 0.2 s to start: its siblings are surely down by its Ready.
    plane.start({"/": [HeavySpec("sup", th.OneForAll)], "/sup": three()}, start_sleep={"/sup/b": 0.2})
    before = {n: plane.pid(f"/sup/{n}") for n in "abc"}
    mark = plane.mark()
    plane.tell("/sup/b", "raise", "all")
    after = {n: plane.wait_restarted(f"/sup/{n}", before[n])["pid"] for n in "abc"}
    assert not any(alive(p) for p in before.values())
    events = plane.since(mark)
    assert {p for _, p in seq(events, "stop", skip="/sup/b")} == {"/sup/a", "/sup/c"}
    assert sorted(seq(events, "init")) == [("init", f"/sup/{n}") for n in "abc"]
    assert {n["path"]: n["restarts"] for n in plane.node("/sup")["children"]} == {
        "/sup/a": 1, "/sup/b": 1, "/sup/c": 1}
    assert set(after.values()) == {e["pid"] for e in events if e["ev"] == "init"}


def test_one_for_all_stops_in_reverse_then_restarts_in_start_order(plane):
    plane.start({"/": [HeavySpec("sup", th.OneForAll)], "/sup": three()})
    before = {n: plane.pid(f"/sup/{n}") for n in "abc"}
    mark = plane.mark()
    plane.tell("/sup/b", "raise", "order")
    for n in "abc":
        plane.wait_restarted(f"/sup/{n}", before[n])
    assert seq(plane.since(mark), "init", "up", "stop", skip="/sup/b")[:2] == [
        ("stop", "/sup/c"), ("stop", "/sup/a")]
    assert seq(plane.since(mark), "init", "up") == started("/sup/a", "/sup/b", "/sup/c")


# ---- kills, restart counts, backoff, intensity ---------------------------------------------------


def test_sigkill_restarts_counts_and_backs_off_a_quick_second_failure(plane):
    plane.start({"/": [HeavySpec("sup", th.SlowBackoff)],
                 "/sup": [HeavySpec("x", th.Probe), HeavySpec("y", th.Probe)]})
    y = plane.pid("/sup/y")
    first = plane.pid("/sup/x")
    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    node = plane.wait_restarted("/sup/x", first)
    assert node["restarts"] == 1 and node["last_error"] == ""
    assert plane.journal(ev="init", path="/sup/x")[-1]["t"] - killed < 1.0  # the first: at once

    second = node["pid"]
    killed = time.monotonic()
    os.kill(second, signal.SIGKILL)
    # The second failure soon after a start waits Backoff(initial=1.5): visible in the tree.
    wait_for(lambda: state(plane, "/sup/x") == "backoff", 1.2, 0.05, "/sup/x in backoff")
    node = plane.wait_restarted("/sup/x", second)
    assert node["restarts"] == 2
    inits = plane.journal(ev="init", path="/sup/x")
    assert len(inits) == 3
    assert inits[-1]["t"] - killed >= 1.5
    assert plane.pid("/sup/y") == y
    assert not alive(first) and not alive(second)


def test_intensity_exceeded_escalates_and_the_parent_restarts_the_supervisor(plane):
    plane.start({"/": [HeavySpec("sup", th.Fragile)], "/sup": three()})
    sup = plane.pid("/sup")
    old = {n: plane.pid(f"/sup/{n}") for n in "abc"}
    os.kill(old["b"], signal.SIGKILL)
    b = plane.wait_restarted("/sup/b", old["b"])["pid"]  # one restart is tolerated
    mark = plane.mark()
    os.kill(b, signal.SIGKILL)  # the second within the period is one too many
    plane.wait_restarted("/sup", sup)
    new = {n: plane.wait_restarted(f"/sup/{n}", old[n])["pid"] for n in "abc"}
    for pid in (sup, old["a"], old["c"], b):
        assert not alive(pid)
    assert not set(new.values()) & {*old.values(), b}
    events = plane.since(mark)
    # sup stopped its running children in reverse order, released its own resources, and exited
    # with ChildFailed to the root, which started it again with all its children.
    assert seq(events, "stop") == [("stop", "/sup/c"), ("stop", "/sup/a"), ("stop", "/sup")]
    failed = [e for e in events if e["ev"] == "child-failed"]
    assert [(e["path"], e["child"]) for e in failed] == [("/", "sup")]
    assert failed[0]["error"].startswith("gave up: b exited abnormally")
    assert "exceed intensity 1" in failed[0]["error"]
    assert seq(events, "init") == [("init", p) for p in ("/sup", "/sup/a", "/sup/b", "/sup/c")]
    node = plane.node("/sup")
    assert node["restarts"] == 1 and node["last_error"].startswith("gave up: b exited abnormally")


def test_intensity_exceeded_in_the_root_reaches_whoever_started_it(plane):
    plane.start({"/": three()}, root_cls=th.Fragile)
    everything = plane.pids()
    b = plane.pid("/b")
    os.kill(b, signal.SIGKILL)
    b = plane.wait_restarted("/b", b)["pid"]
    mark = plane.mark()
    os.kill(b, signal.SIGKILL)
    failed = plane.listen_for(lambda m: isinstance(m, ChildFailed), 10)
    assert failed.name == "" and failed.error.startswith("gave up: b exited abnormally")
    wait_for(lambda: not any(alive(p) for p in everything), 5, 0.02, "the whole tree exited")
    assert seq(plane.since(mark), "stop", "init") == [("stop", "/c"), ("stop", "/a"), ("stop", "/")]


def test_duplicate_exit_notices_restart_only_once(plane):
    # SIGTERM: Thespian turns it into an ActorExitRequest, the child exits cleanly, and its parent
    # hears of it twice (the child's goodbye and its own SIGCHLD check).
    plane.start({"/": [HeavySpec("a", th.Probe), HeavySpec("b", th.Probe)]})
    a = plane.pid("/a")
    mark = plane.mark()
    os.kill(a, signal.SIGTERM)
    plane.wait_restarted("/a", a)
    wait_for(lambda: len(plane.since(mark, ev="exit-notice")) >= 2, 5, 0.02, "both exit notices")
    quiet_until = time.monotonic() + 1.0
    while time.monotonic() < quiet_until:  # and no second restart shows up
        assert len(plane.journal(ev="init", path="/a")) == 2
        assert len(in_session(plane, "g8:a")) == 1
        time.sleep(0.05)
    notices = plane.since(mark, ev="exit-notice")
    assert len({n["address"] for n in notices}) == 1  # all about the one old child
    assert next(n["child"] for n in notices) == "a" and all(n["child"] is None for n in notices[1:])
    assert plane.node("/a")["restarts"] == 1
    assert len(plane.since(mark, ev="stop", path="/a")) == 1  # the clean exit ran on_stop


def test_an_actor_that_ends_itself_is_restarted_when_permanent(plane):
    plane.start({"/": [HeavySpec("a", th.Probe)]})
    a = plane.pid("/a")
    plane.tell("/a", "exit")  # ActorExitRequest to itself
    plane.wait_restarted("/a", a)
    assert len(plane.journal(ev="stop", path="/a")) == 1


def test_temporary_child_is_not_restarted_transient_is_after_a_crash(plane):
    plane.start({"/": [HeavySpec("temp", th.Probe, restart=Restart.TEMPORARY),
                       HeavySpec("trans", th.Probe, restart=Restart.TRANSIENT),
                       HeavySpec("keep", th.Probe)]})
    temp, trans = plane.pid("/temp"), plane.pid("/trans")
    os.kill(temp, signal.SIGKILL)
    wait_for(lambda: plane.node("/temp") is None, 5, 0.05, "/temp dropped from the tree")
    plane.tell("/trans", "raise", "transient")  # abnormal: a transient child comes back
    plane.wait_restarted("/trans", trans)
    assert not alive(temp)
    assert len(plane.journal(ev="init", path="/temp")) == 1
    assert in_session(plane, "g8:temp") == []
    assert [n["path"] for n in plane.tree()["children"]] == ["/trans", "/keep"]
    assert plane.op("inspect", "/temp").code == 404


def test_transient_child_that_exits_normally_is_not_restarted(plane):
    plane.start({"/": [HeavySpec("trans", th.Probe, restart=Restart.TRANSIENT),
                       HeavySpec("keep", th.Probe)]})
    trans = plane.pid("/trans")
    plane.tell("/trans", "exit")  # the actor ends itself: no error, no signal
    wait_for(lambda: not alive(trans), 5, what="/trans exited")
    wait_for(lambda: plane.node("/trans") is None or plane.running("/trans", trans), 5, 0.05,
             "/trans dropped or restarted")
    assert plane.node("/trans") is None
    assert len(plane.journal(ev="init", path="/trans")) == 1


# ---- heartbeat -----------------------------------------------------------------------------------


def test_hung_child_is_killed_after_missed_heartbeats_and_restarted(plane):
    plane.start({"/": [HeavySpec("hang", th.Probe), HeavySpec("ok", th.Probe)]})
    hang, ok = plane.pid("/hang"), plane.pid("/ok")
    blocked = time.monotonic()
    plane.tell("/hang", "block", 3600)
    budget = base.HEARTBEAT * (base.HEARTBEAT_MISSES + 2) + 5
    wait_for(lambda: not alive(hang), budget, 0.1, "hung /hang SIGKILLed")
    assert time.monotonic() - blocked >= base.HEARTBEAT * base.HEARTBEAT_MISSES - 1.0
    node = plane.wait_restarted("/hang", hang)
    assert node["restarts"] == 1
    assert node["last_error"] == f"hung: missed {base.HEARTBEAT_MISSES} heartbeats"
    assert plane.journal(ev="stop", path="/hang") == []  # SIGKILL: no on_stop
    assert plane.pid("/ok") == ok


# ---- process lifetime --------------------------------------------------------------------------


def test_children_die_with_their_parent_process(plane):
    plane.start({"/": [HeavySpec("mid", th.Probe), HeavySpec("other", th.Probe)],
                 "/mid": [HeavySpec("m1", th.Probe), HeavySpec("m2", th.Probe)]})
    mid = plane.pid("/mid")
    leaves = [plane.pid("/mid/m1"), plane.pid("/mid/m2")]
    os.kill(mid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in leaves), 5, 0.02, "children of the killed /mid gone")
    plane.wait_restarted("/mid", mid)
    for path, old in zip(("/mid/m1", "/mid/m2"), leaves, strict=True):
        plane.wait_restarted(path, old)

    everything = plane.pids()
    assert len(everything) == 5
    os.kill(plane.root_pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in everything), 5, 0.02, "the whole tree gone with the root")
    left = [p for p in session_members(plane.sid) if psutil.Process(p).name().startswith("g8:")]
    assert left == []


def test_a_warm_spare_becomes_the_restarted_child_and_dies_with_its_parent(plane):
    plane.start({"/": [HeavySpec("sup", th.Spared)], "/sup": three()})
    sup = plane.pid("/sup")
    kids = {n: plane.pid(f"/sup/{n}") for n in "abc"}

    def spares():
        return {c.pid for c in psutil.Process(sup).children()} - set(kids.values())

    spare = wait_for(spares, 5, 0.02, "a spare forked")
    assert len(spare) == 1
    (spare,) = spare
    assert all(n["pid"] != spare for n in walk(plane.tree()))  # not an actor of the tree
    os.kill(kids["b"], signal.SIGKILL)
    node = plane.wait_restarted("/sup/b", kids["b"])
    assert node["pid"] == spare  # the spare took over
    assert psutil.Process(spare).name() == "g8:b"
    kids["b"] = spare
    nxt = wait_for(spares, 5, 0.02, "another spare forked")
    assert len(nxt) == 1 and spare not in nxt
    everything = {sup, *kids.values(), *nxt}
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in everything), 5, 0.02, "sup, its children and spare gone")
    # The root starts sup again, and sup its children and a new spare (waited for: a child being
    # created when the system shuts down may be left behind, see the test below).
    sup = plane.wait_restarted("/sup", sup)["pid"]
    for n in "abc":
        plane.wait_restarted(f"/sup/{n}", kids[n])
    kids = {n: plane.pid(f"/sup/{n}") for n in "abc"}
    wait_for(spares, 5, 0.02, "a spare for the new sup")


def test_a_child_whose_parent_dies_before_its_init_dies_too(plane):
    plane.start({"/": [HeavySpec("mid", th.DiesAfterFork)], "/mid": [HeavySpec("m1", th.Probe)]})
    mid, m1 = plane.pid("/mid"), plane.pid("/mid/m1")
    (plane.workdir / "die-after-fork").touch()
    os.kill(m1, signal.SIGKILL)  # /mid forks a new m1 and is SIGKILLed at once
    plane.wait_restarted("/mid", mid)
    plane.wait_restarted("/mid/m1", m1)
    assert plane.journal(ev="dying")[0]["pid"] == mid
    tree = {n["pid"] for n in walk(plane.tree())}

    def orphans():
        found = []
        for pid in session_members(plane.sid):
            try:
                ppid = psutil.Process(pid).ppid()
            except psutil.NoSuchProcess:
                continue
            if pid != plane.admin_pid and pid not in tree and ppid not in (*tree, plane.admin_pid):
                found.append(pid)
        return found

    try:
        # The child the first /mid forked (still named g8:mid, never initialised) must die with it.
        wait_for(lambda: not orphans(), 3, 0.05, "the orphaned child of the killed /mid gone")
    finally:
        for pid in orphans():  # by pid, so that the fixture's own check stays meaningful
            os.kill(pid, signal.SIGKILL)


def test_a_child_failing_in_its_start_does_not_hang_its_parent(plane):
    (plane.workdir / "fail-start").touch()
    config = th.TreeConfig(str(plane.journal_path), {"/": three(th.FailsToStart)})
    plane.root = plane.asys.createActor(th.Root)
    reply = plane.request(Init("", "/", 0, config), lambda m: isinstance(m, (Ready, ChildFailed)),
                          base.START_TIMEOUT + 5)
    if isinstance(reply, Ready):  # restarted: then everything runs
        assert [n["state"] for n in plane.tree()["children"]] == ["running"] * 3
    else:  # or gave up and said why
        assert reply.error


def test_inherited_descriptors_are_closed(plane):
    plane.start({"/": [HeavySpec("a", th.PipeHolder), HeavySpec("b", th.Probe)],
                 "/a": [HeavySpec("a1", th.Probe), HeavySpec("a2", th.Probe)]}, root_cls=th.PipeHolder)
    events = plane.journal()
    pid = {e["path"]: e["pid"] for e in events if e["ev"] == "init"}
    pipes = {e["path"]: e["link"] for e in events if e["ev"] == "pipe"}
    held_at_fork = {(e["path"].rstrip("/") + "/" + e["child"]): set(e["held"])
                    for e in events if e["ev"] == "fork"}
    assert set(held_at_fork) == {"/a", "/b", "/a/a1", "/a/a2"}

    def fds(path):
        # stdin/stdout/stderr are shared on purpose (they may be pipes of whoever ran pytest)
        return {link for fd, link in th.fd_links(pid[path]).items() if fd > 2}

    for path in pid:
        assert plane.canary not in fds(path), f"{path} kept a pipe of the test process"
    for path, held in held_at_fork.items():
        mine = fds(path)
        assert any(link.startswith("socket:") for link in mine)  # its own transport
        assert not mine & held, f"{path} kept descriptors of its parent: {sorted(mine & held)}"
    for path in ("/a", "/b", "/a/a1", "/a/a2"):
        assert pipes["/"] not in fds(path)
    for path in ("/a/a1", "/a/a2"):
        assert pipes["/a"] not in fds(path)
    for path in ("/b", "/a/a1", "/a/a2"):  # a leaf without children holds no pipe at all
        assert not [link for link in fds(path) if link.startswith("pipe:")]
    # and the tree still works over what is left
    assert plane.poke("/a/a2", "info").pid == pid["/a/a2"]


# ---- stop ----------------------------------------------------------------------------------------


def test_stop_goes_in_reverse_start_order_and_kills_a_child_ignoring_it(plane):
    plane.start({"/": [HeavySpec("a", th.Probe), HeavySpec("mid", th.Probe),
                       HeavySpec("deaf", th.IgnoresStop, shutdown=1.0), HeavySpec("c", th.Probe)],
                 "/mid": [HeavySpec("m1", th.Probe), HeavySpec("m2", th.Probe)]})
    everything = plane.pids()
    deaf = plane.pid("/deaf")
    mark = plane.mark()
    stopped = plane.request(Stop(), lambda m: isinstance(m, Stopped), 20)
    assert stopped.name == ""
    events = plane.since(mark)
    assert seq(events, "stop", "ignoring-stop") == [
        ("stop", "/c"), ("ignoring-stop", "/deaf"), ("stop", "/mid/m2"), ("stop", "/mid/m1"),
        ("stop", "/mid"), ("stop", "/a"), ("stop", "/")]
    ignoring = next(e for e in events if e["ev"] == "ignoring-stop")
    after = next(e for e in events if e["ev"] == "stop" and e["path"] == "/mid/m2")
    assert after["t"] - ignoring["t"] >= 0.95  # its 1 s grace, then SIGKILL
    assert not alive(deaf)
    assert [e for e in events if e["ev"] == "init"] == []  # nothing restarted while stopping
    wait_for(lambda: not any(alive(p) for p in everything), 5, 0.02, "every actor exited")


# ---- tree and actor ops --------------------------------------------------------------------------


def test_tree_shows_every_node_and_an_unresponsive_child(plane):
    plane.start({"/": [HeavySpec("a", th.Probe), HeavySpec("mid", th.Probe), HeavySpec("slow", th.Probe)],
                 "/mid": [HeavySpec("m1", th.Probe)]})
    pids = {e["path"]: e["pid"] for e in plane.journal(ev="init")}
    nodes = {n["path"]: n for n in walk(plane.tree())}
    assert list(nodes) == ["/", "/a", "/mid", "/mid/m1", "/slow"]
    for path, node in nodes.items():
        assert (node["pid"], node["state"], node["restarts"]) == (pids[path], "running", 0)
    assert nodes["/"]["kind"] == "testroot" and nodes["/a"]["kind"] == "probe"

    plane.tell("/slow", "block", 2.0)
    wait_for(lambda: state(plane, "/slow") == "unresponsive", 5, 0.05, "/slow unresponsive")
    node = plane.node("/slow")
    assert (node["pid"], node["kind"], node["restarts"]) == (pids["/slow"], "probe", 0)
    assert state(plane, "/mid/m1") == "running"  # the others still answer
    wait_for(lambda: state(plane, "/slow") == "running", 5, 0.05, "/slow answers again")
    assert plane.pid("/slow") == pids["/slow"]


def test_tree_unresponsive_grandchild_keeps_its_parent_visible(plane):
    plane.start({"/": [HeavySpec("mid", th.Probe)],
                 "/mid": [HeavySpec("m1", th.Probe), HeavySpec("m2", th.Probe)]})
    plane.tell("/mid/m2", "block", 2.0)
    wait_for(lambda: state(plane, "/mid") != "running" or state(plane, "/mid/m2") == "unresponsive",
             5, 0.05, "the tree reflects the block")
    mid = plane.tree()["children"][0]
    assert mid["state"] == "running"
    assert [(n["path"], n["state"]) for n in mid["children"]] == [
        ("/mid/m1", "running"), ("/mid/m2", "unresponsive")]


def test_actor_ops_kill_inspect_restart(plane):
    plane.start({"/": [HeavySpec("a", th.Probe, shutdown=3.0), HeavySpec("mid", th.Probe)],
                 "/mid": [HeavySpec("m1", th.Probe), HeavySpec("m2", th.Probe)]})
    # kill: the answer comes first (the process is still alive when it arrives), then the signal.
    a = plane.pid("/a")
    reply = plane.op("kill", "/a", signal.SIGKILL)
    assert alive(a)
    assert reply.ok and reply.value == {"path": "/a", "pid": a, "signal": signal.SIGKILL}
    plane.wait_restarted("/a", a)
    assert not alive(a)
    # a grandchild: the op travels through /mid, the answer comes back through the root.
    m1 = plane.pid("/mid/m1")
    reply = plane.op("kill", "/mid/m1", signal.SIGTERM)
    assert reply.ok and reply.value["pid"] == m1
    plane.wait_restarted("/mid/m1", m1)

    # inspect: the spec and the restart history.
    info = plane.op("inspect", "/a").value
    assert info["spec"] == {"restart": "permanent", "shutdown": 3.0}
    assert info["restarts"] == 1 and info["state"] == "running"
    assert info["last_error"] == f"killed by actor.kill (signal {int(signal.SIGKILL)})"
    assert [e["topic"] for e in info["events"]][-2:] == ["/actor/exited", "/actor/restarted"]
    assert plane.op("inspect", "/mid/m1").value["restarts"] == 1

    # restart: an ordered stop (children first, in reverse), then an ordered start.
    old = {p: plane.pid(p) for p in ("/mid", "/mid/m1", "/mid/m2")}
    mark = plane.mark()
    reply = plane.op("restart", "/mid")
    assert reply.ok and reply.value == {"path": "/mid", "pid": old["/mid"], "restarting": True}
    for path, pid in old.items():
        plane.wait_restarted(path, pid)
    assert seq(plane.since(mark), "init", "up", "stop") == [
        ("stop", "/mid/m2"), ("stop", "/mid/m1"), ("stop", "/mid"),
        *started("/mid", "/mid/m1", "/mid/m2")]
    assert not any(alive(p) for p in old.values())

    missing = plane.op("kill", "/nope", signal.SIGKILL)
    assert not missing.ok and missing.code == 404


# ---- timers and watches --------------------------------------------------------------------------


def test_timers_fire_and_a_watch_survives_every_receive(plane):
    plane.start({"/": [HeavySpec("w", th.Watcher), HeavySpec("other", th.Probe)]})
    fifo = os.open(plane.workdir / "watch.fifo", os.O_WRONLY | os.O_NONBLOCK)
    try:
        plane.poke("/w", "timers", [0.3, 0.1, 0.2])
        wait_for(lambda: len(plane.journal(ev="tick")) == 3, 5, 0.02, "three timers")
        assert [e["delay"] for e in plane.journal(ev="tick")] == [0.1, 0.2, 0.3]

        def delivered(text):
            wait_for(lambda: [e for e in plane.journal(ev="data") if e["data"] == text], 5, 0.02,
                     f"{text!r} delivered")

        os.write(fifo, b"one")
        delivered("one")
        # Other messages in between: pokes, a tree request, a timer, heartbeat pings.
        for _ in range(5):
            assert plane.poke("/w", "info").value["watches"]
        plane.tree()
        plane.poke("/w", "timers", [0.05])
        wait_for(lambda: len(plane.journal(ev="tick")) == 4, 5, 0.02, "the fourth timer")
        os.write(fifo, b"two")
        delivered("two")
        since = plane.journal(ev="data")[-1]["t"]
        wait_for(lambda: time.monotonic() > since + base.HEARTBEAT * 1.5, base.HEARTBEAT * 2, 0.1,
                 "heartbeats in between")
        os.write(fifo, b"three")
        delivered("three")
        assert [e["data"] for e in plane.journal(ev="data")] == ["one", "two", "three"]
    finally:
        os.close(fifo)
