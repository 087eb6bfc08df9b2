"""The process output protocol: turning the bytes a job prints into leveled messages.

A line is a message of the stream's default level (1 stdout, 2 stderr) unless it starts with a
level prefix: `N::text` is one message of level N, and a line that is exactly `N:::` opens a
block of level N that ends at a line that is exactly `:::` and becomes one message. See
docs/protocol.md, "Process output levels".

This runs for every line every job prints, so it is pure (no I/O, no locks) and works on bytes:
lines are split before decoding so that a multi-byte character split across reads is never
mangled, and nothing it buffers grows past `max_line` (a partial line) or `max_block` (a block).
"""

from __future__ import annotations

import collections
import math
import re
import time

import attrs

from g8os.messages.command import RESULT_LEVELS, STREAM_LINES, Level

_SINGLE = re.compile(rb"(\d{1,2})::")
_OPENER = re.compile(rb"(\d{1,2}):::")
_CLOSER = b":::"
_MIN_LINE = 16  # below this a block opener could itself be cut, which the grammar cannot express


@attrs.frozen
class Message:
    level: int
    text: str
    epoch_ns: int


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "replace")


def _cut_at(data: bytes | bytearray, limit: int) -> int:
    """Where to cut `data` so the piece is at most `limit` bytes and, if the text is valid
    UTF-8, no character is split in two (which would print two replacement characters)."""
    cut = limit
    while cut > limit - 3 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    if (data[cut] & 0xC0) == 0x80:  # not UTF-8 anyway: any cut is as good
        return limit
    return cut


class OutputParser:
    """Splits one stream (stdout or stderr) of a process into messages.

    `feed` takes bytes as they are read and returns the messages completed by them; `close`
    flushes what is left at EOF (a last line without newline, an unterminated block).
    """

    __slots__ = (
        "_block",
        "_block_cont",
        "_block_level",
        "_block_split",
        "_cont",
        "_default",
        "_max_block",
        "_max_line",
        "_pending",
    )

    def __init__(self, default_level: int, max_line: int = 65536, max_block: int | None = None) -> None:
        if max_line < _MIN_LINE:
            raise ValueError(f"max_line must be at least {_MIN_LINE}")
        self._default = int(default_level)
        self._max_line = max_line
        # A block is one message, so it may be much bigger than a line, but still bounded.
        self._max_block = max_block if max_block is not None else 16 * max_line
        if self._max_block < max_line:
            raise ValueError("max_block must be at least max_line")
        self._pending = b""
        # Level of a line already cut into pieces: its remaining pieces keep that level and are
        # never parsed for a prefix (the prefix was at the start of the line).
        self._cont: int | None = None
        self._block = bytearray()
        self._block_level: int | None = None
        self._block_split = False  # part of the current block was already emitted
        self._block_cont = False  # the block's current line was cut: it cannot be the closer

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        if not data:
            return out
        now = time.time_ns()
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        tail = lines.pop()
        default = self._default
        max_line = self._max_line
        append = out.append
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            # Inlined common case (a short plain line outside any block): most of the cost.
            if (self._block_level is None and self._cont is None and len(line) <= max_line
                    and not (line and 48 <= line[0] <= 57)):
                append(Message(default, line.decode("utf-8", "replace"), now))
            else:
                self._line(line, True, now, out)
        if len(tail) > self._max_line:
            tail = self._cut(tail, now, out)
        self._pending = tail
        return out

    def close(self) -> list[Message]:
        out: list[Message] = []
        now = time.time_ns()
        pending, self._pending = self._pending, b""
        # A "\r" right before EOF is the first half of a line ending, not text.
        if pending.endswith(b"\r"):
            pending = pending[:-1]
        if pending:
            self._line(pending, True, now, out)
        self._cont = None  # a cut line that ended exactly at a cut has nothing left to say
        if self._block_level is not None:
            self._emit_block(now, out)
        return out

    def _cut(self, data: bytes, now: int, out: list[Message]) -> bytes:
        """Emits the leading `max_line` pieces of an unterminated line; returns the rest."""
        limit = self._max_line
        while len(data) > limit:
            cut = _cut_at(data, limit)
            self._line(data[:cut], False, now, out)
            data = data[cut:]
        return data

    def _line(self, line: bytes, complete: bool, now: int, out: list[Message]) -> None:
        """One line (`complete`) or a leading piece of a long line (not `complete`)."""
        if self._block_level is not None:
            self._block_line(line, complete, now, out)
            return
        if len(line) > self._max_line:  # a complete line that arrived in one read
            line = self._cut(line, now, out)
        cont = self._cont
        if cont is not None:
            if complete:
                self._cont = None
                if not line:  # the line ended exactly where it was cut
                    return
            out.append(Message(cont, _decode(line), now))
            return
        level = self._default
        text = line
        # Fast path: almost every line starts with something other than a digit.
        if line and 48 <= line[0] <= 57:
            if complete and (m := _OPENER.fullmatch(line)) is not None:
                self._block_level = int(m.group(1))
                self._block_split = False
                self._block_cont = False
                return
            if (m := _SINGLE.match(line)) is not None:
                level = int(m.group(1))
                text = line[m.end():]
        if not complete:
            self._cont = level
        out.append(Message(level, _decode(text), now))

    def _block_line(self, line: bytes, complete: bool, now: int, out: list[Message]) -> None:
        if complete and not self._block_cont and line == _CLOSER:
            self._emit_block(now, out)
            return
        block = self._block
        block += line
        if complete:
            block += b"\n"
            self._block_cont = False
        else:
            self._block_cont = True
        limit = self._max_block
        while len(block) > limit:
            cut = _cut_at(block, limit)
            out.append(Message(self._block_level, _decode(block[:cut]), now))  # type: ignore[arg-type]
            del block[:cut]
            self._block_split = True

    def _emit_block(self, now: int, out: list[Message]) -> None:
        block = self._block
        if block.endswith(b"\n"):
            del block[-1:]
        # An empty block is a (possibly meaningful) empty message, unless its text was already
        # emitted in pieces and this is just the end of it.
        if block or not self._block_split:
            out.append(Message(self._block_level, _decode(block), now))  # type: ignore[arg-type]
        self._block = bytearray()
        self._block_level = None
        self._block_split = False
        self._block_cont = False


