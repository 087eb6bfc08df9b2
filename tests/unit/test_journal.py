"""The records journal: what a crashed writer left is found again, torn lines are ignored."""

from __future__ import annotations

import os

import pytest

from g8os.system import journal
from g8os.system.journal import Journal

pytestmark = pytest.mark.timeout(30)


def test_records_survive_the_writer(tmp_path):
    path = tmp_path / "journal"
    first = Journal(path)
    first.put("a", {"pid": 1})
    first.put("b", {"pid": 2})
    first.put("a", {"pid": 3})
    first.drop("b")
    # the writer dies without closing anything
    again = Journal(path)
    assert again.records() == {"a": {"pid": 3}}


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "journal"
    writer = Journal(path)
    writer.put("a", {"pid": 1})
    with open(path, "ab") as raw:
        raw.write(b'{"name":"b","record":{"pi')  # killed mid-write
    assert Journal(path).records() == {"a": {"pid": 1}}


def test_opening_compacts_and_growth_compacts(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    monkeypatch.setattr(journal, "COMPACT_MINIMUM", 50)
    writer = Journal(path)
    writer.put("keep", {"x": 1})
    for i in range(200):
        writer.put(f"j{i}", {"i": i})
        writer.drop(f"j{i}")
    lines = path.read_bytes().count(b"\n")
    assert lines < 60  # compacted on the way, not 401 lines
    assert Journal(path).records() == {"keep": {"x": 1}}
    assert path.read_bytes().count(b"\n") == 1


def test_drop_of_unknown_name_writes_nothing(tmp_path):
    path = tmp_path / "journal"
    writer = Journal(path)
    size = os.path.getsize(path)
    writer.drop("never")
    assert os.path.getsize(path) == size
