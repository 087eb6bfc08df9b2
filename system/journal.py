"""An append-only journal of records keyed by name: what a process host must find again after a
crash (its running jobs), written once per change at the cost of one write(2).

One JSON object per line: {"name": ..., "record": {...}} sets a record, {"name": ..., "drop":
true} removes it. Opening replays the file (a torn last line, from a crash mid-write, is ignored)
and rewrites it compacted; it is compacted again whenever it has grown to many times the live
records. Keep it on a tmpfs: it is meant to outlive a process, not the node.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

COMPACT_FACTOR = 8       # compact when the file holds this many lines per live record...
COMPACT_MINIMUM = 4096   # ...and at least this many lines


class Journal:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.live: dict[str, dict[str, Any]] = self._replay()
        self._fd = -1
        self._lines = 0
        self._rewrite()

    def _replay(self) -> dict[str, dict[str, Any]]:
        live: dict[str, dict[str, Any]] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return live
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                name = entry["name"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn line: the write it belonged to never completed
            if entry.get("drop"):
                live.pop(name, None)
            elif isinstance(entry.get("record"), dict):
                live[name] = entry["record"]
        return live

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for name, record in self.live.items():
                out.write(_line({"name": name, "record": record}))
        os.replace(tmp, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = len(self.live)

    def records(self) -> dict[str, dict[str, Any]]:
        """What is live now (after opening: what the previous writer left)."""
        return dict(self.live)

    def put(self, name: str, record: dict[str, Any]) -> None:
        self.live[name] = record
        self._append({"name": name, "record": record})

    def drop(self, name: str) -> None:
        if self.live.pop(name, None) is not None:
            self._append({"name": name, "drop": True})

    def _append(self, entry: dict[str, Any]) -> None:
        os.write(self._fd, _line(entry))
        self._lines += 1
        if self._lines >= COMPACT_MINIMUM and self._lines > COMPACT_FACTOR * max(1, len(self.live)):
            self._rewrite()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"
