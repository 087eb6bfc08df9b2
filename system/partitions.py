"""Partition tables: read them (sfdisk, read-only), change them (parted), and put them back.

Every change saves first the bytes a table change can touch — the first and last MiB of the disk
(MBR, GPT header and entries, the backup GPT) and, for msdos, every extended boot record of the
logical-partition chain — so that a change that fails, or a helper killed halfway, is undone
byte for byte (`Regions.restore`). Then the kernel's view is brought in line with the disk
(`sync_kernel`, BLKPG through partx: it works on loop devices without partition scanning).
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from g8os.messages.errors import FailedPrecondition, InvalidArgument, NotFound
from g8os.system import blockdev

EDGE = 1 << 20                     # bytes saved at each end of the disk
EXTENDED_TYPES = (0x05, 0x0F, 0x85)
KERNEL_SETTLE = 5.0                # seconds to wait for the kernel to show a new partition
# What parted takes as a position: a number with an optional unit, or a percentage; negative
# counts from the end of the disk.
POSITION = re.compile(r"-?\d+(\.\d+)?(s|B|b|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)?")


def valid_position(value: Any) -> str:
    """An int (megabytes, as parted reads a bare number) or a parted position string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidArgument("must be an integer (MB) or a string such as '1MiB', '2048s' or '50%'")
    text = str(value).strip()
    if not POSITION.fullmatch(text):
        raise InvalidArgument(f"not a position parted understands: {value!r} (e.g. '1MiB', '2048s', '50%')")
    if text.endswith("%") and not 0 <= float(text[:-1]) <= 100:
        raise InvalidArgument(f"a percentage must be between 0% and 100%, got {value!r}")
    return text


# ------------------------------------------------------------------------------------------ reading


def read_table(disk: str) -> dict[str, Any]:
    """The disk's partition table: `table` ("gpt", "msdos", "" when none), its id, sector size,
    usable range and partitions (number, node, start, end, size in bytes, type, name, uuid)."""
    proc = blockdev.run(["sfdisk", "--json", blockdev.dev_path(disk)], check=False)
    sector = blockdev.logical_block_size(disk)
    size = blockdev.size_bytes(disk)
    if proc.returncode != 0 or not proc.stdout.strip():
        if not (blockdev.SYS_BLOCK / disk).exists():
            raise NotFound(f"{disk} vanished")
        return {"table": "", "id": "", "sectorsize": sector, "first": 0, "last": size - 1, "partitions": []}
    data = json.loads(proc.stdout)["partitiontable"]
    sector = int(data.get("sectorsize") or sector)
    label = {"dos": "msdos"}.get(data.get("label", ""), data.get("label", ""))
    parts = []
    for entry in data.get("partitions", []):
        node = entry.get("node", "")
        number = int(re.search(r"(\d+)$", node).group(1)) if re.search(r"(\d+)$", node) else 0
        start, length = int(entry["start"]) * sector, int(entry["size"]) * sector
        parts.append({"number": number, "node": node, "start": start, "end": start + length - 1,
                      "size": length, "type": entry.get("type", ""), "name": entry.get("name", ""),
                      "uuid": entry.get("uuid", "")})
    if label == "gpt":
        first, last = int(data.get("firstlba", 34)) * sector, (int(data.get("lastlba", 0)) + 1) * sector - 1
    else:
        first, last = sector, size - 1
    return {"table": label, "id": data.get("id", ""), "sectorsize": sector, "first": first, "last": last,
            "partitions": sorted(parts, key=lambda p: p["number"])}


