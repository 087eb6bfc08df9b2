"""config.*: the node's effective configuration; and the commands extensions add.

`config.get` answers what the node runs with: its settings (never a secret), the startup
services and extensions of its boot configuration (the TOML files of `NodeConfig.config_dir`,
parsed by `system/bootconfig.py`) and the problems found in them.

An `[extension.<name>]` section adds a command `<name>` backed by a program. Its arguments are
the `{placeholders}` of the section's templates (`args`, `cwd`, `env` values): each becomes a
required string field of a request class made for it here (`extension_request`), so the
gateway validates an extension's arguments as strictly as a built-in command's.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import matches, no_nul

SECTIONS = ("node", "startup", "extensions", "errors")
RESERVED_PLACEHOLDERS = frozenset({"stdin"})   # every extension takes `stdin` as a plain field


@command("config.get", owner=Owner.SERVICES)
@attrs.frozen(kw_only=True)
class ConfigGet:
    """The node's effective configuration: settings (no secrets), startup services, extensions, errors."""

    section: str | None = attrs.field(default=None, validator=matches("|".join(SECTIONS),
                                                                       "one of " + ", ".join(SECTIONS)))


def template_fields(text: str) -> list[str]:
    """The placeholder names of one template (`"--port={port}"` → `["port"]`), in order.

    `{{` and `}}` are literal braces. ValueError for anything else than a bare identifier
    between braces (no format specs, conversions, indexes or attributes): a template is filled
    by plain substitution, never evaluated.
    """
    names = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"bad placeholder {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} in {text!r}: use {{name}}")
        names.append(field)
    return names


@attrs.frozen(kw_only=True)
class Extension:
    """An `[extension.<name>]` section: the command `name` runs `binary` with `args`."""

    name: str
    binary: str
    args: list[str] = attrs.Factory(list)
    cwd: str = ""
    env: dict[str, str] = attrs.Factory(dict)
    file: str = ""                   # where it was defined (for config.get)

    def placeholders(self) -> list[str]:
        """Every placeholder of args, cwd and env values, each once, in order of appearance."""
        seen: dict[str, None] = {}
        for text in (*self.args, self.cwd, *self.env.values()):
            for name in template_fields(text):
                seen.setdefault(name, None)
        return list(seen)

    def render(self, values: dict[str, str]) -> tuple[list[str], dict[str, str] | None, str]:
        """(argv, env, cwd) with the placeholders filled. Each args item stays one argv element,
        whatever the values hold: nothing is split or given to a shell."""
        def fill(text: str) -> str:
            return text.format_map(values)
        argv = [self.binary, *(fill(arg) for arg in self.args)]
        env = {key: fill(value) for key, value in self.env.items()} or None
        return argv, env, fill(self.cwd)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "binary": self.binary, "args": list(self.args), "cwd": self.cwd,
                "env": dict(self.env), "arguments": self.placeholders(), "file": self.file}


@attrs.frozen(kw_only=True)
class ExtensionRequest:
    """Base of the request classes of extension commands (one subclass per extension)."""

    stdin: str = ""
    extension: ClassVar[Extension]

    def process(self) -> tuple[list[str], dict[str, str] | None, str, str]:
        """(argv, env, cwd, stdin) of the process this command runs."""
        values = {name: getattr(self, name) for name in self.extension.placeholders()}
        argv, env, cwd = self.extension.render(values)
        return argv, env, cwd, self.stdin


def extension_request(extension: Extension) -> type[ExtensionRequest]:
    """A request class for `extension`: one required string field per placeholder."""
    fields = {name: attrs.field(type=str, validator=no_nul) for name in extension.placeholders()}
    # cattrs generates code named after the class: an identifier, whatever the command's name.
    ident = "".join(c if c.isalnum() else "_" for c in extension.name)
    cls = attrs.make_class(f"Extension_{ident}", fields, bases=(ExtensionRequest,),
                           frozen=True, kw_only=True, slots=True)
    cls.extension = extension
    args = " ".join(extension.args)
    cls.__doc__ = f"Run `{extension.binary}{' ' + args if args else ''}` (extension)."
    return cls
