"""The `g8os` command line: drive a node from a shell.

    g8os ping
    g8os system ls -l /            # runs on the node; exits with the process's exit status
    g8os system --stream make      # follow its output live
    g8os jobs                      # table of running jobs
    g8os kill JOB --signal KILL
    g8os tree /jobs                # the live actor tree
    g8os logs -f JOB               # a job's output, followed until it ends

Which node: `--connect FILE_OR_JSON` (the JSON line `core0 sandbox up` prints, or a file holding it),
else `--socket PATH`, else `--sandbox NAME`, else `--host`/`--port` (default 127.0.0.1:6379). Each has
an environment fallback: G8OS_CONNECT, G8OS_SOCKET, G8OS_SANDBOX, G8OS_HOST, G8OS_PORT, G8OS_PASSWORD,
G8OS_TIMEOUT; an option given on the command line beats any environment variable.

Output: human text and tables on stdout by default; `--json` (before or after the command) prints one
JSON document on stdout instead, also on failure (`{"error": {...}}`). Messages and spinners go to
stderr; spinners only when stdout is a terminal and `--quiet` is not given.

Exit codes:
    0  ok
    1  the command failed (an ERROR result)
    2  bad arguments or usage (refused by this client or by the node)
    3  node unreachable (no connection, bad password, or core0 not picking up commands)
    4  not found (job, process, actor, executable, sandbox)
    5  timeout (no result in time, or the job hit its --max-time)
For `system`, a process that ran and exited non-zero gives its own exit status instead, as a shell
would (so a process exiting 3 is indistinguishable from "unreachable" except through `--json`).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from g8os.client.client import Client
from g8os.client.render import (
    actor_tree,
    error_document,
    error_message,
)
from g8os.client.render import duration as _duration
from g8os.client.render import human_bytes as _human_bytes
from g8os.client.render import result_document as _result_document
from g8os.client.render import signal_name as _signal_name
from g8os.client.render import write_message as _write_message
from g8os.client.transport import (
    DEFAULT_TIMEOUT,
    JobTimeoutError,
    Message,
    NotAcknowledged,
    ProcessError,
    Response,
    Timeout,
    Unreachable,
    error_for_result,
)
from g8os.messages.command import RESULT_LEVELS
from g8os.messages.errors import G8Error, InvalidArgument, NotFound

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5

EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  the command failed (an ERROR result)
  2  bad arguments or usage
  3  node unreachable (no connection, bad password, core0 not answering)
  4  not found (job, process, actor, executable, sandbox)
  5  timeout (no result in time, or the job hit its --max-time)
  For `system`: the process's own exit status when it ran and exited non-zero.
"""


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for an error, or None for one that is not ours (a bug: let it show)."""
    if isinstance(exc, Unreachable | NotAcknowledged):
        return EXIT_UNREACHABLE
    if isinstance(exc, InvalidArgument):
        return EXIT_USAGE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Timeout | JobTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, G8Error):
        return EXIT_FAILED
    return None


# --------------------------------------------------------------------------------------------- state


class Options:
    """What the global options decided, shared by every command through `ctx.obj`."""

    def __init__(self, *, connect: str | None, socket: str | None, sandbox: str | None, host: str,
                 port: int, password: str, timeout: float, timeout_given: bool, as_json: bool,
                 quiet: bool, sources: dict[str, ParameterSource | None]) -> None:
        self.connect, self.socket, self.sandbox = connect, socket, sandbox
        self.host, self.port, self.password = host, port, password
        self.timeout, self.timeout_given = timeout, timeout_given
        self.as_json, self.quiet = as_json, quiet
        self.sources = sources
        self._client: Client | None = None
        self.tty = sys.stdout.isatty()
        # Not a terminal: do not let rich squeeze tables into 80 columns for a pipe or a file.
        self.out = Console(highlight=False, soft_wrap=True, width=None if self.tty else 200)
        self.err = Console(stderr=True, highlight=False)

    def client(self) -> Client:
        """The client for the chosen node (built once, on first use)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Client:
        # Pick by priority among options given on the command line, then among environment ones, so
        # `--host` beats a G8OS_SANDBOX left in the environment.
        choices = [("connect", self.connect), ("socket", self.socket), ("sandbox", self.sandbox),
                   ("host", self.host)]
        for wanted in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            for name, value in choices:
                if value and self.sources.get(name) == wanted:
                    return self._client_for(name, value)
        return Client(self.host, self.port, self.password, timeout=self.timeout)

    def _client_for(self, name: str, value: str) -> Client:
        if name == "connect":
            return Client.from_info(_read_connect(value), timeout=self.timeout)
        if name == "socket":
            return Client(password=self.password, timeout=self.timeout, unix_socket=value)
        if name == "sandbox":
            return Client.from_sandbox(value, timeout=self.timeout)
        return Client(value, self.port, self.password, timeout=self.timeout)

    @property
    def wait(self) -> float:
        """How long to wait for a job that runs as long as it likes (system, logs -f): the --timeout
        if one was given, else without limit (bound the job itself with --max-time)."""
        return self.timeout if self.timeout_given else math.inf

    @contextlib.contextmanager
    def spinner(self, text: str) -> Iterator[None]:
        """A spinner on stderr while waiting, only for a person at a terminal."""
        if self.tty and not self.quiet and not self.as_json:
            with self.err.status(text):
                yield
        else:
            yield

    def emit(self, document: Any) -> None:
        """Print one JSON document on stdout."""
        text = json.dumps(document, indent=2 if self.tty else None, default=str)
        click.echo(text)

    def say(self, text: str) -> None:
        """An informational line on stdout, silenced by --quiet."""
        if not self.quiet:
            click.echo(text)


