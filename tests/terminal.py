"""A program in a real pty, seen through a terminal emulator: what a person at the terminal sees.

pexpect gives the pty (the program sees a terminal: isatty, a size, job control); pyte plays the
terminal: it interprets colors and cursor moves into a screen of rows, and answers the program's
queries (a cursor position report, `ESC [ 6 n`, which prompt_toolkit sends before drawing) as a
terminal would. Tests then wait for what should appear on the screen, with a deadline.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

import pexpect
import pyte

WAIT = 30.0
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Za-z0-9]|\x1b[=>78]")


class _Screen(pyte.HistoryScreen):
    """A screen that keeps the lines scrolled off the top, and answers the program's queries."""

    def __init__(self, columns: int, lines: int, answer: Callable[[str], None]) -> None:
        super().__init__(columns, lines, history=2000)
        self._answer = answer

    def write_process_input(self, data: str) -> None:
        self._answer(data)


class Terminal:
    """`argv` running in a pty of `rows` x `columns`; `env` is its whole environment."""

    def __init__(self, argv: list[str], env: dict[str, str], *, rows: int = 40, columns: int = 150,
                 cwd: str | None = None) -> None:
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", codec_errors="replace",
                                   dimensions=(rows, columns), cwd=cwd, timeout=WAIT)
        self.screen = _Screen(columns, rows, self.child.send)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""  # everything the program wrote, escapes included
        self.exited = False

    # ----------------------------------------------------------------------------------------- reading

    def pump(self, timeout: float) -> None:
        """Read what the program wrote within `timeout` seconds into the screen."""
        if self.exited:
            return
        try:
            data = self.child.read_nonblocking(65536, timeout=max(timeout, 0.01))
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.exited = True
            return
        self.raw += data
        self.stream.feed(data)

    def lines(self) -> list[str]:
        """Every line of the session so far: those scrolled off the top, then the screen's."""
        above = ["".join(line[x].data for x in range(self.screen.columns)).rstrip()
                 for line in self.screen.history.top]
        return above + [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def plain(self) -> str:
        """What was written, without escape sequences (for output longer than the history)."""
        return ANSI.sub("", self.raw).replace("\r\n", "\n")

    @property
    def cursor_line(self) -> str:
        return self.screen.display[self.screen.cursor.y].rstrip()

    def wait(self, predicate: Callable[[Terminal], Any], what: str, timeout: float = WAIT) -> Any:
        """Read until `predicate(self)` is truthy and return its value; AssertionError, with the
        screen, if it is not within `timeout` seconds or the program ends first."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0 or self.exited:
                raise AssertionError(f"{what}: not seen within {timeout}s"
                                     f"{' (the program ended)' if self.exited else ''}; screen:\n"
                                     f"{self.text()}")
            self.pump(min(left, 0.5))

    def wait_text(self, text: str | re.Pattern[str], timeout: float = WAIT) -> str:
        """Wait until `text` (or a match of the pattern) is on the screen; return the screen."""
        if isinstance(text, str):
            return self.wait(lambda t: text in t.text() and t.text(), repr(text), timeout)
        return self.wait(lambda t: text.search(t.text()) and t.text(), text.pattern, timeout)

    def wait_exit(self, timeout: float = WAIT) -> int:
        """Wait for the program to end; its exit status (128 + n for a signal, as a shell says)."""
        self.wait(lambda t: t.exited, "exit", timeout)
        self.child.close()
        if self.child.exitstatus is not None:
            return self.child.exitstatus
        return 128 + (self.child.signalstatus or 0)

    # ----------------------------------------------------------------------------------------- typing

    def type(self, keys: str) -> None:
        """Keys as typed: `\\t` TAB, `\\r` Enter, `\\x1b[A` up arrow, `\\x03` Ctrl-C, `\\x04` Ctrl-D."""
        self.child.send(keys)

    def close(self) -> None:
        """End the program if it still runs (the pty's SIGHUP, then SIGKILL: pexpect signals only
        the child it started)."""
        if not self.exited and self.child.isalive():
            self.child.close(force=True)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the settings that would pick another node, plus `extra`."""
    drop = {"G8OS_HOST", "G8OS_PORT", "G8OS_PASSWORD", "G8OS_SOCKET", "G8OS_SANDBOX", "G8OS_CONNECT",
            "G8OS_TIMEOUT", "NO_COLOR", "PROMPT_TOOLKIT_NO_CPR", "COLUMNS", "LINES"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("TERM", "xterm-256color")
    if env["TERM"] in ("", "dumb", "unknown"):
        env["TERM"] = "xterm-256color"
    env.update(extra)
    return env
