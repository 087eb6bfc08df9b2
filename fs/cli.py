"""`g8os flist`: build, mount, look into and check flists.

    g8os flist create ROOTFS/ -o app.flist --store dir:///srv/store --tag version=1
    g8os flist create image.tar -o app.flist --store http://hub/store   # docker save / OCI too
    g8os flist mount app.flist /mnt/app --rw-dir /var/lib/app           # foreground; prints ready
    g8os flist inspect app.flist [--json]
    g8os flist ls -l app.flist /etc
    g8os flist cat app.flist /etc/os-release
    g8os flist verify app.flist [--store URL]
    g8os flist prefetch app.flist [--all]

Loaded by the `g8os` CLI through the `g8os.cli` entry point, so it works without a node: everything
here is local (the flist file, a chunk store, the chunk cache). `--json` and `--quiet` work before
the command (`g8os --json flist inspect X`) or after it.

Exit codes: 0 ok; 1 the operation failed (missing or corrupt chunks, a path not in the flist, a
store that does not answer); 2 bad usage or not a readable flist.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import click

DEFAULT_CACHE = "/var/cache/g8os/chunks"
EXIT_FAILED = 1
EXIT_USAGE = 2


class FlistCommandError(click.ClickException):
    """A message on stderr (or a JSON error document) and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = code
        # Asked now, inside the command: click shows the error after its context is gone.
        self.as_json = _as_json()

    def show(self, file: Any = None) -> None:
        if self.as_json:
            click.echo(json.dumps({"error": {"message": self.message, "exit": self.exit_code}}))
        click.echo(f"error: {self.message}", err=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    raise FlistCommandError(message, code)


# -- output options shared with the g8os root group ---------------------------------------------

def _root_flag(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    if ctx.meta.get(f"g8os.flist.{name}"):
        return True
    return bool(getattr(ctx.find_root().obj, name, False))


def _as_json() -> bool:
    return _root_flag("as_json")


def _quiet() -> bool:
    return _root_flag("quiet")


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--json` / `--quiet` after the command, like the rest of the g8os CLI."""

    def remember(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def callback(ctx: click.Context, _: click.Parameter, value: bool) -> None:
            if value:
                ctx.meta[f"g8os.flist.{name}"] = True
        return callback

    func = click.option("--quiet", "-q", is_flag=True, expose_value=False, callback=remember("quiet"),
                        help="Only the essential output; no progress bar.")(func)
    func = click.option("--json", is_flag=True, expose_value=False, callback=remember("as_json"),
                        help="Print one JSON document on stdout.")(func)
    return func


def _emit(document: Any) -> None:
    click.echo(json.dumps(document, indent=2 if sys.stdout.isatty() else None, default=str))


def _say(text: str) -> None:
    if not _quiet():
        click.echo(text)


def _log(text: str) -> None:
    """A progress line on stderr, for logs and pipes (no terminal, no bar)."""
    if not _quiet():
        click.echo(text, err=True)


# -- helpers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _opened(path: str, workdir: str | None = None) -> Iterator[Any]:
    """The flist, unpacked into a private temporary directory (or `workdir`) and closed after."""
    from g8os.fs.format import Flist, FlistError

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="g8os-flist-"))
        try:
            flist = Flist.open(path, workdir)
        except (FlistError, OSError, ValueError) as exc:
            fail(f"{path}: not a readable flist ({exc})", EXIT_USAGE)
        try:
            yield flist
        finally:
            flist.close()


def _resolve(flist: Any, path: str) -> Any:
    """The inode at `path` inside the flist (symlinks are not followed)."""
    inode = flist.getattr(flist.root)
    walked = ""
    for part in path.strip("/").split("/"):
        if not part or part == ".":
            continue
        if not stat.S_ISDIR(inode.mode):
            fail(f"{walked or '/'}: not a directory")
        found = flist.lookup(inode.ino, os.fsencode(part))
        walked += "/" + part
        if found is None:
            fail(f"{walked}: no such file or directory in the flist")
        inode = found
    return inode


def _store_for(flist: Any, store_url: str | None, timeout: float = 30.0) -> Any:
    """`--store` wins over the flist's own routes."""
    from g8os.fs.mount import open_chunk_source

    try:
        return open_chunk_source(flist, store_url, timeout=timeout)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


@contextlib.contextmanager
def _cache_for(flist: Any, store_url: str | None, cache_dir: str, timeout: float) -> Iterator[Any]:
    from g8os.fs.cache import ChunkCache
    from g8os.fs.mount import DEFAULT_QUOTA

    store = _store_for(flist, store_url, timeout)
    try:
        try:
            cache = ChunkCache(cache_dir, store, quota=DEFAULT_QUOTA, timeout=timeout, workers=8)
        except OSError as exc:
            fail(f"cache {cache_dir}: {exc}", EXIT_USAGE)
        try:
            yield cache
        finally:
            cache.close()
    finally:
        store.close()


def _file_chunks(flist: Any) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """(ino, chunks) of every regular file stored as chunks, each inode once (hardlinks)."""
    seen: set[int] = set()
    for item in flist.walk():
        inode = item[-1] if isinstance(item, tuple) else item
        if inode.ino in seen or not stat.S_ISREG(inode.mode) or not inode.size:
            continue
        seen.add(inode.ino)
        if flist.inline(inode.ino) is not None:
            continue
        yield inode.ino, [(chunk, size) for chunk, size in flist.chunks(inode.ino) if chunk]


def _unique_ids(pairs: Iterator[tuple[int, list[tuple[str, int]]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _ino, chunks in pairs:
        for chunk, _size in chunks:
            seen.setdefault(chunk, None)
    return list(seen)


@contextlib.contextmanager
def _progress(description: str, total: int | None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """A rich bar on a terminal (stderr) unless --quiet/--json; else a plain line every few seconds."""
    # Decided here, on the command's thread: the builder calls back from worker threads, where
    # click has no current context to ask for --quiet / --json.
    quiet = _quiet() or _as_json()
    if sys.stderr.isatty() and not quiet:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.update(task, advance=n)
        return
    done = 0
    last = time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 2.0 and not quiet:
            last = now
            click.echo(f"{description}: {done}{'/' + str(total) if total else ''}{unit}", err=True)

    yield advance


def _mode_string(inode: Any) -> str:
    return stat.filemode(inode.mode)


def _describe_inode(flist: Any, name: bytes, inode: Any) -> dict[str, Any]:
    entry = {"name": os.fsdecode(name), "ino": inode.ino, "mode": f"{inode.mode:o}",
             "type": _kind(inode.mode), "uid": inode.uid, "gid": inode.gid, "size": inode.size,
             "nlink": inode.nlink, "mtime_ns": inode.mtime_ns}
    if stat.S_ISLNK(inode.mode):
        entry["target"] = os.fsdecode(flist.readlink(inode.ino))
    if stat.S_ISCHR(inode.mode) or stat.S_ISBLK(inode.mode):
        entry["rdev"] = [os.major(inode.rdev), os.minor(inode.rdev)]
    return entry


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def _plain(value: Any) -> Any:
    """Reports and stats as JSON-able data, whatever their class (dataclass, attrs, dict)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    try:
        import attrs

        if attrs.has(type(value)):
            return attrs.asdict(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "_asdict"):
        return value._asdict()
    return value


# -- the group ----------------------------------------------------------------------------------

@click.group(name="flist", context_settings={"help_option_names": ["-h", "--help"]})
def flist() -> None:
    """Flists: container images as a small database plus content-addressed chunks."""


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--tag")
        tags[key] = val
    return tags


def source_kind(source: str) -> str:
    """'dir', 'tar' or 'image' (a docker-save archive or an OCI layout, directory or tar).
    fs/image.py's `detect` decides when it is there; else a tar with manifest.json or oci-layout
    at its top, or a directory with oci-layout and index.json, counts as an image."""
    try:
        from g8os.fs.image import detect
    except ImportError:
        detect = None
    path = Path(source)
    if detect is not None:
        if detect(source):
            return "image"
        if path.is_dir():
            return "dir"
    elif path.is_dir():
        return "image" if (path / "oci-layout").is_file() and (path / "index.json").is_file() else "dir"
    try:
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                if detect is None and member.name.removeprefix("./") in ("manifest.json", "oci-layout"):
                    return "image"
    except (tarfile.TarError, OSError, EOFError) as exc:
        fail(f"{source}: neither a directory nor a readable tar ({exc})", EXIT_USAGE)
    return "tar"


@flist.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .flist to write.")
@click.option("--store", "store_url", required=True,
              help="Where chunks are uploaded (dir://, http://, redis://, zdb://).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Record a tag in the flist (repeatable).")
@click.option("--format", "kind", type=click.Choice(["auto", "dir", "tar", "image"]), default="auto",
              show_default=True, help="What SOURCE is (auto: detected).")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@output_options
def create(source: str, output: str, store_url: str, tags: tuple[str, ...], kind: str, workers: int) -> None:
    """Build an flist from SOURCE (a directory, a tar, a docker-save archive or an OCI layout),
    uploading the chunks the store lacks to --store."""
    import inspect as pyinspect

    from g8os.fs.store import open_store

    tag_map = _tags(tags)
    if kind == "auto":
        kind = source_kind(source)
    extra: dict[str, Any] = {"tags": tag_map or None}
    if kind == "image":
        try:
            from g8os.fs.image import build_from_image as build
        except ImportError:
            fail(f"{source} is an image archive, and image support (g8os.fs.image) is not installed",
                 EXIT_USAGE)
        if "tags" not in pyinspect.signature(build).parameters:
            if tag_map:
                fail("--tag is not supported for images: their tags come from the image config", EXIT_USAGE)
            extra = {}
    elif kind == "dir":
        from g8os.fs.builder import build_from_dir as build
    else:
        from g8os.fs.builder import build_from_tar as build
    try:
        store = open_store(store_url)
    except (ValueError, OSError) as exc:
        fail(f"store {store_url}: {exc}", EXIT_USAGE)
    started = time.monotonic()
    try:
        with _build_progress(os.path.basename(output)) as progress:
            report = build(source, output, store, progress=progress, workers=workers, **extra)
    except Exception as exc:
        fail(f"building {output} from {source}: {exc}")
    finally:
        store.close()
    seconds = time.monotonic() - started
    document = _plain(report)
    if _as_json():
        _emit({"output": output, "source": source, "kind": kind, "seconds": round(seconds, 3),
               "report": document})
        return
    _say(f"{output}: built from {source} ({kind}) in {seconds:.1f}s")
    if isinstance(document, dict):
        _say("  " + ", ".join(f"{key} {value}" for key, value in document.items() if key != "seconds"))


@contextlib.contextmanager
def _build_progress(name: str) -> Iterator[Callable[[int, int, str], None]]:
    """The builder's `progress(done, total, stage)`: a bar on a terminal (stderr), else a line per
    stage and every few seconds within one, nothing with --quiet or --json."""
    quiet = _quiet() or _as_json()  # asked here: the builder calls back from worker threads
    if sys.stderr.isatty() and not quiet:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            task = bar.add_task(name, total=None)

            def update(done: int, total: int, stage: str) -> None:
                bar.update(task, completed=done, total=total or None, description=f"{name}: {stage}")

            yield update
        return
    last: dict[str, Any] = {"stage": None, "at": 0.0}

    def line(done: int, total: int, stage: str) -> None:
        if quiet:
            return
        now = time.monotonic()
        if stage == last["stage"] and now - last["at"] < 2.0 and done != total:
            return
        last.update(stage=stage, at=now)
        percent = f" {100 * done // total}%" if total else ""
        click.echo(f"{name}: {stage}{percent}", err=True)

    yield line


@flist.command()
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@click.argument("target", type=click.Path(file_okay=False))
@click.option("--rw-dir", type=click.Path(file_okay=False),
              help="Mount an overlay: its upper and work dirs (and the read-only lower) go here.")
@click.option("--store", "store_url", help="Chunk store URL, replacing the flist's routes.")
@click.option("--cache", "cache_dir", default=DEFAULT_CACHE, show_default=True, help="Chunk cache directory.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds a chunk fetch may take before the read fails with EIO.")
@click.option("--no-prefetch", is_flag=True, help="Do not warm the cache from the prefetch list.")
@click.option("--via", metavar="SOCKET", type=click.Path(dir_okay=False),
              help="Have the fork server on SOCKET (python -m g8os.fs.forkserver) serve the mount: "
                   "no interpreter start or imports to wait for. The mount lasts while this runs.")
def mount(flist_path: str, target: str, rw_dir: str | None, store_url: str | None, cache_dir: str,
          timeout: float, no_prefetch: bool, via: str | None) -> None:
    """Mount FLIST on TARGET in the foreground until interrupted (prints "ready" once mounted)."""
    import logging

    if via:
        sys.exit(_mount_via(via, flist_path, target, rw_dir, store_url, cache_dir, timeout, no_prefetch))
    from g8os.fs.mount import serve

    logging.basicConfig(level=logging.WARNING if _quiet() else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(message)s")
    code = serve(flist_path, target, store_url=store_url, cache_dir=cache_dir, rw_dir=rw_dir, timeout=timeout,
                 prefetch=not no_prefetch)
    if code:
        sys.exit(code)


def _mount_via(via: str, flist_path: str, target: str, rw_dir: str | None, store_url: str | None,
               cache_dir: str, timeout: float, no_prefetch: bool) -> int:
    """Hold a lease on a mount the fork server made, until SIGINT/SIGTERM or the server ends."""
    import signal

    from g8os.fs.forkserver import MountFailed, request_mount

    def interrupted(*_: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        lease = request_mount(via, flist_path, target, rw_dir=rw_dir and os.path.abspath(rw_dir),
                              store=store_url, cache=os.path.abspath(cache_dir), timeout=timeout,
                              prefetch=not no_prefetch)
    except MountFailed as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    with lease:
        click.echo("ready")
        sys.stdout.flush()
        try:
            return lease.wait()
        except KeyboardInterrupt:
            lease.release()
            return lease.wait(60)


@flist.command()
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@output_options
def inspect(flist_path: str) -> None:
    """Format version, sizes, tags and store routes of FLIST."""
    with _opened(flist_path) as fl:
        tags = dict(fl.tags())
        stats = _plain(fl.stats())
        routes = [{"start": start, "end": end, "url": url} for start, end, url in fl.routes()]
        meta = dict(fl.meta()) if hasattr(fl, "meta") else {}
        version = meta.pop("version", None)
        prefetch = len(list(fl.prefetch()))
    if _as_json():
        _emit({"flist": flist_path, "version": version, **meta, "stats": stats, "tags": tags,
               "routes": routes, "prefetch": prefetch})
        return
    rows: list[tuple[str, Any]] = [("flist", flist_path), ("version", version), *sorted(meta.items())]
    rows += list(stats.items()) if isinstance(stats, dict) else [("stats", stats)]
    rows.append(("prefetch", f"{prefetch} files"))
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:
        click.echo(f"{key + ':':<{width}}{value}")
    click.echo("tags:" + ("" if tags else " (none)"))
    for key, value in sorted(tags.items()):
        click.echo(f"  {key}={value}")
    click.echo("routes:" + ("" if routes else " (none)"))
    for route in routes:
        click.echo(f"  {route['start']:>3}-{route['end']:<3} {route['url']}")


@flist.command(name="ls")
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing: mode, links, owner, size, time.")
@output_options
def ls(flist_path: str, path: str, long: bool) -> None:
    """List PATH (default /) inside FLIST."""
    with _opened(flist_path) as fl:
        inode = _resolve(fl, path)
        if stat.S_ISDIR(inode.mode):
            entries = list(fl.readdir(inode.ino))
        else:
            entries = [(os.fsencode(os.path.basename(path.rstrip("/")) or "/"), inode)]
        rows = [_describe_inode(fl, name, node) for name, node in entries]
    if _as_json():
        _emit(rows)
        return
    for row, (_name, node) in zip(rows, entries, strict=True):
        name = row["name"] + (f" -> {row['target']}" if "target" in row else "")
        if not long:
            click.echo(name)
            continue
        size = f"{row['rdev'][0]}, {row['rdev'][1]}" if "rdev" in row else str(row["size"])
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(node.mtime_ns / 1e9))
        click.echo(f"{_mode_string(node)} {row['nlink']:>3} {row['uid']:>5} {row['gid']:>5} {size:>10} "
                   f"{when} {name}")


@flist.command()
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@click.argument("path")
@click.option("--store", "store_url", help="Chunk store URL, replacing the flist's routes.")
@click.option("--cache", "cache_dir", default=DEFAULT_CACHE, show_default=True, help="Chunk cache directory.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
def cat(flist_path: str, path: str, store_url: str | None, cache_dir: str, timeout: float) -> None:
    """Write the bytes of the file at PATH in FLIST to stdout (through the chunk cache)."""
    from g8os.fs.chunks import ChunkError

    with _opened(flist_path) as fl:
        inode = _resolve(fl, path)
        if not stat.S_ISREG(inode.mode):
            fail(f"{path}: not a regular file")
        out = sys.stdout.buffer
        inline = fl.inline(inode.ino)
        if inline is not None:
            out.write(inline)
            out.flush()
            return
        chunk_list = list(fl.chunks(inode.ino))
        if not chunk_list:
            return
        with _cache_for(fl, store_url, cache_dir, timeout) as cache:
            try:
                for chunk, size in chunk_list:
                    out.write(cache.get(chunk) if chunk else bytes(size))
            except ChunkError as exc:
                out.flush()
                fail(f"{path}: {exc}")
            except BrokenPipeError:
                return
        out.flush()


@flist.command()
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", "store_url", help="Chunk store URL, replacing the flist's routes.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Chunks per store request.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@output_options
def verify(flist_path: str, store_url: str | None, batch: int, workers: int) -> None:
    """Check that the store holds every chunk of FLIST and that each matches its id (exit 1 if not).
    Reads the store directly, never the cache."""
    from g8os.fs.chunks import ChunkError, decompress

    with _opened(flist_path) as fl:
        ids = _unique_ids(_file_chunks(fl))
        store = _store_for(fl, store_url)
    missing: list[str] = []
    corrupt: list[str] = []
    unreachable: list[str] = []

    def check(group: list[str]) -> tuple[list[str], list[str], list[str]]:
        try:
            blobs = store.get(group)
        except ChunkError as exc:
            _log(f"store: {exc}")
            return [], [], group
        except OSError as exc:
            _log(f"store: {exc}")
            return [], [], group
        lost = [chunk for chunk in group if chunk not in blobs]
        bad = []
        for chunk, blob in blobs.items():
            try:
                decompress(blob, chunk)
            except ChunkError:
                bad.append(chunk)
        return lost, bad, []

    groups = [ids[i:i + batch] for i in range(0, len(ids), batch)]
    try:
        with _progress("verifying chunks", len(ids)) as advance, ThreadPoolExecutor(workers) as pool:
            for group, (lost, bad, down) in zip(groups, pool.map(check, groups), strict=True):
                missing += lost
                corrupt += bad
                unreachable += down
                advance(len(group))
    finally:
        store.close()
    good = len(ids) - len(missing) - len(corrupt) - len(unreachable)
    if _as_json():
        _emit({"chunks": len(ids), "ok": good, "missing": missing, "corrupt": corrupt,
               "unreachable": unreachable})
    else:
        _say(f"{len(ids)} chunks: {good} ok, {len(missing)} missing, {len(corrupt)} corrupt"
             + (f", {len(unreachable)} not checked (store unreachable)" if unreachable else ""))
        for chunk in missing:
            click.echo(f"missing {chunk}", err=True)
        for chunk in corrupt:
            click.echo(f"corrupt {chunk}", err=True)
    if missing or corrupt or unreachable:
        sys.exit(EXIT_FAILED)


@flist.command()
@click.argument("flist_path", metavar="FLIST", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", "store_url", help="Chunk store URL, replacing the flist's routes.")
@click.option("--cache", "cache_dir", default=DEFAULT_CACHE, show_default=True, help="Chunk cache directory.")
@click.option("--all", "everything", is_flag=True, help="Every chunk, not only the prefetch list.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True)
@output_options
def prefetch(flist_path: str, store_url: str | None, cache_dir: str, everything: bool, timeout: float,
             workers: int) -> None:
    """Warm the chunk cache: the flist's prefetch list, or every chunk when it has none (or --all)."""
    from g8os.fs.chunks import ChunkError

    with _opened(flist_path) as fl:
        listed = [] if everything else list(fl.prefetch())
        if listed:
            ids = _unique_ids((ino, [(c, s) for c, s in fl.chunks(ino) if c]) for ino in listed)
            scope = f"prefetch list ({len(listed)} files)"
        else:
            ids = _unique_ids(_file_chunks(fl))
            scope = "all files"
        with _cache_for(fl, store_url, cache_dir, timeout) as cache:
            failed: list[tuple[str, str]] = []

            def fetch(chunk: str) -> tuple[str, str | None]:
                try:
                    cache.get(chunk)
                    return chunk, None
                except ChunkError as exc:
                    return chunk, str(exc)

            with _progress("fetching chunks", len(ids)) as advance, ThreadPoolExecutor(workers) as pool:
                for chunk, error in pool.map(fetch, ids):
                    if error:
                        failed.append((chunk, error))
                    advance(1)
    if _as_json():
        _emit({"scope": scope, "chunks": len(ids), "cached": len(ids) - len(failed),
               "failed": [{"chunk": c, "error": e} for c, e in failed]})
    else:
        _say(f"{scope}: {len(ids) - len(failed)}/{len(ids)} chunks cached in {cache_dir}")
        for chunk, error in failed:
            click.echo(f"failed {chunk}: {error}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)
