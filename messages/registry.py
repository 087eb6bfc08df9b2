"""The command registry: wire name (`core.system`) → request class and the actor that owns it.

Request classes register themselves with `@command(...)`; every messages module that defines
commands is listed in `MODULES` (explicit, no import magic), and `load()` imports them.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

T = TypeVar("T")


class Owner(enum.StrEnum):
    """The actor that handles a command (its name in the root's children)."""

    GATEWAY = "gateway"   # answered at the edge: core.ping
    JOBS = "jobs"         # runs a process under the JobSupervisor
    STATS = "stats"       # node facts: info.*, process.*
    ROOT = "root"         # the actor tree: actor.*
    LOG = "log"           # logger.*, events
    SERVICES = "services" # boot services, config.get
    FILES = "files"       # filesystem.*
    DISKS = "disks"       # disk.*, btrfs.*


class Kind(enum.StrEnum):
    BUILTIN = "builtin"   # a function of an actor: level-20 JSON result
    PROCESS = "process"   # an OS process: output levels, exit codes


@attrs.frozen
class CommandInfo:
    name: str
    request: type
    owner: Owner
    kind: Kind
    summary: str


REGISTRY: dict[str, CommandInfo] = {}

MODULES = (
    "g8os.messages.core",
    "g8os.messages.job",
    "g8os.messages.process",
    "g8os.messages.info",
    "g8os.messages.actor",
    "g8os.messages.filesystem",
    "g8os.messages.config",
    "g8os.messages.logger",
    "g8os.messages.events",
    "g8os.messages.aggregator",
    "g8os.messages.disk",
    "g8os.messages.btrfs",
)


def command(name: str, *, owner: Owner, kind: Kind = Kind.BUILTIN) -> Callable[[type[T]], type[T]]:
    """Register a request class under its wire name."""

    def register(cls: type[T]) -> type[T]:
        if name in REGISTRY:
            raise RuntimeError(f"command {name} registered twice")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        REGISTRY[name] = CommandInfo(name, cls, owner, kind, summary)
        cls.command_name = name  # type: ignore[attr-defined]
        return cls

    return register


_loaded = False


def load() -> dict[str, CommandInfo]:
    global _loaded
    if not _loaded:
        for module in MODULES:
            importlib.import_module(module)
        _loaded = True
    return REGISTRY


# Commands added at run time (extensions of the boot configuration), by name.
DYNAMIC: set[str] = set()


def add(name: str, request: type, *, owner: Owner, kind: Kind) -> CommandInfo:
    """Register a command at run time (an `[extension.<name>]` of the boot config).

    Built-in commands are loaded first and never replaced (ValueError); adding a run-time name
    again replaces it, so loading the same configuration twice is harmless.
    """
    load()
    if name in REGISTRY and name not in DYNAMIC:
        raise ValueError(f"{name!r} is a built-in command")
    summary = (request.__doc__ or "").strip().splitlines()[0] if request.__doc__ else ""
    info = CommandInfo(name, request, owner, kind, summary)
    REGISTRY[name] = info
    DYNAMIC.add(name)
    request.command_name = name  # type: ignore[attr-defined]
    return info


def remove(name: str) -> None:
    """Forget a run-time command (built-in ones stay)."""
    if name in DYNAMIC:
        DYNAMIC.discard(name)
        REGISTRY.pop(name, None)


def lookup(name: str) -> CommandInfo | None:
    return load().get(name)


def parse_arguments(info: CommandInfo, arguments: dict[str, Any]) -> Any:
    from g8os.messages.convert import structure

    return structure(arguments, info.request, prefix="arguments")
