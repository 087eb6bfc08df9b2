"""How the `g8os` CLI and the `g8os shell` show things to a person, in one place so both look the same.

Sizes and durations, the live actor tree (as a rich `Tree`, or flattened into entries), a job's
output messages, a result as `--json` prints it, and the `{"error": ...}` document of a failure.
Nothing here talks to a node: every function takes what the client returned.
"""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any

import click
from rich.markup import escape
from rich.tree import Tree

from g8os.client.transport import Message, ResultError, Return
from g8os.messages.command import RESULT_LEVELS, Level
from g8os.messages.errors import G8Error

STATE_COLORS = {"running": "green", "restarting": "yellow", "backoff": "yellow", "starting": "yellow",
                "queued": "cyan", "waiting": "cyan", "stopping": "yellow", "failed": "red",
                "down": "red", "unresponsive": "red", "stopped": "dim"}


def human_bytes(value: Any) -> str:
    """1536 -> "1.5 KiB"; anything that is not a number is shown as it is ("" for None)."""
    if not isinstance(value, int | float):
        return "" if value is None else str(value)
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def duration(seconds: Any) -> str:
    """3725 -> "1h02m": the two most significant units, as `ps` and supervisorctl show an uptime."""
    if not isinstance(seconds, int | float) or seconds < 0:
        return "" if seconds is None else str(seconds)
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def signal_name(number: int) -> str:
    """9 -> "SIGKILL"; a number Python has no name for is shown as the number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def colored_state(state: str) -> str:
    """An actor's state as rich markup, colored by what it means for the actor."""
    color = STATE_COLORS.get(state.lower(), "")
    return f"[{color}]{escape(state)}[/{color}]" if color else escape(state)


# --------------------------------------------------------------------------------------------- results


def result_document(result: Return, messages: list[Message] | None = None) -> dict[str, Any]:
    """A result as `--json` prints it: the wire fields plus what a script wants at the top."""
    document = dict(result.payload)
    document.update(stdout=result.stdout, stderr=result.stderr, exit_status=result.exit_status)
    if result.level == Level.RESULT_JSON:
        with contextlib.suppress(ValueError):
            document["value"] = json.loads(result.data)
    if messages is not None:
        document["messages"] = [m.to_dict() for m in messages]
    return document


def write_message(message: Message) -> None:
    """One output message of a job, where a shell would put it: stdout lines on stdout, the rest on
    stderr (levels other than stdout, stderr and results are tagged with their level)."""
    if not message.text and message.end:
        return  # a bare end-of-job marker carries no output
    text = message.text if message.text.endswith("\n") else message.text + "\n"
    if message.level == Level.STDOUT:
        click.echo(text, nl=False)
    elif message.level in (Level.STDERR, *RESULT_LEVELS):
        click.echo(text, nl=False, err=True)
    else:  # logs, warnings...: say which level, as they are not the process's plain output
        click.echo(f"[{message.level}] {text}", nl=False, err=True)


def error_message(exc: BaseException) -> str:
    """The one line that says what went wrong."""
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def error_document(exc: BaseException, exit_code: int) -> dict[str, Any]:
    """A failure as `--json` prints it: `{"error": {type, message, exit, code?, field?, result?}}`."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": error_message(exc), "exit": exit_code}
    if isinstance(exc, G8Error):
        error["code"] = getattr(exc, "code", None)
        if getattr(exc, "field", ""):
            error["field"] = exc.field  # type: ignore[attr-defined]
    if isinstance(exc, ResultError) and exc.result is not None:
        error["result"] = exc.result.payload
    return {"error": error}


# --------------------------------------------------------------------------------------------- actors


def actor_entries(data: Any) -> list[dict[str, Any]]:
    """actor.tree's answer flattened into entries with a `path`, whether it came nested or flat."""
    out: list[dict[str, Any]] = []

    def walk(node: Any, parent: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, parent)
            return
        if not isinstance(node, dict):
            return
        if "path" not in node and all(isinstance(v, dict) for v in node.values()):
            for name, child in node.items():  # {name: entry}
                walk({"path": f"{parent.rstrip('/')}/{name}", **child}, parent)
            return
        path = str(node.get("path") or f"{parent.rstrip('/')}/{node.get('name', '?')}")
        out.append({k: v for k, v in node.items() if k != "children"} | {"path": path})
        walk(node.get("children") or [], path)

    walk(data, "")
    return out


def actor_name(path: str) -> str:
    """The last segment of an actor path (`/` for the root)."""
    return path if path == "/" else path.rstrip("/").rsplit("/", 1)[-1]


def actor_label(entry: dict[str, Any]) -> str:
    """One actor on one line of rich markup: name, kind, pid, state, restarts, uptime, last error."""
    parts = [f"[bold]{escape(actor_name(entry['path']))}[/bold]"]
    if entry.get("kind"):
        parts.append(f"[dim]{escape(str(entry['kind']))}[/dim]")
    if entry.get("pid"):
        parts.append(f"pid {entry['pid']}")
    state = str(entry.get("state") or "")
    if state:
        parts.append(colored_state(state))
    if entry.get("restarts"):
        parts.append(f"restarts {entry['restarts']}")
    if entry.get("uptime") is not None:
        parts.append(f"up {duration(entry.get('uptime'))}")
    error = entry.get("last_error") or entry.get("error")
    if error:
        parts.append(f"[red]{escape(str(error).splitlines()[0][:80])}[/red]")
    return "  ".join(parts)


def actor_tree(data: Any) -> list[Tree]:
    """actor.tree's answer as rich trees (one per top node; a flat answer may skip levels)."""
    entries = sorted(actor_entries(data), key=lambda e: e["path"])
    nodes: dict[str, Tree] = {}
    roots: list[Tree] = []
    for entry in entries:
        label = actor_label(entry)
        parent_path = entry["path"].rstrip("/").rsplit("/", 1)[0] or "/"
        # The nearest ancestor shown (a flat answer may skip levels).
        while parent_path not in nodes and parent_path not in ("/", ""):
            parent_path = parent_path.rsplit("/", 1)[0] or "/"
        parent = nodes.get(parent_path) if entry["path"] != parent_path else None
        node = parent.add(label) if parent is not None else Tree(label)
        if parent is None:
            roots.append(node)
        nodes[entry["path"]] = node
    return roots
