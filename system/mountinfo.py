"""The mounts of this process's mount namespace, from /proc/self/mountinfo.

One parser for everything that asks what is mounted where: the flist mount (its FUSE and overlay
mounts), the disks (what holds a device, what a mount point is), filesystem.* (trees with mounts
inside). Reading mountinfo sends no request to any filesystem, unlike a stat of a mount point, so a
FUSE server's own thread may call it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    major: int
    minor: int
    root: str            # the path inside the filesystem that is mounted here
    mountpoint: str
    options: str         # this mount's options (ro, nosuid, ...)
    fstype: str
    source: str
    super_options: str   # the filesystem's own options (lowerdir=..., metacopy=on, subvol=...)

    @property
    def device(self) -> str:
        """"major:minor", as /sys/class/bdi and /sys/dev/block name it."""
        return f"{self.major}:{self.minor}"


def unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def parse(text: str) -> list[Mount]:
    found = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        rest = right.split(" ")
        if len(fields) < 6 or len(rest) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        super_options = unescape(rest[2]) if len(rest) > 2 else ""
        found.append(Mount(major=int(major), minor=int(minor), root=unescape(fields[3]),
                           mountpoint=unescape(fields[4]), options=fields[5], fstype=rest[0],
                           source=unescape(rest[1]), super_options=super_options))
    return found


def mounts() -> list[Mount]:
    """This mount namespace's mounts, in mount order (OSError if mountinfo cannot be read)."""
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
        return parse(handle.read())


def under(path: str, top: str) -> bool:
    """`path` is `top` or below it (both absolute and normalized)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def mounts_below(path: str) -> list[str]:
    """Mount points at or under `path`; none when mountinfo cannot be read."""
    try:
        return [mount.mountpoint for mount in mounts() if under(mount.mountpoint, path)]
    except OSError:
        return []
