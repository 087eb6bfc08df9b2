"""The node's redis-server: its configuration file and command line.

Append-only persistence (fsync left to the kernel) makes results survive a crash of the
redis-server process: every write reaches the file before the client sees the reply.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

SERVICE = "redis"   # its service id under the ServiceSupervisor (/services/redis)


def binary() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return found


def write_config(config: Any) -> Path:
    """Write redis.conf for this node into its state dir and return its path."""
    data_dir = Path(config.state_dir) / "redis"
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    redis = config.redis
    lines = [
        "daemonize no",
        f"dir {data_dir}",
        f"unixsocket {redis.socket}",
        "unixsocketperm 700",
        f"port {redis.port}",
        f"bind {redis.bind}" if redis.port else "",
        "protected-mode no" if redis.password else "protected-mode yes",
        'save ""',
        f"appendonly {'yes' if redis.appendonly else 'no'}",
        "appendfsync no",
        "loglevel notice",
        'logfile ""',
        "databases 1",
        "maxclients 10000",
        # Large command payloads are answered with a 400, not refused by Redis itself.
        "proto-max-bulk-len 64mb",
    ]
    if redis.password:
        lines.append(f"requirepass {redis.password}")
    path = data_dir / "redis.conf"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(line for line in lines if line) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    Path(redis.socket).parent.mkdir(parents=True, exist_ok=True)
    return path


def argv(config_path: Path) -> list[str]:
    return [binary(), str(config_path)]