def _read_connect(value: str) -> dict[str, Any]:
    """The connection record from --connect: JSON text, `-` for stdin, or a file holding it (the last
    line that is a JSON object wins, so the whole output of `core0 sandbox up` can be saved and used)."""
    text = value.strip()
    if not text.startswith("{"):
        try:
            text = sys.stdin.read() if text == "-" else Path(text).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value}: {exc.strerror}", param_hint="--connect")
    for line in reversed([text, *text.splitlines()] if text.lstrip().startswith("{") else
                         text.splitlines()):
        with contextlib.suppress(ValueError):
            info = json.loads(line)
            if isinstance(info, dict):
                return info
    raise click.BadParameter("expected a JSON object with host, port, password, socket",
                             param_hint="--connect")


def _state() -> Options:
    return click.get_current_context().find_root().obj


# --------------------------------------------------------------------------------------------- group


class _Group(click.Group):
    """Turns our errors into a message and an exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:
                raise
            _report(ctx.obj, exc, code)
            ctx.exit(code)


def _report(state: Options | None, exc: BaseException, code: int) -> None:
    message = error_message(exc)
    if state is not None and state.as_json:
        state.emit(error_document(exc, code))
    click.echo(f"error: {message}", err=True)
    critical = getattr(exc, "critical", "")
    if critical and not (state and state.quiet):
        click.echo(critical, err=True)


F = TypeVar("F", bound=Callable[..., Any])


def output_options(func: F) -> F:
    """`--json` and `--quiet` after the command too (`g8os jobs --json`), same as before it."""

    def set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_root().obj.as_json = True

    def set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_root().obj.quiet = True

    func = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=set_quiet,
                        help="Only the essential output; no spinner.")(func)
    func = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=set_json,
                        help="Print one JSON document on stdout.")(func)
    return func


@click.group(cls=_Group, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", envvar="G8OS_HOST", default="127.0.0.1", show_default=True, show_envvar=True,
              help="Node address (TCP).")
@click.option("--port", envvar="G8OS_PORT", type=int, default=6379, show_default=True, show_envvar=True)
@click.option("--password", envvar="G8OS_PASSWORD", default="", show_envvar=True,
              help="The node's Redis password.")
@click.option("--socket", envvar="G8OS_SOCKET", default=None, show_envvar=True, metavar="PATH",
              help="The node's Redis unix socket (instead of TCP).")
@click.option("--sandbox", envvar="G8OS_SANDBOX", default=None, show_envvar=True, metavar="NAME",
              help="A local sandbox node, by name (see `core0 sandbox up`).")
@click.option("--connect", envvar="G8OS_CONNECT", default=None, show_envvar=True,
              metavar="FILE_OR_JSON", help="The JSON line `core0 sandbox up` prints, or a file with it.")
@click.option("--timeout", envvar="G8OS_TIMEOUT", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT,
              show_default=True, show_envvar=True,
              help="Seconds to wait for an answer. `system` and `logs -f` wait for the job's end "
                   "unless this is given.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Only the essential output; no spinner.")
@click.pass_context
def cli(ctx: click.Context, host: str, port: int, password: str, socket: str | None, sandbox: str | None,
        connect: str | None, timeout: float, as_json: bool, quiet: bool) -> None:
    """Drive a g8os node: run processes, list and kill jobs, follow logs, walk the actor tree."""
    sources = {name: ctx.get_parameter_source(name) for name in ("host", "socket", "sandbox", "connect")}
    ctx.obj = Options(connect=connect, socket=socket, sandbox=sandbox, host=host, port=port,
                     password=password, timeout=timeout,
                     timeout_given=ctx.get_parameter_source("timeout") != ParameterSource.DEFAULT,
                     as_json=as_json, quiet=quiet, sources=sources)
    ctx.call_on_close(lambda: ctx.obj._client.close() if ctx.obj._client else None)


# --------------------------------------------------------------------------------------------- helpers


class SignalType(click.ParamType):
    """A signal by number (9) or name (KILL, SIGKILL, kill)."""

    name = "signal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip().upper()
            if text.isdigit():
                number = int(text)
            else:
                try:
                    number = int(signal.Signals[text if text.startswith("SIG") else f"SIG{text}"])
                except KeyError:
                    self.fail(f"unknown signal {value!r}", param, ctx)
        if number not in {int(s) for s in signal.Signals}:
            self.fail(f"not a signal number: {number}", param, ctx)
        return number


# --------------------------------------------------------------------------------------------- commands


@cli.command()
@output_options
def ping() -> None:
    """Check that core0 answers (prints "PONG <version>")."""
    state = _state()
    client = state.client()
    start = time.monotonic()
    with state.spinner(f"pinging {client.connection.address}"):
        reply = client.ping()
    elapsed = (time.monotonic() - start) * 1000
    if state.as_json:
        state.emit({"reply": reply, "node": client.connection.address, "ms": round(elapsed, 3)})
    elif state.quiet:
        click.echo(reply)
    else:
        click.echo(f"{reply} from {client.connection.address} in {elapsed:.1f} ms")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--dir", "-C", default="", help="Working directory on the node.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="Add an environment variable.")
@click.option("--stdin", "stdin_file", type=click.File("r"), default=None, metavar="FILE",
              help="Feed FILE to the process's stdin (`-`: this shell's stdin).")
@click.option("--max-time", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Kill the process on the node after this long (exit code 5).")
@click.option("--stream", "-s", is_flag=True, help="Print the output live, as it is produced.")
@output_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def system(command: tuple[str, ...], dir: str, env: tuple[str, ...], stdin_file: Any,
           max_time: int | None, stream: bool) -> None:
    """Run COMMAND on the node and exit with its exit status.

    Options of `system` go before COMMAND; everything after it is COMMAND's. One single argument is
    split like a shell would split it (`g8os system "ls -l /"`), but no shell runs it: use
    `g8os system sh -c '...'` for pipes. Without --stream, the output printed is the last 100 lines
    of each stream that the node keeps.
    """
    state = _state()
    variables: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        variables[key] = value
    client = state.client()
    response = client.system(command[0] if len(command) == 1 else list(command), dir=dir,
                             stdin=stdin_file.read() if stdin_file is not None else "",
                             env=variables or None, max_time=max_time, stream=stream)
    messages: list[Message] | None = None
    if stream:
        messages = []
        deadline = time.monotonic() + state.wait
        for message in response.messages(timeout=None if math.isinf(state.wait) else state.wait):
            if state.as_json:
                messages.append(message)
            else:
                _write_message(message)
        result = response.get(max(0.0, deadline - time.monotonic()) if not math.isinf(state.wait)
                              else math.inf)
    else:
        with state.spinner(f"running {' '.join(command)}"):
            result = response.get(state.wait)
        if not state.as_json:
            if result.stdout:
                click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
            if result.stderr:
                click.echo(result.stderr, nl=not result.stderr.endswith("\n"), err=True)
    if state.as_json:
        state.emit(_result_document(result, messages))
    if result.success:
        return
    error = error_for_result(result)
    if isinstance(error, ProcessError) and not isinstance(error, JobTimeoutError) \
            and result.exit_status is not None:
        # It ran and failed: its stderr said why; exit as a shell would.
        sys.exit(result.exit_status or EXIT_FAILED)
    if not state.as_json:
        click.echo(f"error: {error.message}", err=True)
    sys.exit(exit_code_for(error) or EXIT_FAILED)


def _job_rows(data: Any) -> list[dict[str, Any]]:
    """job.list entries, whatever their exact shape: a list, one object, or an object by id."""
    if isinstance(data, dict):
        if "id" in data or "cmd" in data or "command" in data:
            return [data]
        if all(isinstance(v, dict) for v in data.values()):
            return [{"id": key, **value} for key, value in data.items()]
        return [data]
    return [entry for entry in data or [] if isinstance(entry, dict)]


def _job_command(entry: dict[str, Any]) -> str:
    cmd = entry.get("cmd") if isinstance(entry.get("cmd"), dict) else entry
    name = str(cmd.get("command") or entry.get("command") or "")
    arguments = cmd.get("arguments") if isinstance(cmd.get("arguments"), dict) else {}
    if arguments.get("name"):
        return " ".join([name + ":", str(arguments["name"]), *map(str, arguments.get("args") or [])])
    if arguments.get("script"):
        return f"{name}: {str(arguments['script']).splitlines()[0][:60]}"
    return name


@cli.command()
@output_options
@click.argument("job_id", metavar="[ID]", required=False)
def jobs(job_id: str | None) -> None:
    """List the running jobs (or only job ID)."""
    state = _state()
    with state.spinner("listing jobs"):
        data = state.client().job.list(job_id)
    if state.as_json:
        state.emit(data)
        return
    rows = _job_rows(data)
    if not rows:
        state.say("no jobs running")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "COMMAND", "STATE", "PID", "CPU%", "RSS", "UP"):
        table.add_column(column, justify="right" if column in ("PID", "CPU%", "RSS", "UP") else "left",
                         overflow="fold")
    now = time.time()
    for entry in rows:
        cmd = entry.get("cmd") if isinstance(entry.get("cmd"), dict) else {}
        started = entry.get("starttime")
        up = _duration(now - started / 1000) if isinstance(started, int | float) and started else ""
        cpu = entry.get("cpu")
        table.add_row(str(entry.get("id") or cmd.get("id") or ""), _job_command(entry),
                      str(entry.get("state") or "running"), str(entry.get("pid") or ""),
                      f"{cpu:.1f}" if isinstance(cpu, int | float) else str(cpu or ""),
                      _human_bytes(entry.get("rss", entry.get("memory"))), up)
    state.out.print(table)


@cli.command()
@output_options
@click.option("--signal", "-s", "signum", type=SignalType(), default="TERM", show_default=True,
              help="Signal by name or number.")
@click.argument("job_id", metavar="JOB")
def kill(job_id: str, signum: int) -> None:
    """Send a signal to JOB's whole process group."""
    state = _state()
    reply = state.client().job.kill(job_id, signum)
    if state.as_json:
        state.emit({"id": job_id, "signal": signum, "reply": reply})
    else:
        state.say(f"sent {_signal_name(signum)} to job {job_id}")


