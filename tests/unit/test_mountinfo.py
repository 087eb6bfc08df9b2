"""system/mountinfo: the one parser of /proc/self/mountinfo."""

from __future__ import annotations

from g8os.system.mountinfo import mounts, parse, under

SAMPLE = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "90 22 0:44 / /var/tmp/with\\040space rw,nosuid - fuse.flist g8os-flist ro,user_id=0\n"
    "91 22 0:45 / /var/tmp/root rw - overlay overlay "
    "rw,lowerdir=/var/tmp/a\\040b/lower,upperdir=/u,workdir=/w,metacopy=on\n"
    "92 22 0:46 /sub /mnt/pool rw - btrfs /dev/loop3 rw,space_cache=v2,subvol=/sub\n"
    "garbage line\n"
)


def test_parse_fields_and_escapes() -> None:
    root, fuse, overlay, pool = parse(SAMPLE)
    assert (root.mountpoint, root.device, root.fstype, root.source) == ("/", "254:0", "ext4", "/dev/vda")
    assert fuse.mountpoint == "/var/tmp/with space" and fuse.options == "rw,nosuid"
    assert fuse.super_options == "ro,user_id=0" and fuse.device == "0:44"
    assert "lowerdir=/var/tmp/a b/lower" in overlay.super_options
    assert (pool.root, pool.major, pool.minor) == ("/sub", 0, 46)


def test_this_namespace_and_under() -> None:
    assert any(mount.mountpoint == "/proc" and mount.fstype == "proc" for mount in mounts())
    assert under("/a/b", "/a") and under("/a", "/a") and under("/x", "/")
    assert not under("/ab", "/a")
