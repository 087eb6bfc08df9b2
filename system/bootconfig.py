"""The boot configuration: the TOML files of the node's config directory (`NodeConfig.config_dir`).

Every `*.toml` file directly in the directory is read, in name order. Two kinds of sections, as
in the original core0:

    [startup.<id>]       a service the ServiceSupervisor starts at boot (see docs/config.md):
                         name, args, after, condition, running_delay, running_match, protected,
                         max_restart, recurring_period, tags
    [extension.<name>]   a command `<name>` backed by a program: binary, args, cwd, env, with
                         `{placeholders}` filled from the command's arguments

Validation is strict (cattrs through messages/convert.py: exact types, no unknown keys). A
problem is a `ConfigError` naming the file and the key; it never stops the node: the section at
fault is left out, everything else is used, and the errors are shown by `config.get` and written
to the node log. A file that is not valid TOML is left out whole. Dependency cycles and unknown
dependencies are errors of the services that hold them; a valid service that depends on one
that was left out is kept, and fails at boot with that reason.

This module lives in system/ rather than boot/ because the actors that use it (the
ServiceSupervisor, the gateway and the JobSupervisor, for extensions) may not import boot/.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

from g8os.messages import registry
from g8os.messages.command import Command
from g8os.messages.config import (
    RESERVED_PLACEHOLDERS,
    Extension,
    ExtensionRequest,
    extension_request,
    template_fields,
)
from g8os.messages.convert import structure
from g8os.messages.core import Bash, System
from g8os.messages.errors import InvalidArgument
from g8os.messages.registry import Kind, Owner
from g8os.messages.validate import no_nul, non_empty, non_negative

# The original's pseudo-dependencies (boot phases). g8os has no phases: they are always met, and
# are accepted so that a 0-core service definition reads unchanged.
PSEUDO_DEPENDENCIES = ("init", "net", "boot")
# A service's id is its actor path segment (/services/<id>) and its job id.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
RESERVED_IDS = frozenset({"redis", *PSEUDO_DEPENDENCIES})
EXTENSION_RE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*\Z")
DEFAULT_RUNNING_DELAY = 2.0
CONDITION_TIMEOUT = 10         # seconds a condition check may run before it counts as false
MAX_FILE_BYTES = 1024 * 1024


@attrs.frozen
class ConfigError:
    """One problem in the boot configuration: where (file, key) and what."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "key": self.key, "message": self.message}


@attrs.frozen(kw_only=True)
class _StartupTable:
    """A `[startup.<id>]` table as written (types checked exactly; `args` checked per command)."""

    name: str = attrs.field(validator=[non_empty, no_nul])
    args: Any = None
    after: list[str] = attrs.field(factory=list, validator=no_nul)
    condition: str = attrs.field(default="", validator=no_nul)
    running_delay: float = DEFAULT_RUNNING_DELAY
    running_match: str = ""
    protected: bool = False
    max_restart: int = attrs.field(default=0, validator=non_negative)
    recurring_period: int = attrs.field(default=0, validator=non_negative)
    tags: list[str] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class _ExtensionTable:
    binary: str = attrs.field(validator=[non_empty, no_nul])
    args: list[str] = attrs.field(factory=list, validator=no_nul)
    cwd: str = attrs.field(default="", validator=no_nul)
    env: dict[str, str] = attrs.field(factory=dict, validator=no_nul)


@attrs.frozen(kw_only=True)
class Startup:
    """A valid `[startup.<id>]` service."""

    id: str
    file: str
    name: str                        # as written: a process command or a program
    args: Any                        # as written
    command: str                     # the process command it runs: core.system, bash, an extension
    request: Any                     # that command's validated request (System, Bash, ExtensionRequest)
    after: tuple[str, ...] = ()
    condition: str = ""
    running_delay: float = DEFAULT_RUNNING_DELAY
    running_match: str = ""
    protected: bool = False
    max_restart: int = 0
    recurring_period: int = 0
    tags: tuple[str, ...] = ()

    def process(self) -> tuple[list[str], dict[str, str] | None, str, str]:
        """(argv, env, cwd, stdin) of the service's process."""
        request = self.request
        if isinstance(request, System):
            return [request.name, *request.args], request.env, request.dir, request.stdin
        if isinstance(request, Bash):
            return ["sh", "-c", request.script], None, "", request.stdin
        if isinstance(request, ExtensionRequest):
            return request.process()
        raise TypeError(f"not a process request: {request!r}")

    def job(self) -> Command:
        """The command object the service's results carry (its id is the service's id)."""
        arguments = attrs.asdict(self.request) if attrs.has(type(self.request)) else {}
        return Command(id=self.id, command=self.command, arguments=arguments,
                       tags=list(self.tags) or None, max_restart=self.max_restart or None,
                       recurring_period=self.recurring_period or None)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "args": self.args, "command": self.command,
                "after": list(self.after), "condition": self.condition,
                "running_delay": self.running_delay, "running_match": self.running_match,
                "protected": self.protected, "max_restart": self.max_restart,
                "recurring_period": self.recurring_period, "tags": list(self.tags), "file": self.file}


