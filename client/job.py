"""`client.job`: the jobs core0 runs (every command is a job; processes are the long-lived ones)."""

from __future__ import annotations

import signal as _signal
from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.job import JobKill, JobKillAll, JobList, JobUnschedule


class JobManager(Namespace):
    """The `job.*` commands."""

    def list(self, id: str | None = None) -> Any:
        """Running jobs with their command, state, pid, cpu and memory; `id` selects one job
        (NotFound if it is not running)."""
        return self._call(JobList, id=id)

    def kill(self, id: str, signal: int = _signal.SIGTERM) -> Any:
        """Send `signal` to the job's whole process group (NotFound if no such job)."""
        return self._call(JobKill, id=id, signal=int(signal))

    def killall(self, signal: int = _signal.SIGTERM) -> Any:
        """Send `signal` to every job that is not protected."""
        return self._call(JobKillAll, signal=int(signal))

    def unschedule(self, id: str) -> Any:
        """Stop future runs of a recurring job; the run in progress finishes normally."""
        return self._call(JobUnschedule, id=id)
