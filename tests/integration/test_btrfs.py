"""btrfs.*: pools over real loop devices, driven through a sandbox node.

The pools are mounted in the node's own mount namespace, so data is written and read through
node jobs (client.bash). tests/loopdev.py unmounts every pool mount on our devices and detaches
them, however a test ends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from loopdev import MIB, loops, sh, wait_disk
from wire import call, wait_for

from g8os.client import FailedPrecondition, NotFound

pytestmark = pytest.mark.timeout(180)
POOL_DEVICE = 320 * MIB    # btrfs wants more than ~114 MiB per device for raid1 data and metadata


@pytest.fixture
def client(node):
    with node.client(timeout=60) as made:
        yield made


@pytest.fixture
def devs(node, shared_dir):
    with loops(shared_dir, node) as made:
        yield made


def name(device: str) -> str:
    return os.path.basename(device)


def blkid(device: str) -> dict[str, str]:
    out = sh("blkid", "-p", "-o", "export", device, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def run(client, script: str):
    return client.bash(script).get(60)


@pytest.fixture
def pool(client, devs, shared_dir):
    """A two-device raid1 pool, mounted at <shared_dir>/pool in the node."""
    a, b = devs.attach(POOL_DEVICE), devs.attach(POOL_DEVICE)
    wait_disk(client, a)
    wait_disk(client, b)
    made = client.btrfs.create("g8pool", [a, name(b)], "raid1", "raid1")
    target = shared_dir / "pool"
    client.disk.mount(a, str(target))
    return {"devices": [a, b], "mount": str(target), "uuid": made["uuid"]}


def test_raid1_pool_with_a_device_added_and_one_removed(client, devs, pool):
    a, b = pool["devices"]
    mnt = pool["mount"]
    info = client.btrfs.info(mnt)
    assert info["label"] == "g8pool" and info["uuid"] == pool["uuid"] and info["total_devices"] == 2
    assert info["data"]["profile"] == "raid1" and info["metadata"]["profile"] == "raid1"
    assert sorted(d["path"] for d in info["devices"]) == sorted([a, b])
    listed = {p["uuid"]: p for p in client.btrfs.list()}[pool["uuid"]]
    assert listed["mountpoints"] == [mnt] and listed["total_devices"] == 2
    written = run(client, f"head -c 20000000 /dev/urandom > {mnt}/data && sync && md5sum < {mnt}/data")
    assert written.state == "SUCCESS", written.stderr
    c = devs.attach(POOL_DEVICE)
    wait_disk(client, c)
    added = client.btrfs.device_add(mnt, c)
    assert added["total_devices"] == 3 and c in {d["path"] for d in added["devices"]}
    removed = client.btrfs.device_remove(mnt, a)
    assert removed["total_devices"] == 2 and a not in {d["path"] for d in removed["devices"]}
    assert a not in {d["path"] for d in client.btrfs.info(mnt)["devices"]}
    assert blkid(a).get("TYPE") != "btrfs"              # btrfs wipes the superblock of a removed device
    after = run(client, f"md5sum < {mnt}/data")
    assert after.stdout == written.stdout               # the data moved with the pool
    # The removed device is free again: the node may partition it.
    assert client.disk.mktable(a, "gpt")["table"] == "gpt"
    assert client.disk.umount(mnt)["unmounted"] == [mnt]
    unmounted = {p["uuid"]: p for p in client.btrfs.list()}[pool["uuid"]]
    assert unmounted["mountpoints"] == []
    assert sorted(d["path"] for d in unmounted["devices"]) == sorted([b, c])
    # Mounted again through its other members: the node registers every member before mounting.
    client.disk.mount(c, mnt, "noatime")
    assert run(client, f"md5sum < {mnt}/data").stdout == written.stdout


def test_members_of_a_mounted_pool_are_refused(client, pool):
    _a, b = pool["devices"]
    for attempt in (lambda: client.disk.mktable(b, "gpt", force=True),
                    lambda: client.disk.mkfs(b, "ext4", overwrite=True),
                    lambda: client.disk.mkpart(b, "1MiB", "2MiB"),
                    lambda: client.btrfs.create("again", [b], overwrite=True)):
        with pytest.raises(FailedPrecondition) as refused:
            attempt()
        assert "part of the mounted btrfs pool 'g8pool'" in refused.value.message
        assert pool["mount"] in refused.value.message
    with pytest.raises(FailedPrecondition) as member:
        client.btrfs.device_add(pool["mount"], b)
    assert "part of the mounted btrfs pool" in member.value.message or "already" in member.value.message
    assert blkid(b)["UUID"] == pool["uuid"]


def test_subvolumes_quota_and_snapshots(client, pool):
    mnt = pool["mount"]
    client.btrfs.subvol_create(f"{mnt}/vol")
    client.btrfs.subvol_create(f"{mnt}/other")
    with pytest.raises(FailedPrecondition, match="already exists"):
        client.btrfs.subvol_create(f"{mnt}/vol")
    paths = {s["Path"] for s in client.btrfs.subvol_list(mnt)}
    assert paths == {"vol", "other"}
    assert all(isinstance(s["ID"], int) and s["TopLevel"] == 5 for s in client.btrfs.subvol_list(mnt))

    quota = client.btrfs.subvol_quota(f"{mnt}/vol", "16M")
    assert quota["max_referenced"] == 16 * MIB and quota["qgroup"].startswith("0/")
    inside = run(client, f"head -c 8000000 /dev/urandom > {mnt}/vol/small && sync")
    assert inside.state == "SUCCESS", inside.stderr
    past = run(client, f"head -c 40000000 /dev/urandom > {mnt}/vol/big; status=$?; sync; exit $status")
    assert past.state == "ERROR" and "quota exceeded" in past.stderr.lower(), past.stderr
    free = run(client, f"head -c 30000000 /dev/urandom > {mnt}/other/big && sync")
    assert free.state == "SUCCESS", free.stderr      # the limit is the subvolume's, not the pool's

    run(client, f"rm -f {mnt}/vol/big; echo before > {mnt}/vol/note; sync")
    snap = client.btrfs.subvol_snapshot(f"{mnt}/vol", f"{mnt}/vol-rw")
    frozen = client.btrfs.subvol_snapshot(f"{mnt}/vol", f"{mnt}/vol-ro", read_only=True)
    assert snap["read_only"] is False and frozen["read_only"] is True
    changed = run(client, f"echo after > {mnt}/vol-rw/note && cat {mnt}/vol/note {mnt}/vol-rw/note")
    assert changed.stdout.split() == ["before", "after"]   # a snapshot is a copy, not the original
    readonly = run(client, f"touch {mnt}/vol-ro/x")
    assert readonly.state == "ERROR" and "Read-only file system" in readonly.stderr
    assert run(client, f"cat {mnt}/vol-ro/note").stdout == "before"
    with pytest.raises(FailedPrecondition, match="already exists"):
        client.btrfs.subvol_snapshot(f"{mnt}/vol", f"{mnt}/vol-ro")

    client.btrfs.subvol_delete(f"{mnt}/vol-rw")
    assert {s["Path"] for s in client.btrfs.subvol_list(mnt)} == {"vol", "other", "vol-ro"}
    with pytest.raises(NotFound):
        client.btrfs.subvol_delete(f"{mnt}/vol-rw")
    with pytest.raises(FailedPrecondition):
        client.btrfs.subvol_delete(mnt)                  # the pool's top level is not a subvolume to delete


def test_create_refuses_devices_in_use_and_leaves_them_as_they_were(client, devs):
    used, blank = devs.attach(POOL_DEVICE), devs.attach(POOL_DEVICE)
    wait_disk(client, used)
    wait_disk(client, blank)
    kept = client.disk.mkfs(used, "ext4", label="keep")
    with pytest.raises(FailedPrecondition) as refused:
        client.btrfs.create("nope", [blank, used], "raid1", "raid1")
    assert f"{name(used)} holds a filesystem (ext4, label 'keep')" in refused.value.message
    assert "nothing was changed" in refused.value.message
    assert blkid(used)["UUID"] == kept["uuid"] and "TYPE" not in blkid(blank)


def test_create_that_fails_wipes_only_what_it_wrote(client, devs):
    blank, tiny = devs.attach(POOL_DEVICE), devs.attach(16 * MIB)   # too small for a btrfs raid1 member
    wait_disk(client, blank)
    wait_disk(client, tiny)
    with pytest.raises(FailedPrecondition) as failed:
        client.btrfs.create("small", [blank, tiny], "raid1", "raid1")
    message = failed.value.message
    assert "mkfs.btrfs failed" in message
    assert "blank again, as it was" in message or "nothing was changed" in message
    assert "TYPE" not in blkid(blank) and "TYPE" not in blkid(tiny)
    assert not any(p["label"] == "small" for p in client.btrfs.list())


def test_subvolume_commands_outside_a_pool_are_refused(client, shared_dir):
    with pytest.raises(FailedPrecondition) as refused:
        client.btrfs.subvol_create(f"{shared_dir}/vol")
    assert "not on a mounted btrfs filesystem" in refused.value.message
    with pytest.raises(FailedPrecondition):
        client.btrfs.info(str(shared_dir))
    assert not Path(f"{shared_dir}/vol").exists()


@pytest.mark.parametrize("command, arguments, field", [
    ("btrfs.create", {"devices": []}, "arguments.devices"),
    ("btrfs.create", {"devices": ["loop0", "loop0"]}, "arguments.devices"),
    ("btrfs.create", {"devices": ["loop0", 5]}, "arguments.devices[1]"),
    ("btrfs.create", {"devices": ["loop0"], "metadata": "raid9"}, "arguments.metadata"),
    ("btrfs.create", {"devices": ["loop0"], "data": "mirror"}, "arguments.data"),
    ("btrfs.create", {"devices": ["loop0"], "overwrite": 1}, "arguments.overwrite"),
    ("btrfs.info", {}, "arguments.mountpoint"),
    ("btrfs.info", {"mountpoint": "pool"}, "arguments.mountpoint"),
    ("btrfs.device_add", {"mountpoint": "/m", "devices": ["/dev/../sda"]}, "arguments.devices[0]"),
    ("btrfs.device_remove", {"mountpoint": "/m"}, "arguments.devices"),
    ("btrfs.subvol_create", {"path": "vol"}, "arguments.path"),
    ("btrfs.subvol_list", {"path": 3}, "arguments.path"),
    ("btrfs.subvol_delete", {}, "arguments.path"),
    ("btrfs.subvol_quota", {"path": "/m/vol", "limit": "ten megs"}, "arguments.limit"),
    ("btrfs.subvol_quota", {"path": "/m/vol", "limit": 10}, "arguments.limit"),
    ("btrfs.subvol_snapshot", {"source": "/m/a", "destination": "b"}, "arguments.destination"),
    ("btrfs.subvol_snapshot", {"source": "/m/a", "destination": "/m/b", "read_only": "yes"},
     "arguments.read_only"),
])
def test_bad_arguments_name_the_field(node, command, arguments, field):
    res = call(node.redis(), command, arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])


def test_stock_g8core_client_btrfs_calls(node, client, devs, shared_dir):
    g8core = pytest.importorskip("g8core")
    stock = g8core.Client(node.host, node.port, node.password)
    a, b, c = (devs.attach(POOL_DEVICE) for _ in range(3))
    for device in (a, b, c):
        wait_disk(client, device)
    stock.btrfs.create("stock", [a, b], "raid1", "raid1")
    listed = {p["label"]: p for p in stock.btrfs.list()}
    assert listed["stock"]["total_devices"] == 2
    assert sorted(d["path"] for d in listed["stock"]["devices"]) == sorted([a, b])
    mnt = str(shared_dir / "stock")
    stock.disk.mount(a, mnt, [])
    info = stock.btrfs.info(mnt)
    assert info["label"] == "stock" and info["data"]["profile"] == "raid1"
    stock.btrfs.device_add(mnt, c)
    assert stock.btrfs.info(mnt)["total_devices"] == 3
    stock.btrfs.device_remove(mnt, b)       # g8core sends it without waiting for the result
    wait_for(lambda: b not in {d["path"] for d in stock.btrfs.info(mnt)["devices"]}, timeout=60,
             what="the device removed")
    stock.btrfs.subvol_create(f"{mnt}/sub")
    assert [s["Path"] for s in stock.btrfs.subvol_list(mnt)] == ["sub"]
    stock.btrfs.subvol_quota(f"{mnt}/sub", "8M")
    over = run(client, f"head -c 20000000 /dev/zero > {mnt}/sub/f; status=$?; sync; exit $status")
    assert over.state == "ERROR" and "quota exceeded" in over.stderr.lower()
    stock.btrfs.subvol_snapshot(f"{mnt}/sub", f"{mnt}/sub-snap", read_only=True)
    assert run(client, f"touch {mnt}/sub-snap/x").state == "ERROR"
    stock.btrfs.subvol_delete(f"{mnt}/sub-snap")
    assert [s["Path"] for s in stock.btrfs.subvol_list(mnt)] == ["sub"]
    with pytest.raises(RuntimeError):
        stock.btrfs.subvol_create("relative/path")      # a 400 from the node: the client raises
    stock.disk.umount(mnt)
