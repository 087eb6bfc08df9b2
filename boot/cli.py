"""The `core0` command: run and manage g8os nodes on this host.

    core0 sandbox [--name N] [--port P] [--config DIR]   a sandbox in the foreground (Ctrl-C stops it)
    core0 sandbox up [--name N] [--port P] [--config DIR] [--detach]
    core0 sandbox down [--name N]
    core0 sandbox list [--json]
    core0 sandbox status [--name N]

Errors print a message on stderr and exit non-zero.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from g8os.boot import sandbox as sandboxes

T = TypeVar("T")
DEFAULT_NAME = "default"


def _run(action: Callable[[], T]) -> T:
    """Turn the expected failures into a clean message and exit code 1."""
    try:
        return action()
    except (RuntimeError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _name(ctx: click.Context, name: str | None) -> str:
    return name or ctx.obj.get("name") or DEFAULT_NAME


def _hint(info: dict[str, Any]) -> None:
    command = f"g8os --host {info['host']} --port {info['port']} --password {info['password']} ping"
    click.echo(f"connect: {command}", err=True)


name_option = click.option("--name", default=None, help="sandbox name (default: default)")
port_option = click.option("--port", type=click.IntRange(0, 65535), default=None,
                           help="TCP port of the forwarder on 127.0.0.1 (default: a free one)")
config_option = click.option("--config", "config_dir", default=None, metavar="DIR",
                             type=click.Path(exists=True, file_okay=False),
                             help="boot configuration: a directory of TOML files declaring startup "
                                  "services and extensions (copied into the sandbox; see docs/config.md)")


@click.group()
def cli() -> None:
    """core0: the init of a g8os node."""


@cli.group(invoke_without_command=True)
@name_option
@port_option
@config_option
@click.pass_context
def sandbox(ctx: click.Context, name: str | None, port: int | None, config_dir: str | None) -> None:
    """A g8os node in fresh namespaces on this host (root only). Without a subcommand: run one in
    the foreground until Ctrl-C."""
    ctx.obj = {"name": name, "port": port, "config_dir": config_dir}
    if ctx.invoked_subcommand is None:
        ctx.exit(_run(lambda: sandboxes.run_foreground(_name(ctx, None), port or 0, config_dir=config_dir)))


@sandbox.command()
@name_option
@port_option
@config_option
@click.option("--detach", is_flag=True, help="run the keeper as a daemon and return once the node is up")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds to wait for the node")
@click.pass_context
def up(ctx: click.Context, name: str | None, port: int | None, config_dir: str | None, detach: bool,
       timeout: float) -> None:
    """Start a sandbox (in the foreground unless --detach). Prints its connection info as JSON."""
    name = _name(ctx, name)
    port = port if port is not None else (ctx.obj.get("port") or 0)
    config_dir = config_dir or ctx.obj.get("config_dir")
    if not detach:
        ctx.exit(_run(lambda: sandboxes.run_foreground(name, port, timeout=timeout, config_dir=config_dir)))
    info = _run(lambda: sandboxes.up(name, port=port, detach=True, timeout=timeout, config_dir=config_dir))
    click.echo(json.dumps(info))
    _hint(info)


@sandbox.command()
@name_option
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds to wait for it to stop")
@click.pass_context
def down(ctx: click.Context, name: str | None, timeout: float) -> None:
    """Stop a running sandbox."""
    name = _name(ctx, name)
    _run(lambda: sandboxes.down(name, timeout=timeout))
    click.echo(f"sandbox {name!r} stopped", err=True)


@sandbox.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON array instead of a table")
def list_command(as_json: bool) -> None:
    """List the sandboxes of this host."""
    rows = _run(sandboxes.list_sandboxes)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no sandboxes", err=True)
        return
    click.echo(f"{'NAME':<33} {'STATE':<9} {'PORT':>5} {'PID':>7}")
    for row in rows:
        port, pid = row.get("port", "-"), row.get("pid", "-")
        click.echo(f"{row['name']:<33} {row['state']:<9} {port!s:>5} {pid!s:>7}")


@sandbox.command()
@name_option
@click.pass_context
def status(ctx: click.Context, name: str | None) -> None:
    """Show a sandbox's state and connection info as JSON; exit 1 unless it is running."""
    name = _name(ctx, name)
    info = _run(lambda: sandboxes.status(name))
    click.echo(json.dumps(info, indent=2))
    if info["state"] != "running":
        click.echo(f"sandbox {name!r} is not running ({info['state']})", err=True)
        ctx.exit(1)


def main() -> None:
    cli(prog_name="core0")


if __name__ == "__main__":
    sys.exit(main())
