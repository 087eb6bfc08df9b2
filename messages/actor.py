"""actor.*: introspection and fault injection on the live actor tree (g8os adds)."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Owner, command
from g8os.messages.validate import matches, signal_number

# "/" or "/name/name...": no empty, "." or ".." segment
PATH = r"/|(/(?!\.\.?(?:/|$))[A-Za-z0-9_.:@-]+)+"


@command("actor.tree", owner=Owner.ROOT)
@attrs.frozen(kw_only=True)
class ActorTree:
    """Every actor under `path`: path, kind, pid, state, restarts, uptime, last error."""

    path: str = attrs.field(default="/", validator=matches(PATH, "an actor path like /jobs/web"))


@command("actor.inspect", owner=Owner.ROOT)
@attrs.frozen(kw_only=True)
class ActorInspect:
    """One actor in detail: its node, supervision spec, mailbox and restart history."""

    path: str = attrs.field(validator=matches(PATH, "an actor path like /jobs/web"))


@command("actor.kill", owner=Owner.ROOT)
@attrs.frozen(kw_only=True)
class ActorKill:
    """Fault injection: SIGKILL a heavy actor's process, or fail a light actor; its supervisor reacts."""

    path: str = attrs.field(validator=matches(PATH, "an actor path like /jobs/web"))
    signal: int = attrs.field(default=9, validator=signal_number)


@command("actor.restart", owner=Owner.ROOT)
@attrs.frozen(kw_only=True)
class ActorRestart:
    """Stop an actor in order (grace period, then SIGKILL) and start it again."""

    path: str = attrs.field(validator=matches(PATH, "an actor path like /jobs/web"))
