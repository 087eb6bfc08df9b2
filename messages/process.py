"""process.*: every OS process of the node, not only core0's jobs."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import positive, signal_number


@command("process.list", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class ProcessList:
    """List OS processes with their cpu and memory use; `pid` (or G8OS 1.0's `id`) selects one."""

    pid: int | None = attrs.field(default=None, validator=positive)
    # G8OS 1.0 clients send `id`: a pid as a string.
    id: str | None = None


@command("process.kill", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class ProcessKill:
    """Send a signal to one OS process by `pid` (or G8OS 1.0's `id`: the pid as a string)."""

    pid: int | None = attrs.field(default=None, validator=positive)
    id: str | None = None
    signal: int = attrs.field(default=15, validator=signal_number)
