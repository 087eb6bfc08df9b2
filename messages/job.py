"""job.*: the jobs core0 runs (every command is a job; processes are the long-lived ones)."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import non_empty, signal_number


@command("job.list", owner=Owner.JOBS)
@attrs.frozen(kw_only=True)
class JobList:
    """List running jobs (or one job): command, state, pid, cpu and memory."""

    id: str | None = None


@command("job.kill", owner=Owner.JOBS)
@attrs.frozen(kw_only=True)
class JobKill:
    """Send a signal to a job's whole process group (default SIGTERM)."""

    id: str = attrs.field(validator=non_empty)
    signal: int = attrs.field(default=15, validator=signal_number)


@command("job.killall", owner=Owner.JOBS)
@attrs.frozen(kw_only=True)
class JobKillAll:
    """Signal every job that is not protected (default SIGTERM)."""

    signal: int = attrs.field(default=15, validator=signal_number)


@command("job.unschedule", owner=Owner.JOBS)
@attrs.frozen(kw_only=True)
class JobUnschedule:
    """Stop future runs of a recurring job; the run in progress finishes normally."""

    id: str = attrs.field(validator=non_empty)
