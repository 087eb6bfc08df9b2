"""The node log's records and filters, and events.list's `since` and matching (pure helpers of
actors/log.py and messages/events.py)."""

from __future__ import annotations

import json
import logging

import pytest

from g8os.actors.log import _since, event_severity, passes, record_json, record_level
from g8os.messages.events import from_entry, matches, under
from g8os.messages.internal import Event

pytestmark = pytest.mark.timeout(10)


def test_a_job_record_is_the_protocol_stream_entry() -> None:
    text = record_json(("job-1", 7, "careful", 1795652584753515457, 0))
    assert json.loads(text) == {"core": 0, "command": "job-1",
                                "message": {"message": "careful", "epoch": 1795652584753515457,
                                            "meta": 7 << 16}}


def test_a_core0_record_carries_its_path() -> None:
    body = json.loads(record_json(("core0", 8, "event /actor/failed {}", 5, 0, "/stats")))
    assert body["command"] == "core0" and body["path"] == "/stats"
    assert body["message"] == {"message": "event /actor/failed {}", "epoch": 5, "meta": 8 << 16}


def test_levels_filter_and_ends_always_pass() -> None:
    assert passes(frozenset(), ("j", 11, "x", 0, 0))
    assert passes(frozenset({7, 8}), ("j", 7, "x", 0, 0))
    assert not passes(frozenset({7, 8}), ("j", 1, "x", 0, 0))
    assert passes(frozenset({7, 8}), ("j", 1, "", 0, 0x2))   # a job's end, success
    assert passes(frozenset({7, 8}), ("j", 2, "", 0, 0x4))   # a job's end, error
    assert not passes(frozenset({9}), ("core0", 5, "x", 0, 0, "/jobs"))


def test_severities_map_to_levels() -> None:
    assert [record_level(s) for s in (logging.CRITICAL, logging.ERROR, logging.WARNING, 25,
                                      logging.INFO, logging.DEBUG)] == [9, 8, 7, 5, 5, 11]


def test_event_severities() -> None:
    def event(topic: str, **data: object) -> Event:
        return Event(0.0, topic, "/x", dict(data))

    assert event_severity(event("/actor/exited", normal=False)) == logging.WARNING
    assert event_severity(event("/actor/exited", normal=True)) == logging.INFO
    assert event_severity(event("/actor/escalated")) == logging.ERROR
    assert event_severity(event("/job/end", state="SUCCESS")) == logging.DEBUG
    assert event_severity(event("/actor/ready")) == logging.INFO


@pytest.mark.parametrize("since, start, after", [
    ("1795652609137-3", "1795652609137-3", None),             # a stream id: exclusive by itself
    ("1795652609137", "1795652609137-18446744073709551615", None),  # its milliseconds alone
    (1795652609.5, "1795652609500-0", 1795652609.5),           # epoch seconds
    ("1795652609.25", "1795652609250-0", 1795652609.25),       # as text
    ("1795652609", "1795652609000-0", 1795652609.0),           # whole seconds as text
    (0, "0-0", 0.0),
])
def test_since_forms(since: object, start: str, after: float | None) -> None:
    assert _since(since) == (start, after)


def test_prefixes_match_segment_by_segment() -> None:
    assert under("/actor/exited", "/actor") and under("/actor", "/actor") and under("/x", "/")
    assert under("/jobs/web", "/jobs/") and not under("/jobs/web", "/job")
    assert not under("/actor/exited", "/actor/exit")
    event = {"topic": "/job/end", "path": "/jobs/web"}
    assert matches(event) and matches(event, "/job", "/jobs") and matches(event, "/job/end", "/jobs/web")
    assert not matches(event, "/actor") and not matches(event, None, "/jobs/we")


def test_stream_entries_become_events() -> None:
    event = from_entry(b"17-0", {b"ts": b"1.5", b"topic": b"/job/end", b"path": b"/jobs/a",
                                 b"data": b'{"code": 0}'})
    assert event == {"id": "17-0", "ts": 1.5, "topic": "/job/end", "path": "/jobs/a", "data": {"code": 0}}
    assert from_entry("18-0", {b"data": b"not json"})["data"] == {}