def free_space(table: dict[str, Any], minimum: int = 0) -> list[dict[str, int]]:
    """Unallocated extents of the usable area, in bytes, as parted's `print free` shows them.
    Logical partitions live inside their extended one, which is what counts as allocated."""
    sector = table["sectorsize"]
    minimum = minimum or sector
    used = sorted((p["start"], p["end"]) for p in table["partitions"]
                  if not (table["table"] == "msdos" and p["number"] > 4))
    free, cursor = [], table["first"]
    for start, end in used:
        if start - cursor >= minimum:
            free.append({"start": cursor, "end": start - 1, "size": start - cursor})
        cursor = max(cursor, end + 1)
    if table["last"] + 1 - cursor >= minimum:
        free.append({"start": cursor, "end": table["last"], "size": table["last"] + 1 - cursor})
    return free


# ------------------------------------------------------------------------------------------ undo


@dataclass
class Regions:
    """Bytes of a disk saved before a change, to be written back if the change does not complete."""

    disk: str
    identity: str
    chunks: list[tuple[int, bytes]]

    @classmethod
    def save(cls, disk: str) -> Regions:
        path = blockdev.dev_path(disk)
        size = blockdev.size_bytes(disk)
        sector = blockdev.logical_block_size(disk)
        spans = [(0, min(EDGE, size))]
        if size > EDGE:
            spans.append((max(EDGE, size - EDGE), size - max(EDGE, size - EDGE)))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{disk} vanished")
        try:
            chunks = [(offset, _pread_all(fd, length, offset)) for offset, length in spans]
            for offset in _ebr_offsets(chunks[0][1], fd, sector):
                if not any(o <= offset < o + len(b) for o, b in chunks):
                    chunks.append((offset, _pread_all(fd, sector, offset)))
        finally:
            os.close(fd)
        return cls(disk=disk, identity=blockdev.identity(disk), chunks=chunks)

    def restore(self) -> None:
        """Write every saved byte back (exclusively: nobody may have mounted the disk meanwhile),
        flush, and let the kernel re-read the table."""
        if blockdev.identity(self.disk) != self.identity:
            raise NotFound(f"{self.disk} is no longer the same device; nothing restored")
        fd = os.open(blockdev.dev_path(self.disk), os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC)
        try:
            for offset, data in self.chunks:
                written = 0
                while written < len(data):
                    written += os.pwrite(fd, data[written:], offset + written)
            os.fsync(fd)
        finally:
            os.close(fd)
        sync_kernel(self.disk)

    def to_bytes(self) -> tuple[dict[str, Any], bytes]:
        header = {"disk": self.disk, "identity": self.identity,
                  "chunks": [[offset, len(data)] for offset, data in self.chunks]}
        return header, b"".join(data for _, data in self.chunks)

    @classmethod
    def from_bytes(cls, header: dict[str, Any], body: bytes) -> Regions:
        chunks, cursor = [], 0
        for offset, length in header["chunks"]:
            chunks.append((int(offset), body[cursor:cursor + int(length)]))
            cursor += int(length)
        return cls(disk=header["disk"], identity=header.get("identity", ""), chunks=chunks)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < length:
        data = os.pread(fd, length - len(out), offset + len(out))
        if not data:
            break
        out += data
    return bytes(out)


