"""Exit statuses for a process host: SIGCHLD → self-pipe → waitpid(-1, WNOHANG).

The host is a child subreaper, so daemonizing grandchildren come back to it too. Only hosts
without child actors may use this: Thespian reaps its own actor children by pid, and a
`waitpid(-1)` in the same process would race it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from g8os.system import linux


class Reaper:
    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        linux.set_child_subreaper()
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def _on_sigchld(self, signum: int, frame: Any) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # a wakeup is already pending

    def fileno(self) -> int:
        return self._read

    def reap(self) -> list[tuple[int, int]]:
        """Every (pid, wait status) that ended since the last call."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        ended = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            ended.append((pid, status))
        return ended

    def close(self) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