@cli.command()
@output_options
@click.argument("path", default="/", required=False)
def tree(path: str) -> None:
    """Show the live actor tree under PATH (default `/`): kind, pid, state, restarts, uptime, last error."""
    state = _state()
    with state.spinner("reading the actor tree"):
        data = state.client().actor.tree(path)
    if state.as_json:
        state.emit(data)
        return
    roots = actor_tree(data)
    if not roots:
        state.say(f"no actors under {path}")
        return
    for root in roots:
        state.out.print(root)


def _follow_job(state: Options, client: Client, response: Response, job_id: str) -> list[Message]:
    """Print (or, with --json, collect) job_id's output until the job ends for good.

    A subscription (core.subscribe) follows the job across its re-runs (max_restart,
    recurring_period, actor.restart) and ends, successfully, when the job ends for good. It can
    also end before the job does: it failed (the job was not taken by the JobSupervisor yet, or
    the JobSupervisor that held it died and took the job with it before re-running it), or the
    subscriber was killed (`"state": "unsubscribed"`). While the job still runs (its flag without
    expiry, no result), we then subscribe again; the new subscription replays the job's recent
    messages, and those already shown are skipped (messages of a job come in time order, so the
    newest time shown and the messages shown at that time are enough to tell).
    """
    collected: list[Message] = []
    deadline = math.inf if math.isinf(state.wait) else time.monotonic() + state.wait
    newest, at_newest = 0, set()
    pause = 0.1
    while True:
        left = deadline - time.monotonic()
        subscriber = client.subscribe(job_id)
        end: Message | None = None
        try:
            for message in subscriber.messages(timeout=None if math.isinf(left) else max(left, 0.01)):
                if message.end:
                    end = message  # the subscription's last message: shown only if the job has ended
                    break
                seen = (message.level, message.text, message.flags)
                if message.epoch < newest or (message.epoch == newest and seen in at_newest):
                    continue  # replayed by a new subscription: shown already
                if message.epoch > newest:
                    newest, at_newest = message.epoch, set()
                at_newest.add(seen)
                if state.as_json:
                    collected.append(message)
                else:
                    _write_message(message)
        except BaseException:
            # Ctrl-C or a timeout: the subscriber would otherwise follow the job for nobody until
            # it ends (and the shell runs many follows in one session).
            _stop_subscriber(client, subscriber)
            raise
        if _subscription_saw_the_end(end) or response.peek() is not None or not response.exists:
            # The job has ended for good. A node answers the subscription itself last (level 20,
            # `{"id", "state"}`): kept in --json, not printed among the job's output.
            if end is not None:
                if state.as_json:
                    collected.append(end)
                elif end.level not in RESULT_LEVELS:
                    _write_message(end)
            return collected
        if time.monotonic() + pause > deadline:
            raise Timeout(f"job {job_id} did not end within {state.wait:g}s")
        time.sleep(pause)  # it is being re-run by a new JobSupervisor, or not taken yet
        pause = min(pause * 2, 2.0)


