"""The aggregator's arithmetic (system/aggregator.py): averages, rates, periods, history, query."""

from __future__ import annotations

import json

import pytest

from g8os.system.aggregator import HISTORY, IDLE_EXPIRY, Aggregator, Sample, state_id

pytestmark = pytest.mark.timeout(10)

T0 = 1_700_000_100.0  # a multiple of 300 (and of 10): the start of a period


def test_average_running_sample() -> None:
    agg = Aggregator(periods=(300,))
    for offset, value in ((1, 10), (2, 20), (3, 60)):
        assert agg.feed("load", value, "A", now=T0 + offset) == []
    state = agg.query()["load"]
    assert state["op"] == "A" and state["last_value"] == 60 and state["last_time"] == T0 + 3
    assert state["current"]["300"] == {"avg": 30.0, "total": 90.0, "max": 60.0, "count": 3, "start": T0}
    assert state["history"]["300"] == []


def test_max_of_negative_values_is_the_largest_not_zero() -> None:
    agg = Aggregator(periods=(10,))
    agg.feed("temp", -5, "A", now=T0 + 1)
    agg.feed("temp", -3, "A", now=T0 + 2)
    assert agg.query()["temp"]["current"]["10"]["max"] == -3


def test_differential_is_a_rate_per_second() -> None:
    agg = Aggregator(periods=(300,))
    assert agg.feed("rx", 1000, "D", now=T0 + 1) == []
    sample = agg.query()["rx"]["current"]["300"]
    assert sample["count"] == 0  # the first value is only the reference
    agg.feed("rx", 1500, "D", now=T0 + 3)       # 500 in 2 s
    agg.feed("rx", 1600, "D", now=T0 + 3.5)     # 100 in 0.5 s
    sample = agg.query()["rx"]["current"]["300"]
    assert sample["count"] == 2
    assert sample["total"] == pytest.approx(250 + 200)
    assert sample["avg"] == pytest.approx(225) and sample["max"] == pytest.approx(250)


def test_differential_ignores_repeats_and_restarts_after_a_counter_reset() -> None:
    agg = Aggregator(periods=(300,))
    agg.feed("rx", 100, "D", now=T0 + 1)
    agg.feed("rx", 200, "D", now=T0 + 1)     # same instant: no rate, new reference
    agg.feed("rx", 10, "D", now=T0 + 2)      # went down: the counter restarted
    assert agg.query()["rx"]["current"]["300"]["count"] == 0
    agg.feed("rx", 30, "D", now=T0 + 4)      # 20 in 2 s from the new reference
    sample = agg.query()["rx"]["current"]["300"]
    assert sample["count"] == 1 and sample["avg"] == pytest.approx(10)


def test_a_new_period_closes_the_previous_sample() -> None:
    agg = Aggregator(periods=(10, 60))
    agg.feed("x", 1, "A", now=T0 + 1)
    agg.feed("x", 3, "A", now=T0 + 9)
    closed = agg.feed("x", 100, "A", now=T0 + 12)
    assert [(p.period, p.key, p.sample.avg, p.sample.count, p.sample.start) for p in closed] == [
        (10, "x", 2.0, 2, T0)]
    assert closed[0].to_dict() == {"key": "x", "tags": {}, "avg": 2.0, "total": 4.0, "max": 3.0,
                                   "count": 2, "start": T0}
    state = agg.query()["x"]
    assert state["current"]["10"] == {"avg": 100.0, "total": 100.0, "max": 100.0, "count": 1,
                                      "start": T0 + 10}
    assert [s["avg"] for s in state["history"]["10"]] == [2.0]
    # the 60 s period runs on: all three values
    assert state["current"]["60"]["count"] == 3 and state["history"]["60"] == []


def test_close_periods_closes_quiet_metrics_at_their_end() -> None:
    agg = Aggregator(periods=(10,))
    agg.feed("quiet", 5, "A", now=T0 + 2)
    assert agg.close_periods(T0 + 9.9) == []
    closed = agg.close_periods(T0 + 10)
    assert [(p.key, p.sample.count) for p in closed] == [("quiet", 1)]
    assert agg.close_periods(T0 + 30) == []  # nothing new: nothing more to close
    state = agg.query()["quiet"]
    assert state["current"]["10"]["count"] == 0 and len(state["history"]["10"]) == 1


def test_history_keeps_the_last_few_samples() -> None:
    agg = Aggregator(periods=(10,))
    for period in range(HISTORY + 3):
        agg.feed("x", period, "A", now=T0 + 10 * period + 1)
    history = agg.query()["x"]["history"]["10"]
    assert len(history) == HISTORY
    assert [s["avg"] for s in history] == [float(v) for v in range(2, HISTORY + 2)]


