"""`g8os shell`: an interactive shell over a node's live actor tree.

    $ g8os --sandbox default shell
    g8os:/> ls
    g8os:/> cd jobs
    g8os:/jobs> inspect web
    g8os:/jobs> kill web --signal TERM
    $ g8os shell -c 'tree /jobs; inspect /gateway'

The actor tree is the shell's filesystem: the current directory is an actor path, `cd`, `ls` and
`tree` walk it, `inspect`, `kill` and `restart` act on the actor a path names. Everything goes
through the Python client (`Client.actor`, `Client.system`...), never Redis directly.

Each command is a click command, so arguments, `--help` and errors read like the `g8os` CLI's; output
goes through the same rendering helpers (`g8os.client.render`), and every command returns the
exit code the CLI would (0 ok, 1 failed, 2 bad arguments, 3 unreachable, 4 not found, 5 timeout, 130
interrupted). Errors are printed and never end the shell. See docs/shell.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from g8os.client.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Options,
    SignalType,
    exit_code_for,
)
from g8os.client.client import Client
from g8os.client.render import (
    actor_entries,
    actor_name,
    actor_tree,
    colored_state,
    duration,
    error_document,
    error_message,
    result_document,
    signal_name,
    write_message,
)
from g8os.client.transport import Message, Return, Timeout, Unreachable
from g8os.messages.errors import G8Error, InvalidArgument

EXIT_INTERRUPTED = 130  # as a POSIX shell reports a command ended by SIGINT
HISTORY_FILE = "shell_history"
# How long a snapshot of the tree serves completion: long enough that typing a path costs one
# actor.tree per burst of TABs, short enough that a job started a moment ago completes.
TREE_TTL = 2.0
# Where the actors whose output `logs` follows live: jobs, and startup services (as jobs).
FOLLOWABLE = ("/jobs", "/services")


def history_path(environ: dict[str, str] | None = None) -> Path:
    """Where the shell keeps its history: $XDG_STATE_HOME/g8os/shell_history, else
    ~/.local/state/g8os/shell_history (the XDG base directory default)."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                       ".local", "state")
    return Path(state) / "g8os" / HISTORY_FILE


# --------------------------------------------------------------------------------------------- parsing


