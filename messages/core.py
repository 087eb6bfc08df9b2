"""core.*: liveness and running processes on the node."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Kind, Owner, command
from g8os.messages.validate import at_most, no_nul, non_empty


@command("core.ping", owner=Owner.GATEWAY)
@attrs.frozen(kw_only=True)
class Ping:
    """Answer "PONG <version>": the node is up and serving."""


@command("core.system", owner=Owner.JOBS, kind=Kind.PROCESS)
@attrs.frozen(kw_only=True)
class System:
    """Run an executable (looked up in PATH) in its own process group."""

    name: str = attrs.field(validator=[non_empty, no_nul, at_most(4096)])
    args: list[str] = attrs.field(factory=list, validator=no_nul)
    dir: str = attrs.field(default="", validator=no_nul)
    stdin: str = ""
    env: dict[str, str] | None = attrs.field(default=None, validator=no_nul)


@command("bash", owner=Owner.JOBS, kind=Kind.PROCESS)
@attrs.frozen(kw_only=True)
class Bash:
    """Run a shell script with `sh -c`."""

    script: str = attrs.field(validator=[non_empty, no_nul])
    stdin: str = ""


@command("core.subscribe", owner=Owner.JOBS)
@attrs.frozen(kw_only=True)
class Subscribe:
    """Replay a job's recent messages into this job's stream, then follow it until it ends."""

    id: str = attrs.field(validator=non_empty)