def test_tags_make_distinct_metrics_and_id_names_them() -> None:
    agg = Aggregator(periods=(300,))
    agg.feed("cpu", 10, "A", {"id": "0", "type": "phys"}, now=T0 + 1)
    agg.feed("cpu", 30, "A", {"id": "1", "type": "phys"}, now=T0 + 1)
    agg.feed("mem", 7, "A", {"type": "phys"}, now=T0 + 1)
    assert set(agg.query()) == {"cpu/0", "cpu/1", "mem"}
    assert set(agg.query(key="cpu")) == {"cpu/0", "cpu/1"}
    assert set(agg.query(tags={"id": "1"})) == {"cpu/1"}
    assert set(agg.query(key="cpu", tags={"type": "phys", "id": "0"})) == {"cpu/0"}
    assert agg.query(tags={"type": "virt"}) == {}
    assert agg.query()["cpu/1"]["tags"] == {"id": "1", "type": "phys"}


def test_names_that_would_collide_carry_their_other_tags() -> None:
    agg = Aggregator(periods=(300,))
    agg.feed("disk.size", 1, "A", {"id": "sda", "fs": "ext4"}, now=T0)
    agg.feed("disk.size", 2, "A", {"id": "sda", "fs": "xfs"}, now=T0)
    assert set(agg.query()) == {"disk.size/sda{fs=ext4}", "disk.size/sda{fs=xfs}"}


def test_tag_order_does_not_matter_and_an_op_change_is_a_new_metric() -> None:
    assert state_id("k", {"a": "1", "b": "2"}) == state_id("k", {"b": "2", "a": "1"})
    agg = Aggregator(periods=(300,))
    agg.feed("k", 1, "A", {"a": "1", "b": "2"}, now=T0)
    agg.feed("k", 3, "A", {"b": "2", "a": "1"}, now=T0 + 1)
    assert agg.query()["k"]["current"]["300"]["count"] == 2
    agg.feed("k", 100, "D", {"a": "1", "b": "2"}, now=T0 + 2)
    assert agg.query()["k"]["op"] == "D" and agg.query()["k"]["current"]["300"]["count"] == 0


def test_idle_metrics_are_forgotten() -> None:
    agg = Aggregator(periods=(10,))
    agg.feed("old", 1, "A", now=T0)
    agg.feed("new", 1, "A", now=T0 + IDLE_EXPIRY)
    agg.close_periods(T0 + IDLE_EXPIRY + 1)
    assert set(agg.query()) == {"new"}


def test_non_finite_values_and_bad_ops_are_refused() -> None:
    agg = Aggregator(periods=(10,))
    agg.feed("x", float("nan"), "A", now=T0)
    assert agg.query()["x"]["current"]["10"]["count"] == 0
    with pytest.raises(ValueError):
        agg.feed("x", 1, "C", now=T0)
    with pytest.raises(ValueError):
        Aggregator(periods=(0,))


def test_dump_and_load_round_trip_through_json() -> None:
    agg = Aggregator(periods=(10, 60))
    agg.feed("rx", 100, "D", {"id": "eth0"}, now=T0 + 1)
    agg.feed("rx", 300, "D", {"id": "eth0"}, now=T0 + 3)
    agg.feed("rx", 400, "D", {"id": "eth0"}, now=T0 + 13)
    again = Aggregator(periods=(10, 60))
    assert again.load(json.loads(json.dumps(agg.dump()))) == 1
    assert again.query() == agg.query()
    # the reference value survived: the next rate continues from it
    again.feed("rx", 500, "D", {"id": "eth0"}, now=T0 + 14)
    assert again.query()["rx/eth0"]["current"]["10"]["total"] == pytest.approx(10 + 100)


def test_load_skips_garbage_and_adapts_to_new_periods() -> None:
    agg = Aggregator(periods=(10,))
    agg.feed("x", 1, "A", now=T0 + 1)
    dumped = agg.dump()
    other = Aggregator(periods=(10, 30))
    assert other.load([*dumped, {"key": "broken"}, {"key": "y", "op": "Z", "last_value": 0,
                                                      "last_time": 0}]) == 1
    state = other.query()["x"]
    assert state["current"]["10"]["count"] == 1 and state["current"]["30"]["count"] == 0


def test_sample_serialisation() -> None:
    sample = Sample()
    sample.add(2)
    sample.add(4)
    assert Sample.from_dict(sample.to_dict()) == sample
