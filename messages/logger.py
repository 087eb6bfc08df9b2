"""logger.*: the node log (every job's output and core0's own records) and core0's log verbosity."""

from __future__ import annotations

import attrs

from g8os.messages.command import Level
from g8os.messages.registry import Owner, command
from g8os.messages.validate import Validator, _fail, at_most, matches, non_empty

# Levels a log record can have: the process output levels (docs/protocol.md).
LEVELS = frozenset(int(level) for level in Level)

# core0's own verbosity, by name as the original's `logger.set_level` took it (go-logging's names),
# with the numbers of Python's logging module (NOTICE sits between INFO and WARNING).
VERBOSITY = {"CRITICAL": 50, "ERROR": 40, "WARNING": 30, "NOTICE": 25, "INFO": 20, "DEBUG": 10}

# A queue name: what follows `logger:` in the list's name (the prefix may be given too).
QUEUE = r"[^\s\x00]+"


def _levels(_: object, attribute: attrs.Attribute, value: list[int]) -> None:
    for index, level in enumerate(value):
        if level not in LEVELS:
            _fail(attribute, f"item {index}: {level} is not a log level (one of {sorted(LEVELS)})")


def _verbosity(_: object, attribute: attrs.Attribute, value: str) -> None:
    if value.upper() not in VERBOSITY:
        _fail(attribute, f"must be one of {', '.join(VERBOSITY)}, got {value!r}")


_queue: list[Validator] = [non_empty, at_most(200), matches(QUEUE, "a name without spaces")]


@command("logger.subscribe", owner=Owner.LOG)
@attrs.frozen(kw_only=True)
class LoggerSubscribe:
    """Copy every log record of the node (filtered by level) into the list `logger:<queue>`."""

    queue: str | None = attrs.field(default=None, validator=_queue)
    levels: list[int] = attrs.field(factory=list, validator=_levels)   # empty: every level


@command("logger.unsubscribe", owner=Owner.LOG)
@attrs.frozen(kw_only=True)
class LoggerUnsubscribe:
    """Stop copying log records into `logger:<queue>` (the list expires 5 minutes later)."""

    queue: str = attrs.field(validator=_queue)


@command("logger.set_level", owner=Owner.LOG)
@attrs.frozen(kw_only=True)
class LoggerSetLevel:
    """core0's own log verbosity: CRITICAL, ERROR, WARNING, NOTICE, INFO or DEBUG."""

    level: str = attrs.field(validator=_verbosity)


@command("logger.reopen", owner=Owner.LOG)
@attrs.frozen(kw_only=True)
class LoggerReopen:
    """Reopen core0's log file (after it was rotated), as SIGUSR1 does."""
