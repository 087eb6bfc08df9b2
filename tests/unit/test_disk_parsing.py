"""What the disk helpers read from tools and from the kernel's formats, without any device."""

from __future__ import annotations

import os
import struct
import tempfile

import pytest

from g8os.messages.convert import structure
from g8os.messages.disk import DiskMkpart, DiskMount
from g8os.messages.errors import InvalidArgument
from g8os.system import btrfs, diskops, partitions

pytestmark = pytest.mark.timeout(30)

SHOW = """Label: 'pool'  uuid: 4b7bb6fc-6e1a-4f02-9227-0896c8a2d532
\tTotal devices 3 FS bytes used 147456
\tdevid    1 size 536870912 used 129171456 path /dev/loop0
\tdevid    3 size 536870912 used 0 path /dev/loop2
\t*** Some devices missing

Label: none  uuid: 11111111-2222-3333-4444-555555555555
\tTotal devices 1 FS bytes used 16384
\tdevid    1 size 134217728 used 92274688 path /dev/loop5
"""

DF = """Data, RAID1: total=67108864, used=0
System, RAID1: total=8388608, used=16384
Metadata, RAID1: total=53673984, used=131072
GlobalReserve, single: total=5767168, used=0
"""


def test_filesystem_show_with_a_missing_device_and_no_label():
    pools = btrfs.parse_show(SHOW)
    assert [p["label"] for p in pools] == ["pool", ""]
    assert pools[0]["total_devices"] == 3 and pools[0]["used"] == 147456 and pools[0]["missing"] is True
    assert pools[0]["devices"][1] == {"dev_id": 3, "size": 536870912, "used": 0, "path": "/dev/loop2"}
    assert pools[1]["uuid"] == "11111111-2222-3333-4444-555555555555" and "missing" not in pools[1]


def test_filesystem_df():
    df = btrfs.parse_df(DF)
    assert df["data"] == {"profile": "raid1", "total": 67108864, "used": 0}
    assert df["globalreserve"]["profile"] == "single" and set(df) == {"data", "system", "metadata",
                                                                       "globalreserve"}


def test_free_space_between_partitions_and_inside_the_usable_area():
    table = {"table": "gpt", "sectorsize": 512, "first": 17408, "last": 536854015, "partitions": [
        {"number": 1, "start": 1048576, "end": 268435455},
        {"number": 2, "start": 300000256, "end": 400000511}]}
    assert partitions.free_space(table) == [
        {"start": 17408, "end": 1048575, "size": 1031168},
        {"start": 268435456, "end": 300000255, "size": 31564800},
        {"start": 400000512, "end": 536854015, "size": 136853504}]
    msdos = {"table": "msdos", "sectorsize": 512, "first": 512, "last": 10485759, "partitions": [
        {"number": 2, "start": 1048576, "end": 10485759}, {"number": 5, "start": 2097152, "end": 3145727}]}
    # logical partitions sit inside their extended one, which counts as allocated
    assert partitions.free_space(msdos) == [{"start": 512, "end": 1048575, "size": 1048064}]


def _entry(kind: int, start: int, size: int) -> bytes:
    return struct.pack("<B3sB3sII", 0, b"\0\0\0", kind, b"\0\0\0", start, size)


def test_extended_boot_records_are_found_by_following_the_chain():
    sector = 512
    mbr = bytearray(512)
    mbr[446:462] = _entry(0x83, 2048, 2048)
    mbr[462:478] = _entry(0x0F, 8192, 8192)        # extended at LBA 8192
    mbr[510:512] = b"\x55\xaa"
    first = bytearray(512)
    first[446:462] = _entry(0x83, 2048, 1024)
    first[462:478] = _entry(0x05, 4096, 2048)      # next EBR at 8192 + 4096
    first[510:512] = b"\x55\xaa"
    last = bytearray(512)
    last[446:462] = _entry(0x83, 2048, 1024)
    last[510:512] = b"\x55\xaa"
    with tempfile.TemporaryFile() as image:
        image.truncate(8 << 20)
        os.pwrite(image.fileno(), bytes(mbr), 0)
        os.pwrite(image.fileno(), bytes(first), 8192 * sector)
        os.pwrite(image.fileno(), bytes(last), (8192 + 4096) * sector)
        offsets = partitions._ebr_offsets(bytes(mbr), image.fileno(), sector)
    assert offsets == [8192 * sector, (8192 + 4096) * sector]
    assert partitions._ebr_offsets(bytes(512), 0, sector) == []   # no MBR signature: not msdos


def test_mount_options_become_flags_and_data():
    flags, data, kept = diskops._mount_options("auto,ro,noatime,subvol=vol,compress=zstd,defaults")
    assert flags & 1 and flags & 1024 and data == "subvol=vol,compress=zstd"
    assert kept == ["ro", "noatime", "subvol=vol", "compress=zstd"]
    assert diskops._mount_options(["rw"])[:2] == (0, "")
    with pytest.raises(InvalidArgument, match=r"bind is not for disk\.mount"):
        diskops._mount_options("bind")


@pytest.mark.parametrize("value", [1, "1MiB", "2048s", "50%", "-1s", "10GB", "0%", "100%", 2.5])
def test_positions_parted_understands(value):
    if isinstance(value, float):
        with pytest.raises(InvalidArgument):
            structure({"disk": "loop0", "start": value, "end": "2MiB"}, DiskMkpart, prefix="arguments")
        return
    assert structure({"disk": "loop0", "start": value, "end": "100%"}, DiskMkpart).start == value


def test_mount_options_are_a_string_or_a_list():
    assert structure({"source": "/dev/loop0", "target": "/m", "options": ["ro"]}, DiskMount).options == ["ro"]
    with pytest.raises(InvalidArgument) as bad:
        structure({"source": "/dev/loop0", "target": "/m", "options": ["ro", 3]}, DiskMount,
                  prefix="arguments")
    assert bad.value.field == "arguments.options"
