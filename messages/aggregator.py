"""aggregator.*: statistics of the level-10 (statsd) metrics of jobs and of core0's own samples."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import at_most, no_nul


@command("aggregator.query", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class AggregatorQuery:
    """Aggregated metrics by name: op, last value, current period and history, for `key` and `tags`."""

    key: str | None = attrs.field(default=None, validator=[no_nul, at_most(1024)])
    tags: dict[str, str] = attrs.field(factory=dict, validator=no_nul)