def _stop_subscriber(client: Client, subscriber: Response) -> None:
    """Do not leave a subscriber following a long job for nobody."""
    if subscriber.running:
        with contextlib.suppress(G8Error, Timeout, Unreachable):
            client.job.kill(subscriber.id)


def _subscription_saw_the_end(end: Message | None) -> bool:
    """The subscription ended because the job did (not because it failed or was unsubscribed)."""
    if end is None or not end.success:
        return False
    if end.level in RESULT_LEVELS:
        with contextlib.suppress(ValueError):
            answer = json.loads(end.text)
            if isinstance(answer, dict) and answer.get("state") == "unsubscribed":
                return False
    return True


@cli.command()
@output_options
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new output until the job ends (across its restarts).")
@click.argument("job_id", metavar="JOB")
def logs(job_id: str, follow: bool) -> None:
    """Print JOB's output: the output kept in its result if it has ended, else its recent output
    (through core.subscribe); with -f, follow it until it ends, across its restarts."""
    state = _state()
    client = state.client()
    response = client.response_for(job_id)
    result = response.peek()
    if result is None and not response.exists:
        raise NotFound(f"job {job_id} is not known to the node (never started, or its result expired)")
    if result is not None:
        if state.as_json:
            state.emit({"id": job_id, "running": False, "messages": [], "result": _result_document(result)})
        else:
            if result.stdout:
                click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
            if result.stderr:
                click.echo(result.stderr, nl=not result.stderr.endswith("\n"), err=True)
        return
    collected: list[Message] = []
    if follow:
        collected = _follow_job(state, client, response, job_id)
    else:
        subscriber = client.subscribe(job_id)
        try:
            # The replay arrives at once; a second of silence means we have the recent output.
            for message in subscriber.messages(idle=1.0):
                if state.as_json:
                    collected.append(message)
                else:
                    _write_message(message)
        finally:
            _stop_subscriber(client, subscriber)
    if state.as_json:
        final = response.peek()
        state.emit({"id": job_id, "running": final is None, "messages": [m.to_dict() for m in collected],
                    "result": _result_document(final) if final is not None else None})


# The client's own command modules, one per node namespace (`g8os fs`, `g8os events`, ...). Each
# defines `COMMANDS`, the click commands and groups it adds; a new namespace adds its module here.
COMMAND_MODULES: tuple[str, ...] = ("g8os.client.cli_info", "g8os.client.cli_shell",
                                      "g8os.client.cli_fs", "g8os.client.cli_config",
                                      "g8os.client.cli_events",
                                      "g8os.client.cli_disk")


def _add_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        for command in importlib.import_module(name).COMMANDS:
            cli.add_command(command)


def _add_plugins() -> None:
    """Command groups that live outside client/ (which imports messages only), found through
    the `g8os.cli` entry points: `g8os flist` comes from the flist engine this way."""
    import os
    from importlib.metadata import entry_points

    for point in entry_points(group="g8os.cli"):
        if point.name in cli.commands:
            continue
        try:
            command = point.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            if os.environ.get("G8OS_DEBUG"):
                click.echo(f"g8os: plugin {point.name!r} not loaded: {exc}", err=True)
            continue
        cli.add_command(command, point.name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `g8os` console script."""
    _add_commands()
    _add_plugins()
    cli.main(args=argv, prog_name="g8os")


if __name__ == "__main__":
    main()
