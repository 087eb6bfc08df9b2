"""The metrics aggregator behind `aggregator.query`: statsd samples folded into per-period statistics.

A metric is a key plus its tags (`machine.CPU.percent` with `id=0, type=phys`); each distinct pair
has one `State`. A value is fed either as it is (`A`, average) or, for counters that only grow
(`D`, differential), as its rate per second since the previous value. For every aggregation period
(300 s and 3600 s by default) the state keeps the running sample of the current period (average,
total, max, count, aligned start) and the last `HISTORY` closed samples; a closed sample is also
returned as a `Point` for the `statistics:<period>` lists, as the original core0 pushed them.

This is the original's arithmetic (threefoldtech/0-core, apps/core0/stats) with three changes:
time is in float seconds rather than whole seconds, so two values of a counter printed in the same
second still give a rate; a counter that goes down (its process restarted) starts over instead of
feeding a negative rate; and a period is closed by `close_periods()` at its end, not only when the
next value of the same metric happens to arrive.

Pure: no I/O, no threads, time comes in as arguments (tests/unit/test_aggregator.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

AVERAGE = "A"
DIFFERENTIAL = "D"
OPS = (AVERAGE, DIFFERENTIAL)
ID_TAG = "id"              # the tag that names the instance of a metric: `key/<id>` in a query
HISTORY = 5                # closed samples kept per period
PERIODS = (300, 3600)
IDLE_EXPIRY = 3600.0       # a metric not fed for this long is forgotten (the original: 1 h)


@attrs.define
class Sample:
    """Statistics of one period of one metric. `start` is the period's start (epoch seconds,
    aligned to the period); 0 means no value has arrived in it yet."""

    avg: float = 0.0
    total: float = 0.0
    max: float = 0.0
    count: int = 0
    start: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1
        self.avg = self.total / self.count
        if self.count == 1 or value > self.max:
            self.max = value

    def to_dict(self) -> dict[str, Any]:
        return {"avg": self.avg, "total": self.total, "max": self.max, "count": self.count,
                "start": self.start}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        return cls(avg=float(data["avg"]), total=float(data["total"]), max=float(data["max"]),
                   count=int(data["count"]), start=int(data["start"]))


@attrs.frozen
class Point:
    """A closed sample, as pushed to `statistics:<period>`."""

    period: int
    key: str
    tags: dict[str, str]
    sample: Sample

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "tags": dict(self.tags), **self.sample.to_dict()}


@attrs.define
class State:
    """Everything kept about one metric (one key with one set of tags)."""

    key: str
    op: str
    tags: dict[str, str]
    periods: tuple[int, ...]
    last_value: float = 0.0
    last_time: float = -1.0      # -1: no value yet
    updated: float = 0.0         # when it was last fed (for expiry)
    current: dict[int, Sample] = attrs.field(factory=dict)
    history: dict[int, list[Sample]] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        for period in self.periods:
            self.current.setdefault(period, Sample())
            self.history.setdefault(period, [])

    def feed(self, value: float, now: float) -> list[Point]:
        """Add one value observed at `now`; returns the samples this closed (a new period began)."""
        previous_value, previous_time = self.last_value, self.last_time
        self.last_value, self.last_time, self.updated = value, now, now
        if self.op == DIFFERENTIAL:
            if previous_time < 0 or now <= previous_time or value < previous_value:
                # First value, a repeated or out-of-order one, or a counter that restarted from
                # zero: no rate can be told yet; this value is the new reference.
                return []
            value = (value - previous_value) / (now - previous_time)
        if not math.isfinite(value):
            return []
        closed = self.close_periods(now)
        for period in self.periods:
            sample = self.current[period]
            if sample.start == 0:
                sample.start = _aligned(now, period)
            sample.add(value)
        return closed

    def close_periods(self, now: float) -> list[Point]:
        """Close every current sample whose period has ended by `now`."""
        closed = []
        for period in self.periods:
            sample = self.current[period]
            if sample.start and sample.start + period <= now:
                history = self.history[period]
                history.append(sample)
                del history[:-HISTORY]
                self.current[period] = Sample()
                closed.append(Point(period, self.key, dict(self.tags), sample))
        return closed

    def to_dict(self) -> dict[str, Any]:
        """The query's view (and the persisted form)."""
        return {
            "key": self.key, "op": self.op, "tags": dict(self.tags),
            "last_value": self.last_value, "last_time": self.last_time, "updated": self.updated,
            "current": {str(p): s.to_dict() for p, s in self.current.items()},
            "history": {str(p): [s.to_dict() for s in h] for p, h in self.history.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], periods: tuple[int, ...]) -> State:
        state = cls(key=str(data["key"]), op=str(data["op"]), tags=dict(data.get("tags") or {}),
                    periods=periods, last_value=float(data["last_value"]),
                    last_time=float(data["last_time"]), updated=float(data.get("updated") or 0.0))
        # Periods no longer configured are dropped; new ones start empty.
        for name, sample in (data.get("current") or {}).items():
            if int(name) in state.current:
                state.current[int(name)] = Sample.from_dict(sample)
        for name, samples in (data.get("history") or {}).items():
            if int(name) in state.history:
                state.history[int(name)] = [Sample.from_dict(s) for s in samples][-HISTORY:]
        return state


