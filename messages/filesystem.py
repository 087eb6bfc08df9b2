"""filesystem.*: files of the node, through handles (open/read/write/close) and by path.

Names and argument shapes are those of the G8OS 1.0 client (`g8core` 1.0.0): `open {file, mode,
perm}` returns a handle string, `read {fd}` a base64 block, `write {fd, block}` takes one.
"""

from __future__ import annotations

import binascii
import os
from typing import Any

import attrs

from g8os.messages.errors import InvalidArgument
from g8os.messages.registry import Owner, command
from g8os.messages.validate import in_range, non_empty, positive

PATH_MAX = 4096                 # the kernel's PATH_MAX: a longer path is refused before any syscall
READ_DEFAULT = 512 * 1024       # the original core0 read 512 KiB per filesystem.read
READ_MAX = 1024 * 1024          # a bigger block would hold the files actor's worker for longer
IDLE_MAX = 86400.0              # an idle timeout asked per handle is at most a day


def open_flags(mode: str) -> tuple[int, bool, bool]:
    """`os.open` flags for a filesystem.open mode, and whether the handle reads and writes.

    One of `r`, `w`, `a`, `x` (Python's and 0-core's meaning), optionally with `+` (read and
    write), in any order. G8OS 1.0 used `x` as "create if missing" beside `w` or `a` (its client
    uploads with `wx`): there it adds nothing, since `w` and `a` create already. `+` alone is
    G8OS 1.0's read/write mode, `r+`. Raises ValueError with the reason.
    """
    letters = set(mode)
    if not mode:
        raise ValueError("must not be empty")
    if not letters <= set("rwax+"):
        raise ValueError(f"unknown mode letter(s) {''.join(sorted(letters - set('rwax+')))!r} in "
                         f"{mode!r}: use r, w, a or x, optionally with +")
    if len(letters) != len(mode):
        raise ValueError(f"a mode letter is repeated in {mode!r}")
    kind = letters & set("rwa")
    if len(kind) > 1:
        raise ValueError(f"{mode!r} mixes {' and '.join(sorted(kind))}: use one of r, w, a (or x)")
    plus = "+" in letters
    if "r" in letters and "x" in letters:
        raise ValueError(f"{mode!r}: r opens an existing file; create with x+ or w+")
    if "w" in letters:
        flags, readable = os.O_CREAT | os.O_TRUNC, plus
    elif "a" in letters:
        flags, readable = os.O_CREAT | os.O_APPEND, plus
    elif "x" in letters:
        flags, readable = os.O_CREAT | os.O_EXCL, plus
    else:  # "r", "r+" or "+"
        return (os.O_RDWR if plus else os.O_RDONLY), True, plus
    return flags | (os.O_RDWR if readable else os.O_WRONLY), readable, True


def decode_block(block: str) -> bytes:
    """The bytes of a base64 block. Line breaks and spaces are allowed (the G8OS 1.0 client sends
    `base64.encodebytes`, a line every 76 characters); anything else outside the alphabet is not."""
    compact = "".join(block.split())
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not base64: {exc}") from None


def _fail(attribute: attrs.Attribute[Any], reason: str) -> None:
    raise InvalidArgument(reason, field=attribute.name)


def absolute_path(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        _fail(attribute, "must not be empty")
    if "\0" in value:
        _fail(attribute, "must not contain NUL bytes")
    if not value.startswith("/"):
        _fail(attribute, f"must be an absolute path, got {value!r}")
    if len(value.encode("utf-8", "surrogateescape")) > PATH_MAX:
        _fail(attribute, f"is too long (more than {PATH_MAX} bytes)")


def _mode(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        open_flags(value)
    except ValueError as exc:
        _fail(attribute, str(exc))


def _base64(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        decode_block(value)
    except ValueError as exc:
        _fail(attribute, str(exc))


def _at_most_a_day(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value > IDLE_MAX:
        _fail(attribute, f"must be at most {IDLE_MAX:g} seconds, got {value:g}")


@command("filesystem.open", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemOpen:
    """Open a file on the node and return a handle for read/write/close."""

    file: str = attrs.field(validator=absolute_path)
    mode: str = attrs.field(default="r", validator=_mode)
    perm: int = attrs.field(default=0o644, validator=in_range(0, 0o7777))
    # g8os adds: close the handle after this many idle seconds (default: the node's setting)
    idle_timeout: float | None = attrs.field(default=None, validator=[positive, _at_most_a_day])


@command("filesystem.read", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemRead:
    """Read the next block of an open handle, base64 ("" at the end of the file)."""

    fd: str = attrs.field(validator=non_empty)
    # g8os adds: the block size, up to 1 MiB (the original read 512 KiB)
    size: int = attrs.field(default=READ_DEFAULT, validator=in_range(1, READ_MAX))


@command("filesystem.write", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemWrite:
    """Write a base64 block at the handle's position (its end in append mode)."""

    fd: str = attrs.field(validator=non_empty)
    block: str = attrs.field(validator=_base64)


@command("filesystem.close", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemClose:
    """Close an open handle."""

    fd: str = attrs.field(validator=non_empty)


@command("filesystem.exists", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemExists:
    """Whether a path exists (symlinks followed): true or false."""

    path: str = attrs.field(validator=absolute_path)


@command("filesystem.list", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemList:
    """The entries of a directory: name, size, mode, is_dir (and type, mtime)."""

    path: str = attrs.field(validator=absolute_path)


@command("filesystem.mkdir", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemMkdir:
    """Create a directory and its missing parents (mkdir -p), mode 0755."""

    path: str = attrs.field(validator=absolute_path)


@command("filesystem.remove", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemRemove:
    """Remove a file, a symlink (not its target) or a directory tree."""

    path: str = attrs.field(validator=absolute_path)


@command("filesystem.move", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemMove:
    """Rename `path` to `destination` (copy then remove across filesystems)."""

    path: str = attrs.field(validator=absolute_path)
    destination: str = attrs.field(validator=absolute_path)


@command("filesystem.chmod", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemChmod:
    """Set a path's permission bits (`mode`, e.g. 0o755), optionally over a whole tree."""

    path: str = attrs.field(validator=absolute_path)
    mode: int = attrs.field(validator=in_range(0, 0o7777))
    recursive: bool = False


@command("filesystem.chown", owner=Owner.FILES)
@attrs.frozen(kw_only=True)
class FilesystemChown:
    """Set a path's owner and group (names, or numeric ids), optionally over a whole tree."""

    path: str = attrs.field(validator=absolute_path)
    user: str = attrs.field(validator=non_empty)
    group: str = attrs.field(validator=non_empty)
    recursive: bool = False
