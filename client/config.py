"""`client.config`: the node's effective configuration (settings, startup services, extensions)."""

from __future__ import annotations

from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.config import ConfigGet


class ConfigManager(Namespace):
    """The `config.*` commands."""

    def get(self, section: str | None = None) -> Any:
        """The node's effective configuration: `{"node", "startup", "extensions", "errors"}`.

        `node` holds its settings (never a secret: the Redis password is left out), `startup` each
        startup service of its boot configuration with its state (`pending`, `starting`,
        `running`, `done`, `failed`, `skipped`, `backoff`, `waiting`) and the reason it waits or
        failed, `extensions` the commands the configuration adds, `errors` what is wrong in it
        (file, key, message). `section` returns that part only (InvalidArgument for another name).
        """
        return self._call(ConfigGet, section=section)
