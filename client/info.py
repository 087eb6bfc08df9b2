"""`client.info`: facts about the node (cpu, memory, disks, nics, os, listening ports, version)."""

from __future__ import annotations

from typing import Any

from g8os.client.transport import Namespace
from g8os.messages.info import InfoCpu, InfoDisk, InfoMem, InfoNic, InfoOs, InfoPort, InfoVersion


class InfoManager(Namespace):
    """The `info.*` commands. Every method returns the decoded JSON the node answers."""

    def cpu(self) -> list[dict[str, Any]]:
        """One entry per logical CPU: model, MHz, cache size, flags."""
        return self._call(InfoCpu)

    def mem(self) -> dict[str, Any]:
        """Memory totals in bytes: total, available, used, free, usedPercent..."""
        return self._call(InfoMem)

    def disk(self) -> list[dict[str, Any]]:
        """Mounted filesystems: device, mountpoint, fstype, opts, sizes."""
        return self._call(InfoDisk)

    def nic(self) -> list[dict[str, Any]]:
        """Network interfaces of the node's network namespace, with their addresses."""
        return self._call(InfoNic)

    def os(self) -> dict[str, Any]:
        """Hostname, uptime, boot time, kernel and platform."""
        return self._call(InfoOs)

    def port(self) -> list[dict[str, Any]]:
        """Listening sockets of the node's network namespace."""
        return self._call(InfoPort)

    def version(self) -> dict[str, Any]:
        """The node's g8os version, git revision and whether its tree was dirty."""
        return self._call(InfoVersion)
