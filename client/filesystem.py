"""`client.filesystem`: the node's files, through handles and by path, plus streamed transfers.

    client.filesystem.upload_file("/var/tmp/app.tar", "app.tar")     # bytes sent
    client.filesystem.download_file("/etc/hostname", "hostname")
    for entry in client.filesystem.list("/var/tmp"): print(entry["name"], entry["size"])

Method names and arguments are those of the G8OS 1.0 client (`g8core`), so code written for it
reads the same. Transfers move one bounded block per command (1 MiB by default), so neither side
holds more than a block of a big file in memory.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import os
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from g8os.client.transport import Namespace
from g8os.messages.errors import G8Error, InvalidArgument
from g8os.messages.filesystem import (
    READ_MAX,
    FilesystemChmod,
    FilesystemChown,
    FilesystemClose,
    FilesystemExists,
    FilesystemList,
    FilesystemMkdir,
    FilesystemMove,
    FilesystemOpen,
    FilesystemRead,
    FilesystemRemove,
    FilesystemWrite,
)

CHUNK = 1024 * 1024    # bytes per filesystem.read / filesystem.write of a transfer

Progress = Callable[[int], None]


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class FilesystemManager(Namespace):
    """The `filesystem.*` commands. Paths are absolute paths on the node."""

    # ---- handles -------------------------------------------------------------------------------

    def open(self, file: str, mode: str = "r", perm: int = 0o644, *,
             idle_timeout: float | None = None) -> str:
        """Open `file` on the node and return a handle for `read`, `write` and `close`.

        `mode`: `r` read, `w` write (create, truncate), `a` append (create), `x` create a new file
        (AlreadyExists if it exists); add `+` to read and write. G8OS 1.0's `wx` (write, create if
        missing) and `+` (read and write) are accepted too. `perm` applies when the file is created.
        The node closes a handle unused for `idle_timeout` seconds (default: its own setting, 300 s).
        """
        return self._call(FilesystemOpen, file=file, mode=mode, perm=perm, idle_timeout=idle_timeout)

    def read(self, fd: str, size: int | None = None) -> bytes:
        """The next block of an open handle (at most `size` bytes, default 512 KiB, up to 1 MiB);
        b"" at the end of the file."""
        return base64.b64decode(self._call(FilesystemRead, fd=fd, size=size))

    def write(self, fd: str, bytes: builtins.bytes) -> None:
        """Write a block at the handle's position (keep blocks to a few MiB: a command is at most
        8 MiB once base64-encoded; `upload` splits a big file for you). The parameter keeps
        g8core's name, `bytes`."""
        data = bytes
        if not isinstance(data, builtins.bytes | bytearray | memoryview):
            raise InvalidArgument(f"`arguments.block`: expected bytes, got {type(data).__name__}",
                                  field="arguments.block")
        self._call(FilesystemWrite, fd=fd, block=base64.b64encode(data).decode("ascii"))

    def close(self, fd: str) -> None:
        """Close an open handle."""
        self._call(FilesystemClose, fd=fd)

    # ---- paths ---------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether `path` exists on the node (symlinks followed)."""
        return self._call(FilesystemExists, path=path)

    def list(self, path: str) -> list[dict[str, Any]]:
        """The entries of a directory, sorted by name: `name`, `size`, `mode` (permission bits),
        `is_dir`, and (g8os adds) `type` and `mtime`."""
        return self._call(FilesystemList, path=path)

    def mkdir(self, path: str) -> None:
        """Create a directory and its missing parents (`mkdir -p`), mode 0755."""
        self._call(FilesystemMkdir, path=path)

    def remove(self, path: str) -> None:
        """Remove a file, a symlink (not its target) or a whole directory tree."""
        self._call(FilesystemRemove, path=path)

    def move(self, path: str, destination: str) -> None:
        """Rename `path` to `destination` (across filesystems: copy, then remove the source)."""
        self._call(FilesystemMove, path=path, destination=destination)

    def chmod(self, path: str, mode: int, recursive: bool = False) -> None:
        """Set permission bits (`0o755`); `recursive` walks the tree (symlinks are skipped)."""
        self._call(FilesystemChmod, path=path, mode=mode, recursive=recursive)

    def chown(self, path: str, user: str, group: str, recursive: bool = False) -> None:
        """Set owner and group (names on the node, or numeric ids as strings)."""
        self._call(FilesystemChown, path=path, user=user, group=group, recursive=recursive)

    # ---- transfers -----------------------------------------------------------------------------

    def upload(self, remote: str, reader: Reader, *, mode: str = "w", chunk_size: int = CHUNK,
               progress: Progress | None = None) -> int:
        """Write what `reader.read(n)` returns, until b"", to `remote`; return the bytes sent.

        `mode` `w` replaces the file, `x` refuses an existing one, `a` appends. `progress` is called
        with the byte count after each block. The handle is closed even when a block fails.
        """
        if chunk_size <= 0:
            raise InvalidArgument(f"chunk_size must be positive, got {chunk_size}", field="chunk_size")
        fd = self.open(remote, mode)
        sent = 0
        try:
            while True:
                block = reader.read(chunk_size)
                if not block:
                    break
                self.write(fd, block)
                sent += len(block)
                if progress is not None:
                    progress(sent)
        except BaseException:
            with contextlib.suppress(G8Error, OSError):
                self.close(fd)
            raise
        self.close(fd)
        return sent

    def download(self, remote: str, writer: Writer, *, chunk_size: int = READ_MAX,
                 progress: Progress | None = None) -> int:
        """Copy `remote` into `writer.write()`, block by block; return the bytes received."""
        fd = self.open(remote, "r")
        received = 0
        try:
            while True:
                block = self.read(fd, chunk_size)
                if not block:
                    break
                writer.write(block)
                received += len(block)
                if progress is not None:
                    progress(received)
        except BaseException:
            with contextlib.suppress(G8Error, OSError):
                self.close(fd)
            raise
        self.close(fd)
        return received

    def upload_file(self, remote: str, local: str | os.PathLike[str], *, mode: str = "w",
                    progress: Progress | None = None) -> int:
        """Upload the local file `local` to `remote` on the node; return the bytes sent."""
        with open(local, "rb") as source:
            return self.upload(remote, source, mode=mode, progress=progress)

    def download_file(self, remote: str, local: str | os.PathLike[str], *,
                      progress: Progress | None = None) -> int:
        """Download `remote` into the local file `local`; return the bytes received.

        The data goes to a temporary file beside `local`, renamed over it only once complete: a
        failed download leaves `local` as it was."""
        target = os.fspath(local)
        partial = os.path.join(os.path.dirname(os.path.abspath(target)),
                               f".{os.path.basename(target)}.{secrets.token_hex(4)}.part")
        # 0o666 less the umask, as a file `open(local, "wb")` would create
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as sink:
                received = self.download(remote, sink, progress=progress)
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        return received

