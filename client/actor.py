"""`client.actor`: introspection and fault injection on the node's live actor tree (g8os adds)."""

from __future__ import annotations

import signal as _signal
from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.actor import ActorInspect, ActorKill, ActorRestart, ActorTree


class ActorManager(Namespace):
    """The `actor.*` commands. Paths look like `/`, `/jobs`, `/jobs/<id>`, `/containers/3`."""

    def tree(self, path: str = "/") -> Any:
        """Every actor under `path`: path, kind, pid, state, restarts, uptime, last error."""
        return self._call(ActorTree, path=path)

    def inspect(self, path: str) -> Any:
        """One actor in detail: its node, supervision spec, mailbox and restart history."""
        return self._call(ActorInspect, path=path)

    def kill(self, path: str, signal: int = _signal.SIGKILL) -> Any:
        """Fault injection: kill a heavy actor's process with `signal`, or fail a light actor.
        Its supervisor reacts as to any crash."""
        return self._call(ActorKill, path=path, signal=int(signal))

    def restart(self, path: str) -> Any:
        """Stop the actor in order (grace period, then SIGKILL) and start it again."""
        return self._call(ActorRestart, path=path)