class Tail:
    """The last `size` lines of one stream, for a result's `streams`."""

    __slots__ = ("_lines",)

    def __init__(self, size: int = STREAM_LINES) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=size)

    def add(self, text: str) -> None:
        if "\n" in text:  # a multi-line block counts as the lines it holds
            self._lines.extend(text.split("\n"))
        else:
            self._lines.append(text)

    def text(self) -> str:
        return "\n".join(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


class JobOutput:
    """Both streams of one job, and what its result takes from them.

    Messages are routed to the tails by level, not by the pipe they came from: a `2::` line
    printed on stdout is an stderr line, as the protocol defines levels as the message's kind.
    """

    __slots__ = ("_critical", "_parsers", "_result", "_tails")

    def __init__(self, max_line: int = 65536, tail_lines: int = STREAM_LINES) -> None:
        self._parsers = {
            1: OutputParser(Level.STDOUT, max_line),
            2: OutputParser(Level.STDERR, max_line),
        }
        self._tails = (Tail(tail_lines), Tail(tail_lines))
        self._result: Message | None = None
        self._critical = ""

    def feed(self, stream: int, data: bytes) -> list[Message]:
        parser = self._parsers.get(stream)
        if parser is None:
            raise ValueError(f"stream must be 1 (stdout) or 2 (stderr), not {stream!r}")
        messages = parser.feed(data)
        self._track(messages)
        return messages

    def close(self) -> list[Message]:
        messages = self._parsers[1].close() + self._parsers[2].close()
        self._track(messages)
        return messages

    def _track(self, messages: list[Message]) -> None:
        tails = self._tails
        for m in messages:
            level = m.level
            if level == 1:
                tails[0].add(m.text)
            elif level == 2:
                tails[1].add(m.text)
            elif level in RESULT_LEVELS:
                self._result = m
            elif level == Level.CRITICAL:
                self._critical = m.text

    @property
    def result_data(self) -> str:
        return self._result.text if self._result is not None else ""

    @property
    def result_level(self) -> int:
        return self._result.level if self._result is not None else 0

    @property
    def critical(self) -> str:
        return self._critical

    @property
    def streams(self) -> list[str]:
        return [self._tails[0].text(), self._tails[1].text()]


@attrs.frozen
class Stat:
    """One level-10 statsd line: `key:value|A` (average) or `|D` (differential), `|tag=v,...`."""

    key: str
    value: float
    op: str
    tags: dict[str, str] = attrs.field(factory=dict)


def parse_statsd(text: str) -> Stat | None:
    """The metric of a level-10 message, or None if it is not one."""
    parts = text.strip().split("|")
    if not 2 <= len(parts) <= 3:
        return None
    key, sep, raw_value = parts[0].rpartition(":")
    key = key.strip()
    if not sep or not key:
        return None
    try:
        value = float(raw_value)
    except ValueError:
        return None
    if not math.isfinite(value):  # would not survive JSON and poisons every aggregate
        return None
    op = parts[1].strip()
    if op not in ("A", "D"):
        return None
    tags: dict[str, str] = {}
    if len(parts) == 3 and parts[2].strip():
        for item in parts[2].split(","):
            name, sep, tag_value = item.partition("=")
            name = name.strip()
            if not sep or not name:
                return None
            tags[name] = tag_value.strip()
    return Stat(key=key, value=value, op=op, tags=tags)
