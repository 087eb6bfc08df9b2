"""Supervision decisions: OTP strategies, restart types, intensity, backoff, against a hand clock.

The last part drives random event sequences through both `Supervisor` and a plain reference model written
here, independently, so that a change to the module that alters a decision shows up as a disagreement.
"""

from __future__ import annotations

import json
import math

import attrs
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from g8os.actors.supervision import (
    Action,
    Backoff,
    ChildSpec,
    Decision,
    Restart,
    Strategy,
    Supervisor,
    SupFlags,
)

pytestmark = pytest.mark.timeout(60)


@attrs.define
class FakeClock:
    """Time that moves only when the test says so."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    children: str | list[ChildSpec] = "abcd",
    start: bool = True,
    **flags: object,
) -> tuple[Supervisor, FakeClock]:
    """A supervisor over `children` (one permanent child per letter), all started at t=0 by default."""
    clock = FakeClock()
    specs = [ChildSpec(name=c) for c in children] if isinstance(children, str) else children
    sup = Supervisor(SupFlags(strategy=strategy, **flags), specs, clock=clock)  # type: ignore[arg-type]
    if start:
        for name in sup.start_order():
            sup.started(name)
    return sup, clock


def start_all(sup: Supervisor, names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        sup.started(name)


# -- backoff ---------------------------------------------------------------------------------------------


def test_backoff_delay_table() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(0, 6)] == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8]
    assert backoff.delay(20) == 30.0
    assert backoff.delay(10**6) == 30.0  # no OverflowError
    assert Backoff(initial=0.0).delay(10**6) == 0.0


@given(
    initial=st.floats(0, 100),
    factor=st.floats(1, 10),
    cap=st.floats(0, 1000),
    n=st.integers(0, 5000),
)
def test_backoff_is_bounded_and_monotonic(initial: float, factor: float, cap: float, n: int) -> None:
    backoff = Backoff(initial=initial, factor=factor, cap=cap)
    assert 0.0 <= backoff.delay(n) <= cap
    assert backoff.delay(n) <= backoff.delay(n + 1)


def test_backoff_grows_caps_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(initial=1, factor=2, cap=5, reset_after=10)
    sup, clock = make(children="w", intensity=None, backoff=backoff)
    delays = []
    for _ in range(6):
        clock.advance(9.5)  # quick: below reset_after (binary-exact times keep the boundary exact)
        decision = sup.exited("w", normal=False)
        delays.append(decision.delay)
        sup.started("w")
    assert delays == [0, 1, 2, 4, 5, 5]
    assert sup.consecutive_failures("w") == 6
    clock.advance(10)  # exactly reset_after: healthy
    decision = sup.exited("w", normal=False)
    assert decision.delay == 0.0
    assert sup.consecutive_failures("w") == 1
    sup.started("w")
    clock.advance(1)
    assert sup.exited("w", normal=False).delay == 1
    assert sup.consecutive_failures("w") == 2


def test_first_failure_restarts_immediately() -> None:
    sup, clock = make(children="w")
    clock.advance(60)
    decision = sup.exited("w", normal=False, reason="status 3")
    assert decision.action is Action.RESTART
    assert decision.delay == 0.0
    assert "w exited abnormally (status 3)" in decision.reason


def test_backoff_is_per_child() -> None:
    sup, clock = make(children="ab", intensity=None)
    for _ in range(3):
        clock.advance(0.5)
        sup.exited("a", normal=False)
        sup.started("a")
    clock.advance(0.5)
    assert sup.exited("b", normal=False).delay == 0.0
    assert sup.consecutive_failures("a") == 3
    assert sup.consecutive_failures("b") == 1


# -- strategies x restart types --------------------------------------------------------------------------

EXPECTED_RESTART = {
    Strategy.ONE_FOR_ONE: ((), ("b",)),
    Strategy.ONE_FOR_ALL: (("d", "c", "a"), ("a", "b", "c", "d")),
    Strategy.REST_FOR_ONE: (("d", "c"), ("b", "c", "d")),
}


@pytest.mark.parametrize("normal", [False, True], ids=["abnormal", "normal"])
@pytest.mark.parametrize("restart", list(Restart))
@pytest.mark.parametrize("strategy", list(Strategy))
def test_strategy_and_restart_type(strategy: Strategy, restart: Restart, normal: bool) -> None:
    specs = [ChildSpec(name=n, restart=restart if n == "b" else Restart.PERMANENT) for n in "abcd"]
    sup, clock = make(strategy, specs)
    clock.advance(1)
    decision = sup.exited("b", normal=normal)
    restarted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and not normal)
    if not restarted:
        # Not restarted: it is dropped and no sibling is touched.
        assert (decision.action, decision.stop, decision.restart, decision.remove) == (
            Action.NONE,
            (),
            (),
            ("b",),
        )
        assert sup.start_order() == ["a", "c", "d"]
        assert all(sup.is_running(n) for n in "acd")
        return
    stop, again = EXPECTED_RESTART[strategy]
    assert decision.action is Action.RESTART
    assert (decision.stop, decision.restart, decision.remove) == (stop, again, ())
    assert sup.start_order() == ["a", "b", "c", "d"]
    for name in "abcd":
        # Stopped and restarting children are not running until the caller starts them again.
        assert sup.is_running(name) == (name not in again)
        assert sup.restarts(name) == (1 if name in again else 0)
    start_all(sup, again)
    assert all(sup.is_running(n) for n in "abcd")


@pytest.mark.parametrize(
    ("strategy", "stop", "restart", "remove"),
    [
        (Strategy.ONE_FOR_ALL, ("c", "t2", "t1", "a"), ("a", "b", "c"), ("t1", "t2")),
        (Strategy.REST_FOR_ONE, ("c", "t2"), ("b", "c"), ("t2",)),
    ],
)
def test_temporary_siblings_are_removed_not_restarted(
    strategy: Strategy, stop: tuple[str, ...], restart: tuple[str, ...], remove: tuple[str, ...]
) -> None:
    specs = [
        ChildSpec(name="a"),
        ChildSpec(name="t1", restart=Restart.TEMPORARY),
        ChildSpec(name="b"),
        ChildSpec(name="t2", restart=Restart.TEMPORARY),
        ChildSpec(name="c", restart=Restart.TRANSIENT),  # transient siblings taken down do come back
    ]
    sup, _ = make(strategy, specs)
    decision = sup.exited("b", normal=False)
    assert (decision.action, decision.stop, decision.restart, decision.remove) == (
        Action.RESTART,
        stop,
        restart,
        remove,
    )
    assert sup.start_order() == [n for n in ["a", "t1", "b", "t2", "c"] if n not in remove]


def test_siblings_not_running_are_left_alone() -> None:
    sup, _ = make(Strategy.ONE_FOR_ALL, start=False)
    start_all(sup, ["b", "c", "d"])  # a never started (or is waiting for its own restart)
    decision = sup.exited("c", normal=False)
    assert (decision.stop, decision.restart) == (("d", "b"), ("b", "c", "d"))
    assert not sup.is_running("a")
    assert sup.restarts("a") == 0


def test_deliberate_stop_is_not_a_failure() -> None:
    sup, _ = make(Strategy.ONE_FOR_ALL)
    sup.stopped("b")
    assert not sup.is_running("b")
    assert sup.consecutive_failures("b") == 0
    assert sup.exited("b", normal=False).action is Action.NONE  # its exit notice after the stop
    decision = sup.exited("a", normal=False)
    assert "b" not in decision.stop + decision.restart
    sup.stopped("nobody")  # unknown: ignored


# -- intensity -------------------------------------------------------------------------------------------


def test_intensity_allows_r_restarts_and_escalates_on_r_plus_one() -> None:
    sup, clock = make(intensity=3, period=10)
    for name in "abc":
        clock.advance(1)
        decision = sup.exited(name, normal=False)
        assert decision.action is Action.RESTART, decision.reason
        sup.started(name)
    assert sup.recent_restarts() == 3
    clock.advance(1)
    decision = sup.exited("d", normal=False, reason="killed")
    assert decision.action is Action.ESCALATE
    assert decision.stop == ("c", "b", "a")  # every running child, reverse start order
    assert decision.restart == decision.remove == ()
    assert "4 restarts within 10s exceed intensity 3" in decision.reason
    assert not any(sup.is_running(n) for n in "abcd")
    assert sup.start_order() == ["a", "b", "c", "d"]  # the parent decides what becomes of them


def test_intensity_window_slides() -> None:
    sup, clock = make(children="w", intensity=2, period=10)
    for t in (0.0, 5.0):
        clock.now = t
        assert sup.exited("w", normal=False).action is Action.RESTART
        sup.started("w")
    clock.now = 10.0  # the restart at t=0 is exactly `period` old: still inside (as OTP)
    assert sup.recent_restarts() == 2
    assert sup.exited("w", normal=False).action is Action.ESCALATE
    sup, clock = make(children="w", intensity=2, period=10)
    for t in (0.0, 5.0):
        clock.now = t
        sup.exited("w", normal=False)
        sup.started("w")
    clock.now = 10.001  # now it has slid out
    assert sup.recent_restarts() == 1
    assert sup.exited("w", normal=False).action is Action.RESTART
    sup.started("w")
    clock.now = 14.0  # t=5 and t=10.001 are inside: a third would exceed 2
    assert sup.exited("w", normal=False).action is Action.ESCALATE


def test_intensity_zero_escalates_on_first_restart() -> None:
    sup, _ = make(children="ab", intensity=0)
    decision = sup.exited("a", normal=False)
    assert (decision.action, decision.stop) == (Action.ESCALATE, ("b",))


def test_unlimited_intensity_never_escalates() -> None:
    sup, clock = make(children="w", intensity=None, backoff=Backoff(cap=2))
    for _ in range(1000):
        decision = sup.exited("w", normal=False)
        assert decision.action is Action.RESTART
        assert decision.delay <= 2
        sup.started("w")
        clock.advance(0.001)
    assert sup.restarts("w") == 1000


def test_exits_that_do_not_restart_do_not_count() -> None:
    temporaries = [ChildSpec(name=f"t{i}", restart=Restart.TEMPORARY) for i in range(5)]
    sup, _ = make(children=temporaries, intensity=1)
    for i in range(5):
        assert sup.exited(f"t{i}", normal=False).action is Action.NONE
    assert sup.recent_restarts() == 0
    assert sup.start_order() == []


def test_one_for_all_counts_once_in_the_window() -> None:
    sup, _ = make(Strategy.ONE_FOR_ALL, intensity=1)
    decision = sup.exited("a", normal=False)
    assert decision.restart == ("a", "b", "c", "d")
    assert sup.recent_restarts() == 1


# -- duplicate and stray notices -------------------------------------------------------------------------


def test_duplicate_exit_notice_is_ignored() -> None:
    sup, clock = make(Strategy.REST_FOR_ONE, intensity=1)
    clock.advance(1)
    first = sup.exited("b", normal=False)
    assert first.action is Action.RESTART
    before = sup.snapshot()
    second = sup.exited("b", normal=False)
    assert second.action is Action.NONE
    assert (second.stop, second.restart, second.remove) == ((), (), ())
    assert "not running" in second.reason
    assert sup.snapshot() == before
    # The siblings it took down report their exits too: nothing happens either.
    for name in first.stop:
        assert sup.exited(name, normal=False).action is Action.NONE
    assert sup.snapshot() == before


def test_exit_of_unknown_child_is_ignored() -> None:
    sup, _ = make()
    before = sup.snapshot()
    decision = sup.exited("ghost", normal=False)
    assert decision.action is Action.NONE
    assert "not a child" in decision.reason
    assert sup.snapshot() == before


def test_repeated_started_keeps_the_first_start_time() -> None:
    sup, clock = make(children="w", backoff=Backoff(reset_after=10))
    sup.exited("w", normal=False)
    sup.started("w")
    assert sup.consecutive_failures("w") == 1
    clock.advance(5)
    sup.started("w")  # duplicate: w runs since t=0
    clock.advance(5)
    sup.exited("w", normal=False)
    assert sup.consecutive_failures("w") == 1  # ran 10s since its real start: healthy, the series resets
    with pytest.raises(KeyError):
        sup.started("ghost")


# -- membership and order --------------------------------------------------------------------------------


def test_dynamic_add_and_remove() -> None:
    sup, _ = make(Strategy.REST_FOR_ONE, children="ab")
    sup.add(ChildSpec(name="x", restart=Restart.TRANSIENT))
    assert sup.start_order() == ["a", "b", "x"]
    assert "x" in sup and sup.spec("x").restart is Restart.TRANSIENT
    with pytest.raises(ValueError, match="duplicate"):
        sup.add(ChildSpec(name="a"))
    sup.started("x")
    decision = sup.exited("b", normal=False)
    assert (decision.stop, decision.restart) == (("x",), ("b", "x"))
    start_all(sup, decision.restart)
    sup.remove("a")
    sup.remove("a")  # already gone: fine
    assert sup.start_order() == ["b", "x"]
    sup.add(ChildSpec(name="a"))  # comes back at the end, with a fresh history
    assert sup.start_order() == ["b", "x", "a"]
    assert (sup.restarts("a"), sup.consecutive_failures("a"), sup.is_running("a")) == (0, 0, False)
    with pytest.raises(KeyError):
        sup.restarts("ghost")
    assert not sup.is_running("ghost")


def test_shutdown_order_is_reverse_start_order() -> None:
    sup, _ = make(children="abc", start=False)
    sup.add(ChildSpec(name="z"))
    assert sup.start_order() == ["a", "b", "c", "z"]
    assert sup.shutdown_order() == ["z", "c", "b", "a"]
    assert [s.name for s in sup.specs()] == sup.start_order()


def test_snapshot_is_json() -> None:
    sup, clock = make(children=[ChildSpec(name="web", restart=Restart.TRANSIENT, shutdown=0)], intensity=None)
    clock.advance(2)
    sup.exited("web", normal=False)
    snap = json.loads(json.dumps(sup.snapshot()))
    assert snap["flags"]["strategy"] == "one_for_one"
    assert snap["flags"]["intensity"] is None
    assert snap["flags"]["backoff"]["cap"] == 30.0
    assert snap["children"] == [
        {
            "name": "web",
            "restart": "transient",
            "shutdown": 0,
            "running": False,
            "restarts": 1,
            "consecutive_failures": 1,
            "started_at": 0.0,
        }
    ]


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError):
        SupFlags(intensity=-1)
    with pytest.raises(ValueError):
        SupFlags(period=0)
    with pytest.raises(ValueError):
        ChildSpec(name="")
    with pytest.raises(ValueError):
        ChildSpec(name="x", shutdown=-1)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
    assert SupFlags(strategy="rest_for_one").strategy is Strategy.REST_FOR_ONE  # type: ignore[arg-type]
    assert ChildSpec(name="x", restart="temporary").restart is Restart.TEMPORARY  # type: ignore[arg-type]
    assert math.isinf(ChildSpec(name="sup", shutdown=math.inf).shutdown)  # OTP's "infinity"


def test_default_clock_is_monotonic_time() -> None:
    sup = Supervisor(SupFlags(), [ChildSpec(name="w")])
    sup.started("w")
    assert sup.exited("w", normal=False).action is Action.RESTART


# -- random sequences against a reference model ----------------------------------------------------------


Outcome = tuple[Action, list[str], list[str], list[str], float]


class Model:
    """The same rules, written as plainly as possible: lists and dicts, no pruning, no cleverness."""

    def __init__(self, flags: SupFlags, specs: list[ChildSpec]) -> None:
        self.flags = flags
        self.order: list[str] = []
        self.kind: dict[str, Restart] = {}
        self.running: dict[str, bool] = {}
        self.started_at: dict[str, float] = {}
        self.fails: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.restart_times: list[float] = []
        for spec in specs:
            self.add(spec)

    def add(self, spec: ChildSpec) -> None:
        self.order.append(spec.name)
        self.kind[spec.name] = spec.restart
        self.running[spec.name] = False
        self.fails[spec.name] = 0
        self.restarts[spec.name] = 0

    def drop(self, name: str) -> None:
        self.order.remove(name)
        for table in (self.kind, self.running, self.started_at, self.fails, self.restarts):
            table.pop(name, None)

    def start(self, name: str, now: float) -> None:
        if not self.running[name]:
            self.running[name] = True
            self.started_at[name] = now

    def exit(self, name: str, normal: bool, now: float) -> Outcome:
        """(action, stop, restart, remove, delay) for one exit notice."""
        if name not in self.order or not self.running[name]:
            return Action.NONE, [], [], [], 0.0
        self.running[name] = False
        if now - self.started_at[name] < self.flags.backoff.reset_after:
            self.fails[name] += 1
        else:
            self.fails[name] = 1
        kind = self.kind[name]
        if kind == Restart.TEMPORARY or (kind == Restart.TRANSIENT and normal):
            self.drop(name)
            return Action.NONE, [], [], [name], 0.0

        recent = [t for t in self.restart_times if now - t <= self.flags.period]
        if self.flags.intensity is not None and len(recent) + 1 > self.flags.intensity:
            stop = []
            for other in reversed(self.order):
                if self.running[other]:
                    stop.append(other)
                    self.running[other] = False
            return Action.ESCALATE, stop, [], [], 0.0

        position = self.order.index(name)
        if self.flags.strategy == Strategy.ONE_FOR_ONE:
            group = [name]
        elif self.flags.strategy == Strategy.ONE_FOR_ALL:
            group = list(self.order)
        else:
            group = self.order[position:]
        stop, restart, remove = [], [], []
        for other in reversed(group):
            if other != name and self.running[other]:
                stop.append(other)
        for other in group:
            if other == name:
                restart.append(other)
            elif other in stop:
                (remove if self.kind[other] == Restart.TEMPORARY else restart).append(other)
        for other in stop:
            self.running[other] = False
        for other in remove:
            self.drop(other)
        for other in restart:
            self.restarts[other] += 1
        self.restart_times.append(now)
        backoff = self.flags.backoff
        n = self.fails[name]
        delay = 0.0 if n == 1 else min(backoff.cap, backoff.initial * backoff.factor ** (n - 2))
        return Action.RESTART, stop, restart, remove, delay


def is_subsequence(items: tuple[str, ...], order: list[str]) -> bool:
    """`items` are distinct members of `order`, appearing in the same relative order."""
    positions = [order.index(item) for item in items if item in order]
    return len(positions) == len(items) == len(set(items)) and positions == sorted(positions)


flag_values = st.builds(
    SupFlags,
    strategy=st.sampled_from(Strategy),
    intensity=st.none() | st.integers(0, 4),
    period=st.sampled_from([1.0, 2.5, 10.0]),
    backoff=st.builds(
        Backoff,
        initial=st.sampled_from([0.1, 0.5, 1.0]),
        factor=st.sampled_from([1.0, 2.0, 3.0]),
        cap=st.sampled_from([0.0, 0.7, 5.0, 30.0]),
        reset_after=st.sampled_from([0.0, 0.5, 3.0, 10.0]),
    ),
)
restart_types = st.sampled_from(Restart)
pick = st.integers(0, 63)


class SupervisionMachine(RuleBasedStateMachine):
    """Random start/exit/stop/add/remove/advance sequences; the module and the model must agree throughout."""

    @initialize(flags=flag_values, kinds=st.lists(restart_types, min_size=1, max_size=6))
    def setup(self, flags: SupFlags, kinds: list[Restart]) -> None:
        self.clock = FakeClock()
        specs = [ChildSpec(name=f"c{i}", restart=kind) for i, kind in enumerate(kinds)]
        self.sup = Supervisor(flags, specs, clock=self.clock)
        self.model = Model(flags, specs)
        self.ever = [spec.name for spec in specs]  # every name seen, including removed ones

    @rule(index=pick)
    def start(self, index: int) -> None:
        idle = [name for name in self.model.order if not self.model.running[name]]
        if idle:
            name = idle[index % len(idle)]
            self.sup.started(name)
            self.model.start(name, self.clock.now)

    @rule()
    def start_all_idle(self) -> None:
        for name in list(self.model.order):
            self.sup.started(name)
            self.model.start(name, self.clock.now)

    @rule(index=pick)
    def duplicate_start_notice(self, index: int) -> None:
        if self.model.order:
            name = self.model.order[index % len(self.model.order)]
            self.sup.started(name)
            self.model.start(name, self.clock.now)

    @rule(index=pick, normal=st.booleans())
    def exit(self, index: int, normal: bool) -> None:
        candidates = [*self.ever, "ghost"]
        name = candidates[index % len(candidates)]
        before = self.sup.start_order()
        was_running = self.sup.is_running(name)
        kinds = {spec.name: spec.restart for spec in self.sup.specs()}
        decision = self.sup.exited(name, normal=normal, reason="status 1")
        expected = self.model.exit(name, normal, self.clock.now)
        action, stop, restart, remove, delay = expected
        assert decision.action is action
        assert list(decision.stop) == stop
        assert list(decision.restart) == restart
        assert list(decision.remove) == remove
        assert math.isclose(decision.delay, delay, rel_tol=1e-9, abs_tol=1e-12)

        assert decision.reason
        assert 0.0 <= decision.delay <= self.sup.flags.backoff.cap
        assert is_subsequence(decision.restart, before)
        assert is_subsequence(decision.stop, before[::-1])
        assert is_subsequence(decision.remove, before)
        assert not any(kinds[n] is Restart.TEMPORARY for n in decision.restart)
        assert not set(decision.restart) & set(decision.remove)
        assert name not in decision.stop
        if not was_running:
            assert decision == Decision(action=Action.NONE, reason=decision.reason)
        if decision.action is not Action.RESTART:
            assert decision.restart == ()
            assert decision.delay == 0.0
        if decision.action is Action.ESCALATE:
            assert not any(self.sup.is_running(n) for n in before)
        for n in decision.stop + decision.restart:
            assert not self.sup.is_running(n)
        for n in decision.remove:
            assert n not in self.sup

    @rule(index=pick)
    def stop(self, index: int) -> None:
        candidates = [*self.ever, "ghost"]
        name = candidates[index % len(candidates)]
        self.sup.stopped(name)
        if name in self.model.running:
            self.model.running[name] = False

    @rule(kind=restart_types)
    def add(self, kind: Restart) -> None:
        spec = ChildSpec(name=f"c{len(self.ever)}", restart=kind)
        self.ever.append(spec.name)
        self.sup.add(spec)
        self.model.add(spec)

    @rule(index=pick)
    def remove(self, index: int) -> None:
        name = self.ever[index % len(self.ever)]
        self.sup.remove(name)
        if name in self.model.order:
            self.model.drop(name)

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, 3.0, 10.0]) | st.floats(0, 20))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.sup.start_order() == self.model.order
        assert self.sup.shutdown_order() == self.model.order[::-1]
        for name in self.model.order:
            assert self.sup.is_running(name) == self.model.running[name]
            assert self.sup.restarts(name) == self.model.restarts[name]
            assert self.sup.consecutive_failures(name) == self.model.fails[name]
        json.dumps(self.sup.snapshot())


SupervisionMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # "explain" alone takes ~30s
)
test_supervision_agrees_with_model = SupervisionMachine.TestCase
