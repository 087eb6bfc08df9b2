"""`client.aggregator`: statistics of the node's metrics (jobs' level-10 statsd lines, and the
samples core0 takes of the node itself)."""

from __future__ import annotations

from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.aggregator import AggregatorQuery


class AggregatorManager(Namespace):
    """The `aggregator.*` commands."""

    def query(self, key: str | None = None, **tags: str) -> dict[str, Any]:
        """Every metric named `key` (None: all) whose tags include `tags`, by name (`key`, or
        `key/<id>` for a metric with an `id` tag): its op, last value and time, tags, the current
        sample of each period (`avg`, `total`, `max`, `count`, `start`) and the last closed ones."""
        return self._call(AggregatorQuery, key=key, tags=tags)
