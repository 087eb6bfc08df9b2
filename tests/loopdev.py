"""Loop devices for the disk tests: sparse files this test makes, attached, and always detached.

A sandbox node has its own mount namespace: what it mounts on our loop devices is invisible from
here and would keep a device busy after `losetup -d` (which then only marks it for autoclear).
Cleanup therefore reads the node's mount table through its PID 1 (/proc/<pid>/mountinfo),
unmounts there what sits on our devices or under our directory (nsenter into the node's mount
namespace), and only then detaches — only the loop devices this fixture attached, each checked
against its backing file first. Everything runs in `finally`: a failing test cleans up too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wire import host_pid, wait_for

MIB = 1 << 20


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


def backing_file(device: str) -> str | None:
    """The file behind a loop device, from the kernel, or None if it is not attached."""
    name = os.path.basename(device)
    try:
        return Path(f"/sys/class/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


class Loops:
    """Loop devices over sparse files in `directory`, attached by this test only."""

    def __init__(self, directory: Path, node: Any) -> None:
        self.directory = directory
        self.node = node
        self.attached: dict[str, Path] = {}   # /dev/loopN -> its backing file
        self.count = 0
        self._pid1: int | None = None

    @property
    def pid1(self) -> int:
        """The host pid of the node's PID 1: the way into its mount namespace."""
        if self._pid1 is None:
            self._pid1 = host_pid(self.node.pid, 1)
        return self._pid1

    def attach(self, size: int = 256 * MIB, *, partscan: bool = True) -> str:
        self.count += 1
        path = self.directory / f"disk{self.count}.img"
        with open(path, "wb") as handle:
            handle.truncate(size)   # sparse: no space is used until written
        argv = ["losetup", "--find", "--show", *(["--partscan"] if partscan else []), str(path)]
        device = sh(*argv).stdout.strip()
        assert re.fullmatch(r"/dev/loop\d+", device), device
        self.attached[device] = path
        return device

    def detach(self, device: str) -> str:
        """Detach one of our devices (checked: it must still be backed by our file); its file."""
        path = self.attached.pop(device)
        if backing_file(device) == str(path):
            sh("losetup", "-d", device, check=False)
        return str(path)

    def node_mounts(self) -> list[tuple[str, str]]:
        """(source, mountpoint) of every mount in the node's namespace, in mount order."""
        text = Path(f"/proc/{self.pid1}/mountinfo").read_text()
        mounts = []
        for line in text.splitlines():
            left, _, right = line.partition(" - ")
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), left.split()[4])
            mounts.append((right.split()[1], point))
        return mounts

    def in_node(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh("nsenter", "-t", str(self.pid1), "-m", "--", *argv, check=check)

    def ours(self, source: str, mountpoint: str) -> bool:
        names = {os.path.basename(d) for d in self.attached}
        base = os.path.basename(source)
        on_ours = source.startswith("/dev/loop") and any(base == n or base.startswith(n + "p") for n in names)
        return on_ours or mountpoint.startswith(str(self.directory) + "/")

    def unmount_ours(self) -> None:
        with contextlib.suppress(LookupError, OSError):
            for source, point in reversed(self.node_mounts()):
                if self.ours(source, point) and self.in_node("umount", point).returncode != 0:
                    self.in_node("umount", "-l", point)

    def cleanup(self) -> None:
        try:
            self.unmount_ours()
        finally:
            for device in list(self.attached):
                self.detach(device)


@contextlib.contextmanager
def loops(directory: Path, node: Any) -> Iterator[Loops]:
    made = Loops(directory, node)
    try:
        yield made
    finally:
        made.cleanup()


def state_dir(node: Any) -> Path:
    """The node's state directory, from the config its keeper wrote (visible from the host)."""
    from g8os.client import sandbox_file

    config = json.loads((sandbox_file(node.name).parent / "config.json").read_text())
    return Path(config["state_dir"])


def wait_disk(client: Any, device: str, present: bool = True, timeout: float = 10.0,
              backing: str | None = None) -> Any:
    """Wait until the node shows `device` as an actor (or, with `backing`, the file it was attached
    to, no longer does); its actor node when present."""
    name = os.path.basename(device)
    backing = backing or backing_file(device)

    def check() -> Any:
        nodes = {c["name"]: c for c in client.actor.tree("/disks")["children"]}
        node = nodes.get(name)
        if present:
            # The very device we attached: a loop name is reused as soon as it is free.
            ok = node is not None and node["state"] == "running" and node.get("backing_file") == backing
            return node if ok else None
        return node is None or node.get("backing_file") != backing

    return wait_for(check, timeout=timeout, what=f"{device} {'listed' if present else 'gone'}")


def sfdisk_dump(device: str) -> str:
    """The partition table of one of our devices as the host reads it (sfdisk opens it read-only)."""
    return sh("sfdisk", "--dump", device, check=False).stdout
