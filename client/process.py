"""`client.process`: every OS process of the node, not only core0's jobs."""

from __future__ import annotations

import signal as _signal
from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.process import ProcessKill, ProcessList


class ProcessManager(Namespace):
    """The `process.*` commands."""

    def list(self, pid: int | None = None) -> Any:
        """OS processes with their cpu and memory use; `pid` selects one (NotFound if it is gone)."""
        return self._call(ProcessList, pid=pid)

    def kill(self, pid: int, signal: int = _signal.SIGTERM) -> Any:
        """Send `signal` to one OS process.

        Beware: killing the node's redis-server makes it unreachable until core0 restarts it.
        """
        return self._call(ProcessKill, pid=pid, signal=int(signal))