@attrs.frozen(kw_only=True)
class BootConfig:
    directory: str = ""
    files: tuple[str, ...] = ()
    startup: tuple[Startup, ...] = ()          # the valid services, in start order (dependencies first)
    extensions: tuple[Extension, ...] = ()
    errors: tuple[ConfigError, ...] = ()

    def service(self, service_id: str) -> Startup | None:
        return next((s for s in self.startup if s.id == service_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "files": list(self.files),
                "startup": [s.to_dict() for s in self.startup],
                "extensions": [e.to_dict() for e in self.extensions],
                "errors": [e.to_dict() for e in self.errors]}


def key(*parts: str) -> str:
    """A TOML key path, quoting the parts that need it (`startup."my.svc".after`)."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else '"' + p.replace('"', '\\"') + '"'
                    for p in parts)


class _Parser:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.errors: list[ConfigError] = []
        self.extensions: dict[str, Extension] = {}
        self.bad_extensions: set[str] = set()
        self.tables: dict[str, tuple[str, Any]] = {}      # startup id → (file, raw table)
        self.invalid: set[str] = set()                    # startup ids left out

    def error(self, file: str, where: str, message: str) -> None:
        self.errors.append(ConfigError(file, where, message))

    # ---- files ---------------------------------------------------------------------------

    def read(self, path: Path) -> None:
        file = path.name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                self.error(file, "", f"larger than {MAX_FILE_BYTES} bytes: not read")
                return
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            self.error(file, "", f"not valid TOML: {exc}")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.error(file, "", f"cannot be read: {exc}")
            return
        for section, body in data.items():
            if section not in ("startup", "extension"):
                self.error(file, key(section), "unknown section: only [startup.<id>] and "
                                               "[extension.<name>] are read")
                continue
            if not isinstance(body, dict):
                self.error(file, key(section), f"expected a table of {section} sections")
                continue
            for name, table in body.items():
                if section == "extension":
                    self.extension(file, name, table)
                else:
                    self.remember_startup(file, name, table)

    # ---- extensions ----------------------------------------------------------------------

    def extension(self, file: str, name: str, table: Any) -> None:
        where = key("extension", name)
        if not self._extension(file, name, table, where):
            self.bad_extensions.add(name)

    def _extension(self, file: str, name: str, table: Any, where: str) -> bool:
        if not isinstance(table, dict):
            self.error(file, where, "expected a table")
            return False
        if "binary" not in table and table and all(isinstance(v, dict) for v in table.values()):
            self.error(file, where, "no binary; a dotted command name must be quoted: "
                                    f'[extension."{name}.{next(iter(table))}"]')
            return False
        if not EXTENSION_RE.match(name):
            self.error(file, where, "a command name is lower-case words joined by dots "
                                    "(letters, digits, '-', '_'), e.g. \"zerotier.list\"")
            return False
        if name in self.extensions:
            self.error(file, where, f"defined again (first in {self.extensions[name].file})")
            return False
        info = registry.lookup(name)
        if info is not None and name not in registry.DYNAMIC:
            self.error(file, where, f"`{name}` is a built-in command")
            return False
        if not self._known_keys(file, where, table, _ExtensionTable):
            return False
        try:
            fields = structure(table, _ExtensionTable, prefix=where)
        except InvalidArgument as exc:
            self.error(file, _field(exc, where), _reason(exc))
            return False
        templates = [(key("extension", name, "args") + f"[{i}]", text) for i, text in enumerate(fields.args)]
        templates.append((key("extension", name, "cwd"), fields.cwd))
        templates += [(key("extension", name, "env", k), text) for k, text in fields.env.items()]
        for place, text in templates:
            try:
                names = template_fields(text)
            except ValueError as exc:
                self.error(file, place, str(exc))
                return False
            reserved = RESERVED_PLACEHOLDERS.intersection(names)
            if reserved:
                self.error(file, place, f"placeholder {{{min(reserved)}}} is reserved (every "
                                        "extension takes `stdin` as the process's input)")
                return False
        self.extensions[name] = Extension(name=name, binary=fields.binary, args=fields.args,
                                          cwd=fields.cwd, env=fields.env, file=file)
        return True

    # ---- startup services ----------------------------------------------------------------

    def remember_startup(self, file: str, service_id: str, table: Any) -> None:
        where = key("startup", service_id)
        if service_id in self.tables:
            self.error(file, where, f"defined again (first in {self.tables[service_id][0]})")
            return
        self.tables[service_id] = (file, table)

    def startup(self, service_id: str) -> Startup | None:
        file, table = self.tables[service_id]
        where = key("startup", service_id)
        if not ID_RE.match(service_id):
            self.error(file, where, "a service id is 1 to 64 letters, digits, '.', '-' or '_', "
                                    "starting with a letter or digit")
            return None
        if service_id in RESERVED_IDS:
            what = "the node's redis-server" if service_id == "redis" else "a pseudo-dependency"
            self.error(file, where, f"the id `{service_id}` is reserved ({what})")
            return None
        if not isinstance(table, dict):
            self.error(file, where, "expected a table")
            return None
        if not self._known_keys(file, where, table, _StartupTable):
            return None
        try:
            fields = structure(table, _StartupTable, prefix=where)
        except InvalidArgument as exc:
            self.error(file, _field(exc, where), _reason(exc))
            return None
        if not math.isfinite(fields.running_delay):
            self.error(file, key("startup", service_id, "running_delay"), "must be a finite number")
            return None
        if fields.running_match:
            try:
                re.compile(fields.running_match)
            except re.error as exc:
                self.error(file, key("startup", service_id, "running_match"),
                           f"not a regular expression: {exc}")
                return None
        resolved = self._command(file, service_id, fields)
        if resolved is None:
            return None
        command, request = resolved
        for dependency in fields.after:
            if dependency not in self.tables and dependency not in PSEUDO_DEPENDENCIES:
                self.error(file, key("startup", service_id, "after"), f"unknown dependency `{dependency}`")
                return None
        return Startup(id=service_id, file=file, name=fields.name, args=fields.args, command=command,
                       request=request, after=tuple(dict.fromkeys(fields.after)),
                       condition=fields.condition, running_delay=fields.running_delay,
                       running_match=fields.running_match, protected=fields.protected,
                       max_restart=fields.max_restart, recurring_period=fields.recurring_period,
                       tags=tuple(fields.tags))

    def _command(self, file: str, service_id: str, fields: _StartupTable) -> tuple[str, Any] | None:
        """(process command, validated request) for a service's name and args."""
        name, args = fields.name, fields.args
        where_args = key("startup", service_id, "args")
        extension = self.extensions.get(name)
        info = registry.lookup(name)
        if name in self.bad_extensions:
            self.error(file, key("startup", service_id, "name"), f"the extension `{name}` is not valid")
            return None
        if extension is None and info is not None and info.kind != Kind.PROCESS:
            self.error(file, key("startup", service_id, "name"),
                       f"`{name}` is not a process command (a startup service runs core.system, "
                       "bash, an extension or a program)")
            return None
        if extension is not None or info is not None:
            request_class = extension_request(extension) if extension is not None else info.request
            if args is None:
                args = {}
            if not isinstance(args, dict):
                self.error(file, where_args, f"expected a table of `{name}` arguments")
                return None
            try:
                return name, structure(args, request_class, prefix=where_args)
            except InvalidArgument as exc:
                self.error(file, _field(exc, where_args), _reason(exc))
                return None
        # A program: `name` is looked up in PATH when it starts, `args` are its arguments.
        if args is None:
            args = []
        try:
            request = structure({"name": name, "args": args}, System, prefix=key("startup", service_id))
        except InvalidArgument as exc:
            self.error(file, _field(exc, where_args), _reason(exc))
            return None
        return "core.system", request

    def _known_keys(self, file: str, where: str, table: dict[str, Any], cls: type) -> bool:
        known = {f.name for f in attrs.fields(cls)}
        unknown = [k for k in table if k not in known]
        if unknown:
            self.error(file, f"{where}.{key(unknown[0])}",
                       f"unknown field (known: {', '.join(sorted(known))})")
            return False
        return True

    # ---- the graph -----------------------------------------------------------------------

    def order(self, services: dict[str, Startup]) -> list[Startup]:
        """Drop the services in dependency cycles (errors), then a topological order of the rest;
        ties keep the order of definition."""
        for component in _cycles({sid: [d for d in s.after if d in services] for sid, s in services.items()}):
            members = set(component)
            for sid in component:
                path = _cycle_path(sid, services, members)
                self.error(services[sid].file, key("startup", sid, "after"),
                           "dependency cycle: " + " → ".join(path))
            for sid in component:
                services.pop(sid)
                self.invalid.add(sid)
        ordered: list[Startup] = []
        placed: set[str] = set()
        remaining = list(services.values())
        while remaining:
            # The first service (in definition order) whose dependencies are all placed; a
            # dependency that was left out does not hold anything up (it fails at boot instead).
            for index, service in enumerate(remaining):
                if all(d in placed or d not in services for d in service.after):
                    ordered.append(service)
                    placed.add(service.id)
                    del remaining[index]
                    break
            else:  # unreachable: cycles were removed above
                raise AssertionError(f"no order for {[s.id for s in remaining]}")
        return ordered


def _field(exc: InvalidArgument, default: str) -> str:
    """The TOML key of a field cattrs names: a table's key is `.key` there, not `[key]`."""
    if not exc.field:
        return default
    return re.sub(r"\[([^\]]*[^\d\]][^\]]*)\]", lambda m: "." + key(m.group(1)), exc.field)


def _reason(exc: InvalidArgument) -> str:
    """The message of an InvalidArgument without its "`field`: " prefix (the key says it)."""
    prefix = f"`{exc.field}`: "
    return exc.message[len(prefix):] if exc.field and exc.message.startswith(prefix) else exc.message


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that are cycles (more than one member, or a self-loop),
    each in definition order (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    order = list(graph)
                    found.append(sorted(component, key=order.index))
    return found


def _cycle_path(start: str, services: dict[str, Startup], members: set[str]) -> list[str]:
    """start → … → start through the members of its cycle (a shortest such path)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dependency in services[node].after:
                if dependency == start:
                    return [*paths[node], start]
                if dependency in members and dependency not in paths:
                    paths[dependency] = [*paths[node], dependency]
                    following.append(dependency)
        frontier = following
    return [start, start]


def load(directory: str | os.PathLike[str] | None) -> BootConfig:
    """Read and check every `*.toml` of `directory`. Never raises for a bad configuration:
    problems are in `errors`. An empty or None directory is an empty configuration."""
    if not directory:
        return BootConfig()
    path = Path(directory)
    if not path.is_dir():
        return BootConfig(directory=str(path), errors=(ConfigError(str(path), "", "not a directory"),))
    parser = _Parser(str(path))
    files = sorted(p for p in path.iterdir() if p.suffix == ".toml" and p.is_file())
    for file in files:
        parser.read(file)
    services: dict[str, Startup] = {}
    for service_id in parser.tables:
        service = parser.startup(service_id)
        if service is None:
            parser.invalid.add(service_id)
        else:
            services[service_id] = service
    ordered = parser.order(services)
    return BootConfig(directory=str(path), files=tuple(f.name for f in files), startup=tuple(ordered),
                      extensions=tuple(parser.extensions.values()),
                      errors=tuple(sorted(parser.errors, key=lambda e: e.file)))  # stable: file order


_current: dict[str, BootConfig] = {}


def current(directory: str | os.PathLike[str] | None) -> BootConfig:
    """The configuration of `directory` as this process first read it.

    The actor plane reads it once before it forks the actor system (boot/node.py), so every
    actor, restarted ones included, sees the same configuration until the plane starts again;
    a change in the directory takes effect at the next start of the plane.
    """
    name = str(directory or "")
    if name not in _current:
        _current[name] = load(directory)
    return _current[name]


def install(config: BootConfig) -> None:
    """Register the configuration's extensions as commands of this process's registry."""
    for extension in config.extensions:
        registry.add(extension.name, extension_request(extension), owner=Owner.JOBS, kind=Kind.PROCESS)
