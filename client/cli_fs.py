"""`g8os fs`: the node's files from a shell (`filesystem.*`).

    g8os fs ls /var/tmp
    g8os fs put ./app.tar /var/tmp/           # a trailing / keeps the local name
    g8os fs get /var/log/syslog               # into ./syslog; `-` writes to stdout
    g8os fs mkdir /var/tmp/a/b
    g8os fs rm /var/tmp/a

Transfers go block by block (1 MiB), with a progress bar on a terminal. Exit codes are the CLI's:
4 when the node has no such path, 2 for a local file that cannot be read, 1 for a refusal.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.table import Table

from g8os.client.cli import Options, _state, output_options
from g8os.client.render import human_bytes
from g8os.messages.errors import FailedPrecondition, G8Error, InvalidArgument

_TYPE_LETTER = {"dir": "d", "link": "l", "fifo": "p", "socket": "s", "char": "c", "block": "b"}


def _mode_text(entry: dict[str, Any]) -> str:
    """`drwxr-xr-x`, as `ls -l` shows it."""
    mode = entry.get("mode")
    if not isinstance(mode, int):
        return ""
    kind = _TYPE_LETTER.get(str(entry.get("type") or ""), "d" if entry.get("is_dir") else "-")
    return kind + stat.filemode(mode)[1:]


def _mtime_text(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))


@contextlib.contextmanager
def _progress(state: Options, what: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a person at a terminal; nothing otherwise."""
    if not state.tty or state.quiet or state.as_json:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=state.err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def _remote_size(state: Options, remote: str) -> int | None:
    """The size of a remote file from its directory's listing (for the progress bar only)."""
    with contextlib.suppress(G8Error):
        name = posixpath.basename(remote)
        for entry in state.client().filesystem.list(posixpath.dirname(remote) or "/"):
            if entry.get("name") == name and isinstance(entry.get("size"), int):
                return entry["size"]
    return None


@click.group()
def fs() -> None:
    """The node's files: ls, get, put, mkdir, rm (paths on the node are absolute)."""


@fs.command("ls")
@output_options
@click.argument("path", default="/", required=False)
def ls(path: str) -> None:
    """List the directory PATH on the node (default /)."""
    state = _state()
    with state.spinner(f"listing {path}"):
        entries = state.client().filesystem.list(path)
    if state.as_json:
        state.emit({"path": path, "entries": entries})
        return
    if not entries:
        state.say(f"{path} is empty")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("MODE", "SIZE", "MODIFIED", "NAME"):
        table.add_column(column, justify="right" if column == "SIZE" else "left", overflow="fold")
    for entry in entries:
        name = str(entry.get("name", ""))
        if entry.get("is_dir"):
            name += "/"
        table.add_row(_mode_text(entry), human_bytes(entry.get("size")), _mtime_text(entry.get("mtime")),
                      name, style="bold blue" if entry.get("is_dir") else None)
    state.out.print(table)


@fs.command("get")
@output_options
@click.argument("remote")
@click.argument("local", required=False)
def get(remote: str, local: str | None) -> None:
    """Copy the node's file REMOTE to LOCAL (default: its name, here; `-`: stdout)."""
    state = _state()
    client = state.client()
    target = local or posixpath.basename(remote.rstrip("/"))
    if not target:
        raise InvalidArgument(f"cannot name a local file after {remote!r}: give LOCAL", field="LOCAL")
    if target != "-" and os.path.isdir(target):
        target = os.path.join(target, posixpath.basename(remote.rstrip("/")))
    total = _remote_size(state, remote) if state.tty and not state.quiet and not state.as_json else None
    with _progress(state, f"get {remote}", total) as progress:
        if target == "-":
            received = client.filesystem.download(remote, sys.stdout.buffer, progress=progress)
            sys.stdout.buffer.flush()
        else:
            try:
                received = client.filesystem.download_file(remote, target, progress=progress)
            except OSError as exc:
                raise FailedPrecondition(f"cannot write {target}: {exc.strerror or exc}") from None
    if state.as_json and target != "-":
        state.emit({"remote": remote, "local": os.path.abspath(target), "bytes": received})
    elif target != "-":
        state.say(f"{remote} → {target}: {human_bytes(received)}")


@fs.command("put")
@output_options
@click.option("--no-clobber", "-n", is_flag=True, help="Fail if REMOTE exists instead of replacing it.")
@click.option("--append", "-a", is_flag=True, help="Append to REMOTE instead of replacing it.")
@click.argument("local")
@click.argument("remote")
def put(local: str, remote: str, no_clobber: bool, append: bool) -> None:
    """Copy LOCAL (`-`: stdin) to REMOTE on the node; a REMOTE ending in / keeps LOCAL's name."""
    state = _state()
    if no_clobber and append:
        raise InvalidArgument("--no-clobber and --append exclude each other", field="--append")
    if remote.endswith("/"):
        if local == "-":
            raise InvalidArgument("stdin has no name: give REMOTE a file name", field="REMOTE")
        remote = posixpath.join(remote, os.path.basename(local))
    mode = "x" if no_clobber else "a" if append else "w"
    client = state.client()
    try:
        source = sys.stdin.buffer if local == "-" else open(local, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidArgument(f"cannot read {local}: {exc.strerror or exc}", field="LOCAL") from None
    try:
        total = os.fstat(source.fileno()).st_size if local != "-" else None
        with _progress(state, f"put {remote}", total) as progress:
            sent = client.filesystem.upload(remote, source, mode=mode, progress=progress)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if state.as_json:
        state.emit({"local": local if local == "-" else os.path.abspath(local), "remote": remote,
                    "bytes": sent})
    else:
        state.say(f"{local} → {remote}: {human_bytes(sent)}")


@fs.command("mkdir")
@output_options
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
def mkdir(paths: tuple[str, ...]) -> None:
    """Create directories on the node, with their missing parents (mode 0755)."""
    state = _state()
    for path in paths:
        state.client().filesystem.mkdir(path)
    if state.as_json:
        state.emit({"created": list(paths)})
    else:
        for path in paths:
            state.say(f"created {path}")


@fs.command("rm")
@output_options
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
def rm(paths: tuple[str, ...]) -> None:
    """Remove files, symlinks or whole directory trees on the node (stops at the first failure)."""
    state = _state()
    removed: list[str] = []
    for path in paths:
        state.client().filesystem.remove(path)
        removed.append(path)
        if not state.as_json:
            state.say(f"removed {path}")
    if state.as_json:
        state.emit({"removed": removed})


COMMANDS = [fs]
