"""Erlang/OTP supervision as pure decisions: what to stop, restart or drop when a child dies.

Both tiers of actors supervise with this module: heavy (Thespian) actors for their child actors, and light
in-process actors for their OS processes. Keeping the decisions pure (no actors, threads, sleeps or I/O; time
only from an injected clock) is what lets every corner of the semantics be unit-tested quickly and exactly.
The caller carries a `Decision` out (stop in the given order, wait `delay`, start in the given order) and
reports back with `started()`, `stopped()` and `exited()`.

Semantics follow OTP's `supervisor`: strategies, restart types, intensity over a sliding period, start order
and reverse shutdown order. On top, a per-child capped exponential backoff (OTP has none) keeps a crashing OS
process from spinning while its supervisor still tolerates it (protected services have no intensity limit).
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

_non_negative = attrs.validators.ge(0)


class Strategy(enum.StrEnum):
    """Which siblings go down with a child that dies and is restarted."""

    ONE_FOR_ONE = "one_for_one"  # only the dead child
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # the dead child and every child started after it


class Restart(enum.StrEnum):
    """When a child that exited on its own is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never: it is dropped when it exits


class Action(enum.StrEnum):
    """What the supervisor does about one exit."""

    RESTART = "restart"
    NONE = "none"
    ESCALATE = "escalate"  # too many restarts: stop everything and let the parent decide


@attrs.frozen(kw_only=True)
class Backoff:
    """Capped exponential delay between quick consecutive restarts of one child.

    The first failure after a healthy run restarts at once, like OTP; only a child that keeps failing soon
    after its start waits, longer each time, so a broken service cannot spin the CPU.
    """

    initial: float = attrs.field(default=0.1, validator=_non_negative)
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    cap: float = attrs.field(default=30.0, validator=_non_negative)
    reset_after: float = attrs.field(default=10.0, validator=_non_negative)

    def delay(self, consecutive_failures: int) -> float:
        """Seconds to wait before restart number `consecutive_failures` of a quick-failing series."""
        if consecutive_failures <= 1:
            return 0.0
        try:
            return min(self.cap, self.initial * self.factor ** (consecutive_failures - 2))
        except OverflowError:
            return self.cap if self.initial > 0 else 0.0


@attrs.frozen(kw_only=True)
class SupFlags:
    """A supervisor's policy: its strategy, how many restarts it tolerates, and the backoff."""

    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, converter=Strategy)
    intensity: int | None = attrs.field(
        default=5, validator=attrs.validators.optional(attrs.validators.ge(0))
    )  # None: never give up (protected services)
    period: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    backoff: Backoff = Backoff()


@attrs.frozen(kw_only=True)
class ChildSpec:
    """How one child is supervised; `name` is its identity (addresses and pids change on restart)."""

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    restart: Restart = attrs.field(default=Restart.PERMANENT, converter=Restart)
    shutdown: float = attrs.field(default=5.0, validator=_non_negative)  # grace before SIGKILL; 0 = brutal


@attrs.frozen(kw_only=True)
class Decision:
    """What to do about one exit, in the order the caller must do it: stop, wait `delay`, start."""

    action: Action
    stop: tuple[str, ...] = ()  # running siblings, reverse start order
    restart: tuple[str, ...] = ()  # start order; includes the dead child when it restarts
    remove: tuple[str, ...] = ()  # children no longer in the supervisor
    delay: float = 0.0
    reason: str = ""


@attrs.define
class _Child:
    spec: ChildSpec
    running: bool = False
    started_at: float | None = None
    restarts: int = 0
    consecutive_failures: int = 0