def _tokenize(text: str) -> tuple[list[list[str]], bool]:
    """Split `text` into commands (on `;` and newlines) of words, as a POSIX shell quotes them:
    '...' literal, "..." with backslash escapes, a backslash escaping one character (and joining
    lines), `#` starting a comment at the beginning of a word. Returns the commands and whether the
    text ends inside a word (what completion needs). ValueError on an unterminated quote."""
    commands: list[list[str]] = [[]]
    word: list[str] | None = None  # None between words, so that '' is still a word
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                word.append(char)  # type: ignore[union-attr]
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$`':
                i += 1
                word.append(text[i])  # type: ignore[union-attr]
            else:
                word.append(char)  # type: ignore[union-attr]
        elif char in "'\"":
            quote = char
            word = [] if word is None else word
        elif char == "\\":
            i += 1
            if i < len(text) and text[i] != "\n":  # backslash-newline joins lines
                word = [] if word is None else word
                word.append(text[i])
        elif char in " \t\r;\n":
            if word is not None:
                commands[-1].append("".join(word))
                word = None
            if char in ";\n":
                commands.append([])
        elif char == "#" and word is None:
            while i + 1 < len(text) and text[i + 1] != "\n":
                i += 1
        else:
            word = [] if word is None else word
            word.append(char)
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    open_word = word is not None
    if word is not None:
        commands[-1].append("".join(word))
    return [command for command in commands if command], open_word


def split_commands(text: str) -> list[list[str]]:
    """The commands in `text`, each a list of words (see `_tokenize`)."""
    return _tokenize(text)[0]


def _words_at(text: str) -> tuple[list[str], str]:
    """For completion: the finished words of the command being typed, and the word under the cursor
    ("" when the cursor starts a new word)."""
    for closing in ("", "'", '"'):  # tolerate a quote the user has not closed yet
        try:
            commands, open_word = _tokenize(text + closing)
            break
        except ValueError:
            continue
    else:
        return [], ""
    if text and text[-1] in ";\n":
        return [], ""
    words = commands[-1] if commands else []
    if open_word and words:
        return words[:-1], words[-1]
    return words, ""


# --------------------------------------------------------------------------------------------- shell


class ShellExit(Exception):
    """`exit`: leave the shell with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class TreeCache:
    """A snapshot of the whole actor tree for completion, refreshed when older than `ttl` seconds.

    Completion runs on prompt_toolkit's completion thread: the lock keeps two TABs from fetching
    the tree twice. A node that does not answer gives no completions, never an error."""

    def __init__(self, client: Client, ttl: float = TREE_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._lock = threading.Lock()
        self._when = -float("inf")
        self._children: dict[str, list[dict[str, Any]]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._when = -float("inf")

    def children(self, path: str) -> list[dict[str, Any]]:
        """The entries of the actors directly under `path` (flattened: no `children` key)."""
        with self._lock:
            if time.monotonic() - self._when > self.ttl:
                try:
                    data = self.client.actor.tree("/")
                except (G8Error, Timeout, Unreachable):
                    # Not again before the TTL: each TAB would wait out the connection's timeouts.
                    self._children, self._when = {}, time.monotonic()
                    return []
                children: dict[str, list[dict[str, Any]]] = {}
                for entry in actor_entries(data):
                    if entry["path"] != "/":
                        children.setdefault(_parent(entry["path"]), []).append(entry)
                self._children, self._when = children, time.monotonic()
            return list(self._children.get(path, []))


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] or "/"


class Shell:
    """The shell's state (node, current actor path, last status) and its command loop.

    `options` are the `g8os` CLI's global options (`g8os.client.cli.Options`): the node's client,
    the rich consoles, `--json` (every command prints one JSON document instead of text) and
    `--quiet` (no informational lines). `logs` and `events` run the CLI's own commands with them,
    so that the shell and `g8os` print alike.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.client: Client = options.client()
        self.out: Console = options.out
        self.err: Console = options.err
        # The session's own: a delegated CLI command's --json sets the options' flag for its run.
        self.as_json = options.as_json
        self.quiet = options.quiet
        self.cwd = "/"
        self.previous = "/"
        self.status = EXIT_OK
        self.tree_cache = TreeCache(self.client)
        self._json_once = False  # `--json` given to the command being run

    # ----------------------------------------------------------------------------------------- paths

    def resolve(self, path: str | None) -> str:
        """An absolute actor path for `path`, relative to the current one: `..` goes up (not past
        `/`), `.` and empty segments are dropped. The node checks what is left."""
        if path is None or path == "":
            return self.cwd
        parts = [] if path.startswith("/") else [p for p in self.cwd.split("/") if p]
        for segment in path.split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(segment)
        return "/" + "/".join(parts)

    def job_id(self, value: str | None) -> str:
        """A job id from `JOB`: an id as is, or an actor path (absolute, relative, `.`) of a job or
        of a startup service (followed like a job)."""
        if value is None:
            if _parent(self.cwd) in FOLLOWABLE:
                return actor_name(self.cwd)
            raise InvalidArgument("which job? give JOB, or `cd` to one first", field="JOB")
        if "/" not in value and value not in (".", ".."):
            return value
        path = self.resolve(value)
        if _parent(path) not in FOLLOWABLE:
            raise InvalidArgument(f"{path} is not a job or a service (/jobs/<id>, /services/<id>)",
                                  field="JOB")
        return actor_name(path)

    # ----------------------------------------------------------------------------------------- output

    @property
    def json_output(self) -> bool:
        return self.as_json or self._json_once

    def emit(self, document: Any) -> None:
        """One JSON document on stdout."""
        click.echo(json.dumps(document, indent=2 if self.out.is_terminal else None, default=str))

    def say(self, text: str) -> None:
        """An informational line (rich markup), silenced by --quiet."""
        if not self.quiet:
            self.out.print(text)

    def error(self, markup: str) -> None:
        """`error: <markup>` on stderr, on one line however narrow the console thinks it is."""
        self.err.print(f"[bold red]error:[/bold red] {markup}", soft_wrap=True)

    def report(self, exc: BaseException, code: int) -> None:
        """An error: `error: ...` on stderr (and the error document on stdout with --json)."""
        if self.json_output:
            self.emit(error_document(exc, code))
        self.error(escape(error_message(exc)))
        critical = getattr(exc, "critical", "")
        if critical and not self.quiet:
            self.err.print(escape(critical))

    # ----------------------------------------------------------------------------------------- running

    def run_line(self, line: str) -> int:
        """Run every command of one line (or script); the status is the last command's."""
        try:
            commands = split_commands(line)
        except ValueError as exc:
            self.error(escape(str(exc)))
            self.status = EXIT_USAGE
            return self.status
        for words in commands:
            self.status = self.run(words)
        return self.status

    def run(self, words: list[str]) -> int:
        """Run one command; return its exit code. Only `exit` (ShellExit) escapes."""
        name, args = words[0], words[1:]
        command = COMMANDS.get(name)
        if command is None:
            self.error(f"unknown command {escape(repr(name))}; `help` lists the commands")
            return EXIT_USAGE
        self._json_once = False
        try:
            with self._noting_interrupts(), command.make_context(name, list(args), obj=self) as ctx:
                result = command.invoke(ctx)
            return int(result) if isinstance(result, int) else EXIT_OK
        except ShellExit:
            raise
        except click.exceptions.Exit as exc:  # --help
            return exc.exit_code
        except click.ClickException as exc:
            self.error(f"{escape(name)}: {escape(exc.format_message())} (`help {escape(name)}`)")
            return exc.exit_code
        except (KeyboardInterrupt, click.Abort):
            self.err.print("interrupted")
            return EXIT_INTERRUPTED
        except SystemExit as exc:  # a CLI command run by `logs`/`events` that exits: not the shell
            return exc.code if isinstance(exc.code, int) else EXIT_FAILED
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:  # not one of ours: a bug, but the shell stays up
                if os.environ.get("G8OS_DEBUG"):
                    self.err.print(escape(traceback.format_exc()))
                self.error(f"{escape(name)}: internal error: {escape(type(exc).__name__)}: "
                           f"{escape(str(exc))}")
                return EXIT_FAILED
            self.report(exc, code)
            return code
        finally:
            self._json_once = False

    @contextlib.contextmanager
    def _noting_interrupts(self) -> Iterator[None]:
        """Ctrl-C during a command raises KeyboardInterrupt as usual; if the command swallows it
        (`events -f` ends that way, as a success), end the line the terminal's ^C was echoed on,
        so that the next prompt starts a line of its own."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        interrupted = False

        def on_interrupt(signum: int, frame: Any) -> None:
            nonlocal interrupted
            interrupted = True
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        except KeyboardInterrupt:
            interrupted = False  # run() reports it on a line of its own
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
            if interrupted:
                self.err.print()

    def interact(self, history: Path | None = None) -> int:
        """The interactive loop until `exit` or Ctrl-D; returns the exit status (the last command's,
        as a POSIX shell does, unless `exit N`)."""
        store: History = InMemoryHistory()
        if history is not None:
            try:
                history.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                history.touch(mode=0o600, exist_ok=True)
                store = FileHistory(str(history))
            except OSError as exc:
                self.err.print(f"[yellow]warning:[/yellow] history not kept ({escape(str(exc))})")
        session: PromptSession[str] = PromptSession(
            history=store, completer=ThreadedCompleter(ShellCompleter(self)),
            complete_while_typing=False)
        while True:
            try:
                line = session.prompt(self._prompt)
            except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as in bash
                continue
            except EOFError:  # Ctrl-D
                return self.status
            try:
                self.run_line(line)
            except ShellExit as leave:
                return leave.code

    def _prompt(self) -> FormattedText:
        return FormattedText([("bold", "g8os"), ("", ":"), ("ansiblue bold", self.cwd), ("", "> ")])

    def run_script(self, text: str) -> int:
        """A script (`-c`, or stdin): its commands in order; `exit N` ends it with N."""
        try:
            return self.run_line(text)
        except ShellExit as leave:
            return leave.code


# --------------------------------------------------------------------------------------------- completion


class ShellCompleter(Completer):
    """Completes command names, their options, signal names after --signal, and actor paths (from
    a snapshot of the live tree at most TREE_TTL old) for the commands that take one."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: Any) -> Iterator[Completion]:
        words, current = _words_at(document.text_before_cursor)
        if not words:
            for name in sorted(COMMANDS):
                if name.startswith(current):
                    yield Completion(name, -len(current), display_meta=_short_help(COMMANDS[name]))
            return
        command = COMMANDS.get(words[0])
        if command is None:
            return
        if current.startswith("-"):
            for param in command.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith(current) and opt.startswith("--"):
                        yield Completion(opt, -len(current))
            return
        if words[-1] in ("-s", "--signal"):
            for sig in sorted({s.name[3:] for s in signal.Signals if s.name.startswith("SIG")}):
                if sig.startswith(current.upper().removeprefix("SIG")):
                    yield Completion(sig, -len(current))
            return
        if words[0] == "help":
            for name in sorted(COMMANDS):
                if name.startswith(current):
                    yield Completion(name, -len(current))
            return
        takes = getattr(command, "completes", "")
        if takes == "path":
            yield from self._paths(current)
        elif takes == "job":
            if "/" not in current:
                for parent in FOLLOWABLE:
                    for entry in self.shell.tree_cache.children(parent):
                        name = actor_name(entry["path"])
                        if name.startswith(current):
                            meta = " ".join(str(entry.get(key) or "") for key in ("kind", "state")).strip()
                            yield Completion(name, -len(current), display_meta=meta)
            yield from self._paths(current, only_with_slash=True)

    def _paths(self, current: str, only_with_slash: bool = False) -> Iterator[Completion]:
        if "/" in current:
            head, _, prefix = current.rpartition("/")
            base = self.shell.resolve(head or "/")
            lead = head + "/"
        else:
            if only_with_slash:
                return
            base, prefix, lead = self.shell.cwd, current, ""
        for entry in sorted(self.shell.tree_cache.children(base), key=lambda e: e["path"]):
            name = actor_name(entry["path"])
            if name.startswith(prefix):
                meta = " ".join(str(entry.get(key) or "") for key in ("kind", "state")).strip()
                yield Completion(lead + name, -len(current), display=name, display_meta=meta)


# --------------------------------------------------------------------------------------------- commands

COMMANDS: dict[str, click.Command] = {}
F = TypeVar("F", bound=Callable[..., Any])


def _short_help(command: click.Command) -> str:
    return command.get_short_help_str(limit=70)


def command(name: str, completes: str = "", **settings: Any) -> Callable[[F], click.Command]:
    """Register a shell command. `completes`: what its positional argument is, for completion
    (`path`: an actor path; `job`: a job id or a job's path)."""

    def register(func: F) -> click.Command:
        def set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
            if value:
                ctx.obj._json_once = True

        func = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                            help="Print one JSON document instead of text.")(func)
        made = click.command(name, context_settings={"help_option_names": ["-h", "--help"],
                                                     **settings})(click.pass_obj(func))
        made.completes = completes  # type: ignore[attr-defined]
        COMMANDS[name] = made
        return made

    return register


def _entry_row(entry: dict[str, Any]) -> list[str]:
    """One actor as a row of `_actor_table` (rich markup)."""
    error = str(entry.get("last_error") or "")
    # A trailing / says there is something under it to `cd` into or `ls`, as `ls -F` marks directories.
    name = escape(actor_name(entry["path"])) + ("/" if entry.get("children") else "")
    return [f"[bold]{name}[/bold]", escape(str(entry.get("kind") or "")), str(entry.get("pid") or ""),
            colored_state(str(entry.get("state") or "")), str(entry.get("restarts") or 0),
            duration(entry.get("uptime")),
            f"[red]{escape(error.splitlines()[0][:60])}[/red]" if error else ""]


def _actor_table() -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "KIND", "PID", "STATE", "RESTARTS", "UP", "LAST ERROR"):
        table.add_column(column, justify="right" if column in ("PID", "RESTARTS", "UP") else "left",
                         overflow="fold")
    return table


@command("ls", completes="path")
@click.argument("path", required=False)
def ls(sh: Shell, path: str | None) -> int:
    """List the actors directly under PATH (default: the current one).

    One row per actor: name, kind, pid, state, restarts, uptime, last error. A name ending in / has
    actors under it. An actor without children (a job, a service) is listed itself."""
    target = sh.resolve(path)
    data = sh.client.actor.tree(target)
    children = (data.get("children") or []) if isinstance(data, dict) else []
    if sh.json_output:
        sh.emit([{k: v for k, v in child.items() if k != "children"} for child in children]
                if children or data.get("tier") == "heavy" else [data])
        return EXIT_OK
    table = _actor_table()
    if children:
        for child in sorted(children, key=lambda c: str(c.get("path"))):
            table.add_row(*_entry_row(child))
    elif data.get("tier") == "light":
        table.add_row(*_entry_row(data))
    else:
        sh.say(f"[dim]no actors under {escape(target)}[/dim]")
        return EXIT_OK
    sh.out.print(table)
    return EXIT_OK


@command("cd", completes="path")
@click.argument("path", required=False)
def cd(sh: Shell, path: str | None) -> int:
    """Make PATH the current actor.

    PATH is absolute (/jobs), relative (jobs, ../gateway), `..`, or `-` (the previous one); no PATH
    goes to /. The actor must exist (exit 4 otherwise)."""
    target = sh.previous if path == "-" else sh.resolve(path or "/")
    sh.client.actor.tree(target)  # NotFound (exit 4) if there is no such actor
    sh.previous, sh.cwd = sh.cwd, target
    if sh.json_output:
        sh.emit({"cwd": target})
    elif path == "-":
        sh.say(escape(target))
    return EXIT_OK


@command("pwd")
def pwd(sh: Shell) -> int:
    """Print the current actor path."""
    if sh.json_output:
        sh.emit({"cwd": sh.cwd})
    else:
        sh.out.print(escape(sh.cwd))
    return EXIT_OK


@command("tree", completes="path")
@click.argument("path", required=False)
def tree(sh: Shell, path: str | None) -> int:
    """Show the live actor tree under PATH (default: the current actor)."""
    target = sh.resolve(path)
    data = sh.client.actor.tree(target)
    if sh.json_output:
        sh.emit(data)
        return EXIT_OK
    for root in actor_tree(data):
        sh.out.print(root)
    return EXIT_OK


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list):
        return shlex.join(str(v) for v in value) if all(isinstance(v, str) for v in value) else \
            ", ".join(_scalar(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


_INSPECT_ORDER = ("path", "kind", "tier", "pid", "state", "uptime", "restarts", "runs", "last_error",
                  "strategy", "command", "argv", "spec", "consecutive_failures")


@command("inspect", completes="path")
@click.argument("path", required=False)
def inspect(sh: Shell, path: str | None) -> int:
    """Show one actor in detail (default: the current one).

    Its state, supervision spec and restart history as its supervisor knows them, the supervisor's
    last events about it, and for a job its last output lines."""
    target = sh.resolve(path)
    data = sh.client.actor.inspect(target)
    if sh.json_output:
        sh.emit(data)
        return EXIT_OK
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    keys = [k for k in _INSPECT_ORDER if k in data] + sorted(
        k for k in data if k not in _INSPECT_ORDER and k not in ("name", "children", "events", "recent"))
    for key in keys:
        value = data[key]
        if key == "uptime":
            shown = duration(value)
        elif key == "state":
            shown = colored_state(str(value))
        elif key == "last_error" and value:
            shown = f"[red]{escape(str(value))}[/red]"
        else:
            shown = escape(_scalar(value))
        grid.add_row(key.replace("_", " "), shown)
    sh.out.print(grid)
    children = data.get("children") or []
    if children:
        sh.out.print("[bold]children[/bold]")
        table = _actor_table()
        for child in children:
            table.add_row(*_entry_row(child))
        sh.out.print(table)
    if data.get("recent"):
        sh.out.print("[bold]recent output[/bold]")
        for line in data["recent"]:
            level = line.get("level")
            text = escape(str(line.get("text", "")))
            sh.out.print(f"  {text}" if level == 1 else f"  [dim]\\[{level}][/dim] {text}")
    if data.get("events"):
        sh.out.print("[bold]events[/bold]")
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("TIME", "TOPIC", "PATH", "DATA"):
            table.add_column(column, overflow="fold")
        for event in data["events"]:
            ts = event.get("ts")
            when = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}" \
                if isinstance(ts, int | float) else ""
            table.add_row(when, escape(str(event.get("topic", ""))), escape(str(event.get("path", ""))),
                          escape(_scalar(event.get("data") or {})))
        sh.out.print(table)
    return EXIT_OK


@command("kill", completes="path")
@click.option("--signal", "-s", "signum", type=SignalType(), default="KILL", show_default=True,
              help="Signal by name or number.")
@click.argument("path")
def kill(sh: Shell, path: str, signum: int) -> int:
    """Signal the actor at PATH, as a crash would (fault injection).

    A heavy actor's process, or a job's process group, gets the signal (default KILL). Its
    supervisor reacts as to any crash, per its spec: watch it come back with `tree` or `inspect`."""
    target = sh.resolve(path)
    reply = sh.client.actor.kill(target, signum)
    sh.tree_cache.invalidate()
    if sh.json_output:
        sh.emit(reply)
        return EXIT_OK
    pid = reply.get("pid") if isinstance(reply, dict) else None
    sh.say(f"sent {signal_name(signum)} to {escape(target)}" + (f" (pid {pid})" if pid else ""))
    return EXIT_OK


@command("restart", completes="path")
@click.argument("path")
def restart(sh: Shell, path: str) -> int:
    """Stop the actor at PATH in order and start it again.

    The actor stops its children, then itself (SIGKILL after its grace period), and its supervisor
    starts it again. For a heavy actor this is not a failure (restarts do not grow); for a job the
    new run counts."""
    target = sh.resolve(path)
    reply = sh.client.actor.restart(target)
    sh.tree_cache.invalidate()
    if sh.json_output:
        sh.emit(reply)
        return EXIT_OK
    pid = reply.get("pid") if isinstance(reply, dict) else None
    sh.say(f"restarting {escape(target)}" + (f" (was pid {pid})" if pid else ""))
    return EXIT_OK


@command("system", ignore_unknown_options=True, allow_interspersed_args=False)
@click.option("--dir", "-C", default="", help="Working directory on the node.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="Add an environment variable.")
@click.option("--max-time", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Kill the process on the node after this long (exit code 5).")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def system(sh: Shell, argv: tuple[str, ...], dir: str, env: tuple[str, ...],
           max_time: int | None) -> int:
    """Run ARGV on the node and return its exit status.

    Its output is printed as it comes, stdout and stderr apart, and the status is the process's own,
    as with `g8os system`. No shell runs ARGV: use `system sh -c '...'` for pipes. Ctrl-C sends
    SIGTERM to the job and returns 130."""
    variables: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        variables[key] = value
    response = sh.client.system(list(argv), dir=dir, env=variables or None, max_time=max_time,
                                stream=True)
    messages: list[Message] = []
    try:
        for message in response.messages():
            if sh.json_output:
                messages.append(message)
            else:
                write_message(message)
        result = response.get()
    except KeyboardInterrupt:
        with contextlib.suppress(G8Error, Timeout, Unreachable):
            sh.client.job.kill(response.id, signal.SIGTERM)
        sh.err.print(f"interrupted: sent SIGTERM to job {response.id}")
        return EXIT_INTERRUPTED
    return _result_status(sh, result, messages)


def _result_status(sh: Shell, result: Return, messages: list[Message]) -> int:
    from g8os.client.transport import JobTimeoutError, ProcessError, error_for_result

    if sh.json_output:
        sh.emit(result_document(result, messages))
    if result.success:
        return EXIT_OK
    error = error_for_result(result)
    if isinstance(error, ProcessError) and not isinstance(error, JobTimeoutError) \
            and result.exit_status is not None:
        return result.exit_status or EXIT_FAILED  # it ran and failed: its stderr said why
    code = exit_code_for(error) or EXIT_FAILED
    if not sh.json_output:
        sh.error(f"{escape(error.message)}")
    return code


def _run_cli_command(sh: Shell, module: str, name: str, args: list[str]) -> int:
    """Run the `g8os` CLI's own command `name` (from `module`) with the shell's options, so that
    `logs` and `events` behave and print exactly as `g8os logs` and `g8os events` do."""
    import importlib

    target: click.Command = getattr(importlib.import_module(module), name)
    options = sh.options
    saved = options.as_json, options.quiet
    options.as_json, options.quiet = sh.json_output, sh.quiet
    try:
        # Its context is a root: the CLI's commands find their options at ctx.find_root().obj.
        with target.make_context(name, args, obj=options) as ctx:
            target.invoke(ctx)
    finally:
        options.as_json, options.quiet = saved
    return EXIT_OK


@command("logs", completes="job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.argument("job", metavar="[JOB]", required=False)
def logs(sh: Shell, job: str | None, follow: bool) -> int:
    """Print a job's output (as `g8os logs`); with -f, follow it until the job ends.

    JOB is a job id, or a job's actor path (/jobs/<id>, or relative: `cd /jobs` then `logs <id>`);
    a startup service is followed the same way (/services/<id>, or its id); without JOB, the
    current actor if it is a job or a service. The output kept in the result if the job has
    ended, else its recent output; -f follows it across the job's restarts. Ctrl-C stops
    following."""
    return _run_cli_command(sh, "g8os.client.cli", "logs", [*(["-f"] if follow else []), sh.job_id(job)])


@command("events", completes="path")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--since", metavar="WHEN",
              help="Only events after WHEN: an age (30s, 10m, 2h, 1d), epoch seconds, or a stream id.")
@click.option("--topic", metavar="TOPIC", help="Only topics under TOPIC (/actor, /job/end).")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many before following.")
@click.argument("path", required=False)
def events(sh: Shell, follow: bool, since: str | None, topic: str | None, limit: int,
           path: str | None) -> int:
    """Show the node's events (as `g8os events`); with -f, follow them until Ctrl-C.

    Actors started, exited, restarted, gave up; jobs started and ended. PATH (absolute or relative
    to the current actor) keeps the events about that actor and those below it."""
    args = [*(["-f"] if follow else []), "--limit", str(limit)]
    if since is not None:
        args += ["--since", since]
    if topic is not None:
        args += ["--topic", topic]
    if path is not None:
        args += ["--path", sh.resolve(path)]
    return _run_cli_command(sh, "g8os.client.cli_events", "events", args)


@command("help")
@click.argument("name", required=False, metavar="[COMMAND]")
def help_(sh: Shell, name: str | None) -> int:
    """List the commands, or show how to use COMMAND."""
    if name is not None:
        target = COMMANDS.get(name)
        if target is None:
            raise click.BadParameter(f"no command {name!r}; `help` lists them", param_hint="COMMAND")
        # make_context, not Context(): only it applies the command's settings (-h for help).
        with target.make_context(name, [], obj=sh, resilient_parsing=True) as ctx:
            click.echo(target.get_help(ctx))
        return EXIT_OK
    if sh.json_output:
        sh.emit({name: _short_help(cmd) for name, cmd in sorted(COMMANDS.items()) if name not in ALIASES})
        return EXIT_OK
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, cmd in sorted(COMMANDS.items()):
        if name not in ALIASES:
            table.add_row(name, escape(_short_help(cmd)))
    sh.out.print(table)
    sh.out.print(
        "\nPaths are actor paths: absolute (/jobs/web) or relative to the current actor (web, ../log).\n"
        "TAB completes commands and paths; up/down recall history; Ctrl-C stops a running command "
        "(logs -f, events -f, system); Ctrl-D or `exit` leaves. `help COMMAND` or `COMMAND --help` "
        "for one command.")
    return EXIT_OK


@command("exit")
@click.argument("code", type=click.IntRange(0, 255), required=False)
def exit_(sh: Shell, code: int | None) -> int:
    """Leave the shell with exit status CODE (default: the last command's). Also `quit`."""
    raise ShellExit(sh.status if code is None else code)


ALIASES = {"quit": "exit"}
COMMANDS.update({alias: COMMANDS[name] for alias, name in ALIASES.items()})


def main(argv: Iterable[str] | None = None) -> None:
    """`python -m g8os.client.shell` is `g8os shell`."""
    from g8os.client.cli import main as cli_main

    cli_main(["shell", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    main()
