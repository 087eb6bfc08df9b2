"""disk.*: real loop devices over sparse files, driven through a sandbox node.

Every loop device is one this test attached (tests/loopdev.py), and every one is detached after
what the node mounted on it is unmounted, whatever happens. The host's own disk (/dev/vda, the
node's root) is only ever named in commands that the node refuses before it does anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loopdev import MIB, loops, sfdisk_dump, sh, state_dir, wait_disk
from wire import call, wait_for

from g8os.client import FailedPrecondition, InvalidArgument, NotFound, Unavailable

pytestmark = pytest.mark.timeout(180)


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


def root_disk() -> str:
    """The disk under / on this machine (the sandbox node shares it): /dev/vda here."""
    dev = os.stat("/").st_dev
    real = Path(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    return real.parent.name if (real / "partition").exists() else real.name


def blkid(device: str) -> dict[str, str]:
    out = sh("blkid", "-p", "-o", "export", device, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# ----------------------------------------------------------------------------------------- devices


def test_a_loop_device_attached_later_is_an_actor_and_goes_when_detached(client, devs):
    device = devs.attach(64 * MIB)
    node = wait_disk(client, device)
    assert node["kind"] == "disk" and node["tier"] == "light" and node["path"] == f"/disks/{name(device)}"
    assert node["device"] == device and node["size"] == 64 * MIB and node["protected"] is False
    assert node["spec"] == {"restart": "permanent", "shutdown": 10.0}
    rows = {r["name"]: r for r in client.disk.list()["blockdevices"]}
    row = rows[name(device)]
    assert row["size"] == 64 * MIB and row["type"] == "loop" and row["rotational"] in (True, False)
    assert row["actor"] == f"/disks/{name(device)}" and row["partitions"] == [] and row["mountpoints"] == []
    for key in ("model", "serial", "filesystem", "labels", "table", "blocksize", "rota", "mountpoints"):
        assert key in row
    assert not any(n.startswith(("ram", "zram")) for n in rows)   # real disks only
    wait_disk(client, device, present=False, backing=devs.detach(device))
    assert name(device) not in {r["name"] for r in client.disk.list()["blockdevices"]}


def test_gpt_partitions_filesystems_and_mounts(client, devs, shared_dir):
    device = devs.attach(1024 * MIB)
    wait_disk(client, device)
    assert client.disk.mktable(name(device), "gpt")["table"] == "gpt"
    first = client.disk.mkpart(name(device), "1MiB", "40%")
    second = client.disk.mkpart(device, "40%", "100%")
    assert (first["number"], second["number"]) == (1, 2)
    assert first["start"] == MIB and first["device"] == f"{device}p1" and second["device"] == f"{device}p2"
    assert Path(f"{device}p1").exists() and Path(f"{device}p2").exists()
    info = client.disk.getinfo(name(device))
    assert info["table"] == "gpt" and info["size"] == 1024 * MIB and info["blocksize"] == 512
    assert [c["name"] for c in info["children"]] == [f"{name(device)}p1", f"{name(device)}p2"]
    part = client.disk.getinfo(name(device), f"{name(device)}p2")
    assert part["start"] == second["start"] and part["size"] == second["size"] and part["free"] == []

    ext4 = client.disk.mkfs(f"{device}p1", "ext4", label="first")
    xfs = client.disk.mkfs(f"{name(device)}p2", "xfs", label="second")
    assert blkid(f"{device}p1")["TYPE"] == "ext4" and blkid(f"{device}p1")["UUID"] == ext4["uuid"]
    assert blkid(f"{device}p2")["TYPE"] == "xfs" and xfs["label"] == "second"
    rows = {r["name"]: r for r in client.disk.list()["blockdevices"]}
    children = {c["name"]: c for c in rows[name(device)]["children"]}
    p1 = children[f"{name(device)}p1"]
    assert p1["filesystem"] == "ext4" and "first" in p1["labels"]
    assert rows[name(device)]["table"] == "gpt"

    target = shared_dir / "mnt" / "first"
    mounted = client.disk.mount(f"{device}p1", str(target), ["noatime"])
    assert mounted == {"source": f"{device}p1", "target": str(target), "fstype": "ext4",
                       "options": ["noatime"]}
    mounts = client.disk.mounts()
    assert {"mountpoint": str(target), "filesystem": "ext4"}.items() <= mounts[f"{device}p1"][0].items()
    assert mounts[f"{device}p1"][0]["options"].get("noatime") == "1"
    assert client.bash(f"echo hello > {target}/file && cat {target}/file").get().stdout == "hello"
    row = {r["name"]: r for r in client.disk.list()["blockdevices"]}[name(device)]
    assert row["children"][0]["mountpoints"] == [str(target)]

    client.disk.mount(f"{device}p2", str(shared_dir / "mnt" / "second"), "ro,noatime")
    refused = client.bash(f"touch {shared_dir}/mnt/second/x").get()
    assert refused.state == "ERROR" and "Read-only" in refused.stderr

    assert client.disk.umount(str(target)) == {"unmounted": [str(target)]}
    assert client.disk.umount(f"{device}p2")["unmounted"] == [str(shared_dir / "mnt" / "second")]
    assert f"{device}p1" not in client.disk.mounts()
    client.disk.rmpart(name(device), 2)
    assert not Path(f"{device}p2").exists() and Path(f"{device}p1").exists()
    assert "p2" not in sfdisk_dump(device).split(f"{device}p1")[1]


def test_msdos_primary_extended_logical(client, devs, shared_dir):
    device = devs.attach(256 * MIB, partscan=False)   # the node brings the kernel's view in line itself
    wait_disk(client, device)
    client.disk.mktable(device, "msdos")
    assert client.disk.mkpart(device, 1, 64)["number"] == 1     # a bare number is MB, as parted reads it
    assert client.disk.mkpart(device, "64MiB", "100%", "extended")["number"] == 2
    logical = client.disk.mkpart(device, "65MiB", "128MiB", "logical")
    second = client.disk.mkpart(device, "129MiB", "100%", "logical")
    assert (logical["number"], second["number"]) == (5, 6) and logical["table"] == "msdos"
    assert sorted(p.name for p in Path("/dev").glob(f"{name(device)}p*")) == \
        [f"{name(device)}p{i}" for i in (1, 2, 5, 6)]
    client.disk.mkfs(logical["device"], "ext4", label="logical")
    target = shared_dir / "logical"
    client.disk.mount(logical["device"], str(target))
    assert client.bash(f"df --output=fstype {target} | tail -1").get().stdout.strip() == "ext4"
    client.disk.umount(logical["device"])
    client.disk.rmpart(device, 5)
    dump = sfdisk_dump(device)
    assert f"{device}p5" in dump and f"{device}p6" not in dump   # logical partitions renumber
    with pytest.raises(InvalidArgument) as bad:
        client.disk.mkpart(device, "1MiB", "2MiB", "sideways")
    assert bad.value.field == "arguments.part_type"


def test_gpt_has_no_logical_partitions_and_failed_mkpart_changes_nothing(client, devs):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    client.disk.mkpart(device, "1MiB", "32MiB")
    before = sfdisk_dump(device)
    with pytest.raises(InvalidArgument) as logical:
        client.disk.mkpart(device, "33MiB", "40MiB", "logical")
    assert logical.value.field == "arguments.part_type" and "nothing was changed" in logical.value.message
    with pytest.raises(FailedPrecondition) as overlap:
        client.disk.mkpart(device, "10MiB", "20MiB")       # overlaps partition 1: parted refuses
    assert "parted" in overlap.value.message and "as it was" in overlap.value.message
    assert sfdisk_dump(device) == before
    assert sorted(p.name for p in Path("/dev").glob(f"{name(device)}p*")) == [f"{name(device)}p1"]


# ----------------------------------------------------------------------------------------- refusals


def test_mounted_devices_are_refused(client, devs, shared_dir):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    part = client.disk.mkpart(device, "1MiB", "100%")["device"]
    client.disk.mkfs(part, "ext4")
    target = shared_dir / "busy"
    client.disk.mount(part, str(target))
    before = sfdisk_dump(device)
    for attempt in (lambda: client.disk.mktable(device, "msdos", force=True),
                    lambda: client.disk.mkpart(device, "1MiB", "2MiB"),
                    lambda: client.disk.rmpart(device, 1),
                    lambda: client.disk.mkfs(part, "ext4", overwrite=True),
                    lambda: client.btrfs.create("x", [part], overwrite=True)):
        with pytest.raises(FailedPrecondition) as refused:
            attempt()
        assert f"mounted at {target}" in refused.value.message
    with pytest.raises(FailedPrecondition) as again:
        client.disk.mount(part, str(target))
    assert "already a mount point" in again.value.message
    assert sfdisk_dump(device) == before and blkid(part)["TYPE"] == "ext4"
    client.disk.umount(str(target))
    client.disk.mkfs(part, "ext2", overwrite=True)


def test_mounts_that_would_cover_core0s_own_state_are_refused(client, devs, node, shared_dir):
    device = devs.attach(32 * MIB)
    wait_disk(client, device)
    client.disk.mkfs(device, "ext4")
    state = state_dir(node)
    for target in (str(state), str(state.parent), str(state / "disks" / "x"), "/run/g8os", "/run"):
        with pytest.raises(FailedPrecondition) as refused:
            client.disk.mount(device, target)
        assert "core0's own state" in refused.value.message, target
    for target in ("/", "/proc/x", "/dev/shm/x"):
        with pytest.raises(FailedPrecondition, match="not a place to mount"):
            client.disk.mount(device, target)
    assert device not in client.disk.mounts()
    assert not (state / "disks" / "x").exists()


def test_filesystems_and_tables_need_overwrite_or_force(client, devs):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    made = client.disk.mkfs(device, "ext4", label="keep")
    with pytest.raises(FailedPrecondition) as refused:
        client.disk.mkfs(device, "xfs")
    assert "holds a filesystem (ext4, label 'keep')" in refused.value.message
    assert "overwrite" in refused.value.message and "nothing was changed" in refused.value.message
    with pytest.raises(FailedPrecondition) as table:
        client.disk.mktable(device, "gpt")
    assert "force" in table.value.message
    assert blkid(device)["UUID"] == made["uuid"]          # untouched by the refusals
    client.disk.mktable(device, "gpt", force=True)
    assert blkid(device).get("PTTYPE") == "gpt"


def test_a_protected_mark_refuses_every_change_until_removed(client, devs, shared_dir):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    part = client.disk.mkpart(device, "1MiB", "100%")["device"]
    client.disk.mkfs(part, "ext4")
    before = sfdisk_dump(device)
    try:
        assert client.disk.protect(name(device)) == {"disk": device, "protected": True}
        node = wait_disk(client, device)
        assert "marked protected" in node["protected"]
        attempts = {
            "mktable": lambda: client.disk.mktable(device, "msdos", force=True),
            "mkpart": lambda: client.disk.mkpart(device, "1MiB", "2MiB"),
            "rmpart": lambda: client.disk.rmpart(device, 1),
            "mkfs": lambda: client.disk.mkfs(part, "xfs", overwrite=True),
            "mount": lambda: client.disk.mount(part, str(shared_dir / "m")),
            "btrfs": lambda: client.btrfs.create("p", [device], overwrite=True),
        }
        for what, attempt in attempts.items():
            with pytest.raises(FailedPrecondition) as refused:
                attempt()
            assert "marked protected (disk.protect)" in refused.value.message, what
        assert sfdisk_dump(device) == before and blkid(part)["TYPE"] == "ext4"
        assert not (shared_dir / "m").exists()
        row = {r["name"]: r for r in client.disk.list()["blockdevices"]}[name(device)]
        assert "marked protected" in row["protected"]
    finally:
        client.disk.unprotect(name(device))
    client.disk.rmpart(device, 1)
    # A mark on a partition protects the table of its disk, and that partition itself.
    client.disk.mkpart(device, "1MiB", "100%")
    try:
        client.disk.protect(f"{device}p1")
        with pytest.raises(FailedPrecondition):
            client.disk.mktable(device, "gpt", force=True)
        with pytest.raises(FailedPrecondition):
            client.disk.mkfs(f"{device}p1", "ext4", overwrite=True)
    finally:
        client.disk.unprotect(f"{device}p1")
    with pytest.raises(NotFound):
        client.disk.unprotect(f"{device}p1")


def test_the_root_disk_is_refused_before_anything_is_done(client, node):
    root = root_disk()
    assert client.actor.inspect(f"/disks/{root}")["protected"] == f"{root} holds the node's root filesystem"
    attempts = [
        lambda: client.disk.mktable(root, "gpt"),
        lambda: client.disk.mkpart(f"/dev/{root}", "1MiB", "2MiB"),
        lambda: client.disk.rmpart(root, 1),
        lambda: client.disk.mkfs(root, "ext4", overwrite=True),
        lambda: client.disk.mount(f"/dev/{root}", "/var/tmp/never"),
        lambda: client.disk.umount("/"),
        lambda: client.btrfs.create("never", [root], overwrite=True),
    ]
    for attempt in attempts:
        with pytest.raises(FailedPrecondition) as refused:
            attempt()
        assert "root filesystem" in refused.value.message
    with pytest.raises(FailedPrecondition) as rule:
        client.disk.unprotect(root)
    assert "protected by rule" in rule.value.message
    inspected = client.actor.inspect(f"/disks/{root}")
    # Refused in the DiskSupervisor itself: no operation was ever queued for it, no helper ran.
    assert inspected["history"] == [] and inspected["operations"] == 0 and inspected["queue"] == []
    assert not Path("/var/tmp/never").exists()


def test_sandbox_manages_loop_devices_only(client):
    assert client.actor.tree("/disks")["manage"] == ["loop*"]
    for row in client.disk.list()["blockdevices"]:
        if not row["name"].startswith("loop"):
            assert row["protected"], row["name"]


@pytest.mark.parametrize("command, arguments, field", [
    ("disk.getinfo", {"disk": 3}, "arguments.disk"),
    ("disk.getinfo", {"disk": "loop0", "part": "../x"}, "arguments.part"),
    ("disk.mktable", {"disk": "loop0", "table_type": "zfs"}, "arguments.table_type"),
    ("disk.mktable", {"table_type": "gpt"}, "arguments.disk"),
    ("disk.mkpart", {"disk": "loop0", "start": "1 MiB", "end": "2MiB"}, "arguments.start"),
    ("disk.mkpart", {"disk": "loop0", "start": "1MiB", "end": "120%"}, "arguments.end"),
    ("disk.mkpart", {"disk": "loop0", "start": True, "end": "2MiB"}, "arguments.start"),
    ("disk.mkpart", {"disk": "loop0", "start": 1, "end": 2, "part_type": "big"}, "arguments.part_type"),
    ("disk.rmpart", {"disk": "loop0", "number": 0}, "arguments.number"),
    ("disk.rmpart", {"disk": "loop0", "number": "1"}, "arguments.number"),
    ("disk.mkfs", {"disk": "loop0", "fstype": "ntfs"}, "arguments.fstype"),
    ("disk.mkfs", {"disk": "loop0", "overwrite": "yes"}, "arguments.overwrite"),
    ("disk.mount", {"source": "/dev/loop0", "target": "relative"}, "arguments.target"),
    ("disk.mount", {"source": "/dev/loop0", "target": "/m", "options": "ro,bad option"}, "arguments.options"),
    ("disk.mount", {"source": "/dev/loop0", "target": "/m", "options": 7}, "arguments.options"),
    ("disk.umount", {}, "arguments.source"),
    ("disk.umount", {"source": "/dev/../etc"}, "arguments.source"),
    ("disk.protect", {"disk": ""}, "arguments.disk"),
    ("disk.unprotect", {"disk": ["loop0"]}, "arguments.disk"),
])
def test_bad_arguments_name_the_field(node, command, arguments, field):
    res = call(node.redis(), command, arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert field in json.loads(res["data"])


def test_unknown_devices_and_partitions(client, devs):
    with pytest.raises(NotFound):
        client.disk.mktable("loop999", "gpt")
    device = devs.attach(32 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    with pytest.raises(NotFound):
        client.disk.rmpart(device, 3)
    client.disk.mkpart(device, "1MiB", "100%")
    with pytest.raises(InvalidArgument) as partition:
        client.disk.mktable(f"{device}p1", "gpt")
    assert partition.value.field == "arguments.disk" and "is a partition" in partition.value.message
    with pytest.raises(NotFound):
        client.disk.getinfo(device, "loop999p1")


# ----------------------------------------------------------------------------------------- faults


def test_a_device_that_vanishes_with_operations_queued(client, devs):
    device = devs.attach(128 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    pending = [client.raw("disk.mkpart", {"disk": name(device), "start": f"{1 + 8 * i}MiB",
                                          "end": f"{8 + 8 * i}MiB"}) for i in range(10)]
    assert pending[0].get(60).state == "SUCCESS"
    backing = devs.detach(device)   # while the others wait or run: the kernel lets it go once closed
    outcomes = [r.get(60) for r in pending[1:]]
    for result in outcomes:
        if result.state != "SUCCESS":
            message = json.loads(result.data)
            assert result.code == 404 and "vanished" in message, message
    last = outcomes[-1]
    assert last.state == "ERROR" and last.code == 404 and "nothing was changed" in json.loads(last.data)
    wait_disk(client, device, present=False, backing=backing)
    other = devs.attach(32 * MIB)   # the supervisor goes on with the other disks
    wait_disk(client, other)
    assert client.disk.mktable(other, "msdos")["table"] == "msdos"


def test_a_device_that_vanishes_in_the_middle_of_a_change(client, devs, node):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    undo = state_dir(node) / "disks" / "undo"
    response = client.raw("disk.mkpart", {"disk": name(device), "start": "1MiB", "end": "100%"})
    wait_for(lambda: list(undo.glob(f"{name(device)}.*.undo")), timeout=30, interval=0.002,
             what="the undo record")
    backing = devs.detach(device)   # the change has begun: its undo record is on disk
    result = response.get(60)
    if result.state != "SUCCESS":   # else the kernel let the device go only once the change was done
        message = json.loads(result.data)
        assert result.code == 404 and f"{name(device)} vanished" in message, message
    wait_disk(client, device, present=False, backing=backing)
    wait_for(lambda: not list(undo.glob(f"{name(device)}.*")), timeout=10, what="no undo record left")
    assert client.actor.tree("/disks")["state"] == "running"


def test_disk_actor_killed_mid_operation_rolls_back_and_comes_back(client, devs, node):
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    client.disk.mkpart(device, "1MiB", "8MiB")
    before = sfdisk_dump(device)
    undo = state_dir(node) / "disks" / "undo"
    path = f"/disks/{name(device)}"
    for _attempt in range(5):
        restarts = client.actor.inspect(path)["restarts"]
        # The helper writes its undo record right before it changes the disk: killing the actor
        # as soon as the record is there cuts the change in the middle.
        response = client.raw("disk.mkpart", {"disk": name(device), "start": "9MiB", "end": "100%"})
        wait_for(lambda: list(undo.glob(f"{name(device)}.*.undo")), timeout=30, interval=0.002,
                 what="the undo record")
        killed = client.actor.kill(path)
        result = response.get(60)
        back = wait_for(lambda r=restarts: (lambda n: n if n["state"] == "running" and n["restarts"] > r
                                            else None)(client.actor.inspect(path)),
                        timeout=20, what="the disk actor back")
        assert back["last_error"] == "killed by actor.kill (signal 9)"
        if result.state == "SUCCESS":    # the kill came a moment too late: the change was complete
            assert killed["operation"] in ("disk.mkpart", None)
            client.disk.rmpart(device, 2)
            continue
        message = json.loads(result.data)
        assert killed["operation"] == "disk.mkpart" and killed["signal"] == 9
        assert result.state == "ERROR" and result.code == Unavailable.code, message
        assert "interrupted: killed by actor.kill (signal 9)" in message
        assert f"{name(device)} restored: its partition table is as it was" in message
        break
    else:
        pytest.fail("the kill never landed while the change was under way")
    assert sfdisk_dump(device) == before
    assert sorted(p.name for p in Path("/dev").glob(f"{name(device)}p*")) == [f"{name(device)}p1"]
    assert not list(undo.glob(f"{name(device)}.*"))
    assert client.disk.mkpart(device, "9MiB", "100%")["number"] == 2   # serving again


def test_disk_actor_killed_while_idle_restarts_and_queued_work_waits(client, devs):
    device = devs.attach(32 * MIB)
    wait_disk(client, device)
    path = f"/disks/{name(device)}"
    assert client.actor.kill(path)["operation"] is None
    back = wait_for(lambda: (lambda n: n if n["state"] == "running" and n["restarts"] == 1 else None)(
        client.actor.inspect(path)), timeout=20, what="the disk actor back")
    assert back["last_error"] == "killed by actor.kill (signal 9)"
    assert client.disk.mktable(device, "gpt")["table"] == "gpt"
    events = client.actor.inspect(path)["events"]
    assert {"/disk/restarting", "/disk/restarted"} <= {e["topic"] for e in events}


def test_cli_lists_disks_and_reports_refusals(node, devs, client):
    device = devs.attach(32 * MIB)
    wait_disk(client, device)
    connect = json.dumps({"host": node.host, "port": node.port, "password": node.password})
    g8os = [str(Path(sys.executable).with_name("g8os"))]
    listed = subprocess.run([*g8os, "--connect", connect, "disk", "list", "--json"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert name(device) in {r["name"] for r in json.loads(listed.stdout)["blockdevices"]}
    made = subprocess.run([*g8os, "--connect", connect, "disk", "mktable", name(device), "msdos"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and "msdos" in made.stdout
    table = subprocess.run([*g8os, "--connect", connect, "disk", "list"], capture_output=True, text=True,
                           timeout=60)
    assert table.returncode == 0 and name(device) in table.stdout
    refused = subprocess.run([*g8os, "--connect", connect, "disk", "mktable", root_disk(), "gpt"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "root filesystem" in refused.stderr
    missing = subprocess.run([*g8os, "--connect", connect, "--json", "disk", "rmpart", "loop999", "1"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 4 and json.loads(missing.stdout)["error"]["code"] == 404


# ----------------------------------------------------------------------------------------- the stock client


def test_stock_g8core_client_disk_calls(node, devs, shared_dir, client):
    g8core = pytest.importorskip("g8core")
    stock = g8core.Client(node.host, node.port, node.password)
    device = devs.attach(128 * MIB)
    wait_disk(client, device)
    listed = stock.disk.list()
    assert name(device) in {r["name"] for r in listed["blockdevices"]}
    stock.disk.mktable(name(device), "gpt")
    stock.disk.mkpart(name(device), "1MiB", "50%")
    stock.disk.mkpart(name(device), "50%", "100%", "primary")
    info = stock.disk.getinfo(name(device))
    assert info["table"] == "gpt" and len(info["children"]) == 2 and "free" in info and "blocksize" in info
    part = stock.disk.getinfo(name(device), f"{name(device)}p1")
    assert part["start"] == MIB and part["size"] > 0
    stock.disk.rmpart(name(device), 2)
    assert not Path(f"{device}p2").exists()
    client.disk.mkfs(f"{device}p1", "ext4")
    target = shared_dir / "stock"
    stock.disk.mount(f"{device}p1", str(target))               # options [] -> "auto", as 1.0 sent it
    assert client.disk.mounts()[f"{device}p1"][0]["mountpoint"] == str(target)
    stock.disk.umount(f"{device}p1")
    stock.disk.mount(f"{device}p1", str(target), ["ro", "noatime"])
    assert client.disk.mounts()[f"{device}p1"][0]["options"].get("ro") == "1"
    stock.disk.umount(str(target))
    assert f"{device}p1" not in client.disk.mounts()
    with pytest.raises(RuntimeError):
        stock.disk.mktable(root_disk(), "gpt")


def test_disk_supervisor_killed_mid_operation(client, devs, node):
    """The whole DiskSupervisor dies in the middle of a change: its helper rolls back (it follows
    its parent with SIGTERM), or the next incarnation rolls back from the undo records; the
    gateway then sends the unanswered command to the new incarnation, which carries it out."""
    device = devs.attach(64 * MIB)
    wait_disk(client, device)
    client.disk.mktable(device, "gpt")
    client.disk.mkpart(device, "1MiB", "8MiB")
    undo = state_dir(node) / "disks" / "undo"
    restarts = client.actor.tree("/")["children"]
    before = next(c for c in restarts if c["path"] == "/disks")["restarts"]
    response = client.raw("disk.mkpart", {"disk": name(device), "start": "9MiB", "end": "100%"})
    wait_for(lambda: list(undo.glob(f"{name(device)}.*.undo")), timeout=30, interval=0.002,
             what="the undo record")
    client.actor.kill("/disks")
    result = response.get(60)
    wait_for(lambda: next(c for c in client.actor.tree("/")["children"] if c["path"] == "/disks")
             ["restarts"] > before, timeout=30, what="the disk supervisor back")
    wait_disk(client, device)
    dump = sfdisk_dump(device)
    if result.state == "SUCCESS":
        assert json.loads(result.data)["number"] == 2 and f"{device}p2" in dump
    else:
        assert result.code == Unavailable.code and f"{device}p2" not in dump, (result.payload, dump)
    assert sorted(p.name for p in Path("/dev").glob(f"{name(device)}p*")) == \
        sorted(n for n in (f"{name(device)}p1", f"{name(device)}p2") if f"/dev/{n}" in dump)
    assert not list(undo.glob(f"{name(device)}.*"))
    assert client.disk.rmpart(device, 1)["removed"] == 1          # serving again