def state_id(key: str, tags: Mapping[str, str]) -> str:
    """One metric's identity: its key and its tags in a stable order."""
    text = ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return f"{key}:{hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()}"


def _aligned(now: float, period: int) -> int:
    return int(now // period) * period


class Aggregator:
    """Every metric's state, fed by `feed`, read by `query`."""

    def __init__(self, periods: Iterable[int] = PERIODS) -> None:
        periods = tuple(sorted({int(p) for p in periods}))
        if not periods or periods[0] <= 0:
            raise ValueError(f"aggregation periods must be positive, got {periods}")
        self.periods = periods
        self.states: dict[str, State] = {}

    def __len__(self) -> int:
        return len(self.states)

    def feed(self, key: str, value: float, op: str, tags: Mapping[str, str] | None = None, *,
             now: float) -> list[Point]:
        """One value of metric `key` (op `A` or `D`) with its tags; returns the samples closed."""
        if op not in OPS:
            raise ValueError(f"op must be A or D, not {op!r}")
        tags = dict(tags or {})
        ident = state_id(key, tags)
        state = self.states.get(ident)
        if state is None or state.op != op:
            # A metric that changes its op is a different metric from then on.
            state = self.states[ident] = State(key=key, op=op, tags=tags, periods=self.periods)
        return state.feed(float(value), now)

    def close_periods(self, now: float) -> list[Point]:
        """Close every sample whose period has ended and forget metrics idle for IDLE_EXPIRY."""
        closed: list[Point] = []
        for ident, state in list(self.states.items()):
            closed += state.close_periods(now)
            if now - state.updated > max(IDLE_EXPIRY, 2 * self.periods[-1]):
                del self.states[ident]
        return closed

    def query(self, key: str | None = None, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """States matching `key` (exact; None for all) and every tag in `tags`, by name.

        A name is the key, or `key/<id>` when the metric has an `id` tag (the original's naming).
        When several metrics would share a name (same key and id, other tags differing), each of
        them is named `<name>{tag=value,...}` with its other tags instead, so none hides another.
        """
        wanted = dict(tags or {})
        found: list[State] = []
        for state in self.states.values():
            if key and state.key != key:
                continue
            if any(state.tags.get(k) != v for k, v in wanted.items()):
                continue
            found.append(state)
        names: dict[str, list[State]] = {}
        for state in found:
            base = f"{state.key}/{state.tags[ID_TAG]}" if ID_TAG in state.tags else state.key
            names.setdefault(base, []).append(state)
        result: dict[str, Any] = {}
        for base, states in names.items():
            for state in states:
                name = base
                if len(states) > 1:
                    others = ",".join(f"{k}={v}" for k, v in sorted(state.tags.items()) if k != ID_TAG)
                    name = f"{base}{{{others}}}"
                view = state.to_dict()
                del view["updated"]
                result[name] = view
        return dict(sorted(result.items()))

    def dump(self) -> list[dict[str, Any]]:
        """Every state, JSON-able (to persist across a restart of the StatsActor)."""
        return [state.to_dict() for state in self.states.values()]

    def load(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Restore what `dump` returned; malformed entries are skipped. Returns how many loaded."""
        loaded = 0
        for data in states:
            try:
                state = State.from_dict(data, self.periods)
            except (KeyError, TypeError, ValueError):
                continue
            if state.op in OPS:
                self.states[state_id(state.key, state.tags)] = state
                loaded += 1
        return loaded
