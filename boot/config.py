"""The node's configuration: where its state lives and how Redis is reached.

Written as JSON by whoever prepares the node (`core0 sandbox up`, the initramfs, `core0 agent`)
and read by PID 1 and the actor plane. Startup services and extensions are TOML files in
`config_dir` (system/bootconfig.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs

from g8os.messages.convert import structure, unstructure


@attrs.define(kw_only=True)
class RedisConfig:
    socket: str                       # unix socket path; the actor plane always uses it
    password: str = ""                # requirepass; required on every connection when set
    port: int = 6379                  # TCP listener in the node's network namespace (0 = none)
    bind: str = "0.0.0.0"
    appendonly: bool = True           # results survive a redis-server crash


@attrs.define(kw_only=True)
class NodeConfig:
    name: str = "g8os"
    mode: str = "sandbox"             # sandbox | boot | agent
    hostname: str = "g8os"
    state_dir: str                    # desired state of resources, job records, redis data
    run_dir: str                      # sockets, pid files
    # Volatile state that must outlive an actor but not the node: records of running jobs and
    # services. A tmpfs (the node's own /run): written for every job started, so it must be fast.
    runtime_dir: str = "/run/g8os"
    log_file: str = ""                # core0's own log ("" = stderr)
    redis: RedisConfig
    shutdown_timeout: float = 20.0    # SIGTERM to exit, whole node
    actor_port: int = 1900            # Thespian admin port inside the private actor network namespace
    # The boot configuration: TOML files declaring startup services and extensions
    # (system/bootconfig.py, docs/config.md); "" = none.
    config_dir: str = ""
    # Block devices the node may change (disk.*, btrfs.*), as glob patterns over kernel names
    # ("loop*", "sd[b-z]"). None: the mode's default — loop devices only in a sandbox (the host's
    # own disks are never a sandbox's to change), every disk otherwise. Whatever this says, the
    # disk under the node's root and any device in use are refused by rule.
    disk_manage: list[str] | None = None
    disk_protect: list[str] = attrs.field(factory=list)   # always protected, same patterns
    # filesystem.* handles (actors/files.py): at most this many open, each closed after this many
    # seconds without use (a client that dies mid-upload must not hold a descriptor for ever).
    files_max_handles: int = 256
    files_idle_timeout: float = 300.0
    # Metrics (aggregator.query, actors/stats.py): statistics per period of these lengths in
    # seconds, and core0's own samples of the node every `stats_interval` seconds (0: none).
    stats_periods: list[int] = attrs.field(factory=lambda: [300, 3600])
    stats_interval: float = 30.0
    events_length: int = 10_000       # the stream g8os:events keeps about this many (MAXLEN ~)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeConfig:
        return structure(json.loads(Path(path).read_text()), cls)

    def save(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(unstructure(self), indent=2))
        os.chmod(tmp, 0o600)  # holds the redis password
        tmp.replace(target)
