"""The process output protocol: levels, blocks, split reads, limits, result tracking, statsd."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from g8os.messages.command import STREAM_LINES
from g8os.system.output import JobOutput, Message, OutputParser, Stat, Tail, parse_statsd

pytestmark = pytest.mark.timeout(60)


def parse(data: bytes, default: int = 1, max_line: int = 65536, **kw: int) -> list[tuple[int, str]]:
    p = OutputParser(default, max_line, **kw)
    return [(m.level, m.text) for m in p.feed(data) + p.close()]


def parse_pieces(pieces: list[bytes], default: int = 1, max_line: int = 65536,
                 **kw: int) -> list[tuple[int, str]]:
    p = OutputParser(default, max_line, **kw)
    out: list[Message] = []
    for piece in pieces:
        out += p.feed(piece)
    out += p.close()
    return [(m.level, m.text) for m in out]


def oracle(data: bytes, default: int) -> list[tuple[int, str]]:
    """An independent, naive reading of the grammar for inputs whose lines are all short."""
    lines = data.split(b"\n")
    if lines[-1] == b"" or lines[-1] == b"\r":
        lines.pop()
    out: list[tuple[int, str]] = []
    block: list[str] | None = None
    block_level = 0
    for raw in lines:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        text = line.decode("utf-8", "replace")
        if block is not None:
            if text == ":::":
                out.append((block_level, "\n".join(block)))
                block = None
            else:
                block.append(text)
            continue
        head, sep, rest = text.partition(":::")
        if sep and not rest and head.isascii() and head.isdigit() and len(head) <= 2:
            block, block_level = [], int(head)
            continue
        head, sep, rest = text.partition("::")
        if sep and head.isascii() and head.isdigit() and 1 <= len(head) <= 2:
            out.append((int(head), rest))
        else:
            out.append((default, text))
    if block is not None:
        out.append((block_level, "\n".join(block)))
    return out


SAMPLE = (
    b"plain line\n"
    b"20::{\"answer\": 42}\r\n"
    b"3::public \xc3\xa9t\xc3\xa9\n"
    b"21:::\n"
    b"a: 1\r\n"
    b"b: [x, y]\n"
    b"9::not a prefix inside a block\n"
    b":::\n"
    b"123::three digits is text\n"
    b"x1::not a level\n"
    b"7:: warning with leading space\n"
    b"\xff\xfe bad utf-8\n"
    b"\n"
    b"0::level zero\n"
    b"99::level ninety-nine\n"
    b"20:::trailing text makes it a one-liner\n"
    b"::: stray closer\n"
    b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n"
    b"30:::\n"
    b"unterminated block line 1\n"
    b"line 2 no newline"
)


# --- grammar -------------------------------------------------------------------------------------

def test_plain_lines_take_the_default_level() -> None:
    assert parse(b"a\nb\n", default=1) == [(1, "a"), (1, "b")]
    assert parse(b"a\nb\n", default=2) == [(2, "a"), (2, "b")]


def test_single_line_prefix() -> None:
    assert parse(b"20::{}\n5::log line\n9::boom\n") == [(20, "{}"), (5, "log line"), (9, "boom")]
    assert parse(b"01::leading zero\n") == [(1, "leading zero")]
    assert parse(b"2::err on stdout\n", default=1) == [(2, "err on stdout")]
    assert parse(b"42::unknown level kept\n") == [(42, "unknown level kept")]
    assert parse(b"20::\n") == [(20, "")]
    assert parse(b"20::a::b\n") == [(20, "a::b")]


def test_not_a_prefix() -> None:
    for line in (b"123::x", b"::x", b"a1::x", b" 1::x", b"1:x", b"1 ::x", b"\xd9\xa1::arabic one"):
        assert parse(line + b"\n") == [(1, line.decode("utf-8", "replace"))]


def test_block_is_one_message() -> None:
    assert parse(b"20:::\n{\n  \"a\": 1\n}\n:::\nafter\n") == [(20, '{\n  "a": 1\n}'), (1, "after")]


def test_block_keeps_prefixes_and_empty_lines_verbatim() -> None:
    data = b"21:::\n\n9::x\n21:::\n::: \n\n:::\n"
    assert parse(data) == [(21, "\n9::x\n21:::\n::: \n")]


def test_empty_block() -> None:
    assert parse(b"20:::\n:::\n") == [(20, "")]


def test_unterminated_block_is_flushed_at_close() -> None:
    p = OutputParser(1)
    assert p.feed(b"20:::\nline 1\nline 2\n") == []
    assert [(m.level, m.text) for m in p.close()] == [(20, "line 1\nline 2")]
    assert parse(b"20:::\nline 1\npartial") == [(20, "line 1\npartial")]
    assert parse(b"20:::") == [(20, "")]


def test_opener_with_more_than_two_digits_is_text() -> None:
    assert parse(b"100:::\nx\n:::\n") == [(1, "100:::"), (1, "x"), (1, ":::")]


def test_partial_last_line_is_flushed_at_close() -> None:
    p = OutputParser(2)
    assert [(m.level, m.text) for m in p.feed(b"one\ntw")] == [(2, "one")]
    assert [(m.level, m.text) for m in p.feed(b"o")] == []
    assert [(m.level, m.text) for m in p.close()] == [(2, "two")]
    assert p.close() == []


def test_trailing_newline_is_not_text_and_empty_lines_are_messages() -> None:
    assert parse(b"a\n\n\nb\n") == [(1, "a"), (1, ""), (1, ""), (1, "b")]
    assert parse(b"") == []
    assert parse(b"\n") == [(1, "")]


def test_crlf() -> None:
    assert parse(b"a\r\n20::b\r\n21:::\r\nx\r\ny\r\n:::\r\n") == [(1, "a"), (20, "b"), (21, "x\ny")]
    assert parse(b"inner\rcr\r\n") == [(1, "inner\rcr")]
    assert parse(b"last\r") == [(1, "last")]


def test_bad_utf8_is_replaced() -> None:
    assert parse(b"\xff\xfeab\n5::\xc3(\n") == [(1, "\ufffd\ufffdab"), (5, "\ufffd(")]


def test_multibyte_character_split_across_feeds() -> None:
    euro = "€".encode()
    assert parse_pieces([b"a" + euro[:1], euro[1:2], euro[2:] + b"b\n"]) == [(1, "a€b")]


def test_messages_carry_a_timestamp() -> None:
    before = time.time_ns()
    (m,) = OutputParser(1).feed(b"x\n")
    assert isinstance(m, Message) and before <= m.epoch_ns <= time.time_ns()


def test_sample_matches_oracle() -> None:
    assert parse(SAMPLE) == oracle(SAMPLE, 1)
    assert parse(SAMPLE)[-1] == (30, "unterminated block line 1\nline 2 no newline")


def test_every_split_point_of_the_sample() -> None:
    expected = parse(SAMPLE)
    for i in range(len(SAMPLE) + 1):
        assert parse_pieces([SAMPLE[:i], SAMPLE[i:]]) == expected, i
    assert parse_pieces([bytes([b]) for b in SAMPLE]) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_any_splits_of_the_sample(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SAMPLE)]
    pieces = [SAMPLE[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse_pieces(pieces) == parse(SAMPLE)


_line = st.one_of(
    st.text(max_size=12).map(str.encode),
    st.binary(max_size=8),
    st.builds(lambda n, t: f"{n}::{t}".encode(), st.integers(0, 120), st.text(max_size=6)),
    st.builds(lambda n: f"{n}:::".encode(), st.integers(0, 120)),
    st.just(b":::"),
    st.just(b""),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\r\n"])), max_size=15),
       st.booleans(), st.integers(1, 2), st.data())
def test_generated_output_matches_oracle_under_any_split(
        lines: list[tuple[bytes, bytes]], cut_last: bool, default: int, data: st.DataObject) -> None:
    # Binary lines may hold their own newlines; the oracle splits the same way, so that is fine.
    payload = b"".join(line + end for line, end in lines)
    if cut_last and payload:
        payload = payload[:-1]
    expected = oracle(payload, default)
    assert parse(payload, default) == expected
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=10))
    bounds = [0, *sorted(cuts), len(payload)]
    assert parse_pieces([payload[a:b] for a, b in itertools.pairwise(bounds)],
                        default) == expected


# --- limits --------------------------------------------------------------------------------------

def test_long_line_is_cut_into_pieces_at_its_level() -> None:
    line = b"".join(bytes([97 + i % 26]) for i in range(40))
    assert parse(line + b"\n", max_line=16) == [(1, line[:16].decode()), (1, line[16:32].decode()),
                                               (1, line[32:].decode())]
    assert parse(b"20::" + line + b"\n", max_line=16) == [
        (20, line[:12].decode()), (20, line[12:28].decode()), (20, line[28:].decode())]
    # the line after a cut one is parsed afresh
    assert parse(b"x" * 32 + b"\n5::next\n", max_line=16) == [(1, "x" * 16), (1, "x" * 16), (5, "next")]


def test_line_of_exactly_max_line_is_not_cut() -> None:
    assert parse(b"y" * 16 + b"\r\n", max_line=16) == [(1, "y" * 16)]
    assert parse_pieces([b"y" * 16, b"\r", b"\n"], max_line=16) == [(1, "y" * 16)]


def test_cut_never_splits_a_character() -> None:
    text = "é" * 20  # 40 bytes, 2 each
    out = parse(text.encode() + b"\n", max_line=17)
    assert all("\ufffd" not in t for _, t in out)
    assert "".join(t for _, t in out) == text
    assert all(len(t.encode()) <= 17 for _, t in out)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(16, 40), st.data())
def test_limits_give_the_same_messages_under_any_split(payload: bytes, max_line: int,
                                                       data: st.DataObject) -> None:
    expected = parse(payload, max_line=max_line, max_block=2 * max_line)
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=10))
    bounds = [0, *sorted(cuts), len(payload)]
    pieces = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse_pieces(pieces, max_line=max_line, max_block=2 * max_line) == expected


def test_endless_line_uses_bounded_memory() -> None:
    p = OutputParser(1, max_line=65536)
    total = 0
    chunk = b"z" * 100_000
    for _ in range(100):  # 10 MB without a newline
        for m in p.feed(chunk):
            assert len(m.text) <= 65536
            total += len(m.text)
        assert len(p._pending) <= 65536
    total += sum(len(m.text) for m in p.close())
    assert total == 10_000_000


def test_long_block_is_emitted_in_bounded_pieces() -> None:
    body = b"\n".join(b"line %03d" % i for i in range(40))
    out = parse(b"20:::\n" + body + b"\n:::\nafter\n", max_line=16, max_block=64)
    assert out[-1] == (1, "after")
    pieces = out[:-1]
    assert len(pieces) > 1 and all(level == 20 and len(t) <= 64 for level, t in pieces)
    assert "".join(t for _, t in pieces) == body.decode()


def test_long_line_inside_a_block_is_kept_whole() -> None:
    assert parse(b"20:::\n" + b"q" * 50 + b"\n:::\n", max_line=16) == [(20, "q" * 50)]
    # a closer glued to the end of a cut line is not a closer
    assert parse(b"20:::\n" + b"q" * 16 + b":::\n:::\n", max_line=16) == [(20, "q" * 16 + ":::")]


def test_max_line_has_a_floor() -> None:
    with pytest.raises(ValueError):
        OutputParser(1, max_line=4)


# --- tails and results ---------------------------------------------------------------------------

def test_tail_keeps_the_last_lines() -> None:
    t = Tail()
    for i in range(250):
        t.add(f"line {i}")
    assert len(t) == STREAM_LINES == 100
    assert t.text() == "\n".join(f"line {i}" for i in range(150, 250))
    t.add("a\nb")
    assert len(t) == 100 and t.text().endswith("line 249\na\nb")
    assert Tail(3).text() == ""


def test_job_output_streams_results_and_critical() -> None:
    job = JobOutput()
    assert job.streams == ["", ""] and job.result_data == "" and job.result_level == 0
    out = job.feed(1, b"hello\n20::{\"a\": 1}\n9::first\n10::cpu:1|A\n")
    assert [(m.level, m.text) for m in out] == [(1, "hello"), (20, '{"a": 1}'), (9, "first"),
                                                (10, "cpu:1|A")]
    job.feed(2, b"oops\n9::second\n21:::\nk: v\n:::\n")
    job.feed(1, b"2::stderr-level line on stdout\n3::public, in no tail\npart")
    assert job.result_data == "k: v" and job.result_level == 21
    assert job.critical == "second"
    assert [(m.level, m.text) for m in job.close()] == [(1, "part")]
    assert job.streams == ["hello\npart", "oops\nstderr-level line on stdout"]


def test_job_output_last_result_wins_and_30_counts() -> None:
    job = JobOutput()
    job.feed(2, b"30::{\"job\": 1}\n11::debug\n")
    assert (job.result_level, job.result_data) == (30, '{"job": 1}')
    job.feed(1, b"20:::\n[1,\n2]")
    assert job.result_level == 30
    job.close()
    assert (job.result_level, job.result_data) == (20, "[1,\n2]")


def test_job_output_tails_are_bounded() -> None:
    job = JobOutput()
    job.feed(1, b"".join(b"out %d\n" % i for i in range(1000)))
    job.feed(2, b"".join(b"err %d\n" % i for i in range(1000)))
    out, err = job.streams
    assert out.split("\n") == [f"out {i}" for i in range(900, 1000)]
    assert err.split("\n") == [f"err {i}" for i in range(900, 1000)]


def test_job_output_rejects_unknown_stream() -> None:
    with pytest.raises(ValueError):
        JobOutput().feed(3, b"x\n")


# --- statsd --------------------------------------------------------------------------------------

def test_parse_statsd() -> None:
    assert parse_statsd("cpu.percent:12.5|A") == Stat("cpu.percent", 12.5, "A", {})
    assert parse_statsd("net.rx:1024|D|nic=eth0,id=x") == Stat("net.rx", 1024.0, "D",
                                                              {"nic": "eth0", "id": "x"})
    assert parse_statsd(" k:-3|A| \n") == Stat("k", -3.0, "A", {})
    assert parse_statsd("disk:sda:7|A") == Stat("disk:sda", 7.0, "A", {})
    assert parse_statsd("k:1|A|t=") == Stat("k", 1.0, "A", {"t": ""})


@pytest.mark.parametrize("text", [
    "", "k", "k:1", "k:1|", "k:1|X", "k:1|a", ":1|A", "k:|A", "k:abc|A", "k:nan|A", "k:inf|D",
    "k:1|A|notag", "k:1|A|=v", "k:1|A|t=v|extra", "k|A",
])
def test_parse_statsd_malformed(text: str) -> None:
    assert parse_statsd(text) is None


# --- speed (reported, not asserted) --------------------------------------------------------------

def test_throughput_report(capsys: pytest.CaptureFixture[str]) -> None:
    lines = 200_000
    data = b"".join(b"some ordinary log line number %d with text\n" % i if i % 10 else
                    b"5::a leveled line %d\n" % i for i in range(lines))
    job = JobOutput()
    start = time.perf_counter()
    for off in range(0, len(data), 65536):
        job.feed(1, data[off:off + 65536])
    job.close()
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\noutput parser: {lines / elapsed:,.0f} lines/s, {len(data) / elapsed / 1e6:.1f} MB/s")