class Supervisor:
    """The bookkeeping of one supervisor: ordered children, their run history, the restart window.

    A child is "running" between `started()` and the exit or stop that ends it. Children that are not running
    (never started, waiting for a decided restart, or stopped on purpose) are never stopped or restarted by a
    sibling's decision: whoever holds them already knows what to do with them.
    """

    def __init__(
        self,
        flags: SupFlags,
        specs: Iterable[ChildSpec] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flags = flags
        self._clock = clock
        self._children: dict[str, _Child] = {}
        self._window: collections.deque[float] = collections.deque()  # restart times, oldest first
        for spec in specs:
            self.add(spec)

    # -- membership -------------------------------------------------------------------------------------

    def add(self, spec: ChildSpec) -> None:
        """Append a child at the end of the start order."""
        if spec.name in self._children:
            raise ValueError(f"duplicate child name {spec.name!r}")
        self._children[spec.name] = _Child(spec)

    def remove(self, name: str) -> None:
        """Forget a child; a no-op if it is already gone (a decision may have dropped it first)."""
        self._children.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._children

    def spec(self, name: str) -> ChildSpec:
        """The spec of one child (KeyError if unknown)."""
        return self._children[name].spec

    def specs(self) -> list[ChildSpec]:
        return [child.spec for child in self._children.values()]

    def start_order(self) -> list[str]:
        return list(self._children)

    def shutdown_order(self) -> list[str]:
        return list(reversed(self._children))

    # -- lifecycle reports ------------------------------------------------------------------------------

    def started(self, name: str) -> None:
        """The child runs now. A repeated notice keeps the first start time, not to hide a quick death."""
        child = self._children[name]
        if not child.running:
            child.running = True
            child.started_at = self._clock()

    def stopped(self, name: str) -> None:
        """We stopped the child on purpose: not a failure, nothing to decide. Unknown names are ignored."""
        child = self._children.get(name)
        if child is not None:
            child.running = False

    def exited(self, name: str, *, normal: bool, reason: str = "") -> Decision:
        """The child died on its own: decide, and update the bookkeeping to match the decision."""
        child = self._children.get(name)
        if child is None or not child.running:
            state = "not a child" if child is None else "not running"
            return Decision(action=Action.NONE, reason=f"exit of {name} ignored: {state}")

        now = self._clock()
        ran = now - child.started_at if child.started_at is not None else 0.0
        healthy = ran >= self.flags.backoff.reset_after
        child.consecutive_failures = 1 if healthy else child.consecutive_failures + 1
        child.running = False
        head = f"{name} exited {'normally' if normal else 'abnormally'}" + (f" ({reason})" if reason else "")

        restart_type = child.spec.restart
        if restart_type is Restart.TEMPORARY or (restart_type is Restart.TRANSIENT and normal):
            del self._children[name]
            why = f"{head}; {restart_type} child not restarted, removed"
            return Decision(action=Action.NONE, remove=(name,), reason=why)

        period = self.flags.period
        while self._window and now - self._window[0] > period:
            self._window.popleft()
        recent = len(self._window) + 1
        intensity = self.flags.intensity
        if intensity is not None and recent > intensity:
            stop = tuple(n for n in self.shutdown_order() if self._children[n].running)
            for n in stop:
                self._children[n].running = False
            why = f"{head}; {recent} restarts within {period:g}s exceed intensity {intensity}: giving up"
            return Decision(action=Action.ESCALATE, stop=stop, reason=why)

        affected = self._affected(name)
        stop = tuple(n for n in reversed(affected) if n != name and self._children[n].running)
        # Temporary siblings taken down are dropped, never restarted (OTP does the same).
        remove = tuple(n for n in stop[::-1] if self._children[n].spec.restart is Restart.TEMPORARY)
        restart = tuple(n for n in affected if n == name or (n in stop and n not in remove))
        for n in stop:
            self._children[n].running = False
        for n in remove:
            del self._children[n]
        for n in restart:
            self._children[n].restarts += 1
        self._window.append(now)
        delay = self.flags.backoff.delay(child.consecutive_failures)
        return Decision(
            action=Action.RESTART,
            stop=stop,
            restart=restart,
            remove=remove,
            delay=delay,
            reason=f"{head}; restart {child.restarts} of {name} in {delay:g}s"
            f" ({recent} within {period:g}s, {self.flags.strategy})",
        )

    def _affected(self, name: str) -> list[str]:
        """The children the strategy takes down with `name`, in start order."""
        order = self.start_order()
        if self.flags.strategy is Strategy.ONE_FOR_ALL:
            return order
        if self.flags.strategy is Strategy.REST_FOR_ONE:
            return order[order.index(name) :]
        return [name]

    # -- introspection ----------------------------------------------------------------------------------

    def restarts(self, name: str) -> int:
        """How many times this child was restarted, by its own exit or a sibling's (KeyError if unknown)."""
        return self._children[name].restarts

    def consecutive_failures(self, name: str) -> int:
        """Exits in a row that each came soon after a start (KeyError if unknown)."""
        return self._children[name].consecutive_failures

    def is_running(self, name: str) -> bool:
        """False for unknown children too: a dropped temporary child is simply not running."""
        child = self._children.get(name)
        return child is not None and child.running

    def recent_restarts(self) -> int:
        """Restarts counted against the intensity right now (the sliding window at clock())."""
        now = self._clock()
        return sum(1 for t in self._window if now - t <= self.flags.period)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture for actor.inspect and the event log."""
        flags = self.flags
        return {
            "flags": {
                "strategy": flags.strategy.value,
                "intensity": flags.intensity,
                "period": flags.period,
                "backoff": attrs.asdict(flags.backoff),
            },
            "recent_restarts": self.recent_restarts(),
            "children": [
                {
                    "name": name,
                    "restart": child.spec.restart.value,
                    "shutdown": child.spec.shutdown,
                    "running": child.running,
                    "restarts": child.restarts,
                    "consecutive_failures": child.consecutive_failures,
                    "started_at": child.started_at,
                }
                for name, child in self._children.items()
            ],
        }
