"""`g8os config`: the node's effective configuration (`config.get`).

    g8os config                  settings, startup services with their state, extensions, errors
    g8os config startup          one section: node, startup, extensions or errors
    g8os config --json           the document config.get answers

Exit codes are the CLI's; a configuration with errors is still shown (exit 0): the errors are
part of what the node runs with, and `g8os config errors --json` gives them to a script.
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from g8os.client.cli import Options, _state, output_options
from g8os.messages.config import SECTIONS

_STATE_STYLE = {"running": "green", "done": "green", "starting": "yellow", "pending": "yellow",
                "backoff": "yellow", "waiting": "cyan", "failed": "red", "skipped": "magenta"}


def _text(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _node(state: Options, settings: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")

    def rows(prefix: str, value: dict[str, Any]) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                rows(f"{prefix}{key}.", item)
            else:
                table.add_row(escape(prefix + key), escape(_text(item)))

    rows("", settings)
    state.out.print(table)


def _startup(state: Options, services: list[dict[str, Any]]) -> None:
    if not services:
        state.say("no startup services")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "COMMAND", "AFTER", "STATE", "PID", "RUNS", "REASON"):
        table.add_column(column, justify="right" if column in ("PID", "RUNS") else "left", overflow="fold")
    for entry in services:
        name = str(entry.get("name", ""))
        args = entry.get("args")
        command = name + (f" {_text(args)}" if isinstance(args, list) and args else "")
        status = str(entry.get("state", ""))
        flags = " (protected)" if entry.get("protected") else ""
        style = _STATE_STYLE.get(status, "")
        table.add_row(escape(str(entry.get("id", ""))), escape(command), escape(_text(entry.get("after"))),
                      f"[{style}]{escape(status)}[/{style}]{flags}" if style else escape(status) + flags,
                      str(entry.get("pid") or ""), str(entry.get("runs", "")),
                      escape(str(entry.get("reason") or "")))
    state.out.print(table)


def _extensions(state: Options, extensions: list[dict[str, Any]]) -> None:
    if not extensions:
        state.say("no extensions")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("COMMAND", "PROGRAM", "ARGUMENTS", "FILE"):
        table.add_column(column, overflow="fold")
    for entry in extensions:
        argv = " ".join([str(entry.get("binary", "")), *(str(a) for a in entry.get("args") or [])])
        table.add_row(escape(str(entry.get("name", ""))), escape(argv),
                      escape(", ".join(entry.get("arguments") or [])), escape(str(entry.get("file", ""))))
    state.out.print(table)


def _errors(state: Options, errors: list[dict[str, Any]]) -> None:
    if not errors:
        state.say("no configuration errors")
        return
    for error in errors:
        where = ": ".join(str(part) for part in (error.get("file"), error.get("key")) if part)
        state.out.print(f"[red]error[/red] {escape(where)}: {escape(str(error.get('message', '')))}")


_SHOW = {"node": _node, "startup": _startup, "extensions": _extensions, "errors": _errors}


@click.command("config")
@output_options
@click.argument("section", required=False, type=click.Choice(SECTIONS))
def config(section: str | None) -> None:
    """Show the node's effective configuration: its settings (no secrets), the startup services of
    its boot configuration with their state, the commands its extensions add, and the errors found
    in it. SECTION shows one part only."""
    state = _state()
    with state.spinner("reading the configuration"):
        data = state.client().config.get(section)
    if state.as_json:
        state.emit(data)
        return
    if section:
        _SHOW[section](state, data)
        return
    for index, name in enumerate(SECTIONS):
        if index:
            state.out.print()
        state.out.print(f"[bold underline]{name}[/bold underline]")
        _SHOW[name](state, data.get(name) or ({} if name == "node" else []))


COMMANDS = [config]
