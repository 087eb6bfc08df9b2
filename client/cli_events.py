"""`g8os events`: the node's events, the state changes of its actor tree and of its jobs.

    g8os events                      # the last 50, as a table
    g8os events --since 10m          # everything of the last ten minutes
    g8os events --topic /actor -f    # follow the tree's changes until Ctrl-C
    g8os events --path /jobs --json  # one JSON document ({"events": [...], "last": id})

With `-f` the events are printed as they happen (one line each; with `--json`, one JSON object per
line), read from the stream `g8os:events` with XREAD BLOCK, until Ctrl-C (exit 0).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from g8os.client.cli import _state, output_options

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COLOR = {"exited": "yellow", "restarting": "yellow", "failed": "red", "gave_up": "red",
          "escalated": "red", "ready": "green", "restarted": "cyan", "end": "", "start": ""}


def _since(value: str | None) -> str | float | None:
    """--since: an age (`90s`, `10m`, `2h`, `1d`), epoch seconds, or a stream id."""
    if value is None:
        return None
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age:
        return time.time() - float(age.group(1)) * _UNIT[age.group(2)]
    try:
        return float(text) if "." in text else text
    except ValueError:
        return text  # the node says what is wrong with it (a 400 naming `arguments.since`)


def _when(ts: float) -> str:
    moment = time.localtime(ts)
    millis = f"{ts % 1:.3f}"[1:]
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment) + millis
    return time.strftime("%Y-%m-%d %H:%M:%S", moment) + millis


def _details(data: Any) -> str:
    if not isinstance(data, dict):
        return "" if data is None else str(data)
    parts = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}={text.splitlines()[0][:120] if text else text}")
    return " ".join(parts)


def _topic(topic: str, width: int = 0) -> str:
    color = _COLOR.get(topic.rsplit("/", 1)[-1], "")
    text = escape(topic.ljust(width))  # padded before the markup, which takes no room
    return f"[{color}]{text}[/{color}]" if color else text


@click.command()
@output_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--since", metavar="WHEN",
              help="Only events after WHEN: an age (30s, 10m, 2h, 1d), epoch seconds, or a stream id.")
@click.option("--topic", metavar="TOPIC", help="Only topics under TOPIC (/actor, /job/end).")
@click.option("--path", metavar="PATH", help="Only events about PATH or below it (/jobs, /jobs/web).")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many before following (the latest ones, without --since).")
def events(follow: bool, since: str | None, topic: str | None, path: str | None, limit: int) -> None:
    """Show the node's events: actors started, ready, exited, restarted, gave up; jobs started
    and ended; services. With -f, follow them as they happen."""
    state = _state()
    client = state.client()
    with state.spinner("reading events"):
        page = client.events.list(since=_since(since), topic=topic, path=path, limit=limit)
    if not follow:
        if state.as_json:
            state.emit(page)
            return
        if not page["events"]:
            state.say("no events")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("TIME", "TOPIC", "PATH", "DETAILS"):
            table.add_column(column, overflow="fold")
        for event in page["events"]:
            table.add_row(_when(event["ts"]), _topic(event["topic"]), escape(event["path"]),
                          escape(_details(event["data"])))
        state.out.print(table)
        return
    try:
        for event in page["events"]:
            _print_line(event)
        for event in client.events.follow(since=page["last"], topic=topic, path=path):
            _print_line(event)
    except KeyboardInterrupt:
        return  # following ends with Ctrl-C: that is not a failure


def _print_line(event: dict[str, Any]) -> None:
    state = _state()
    if state.as_json:
        click.echo(json.dumps(event, default=str))  # one object per line, as they come
        return
    state.out.print(f"{_when(event['ts']):<12} {_topic(event['topic'], 18)} {escape(event['path'])}  "
                    f"[dim]{escape(_details(event['data']))}[/dim]")


COMMANDS = [events]