def _ebr_offsets(head: bytes, fd: int, sector: int) -> list[int]:
    """Byte offsets of the extended boot records of an msdos disk (the chain of logical
    partitions), read from the MBR in `head`; [] for any other disk."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return []
    extended = 0
    for index in range(4):
        entry = head[446 + 16 * index: 462 + 16 * index]
        if entry[4] in EXTENDED_TYPES:
            extended = struct.unpack_from("<I", entry, 8)[0]
    if not extended:
        return []
    offsets, relative, seen = [], 0, set()
    while len(offsets) < 128:   # a chain longer than that is corrupt: stop rather than loop
        lba = extended + relative
        if lba in seen:
            break
        seen.add(lba)
        offsets.append(lba * sector)
        record = _pread_all(fd, 512, lba * sector)
        if len(record) < 512 or record[510:512] != b"\x55\xaa":
            break
        link = record[446 + 16: 462 + 16]
        if link[4] not in EXTENDED_TYPES:
            break
        relative = struct.unpack_from("<I", link, 8)[0]
        if relative == 0:
            break
    return offsets


# ------------------------------------------------------------------------------------------ kernel


def sync_kernel(disk: str) -> None:
    """Make the kernel's partitions match the table on the disk, one partition at a time (partx:
    BLKPG ioctls, which work where BLKRRPART does not, e.g. on loop devices without partition
    scanning). `partx -u` alone leaves behind partitions the table no longer has."""
    table = read_table(disk)
    path = blockdev.dev_path(disk)
    wanted = {p["number"]: p for p in table["partitions"]}
    have = {blockdev.partition_number(n): n for n in blockdev.partitions(disk)}
    for number, name in sorted(have.items()):
        part = wanted.get(number)
        start = blockdev.start_bytes(name)
        if part is None or part["start"] != start or part["size"] != blockdev.size_bytes(name):
            blockdev.run(["partx", "-d", "--nr", str(number), path], check=False)
    present = {blockdev.partition_number(n) for n in blockdev.partitions(disk)}
    for number in sorted(set(wanted) - present):
        blockdev.run(["partx", "-a", "--nr", str(number), path], check=False)
    wait_for_kernel(disk, table)


def wait_for_kernel(disk: str, table: dict[str, Any]) -> None:
    """Wait until the kernel shows exactly the table's partitions (and their /dev nodes)."""
    wanted = {p["number"] for p in table["partitions"]}
    deadline = time.monotonic() + KERNEL_SETTLE
    while True:
        if not (blockdev.SYS_BLOCK / disk).exists():
            raise NotFound(f"{disk} vanished")
        names = blockdev.partitions(disk)
        have = {blockdev.partition_number(n) for n in names}
        if have == wanted and all(os.path.exists(blockdev.dev_path(n)) for n in names):
            return
        if time.monotonic() > deadline:
            raise FailedPrecondition(
                f"the kernel shows partitions {sorted(have)} of {disk}, the table holds {sorted(wanted)}")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------ changes


def parted(disk: str, *words: str) -> None:
    blockdev.run(["parted", "-s", "-a", "optimal", blockdev.dev_path(disk), *words])


def mktable(disk: str, table_type: str) -> dict[str, Any]:
    parted(disk, "mktable", table_type)
    sync_kernel(disk)
    return read_table(disk)


def check_mkpart(table: dict[str, Any], disk: str, part_type: str) -> None:
    if not table["table"]:
        raise FailedPrecondition(f"{disk} has no partition table: make one first (disk.mktable)")
    if table["table"] == "gpt" and part_type != "primary":
        raise InvalidArgument(f"`arguments.part_type`: a gpt table has only primary partitions, "
                              f"not {part_type}", field="arguments.part_type")


def mkpart(disk: str, part_type: str, start: str, end: str) -> dict[str, Any]:
    """Add one partition; the reply names it. Raises if the table did not gain exactly one."""
    before = read_table(disk)
    check_mkpart(before, disk, part_type)
    # On gpt, parted takes the word in the type's place as the partition's name ("primary").
    # "--" lets a negative position (counted from the end) through as a position.
    parted(disk, "mkpart", part_type, "--", start, end)
    after = read_table(disk)
    added = [p for p in after["partitions"] if p["number"] not in {q["number"] for q in before["partitions"]}]
    if len(added) != 1:
        raise FailedPrecondition(f"parted did not add exactly one partition to {disk}")
    sync_kernel(disk)
    part = added[0]
    name = blockdev.partition_name(disk, part["number"])
    return {**part, "device": blockdev.dev_path(name) if name else part["node"], "table": after["table"]}


def rmpart(disk: str, number: int) -> dict[str, Any]:
    before = read_table(disk)
    if number not in {p["number"] for p in before["partitions"]}:
        raise NotFound(f"{disk} has no partition {number}")
    parted(disk, "rm", str(number))
    sync_kernel(disk)
    return read_table(disk)
