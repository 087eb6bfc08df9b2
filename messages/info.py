"""info.*: facts about the node, shaped as the original core0 (gopsutil) reported them."""

from __future__ import annotations

import attrs

from g8os.messages.registry import Owner, command


@command("info.cpu", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoCpu:
    """One entry per logical CPU: model, MHz, cache, flags."""


@command("info.mem", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoMem:
    """Memory totals in bytes: total, available, used, free, usedPercent, ..."""


@command("info.disk", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoDisk:
    """Mounted filesystems: device, mountpoint, fstype, opts, sizes."""


@command("info.nic", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoNic:
    """Network interfaces of the node's network namespace with their addresses."""


@command("info.os", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoOs:
    """Hostname, uptime, boot time, kernel and platform."""


@command("info.port", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoPort:
    """Listening sockets of the node's network namespace."""


@command("info.version", owner=Owner.STATS)
@attrs.frozen(kw_only=True)
class InfoVersion:
    """g8os version, git revision and whether the tree was dirty."""
