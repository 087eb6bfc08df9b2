"""`g8os shell`: the actor-tree shell as a command of the `g8os` CLI (the shell itself is
`g8os.client.shell`, imported only when the command runs so that other commands do not pay for
prompt_toolkit)."""

from __future__ import annotations

import sys

import click

from g8os.client.cli import _state, output_options


@click.command()
@click.option("-c", "script", metavar="COMMANDS",
              help="Run COMMANDS (separated by `;` or newlines) and exit with the last one's status.")
@output_options
def shell(script: str | None) -> None:
    """An interactive shell over the node's live actor tree: ls, cd, tree, inspect, kill, restart,
    logs, events, system, with completion of actor paths and commands, and history.

    With -c, or with commands on a stdin that is not a terminal, it runs them and exits with the
    status of the last one (same exit codes as the CLI). History is kept in
    $XDG_STATE_HOME/g8os/shell_history (default ~/.local/state/g8os/shell_history).
    """
    from g8os.client.shell import Shell, history_path

    state = _state()
    client = state.client()
    sh = Shell(state)
    if script is not None:
        code = sh.run_script(script)
    elif not sys.stdin.isatty():
        code = sh.run_script(sys.stdin.read())
    else:
        # Fail now, with the CLI's exit code, rather than at the first command: a shell on a node
        # that is not there is of no use.
        reply = client.ping()
        if not state.quiet:
            state.err.print(f"{reply} at {client.connection.address}. `help` lists the commands, "
                            f"Ctrl-D leaves.", highlight=False)
        code = sh.interact(history_path())
    click.get_current_context().exit(code)


COMMANDS = [shell]
