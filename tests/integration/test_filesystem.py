"""filesystem.* against a real sandbox node: the g8os client, the raw wire, and the stock g8core 1.0.0 client.

The node shares the host's filesystem except /tmp, /run, /dev (its own mounts): every test works in
`shared_dir` (under /var/tmp), which both sides see, and checks what the node did from the host.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wire import call, wait_for

from g8os.client import (
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(node: Any) -> Iterator[Client]:
    with node.client(timeout=30) as connected:
        yield connected


@pytest.fixture
def handles(client: Client) -> Iterator[list[str]]:
    """Handles a test opens; closed at the end whatever happened."""
    opened: list[str] = []
    yield opened
    for fd in opened:
        try:
            client.filesystem.close(fd)
        except NotFound:
            pass


def open_handles(client: Client) -> int:
    return client.actor.tree("/files")["handles"]


def sandbox_dir(node: Any) -> Path:
    return Path("/var/lib/g8os/sandbox") / node.name


# --------------------------------------------------------------------------------------------- handles


def test_write_then_read_back(client: Client, shared_dir: Path, handles: list[str]) -> None:
    path = str(shared_dir / "f")
    fd = client.filesystem.open(path, "w")
    handles.append(fd)
    assert isinstance(fd, str) and fd
    assert client.filesystem.write(fd, b"hello ") is None
    client.filesystem.write(fd, b"world")
    assert client.filesystem.close(fd) is None
    assert (shared_dir / "f").read_bytes() == b"hello world"
    fd = client.filesystem.open(path)
    handles.append(fd)
    assert client.filesystem.read(fd) == b"hello world"
    assert client.filesystem.read(fd) == b""  # the end
    client.filesystem.close(fd)


def test_read_blocks(client: Client, shared_dir: Path, handles: list[str]) -> None:
    data = os.urandom(1024 * 1024 + 100)
    (shared_dir / "f").write_bytes(data)
    fd = client.filesystem.open(str(shared_dir / "f"))
    handles.append(fd)
    assert client.filesystem.read(fd, 10) == data[:10]
    first = client.filesystem.read(fd)
    assert len(first) == 512 * 1024 and first == data[10:10 + 512 * 1024]  # the original's block
    rest = client.filesystem.read(fd, 1024 * 1024)
    assert rest == data[10 + 512 * 1024:]
    with pytest.raises(InvalidArgument) as refused:
        client.filesystem.read(fd, 1024 * 1024 + 1)
    assert refused.value.field == "arguments.size"


# (mode, existed before, error class or None, content written, expected content after, readable)
MODES = [
    ("r", True, None, None, b"old", True),
    ("r", False, NotFound, None, None, None),
    ("r+", True, None, b"NE", b"NEd", True),
    ("+", True, None, b"NE", b"NEd", True),
    ("+", False, NotFound, None, None, None),
    ("w", True, None, b"new", b"new", False),
    ("w", False, None, b"new", b"new", False),
    ("w+", True, None, b"x", b"x", True),
    ("a", True, None, b"new", b"oldnew", False),
    ("a", False, None, b"new", b"new", False),
    ("a+", True, None, b"!", b"old!", True),
    ("x", False, None, b"new", b"new", False),
    ("x", True, FailedPrecondition, None, b"old", None),    # 412 "file exists"
    ("x+", False, None, b"new", b"new", True),
    ("wx", True, None, b"new", b"new", False),       # g8core 1.0.0's upload: write, create if missing
    ("wx", False, None, b"new", b"new", False),
]


@pytest.mark.parametrize("mode, existed, error, written, after, readable", MODES)
def test_modes(client: Client, shared_dir: Path, handles: list[str], mode: str, existed: bool,
               error: type | None, written: bytes | None, after: bytes | None, readable: bool | None) -> None:
    target = shared_dir / "f"
    if existed:
        target.write_bytes(b"old")
    if error is not None:
        with pytest.raises(error):
            client.filesystem.open(str(target), mode)
    else:
        fd = client.filesystem.open(str(target), mode)
        handles.append(fd)
        if written is not None:
            client.filesystem.write(fd, written)
        if readable:
            client.filesystem.read(fd)
        else:
            with pytest.raises(FailedPrecondition, match="not for reading"):
                client.filesystem.read(fd)
        if mode == "r":
            with pytest.raises(FailedPrecondition, match="not for writing"):
                client.filesystem.write(fd, b"no")
        client.filesystem.close(fd)
    if after is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == after


@pytest.mark.parametrize("mode", ["rw", "rr", "q", "", "rx", "wa", "rb"])
def test_bad_modes(client: Client, shared_dir: Path, mode: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.filesystem.open(str(shared_dir / "f"), mode)
    assert refused.value.field == "arguments.mode"
    assert not (shared_dir / "f").exists()


def test_perm_on_create(client: Client, shared_dir: Path, handles: list[str]) -> None:
    for name, perm in (("private", 0o600), ("shared", 0o666), ("default", None)):
        fd = (client.filesystem.open(str(shared_dir / name), "x", perm) if perm is not None
              else client.filesystem.open(str(shared_dir / name), "x"))
        handles.append(fd)
        client.filesystem.close(fd)
        assert (shared_dir / name).stat().st_mode & 0o7777 == (perm if perm is not None else 0o644)


def test_only_regular_files_open(client: Client, shared_dir: Path) -> None:
    before = open_handles(client)
    with pytest.raises(FailedPrecondition, match="not a regular file"):
        client.filesystem.open(str(shared_dir))
    with pytest.raises(FailedPrecondition, match="char"):
        client.filesystem.open("/dev/null", "r")
    os.mkfifo(shared_dir / "fifo")
    with pytest.raises(FailedPrecondition, match="fifo"):  # would block waiting for a writer
        client.filesystem.open(str(shared_dir / "fifo"))
    assert open_handles(client) == before


def test_unknown_handle(client: Client) -> None:
    for attempt in (lambda: client.filesystem.read("no-such-handle"),
                    lambda: client.filesystem.write("no-such-handle", b"x"),
                    lambda: client.filesystem.close("no-such-handle")):
        with pytest.raises(NotFound, match="no open handle"):
            attempt()


def test_closed_handle_is_gone(client: Client, shared_dir: Path) -> None:
    (shared_dir / "f").write_bytes(b"x")
    fd = client.filesystem.open(str(shared_dir / "f"))
    client.filesystem.close(fd)
    with pytest.raises(NotFound):
        client.filesystem.read(fd)
    with pytest.raises(NotFound):
        client.filesystem.close(fd)


def test_handle_limit(client: Client, shared_dir: Path, handles: list[str]) -> None:
    (shared_dir / "f").write_bytes(b"x")
    node = client.actor.tree("/files")
    limit, before = node["max_handles"], node["handles"]
    assert limit == 256
    for _ in range(limit - before):
        handles.append(client.filesystem.open(str(shared_dir / "f")))
    with pytest.raises(FailedPrecondition, match=r"too many open handles \(256\)"):
        client.filesystem.open(str(shared_dir / "f"))
    assert open_handles(client) == limit
    client.filesystem.close(handles.pop())
    handles.append(client.filesystem.open(str(shared_dir / "f")))  # a slot is free again
    for fd in handles:
        client.filesystem.close(fd)
    handles.clear()
    assert open_handles(client) == before


def test_idle_handles_close(client: Client, shared_dir: Path, handles: list[str]) -> None:
    (shared_dir / "f").write_bytes(b"x" * 100)
    before = open_handles(client)
    busy = client.filesystem.open(str(shared_dir / "f"), idle_timeout=1.0)
    idle = client.filesystem.open(str(shared_dir / "f"), idle_timeout=1.0)
    handles.extend([busy, idle])
    assert open_handles(client) == before + 2

    def idle_one_closed() -> bool:
        client.filesystem.read(busy, 1)  # use keeps a handle open
        return open_handles(client) == before + 1

    wait_for(idle_one_closed, timeout=20, interval=0.1, what="the idle handle closed")
    with pytest.raises(NotFound, match="without use"):
        client.filesystem.read(idle)
    assert client.filesystem.read(busy, 1) == b"x"  # the busy one is still open
    client.filesystem.close(busy)


def test_idle_timeout_field(client: Client, shared_dir: Path) -> None:
    for bad in (0, -1, 86401):
        with pytest.raises(InvalidArgument) as refused:
            client.filesystem.open(str(shared_dir / "f"), "w", idle_timeout=bad)
        assert refused.value.field == "arguments.idle_timeout"
    assert client.actor.tree("/files")["idle_timeout"] == 300.0  # the node's default


def test_handles_do_not_survive_a_restart(client: Client, shared_dir: Path, handles: list[str]) -> None:
    (shared_dir / "f").write_bytes(b"x")
    fd = client.filesystem.open(str(shared_dir / "f"))
    handles.append(fd)
    old_pid = client.actor.tree("/files")["pid"]
    client.actor.restart("/files")
    wait_for(lambda: (node := client.actor.tree("/files"))["state"] == "running" and node["pid"] != old_pid,
             timeout=30, what="/files restarted")
    with pytest.raises(NotFound, match="restart"):
        client.filesystem.read(fd)
    assert client.filesystem.exists(str(shared_dir / "f"))  # and the new one serves


# --------------------------------------------------------------------------------------------- paths


def test_exists(client: Client, shared_dir: Path) -> None:
    (shared_dir / "f").write_bytes(b"")
    (shared_dir / "dangling").symlink_to(shared_dir / "nowhere")
    assert client.filesystem.exists(str(shared_dir / "f")) is True
    assert client.filesystem.exists(str(shared_dir)) is True
    assert client.filesystem.exists(str(shared_dir / "nowhere")) is False
    assert client.filesystem.exists(str(shared_dir / "f" / "below-a-file")) is False
    assert client.filesystem.exists(str(shared_dir / "dangling")) is False  # symlinks followed


def test_list(client: Client, shared_dir: Path) -> None:
    (shared_dir / "b.txt").write_bytes(b"12345")
    (shared_dir / "b.txt").chmod(0o640)
    (shared_dir / "a-dir").mkdir(mode=0o750)
    (shared_dir / "c-link").symlink_to("b.txt")
    entries = client.filesystem.list(str(shared_dir))
    assert [e["name"] for e in entries] == ["a-dir", "b.txt", "c-link"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["b.txt"] | {"mtime": 0} == {"name": "b.txt", "size": 5, "mode": 0o640, "is_dir": False,
                                               "type": "file", "mtime": 0}
    assert by_name["a-dir"]["is_dir"] is True and by_name["a-dir"]["mode"] == 0o750
    assert by_name["c-link"]["type"] == "link" and by_name["c-link"]["is_dir"] is False
    assert abs(by_name["b.txt"]["mtime"] - (shared_dir / "b.txt").stat().st_mtime) < 2
    assert client.filesystem.list(str(shared_dir / "a-dir")) == []
    with pytest.raises(NotFound):
        client.filesystem.list(str(shared_dir / "nowhere"))
    with pytest.raises(FailedPrecondition, match="not a directory"):
        client.filesystem.list(str(shared_dir / "b.txt"))


def test_mkdir(client: Client, shared_dir: Path) -> None:
    deep = shared_dir / "a" / "b" / "c"
    assert client.filesystem.mkdir(str(deep)) is None
    assert deep.is_dir() and deep.stat().st_mode & 0o777 == 0o755
    client.filesystem.mkdir(str(deep))  # mkdir -p: already there is fine
    (shared_dir / "file").write_bytes(b"")
    with pytest.raises(FailedPrecondition, match="exists and is not a directory"):
        client.filesystem.mkdir(str(shared_dir / "file"))


def test_remove(client: Client, shared_dir: Path) -> None:
    (shared_dir / "f").write_bytes(b"")
    (shared_dir / "tree" / "sub").mkdir(parents=True)
    (shared_dir / "tree" / "sub" / "g").write_bytes(b"x")
    (shared_dir / "kept").mkdir()
    (shared_dir / "kept" / "k").write_bytes(b"k")
    (shared_dir / "link").symlink_to(shared_dir / "kept")
    (shared_dir / "tree" / "link-out").symlink_to(shared_dir / "kept")
    assert client.filesystem.remove(str(shared_dir / "f")) is None
    client.filesystem.remove(str(shared_dir / "tree"))
    client.filesystem.remove(str(shared_dir / "link"))
    assert not (shared_dir / "f").exists() and not (shared_dir / "tree").exists()
    assert not (shared_dir / "link").is_symlink()
    assert (shared_dir / "kept" / "k").read_bytes() == b"k"  # links were removed, not what they point to
    with pytest.raises(NotFound):
        client.filesystem.remove(str(shared_dir / "f"))


def test_move(client: Client, shared_dir: Path) -> None:
    (shared_dir / "f").write_bytes(b"data")
    (shared_dir / "d" / "sub").mkdir(parents=True)
    (shared_dir / "d" / "sub" / "g").write_bytes(b"g")
    assert client.filesystem.move(str(shared_dir / "f"), str(shared_dir / "f2")) is None
    assert (shared_dir / "f2").read_bytes() == b"data" and not (shared_dir / "f").exists()
    client.filesystem.move(str(shared_dir / "d"), str(shared_dir / "d2"))
    assert (shared_dir / "d2" / "sub" / "g").read_bytes() == b"g"
    with pytest.raises(NotFound):
        client.filesystem.move(str(shared_dir / "f"), str(shared_dir / "f3"))


def test_move_across_filesystems(client: Client, shared_dir: Path) -> None:
    # The node's /tmp is its own tmpfs: rename(2) fails with EXDEV, so the move copies.
    away = f"/tmp/g8os-move-{shared_dir.name}"
    (shared_dir / "f").write_bytes(b"data")
    (shared_dir / "f").chmod(0o640)
    (shared_dir / "d" / "sub").mkdir(parents=True)
    (shared_dir / "d" / "sub" / "g").write_bytes(b"g")
    (shared_dir / "d" / "link").symlink_to("sub/g")
    try:
        client.filesystem.move(str(shared_dir / "f"), f"{away}-f")
        client.filesystem.move(str(shared_dir / "d"), f"{away}-d")
        assert not (shared_dir / "f").exists() and not (shared_dir / "d").exists()
        assert client.filesystem.exists(f"{away}-f") and not Path(f"{away}-f").exists()  # the node's /tmp
        client.filesystem.move(f"{away}-f", str(shared_dir / "back-f"))
        client.filesystem.move(f"{away}-d", str(shared_dir / "back-d"))
    finally:
        for leftover in (f"{away}-f", f"{away}-d"):
            try:
                client.filesystem.remove(leftover)
            except NotFound:
                pass
    assert (shared_dir / "back-f").read_bytes() == b"data"
    assert (shared_dir / "back-f").stat().st_mode & 0o777 == 0o640
    assert (shared_dir / "back-d" / "sub" / "g").read_bytes() == b"g"
    assert os.readlink(shared_dir / "back-d" / "link") == "sub/g"
    assert sorted(p.name for p in shared_dir.iterdir()) == ["back-d", "back-f"]  # no partial copies


def test_chmod(client: Client, shared_dir: Path) -> None:
    outside = shared_dir / "outside"
    outside.write_bytes(b"")
    outside.chmod(0o600)
    tree = shared_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"")
    (tree / "link").symlink_to(outside)
    assert client.filesystem.chmod(str(tree / "sub" / "f"), 0o640) is None
    assert (tree / "sub" / "f").stat().st_mode & 0o7777 == 0o640
    client.filesystem.chmod(str(tree), 0o711, recursive=True)
    for path in (tree, tree / "sub", tree / "sub" / "f"):
        assert path.stat().st_mode & 0o7777 == 0o711
    assert outside.stat().st_mode & 0o7777 == 0o600  # the symlink in the tree was not followed
    with pytest.raises(NotFound):
        client.filesystem.chmod(str(shared_dir / "nowhere"), 0o644)
    with pytest.raises(InvalidArgument) as refused:
        client.filesystem.chmod(str(tree), 0o10000)
    assert refused.value.field == "arguments.mode"


def test_chown(client: Client, shared_dir: Path) -> None:
    tree = shared_dir / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"")
    (tree / "link").symlink_to(shared_dir)
    assert client.filesystem.chown(str(tree / "sub" / "f"), "nobody", "nogroup") is None
    assert ((tree / "sub" / "f").stat().st_uid, (tree / "sub" / "f").stat().st_gid) == (65534, 65534)
    client.filesystem.chown(str(tree), "1234", "2345", recursive=True)  # numeric ids as strings
    for path in (tree, tree / "sub", tree / "sub" / "f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (1234, 2345)
    assert os.lstat(tree / "link").st_uid == 1234  # the link itself
    assert shared_dir.stat().st_uid == 0  # not what it points to
    with pytest.raises(NotFound, match="no user"):
        client.filesystem.chown(str(tree), "no-such-user-g8os", "root")
    with pytest.raises(NotFound, match="no group"):
        client.filesystem.chown(str(tree), "root", "no-such-group-g8os")
    client.filesystem.chown(str(tree), "root", "root", recursive=True)


# --------------------------------------------------------------------------------------------- refusals


def test_core0_state_is_refused(client: Client, node: Any, shared_dir: Path) -> None:
    home = sandbox_dir(node)
    state, run = home / "state", home / "run"
    conf = next(state.rglob("redis.conf"))
    before, mode = conf.read_bytes(), conf.stat().st_mode
    (shared_dir / "to-state").symlink_to(state)
    attempts = {
        "list state": lambda: client.filesystem.list(str(state)),
        "list run": lambda: client.filesystem.list(str(run)),
        "open redis.conf": lambda: client.filesystem.open(str(conf)),
        "truncate redis.conf": lambda: client.filesystem.open(str(conf), "w"),
        "config.json": lambda: client.filesystem.open(str(home / "config.json")),
        "sandbox.json": lambda: client.filesystem.open(str(home / "sandbox.json")),
        "runtime_dir": lambda: client.filesystem.list("/run/g8os"),
        "exists": lambda: client.filesystem.exists(str(conf)),
        "via a symlink": lambda: client.filesystem.list(str(shared_dir / "to-state")),
        "via a symlink, below": lambda: client.filesystem.open(
            str(shared_dir / "to-state" / conf.relative_to(state))),
        "via ..": lambda: client.filesystem.list(f"{shared_dir}/../../lib/g8os/sandbox/{node.name}/state"),
        "mkdir": lambda: client.filesystem.mkdir(str(state / "new")),
        "chmod": lambda: client.filesystem.chmod(str(conf), 0o644),
        "chown": lambda: client.filesystem.chown(str(conf), "nobody", "nogroup"),
        "remove": lambda: client.filesystem.remove(str(conf)),
        "move out": lambda: client.filesystem.move(str(conf), str(shared_dir / "stolen")),
        "move in": lambda: client.filesystem.move(str(shared_dir / "to-state"), str(state / "planted")),
        # holding core0's state below: whole-tree operations refuse
        "remove the sandbox": lambda: client.filesystem.remove(str(home)),
        "move the sandbox": lambda: client.filesystem.move(str(home), str(shared_dir / "moved")),
        "chmod -R the sandbox": lambda: client.filesystem.chmod(str(home), 0o777, recursive=True),
        "chown -R the sandbox": lambda: client.filesystem.chown(str(home), "nobody", "nogroup",
                                                                 recursive=True),
    }
    for what, attempt in attempts.items():
        with pytest.raises(FailedPrecondition, match="refused") as refused:
            attempt()
        assert refused.value.code == 412, what
    assert conf.read_bytes() == before and conf.stat().st_mode == mode
    assert conf.stat().st_uid == 0 and not (shared_dir / "stolen").exists()
    assert not (state / "planted").exists() and (shared_dir / "to-state").is_symlink()
    assert client.filesystem.list(str(home.parent))  # listing above core0's state is fine


def test_core0_state_is_refused_through_a_bind_mount(client: Client, node: Any, shared_dir: Path) -> None:
    # Another path to the same directory: refused by its identity (device, inode), not its name.
    state = sandbox_dir(node) / "state"
    (shared_dir / "bound").mkdir()
    (shared_dir / "link-to-state").symlink_to(state)
    mounted = client.system(["mount", "--bind", str(state), str(shared_dir / "bound")]).get(timeout=30)
    assert mounted.state == "SUCCESS", mounted.stderr
    try:
        for attempt in (lambda: client.filesystem.list(str(shared_dir / "bound")),
                        lambda: client.filesystem.open(str(shared_dir / "bound" / "redis" / "redis.conf")),
                        lambda: client.filesystem.mkdir(str(shared_dir / "bound" / "new"))):
            with pytest.raises(FailedPrecondition, match="through"):
                attempt()
        with pytest.raises(FailedPrecondition, match="mounted"):
            client.filesystem.remove(str(shared_dir))
        with pytest.raises(FailedPrecondition, match="mounted"):
            client.filesystem.chmod(str(shared_dir), 0o777, recursive=True)
    finally:
        unmounted = client.system(["umount", str(shared_dir / "bound")]).get(timeout=30)
        assert unmounted.state == "SUCCESS", unmounted.stderr
    client.filesystem.remove(str(shared_dir / "link-to-state"))  # a link to it is not the state itself
    assert state.is_dir() and not (state / "new").exists()


def test_core0_config_is_refused_through_a_hard_link(client: Client, node: Any, shared_dir: Path) -> None:
    config = sandbox_dir(node) / "config.json"  # holds the redis password
    os.link(config, shared_dir / "innocent.json")
    with pytest.raises(FailedPrecondition, match="through"):
        client.filesystem.open(str(shared_dir / "innocent.json"))
    with pytest.raises(FailedPrecondition, match="through"):
        client.filesystem.open(str(shared_dir / "innocent.json"), "w")
    assert json.loads(config.read_text())["name"] == node.name  # not truncated


def test_removing_a_mount_is_refused(client: Client) -> None:
    # /tmp is the node's own tmpfs: `remove` never empties a mounted filesystem
    with pytest.raises(FailedPrecondition, match="mounted"):
        client.filesystem.remove("/tmp")
    assert client.filesystem.exists("/tmp")


@pytest.mark.parametrize("command, arguments, field", [
    ("filesystem.open", {"file": 3}, "arguments.file"),
    ("filesystem.open", {"file": "relative/path"}, "arguments.file"),
    ("filesystem.open", {"file": "/x", "mode": 1}, "arguments.mode"),
    ("filesystem.open", {"file": "/x", "perm": "0644"}, "arguments.perm"),
    ("filesystem.open", {"file": "/x", "perm": 0o10000}, "arguments.perm"),
    ("filesystem.open", {"file": "/x", "idle_timeout": "soon"}, "arguments.idle_timeout"),
    ("filesystem.open", {}, "arguments.file"),
    ("filesystem.read", {"fd": 5}, "arguments.fd"),
    ("filesystem.read", {"fd": "x", "size": 0}, "arguments.size"),
    ("filesystem.write", {"fd": "x"}, "arguments.block"),
    ("filesystem.write", {"fd": "x", "block": "not base64!"}, "arguments.block"),
    ("filesystem.write", {"fd": ["x"], "block": ""}, "arguments.fd"),
    ("filesystem.close", {"fd": ""}, "arguments.fd"),
    ("filesystem.exists", {"path": None}, "arguments.path"),
    ("filesystem.list", {"path": "a\u0000b"}, "arguments.path"),
    ("filesystem.list", {}, "arguments.path"),
    ("filesystem.mkdir", {"path": ""}, "arguments.path"),
    ("filesystem.remove", {"path": {"p": 1}}, "arguments.path"),
    ("filesystem.move", {"path": "/a"}, "arguments.destination"),
    ("filesystem.move", {"path": "/a", "destination": "b"}, "arguments.destination"),
    ("filesystem.chmod", {"path": "/a", "mode": "755"}, "arguments.mode"),
    ("filesystem.chmod", {"path": "/a", "mode": 0o755, "recursive": "yes"}, "arguments.recursive"),
    ("filesystem.chown", {"path": "/a", "user": "root"}, "arguments.group"),
    ("filesystem.chown", {"path": "/a", "user": 0, "group": "root"}, "arguments.user"),
])
def test_bad_input_names_the_field(r: Any, command: str, arguments: dict[str, Any], field: str) -> None:
    res = call(r, command, arguments)
    assert res["state"] == "ERROR" and res["code"] == 400, res
    assert f"`{field}`" in json.loads(res["data"])


def test_results_are_level_20_json(r: Any, shared_dir: Path) -> None:
    (shared_dir / "f").write_bytes(b"abc")
    opened = call(r, "filesystem.open", {"file": str(shared_dir / "f"), "mode": "r", "perm": 420})
    assert opened["state"] == "SUCCESS" and opened["level"] == 20
    fd = json.loads(opened["data"])
    read = call(r, "filesystem.read", {"fd": fd})
    assert base64.b64decode(json.loads(read["data"])) == b"abc"
    closed = call(r, "filesystem.close", {"fd": fd})
    assert closed["state"] == "SUCCESS" and json.loads(closed["data"]) is None
    missing = call(r, "filesystem.exists", {"path": str(shared_dir / "nowhere")})
    assert json.loads(missing["data"]) is False


# --------------------------------------------------------------------------------------------- transfers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_large_file_round_trip(client: Client, shared_dir: Path) -> None:
    source, back = shared_dir / "source", shared_dir / "back"
    size = 24 * 1024 * 1024 + 12345  # not a multiple of the block size
    with open(source, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size % (1 << 20)))
    seen: list[int] = []
    assert client.filesystem.upload_file(str(shared_dir / "remote"), source, progress=seen.append) == size
    assert seen[-1] == size and len(seen) == 25  # 1 MiB blocks
    assert _sha256(shared_dir / "remote") == _sha256(source)
    assert client.filesystem.download_file(str(shared_dir / "remote"), back) == size
    assert _sha256(back) == _sha256(source)
    assert sorted(p.name for p in shared_dir.iterdir()) == ["back", "remote", "source"]


def test_upload_replaces_and_appends(client: Client, shared_dir: Path) -> None:
    remote = str(shared_dir / "remote")
    client.filesystem.upload(remote, io.BytesIO(b"a much longer first version"))
    client.filesystem.upload(remote, io.BytesIO(b"short"))
    assert (shared_dir / "remote").read_bytes() == b"short"  # replaced, not overwritten in place
    client.filesystem.upload(remote, io.BytesIO(b"+more"), mode="a")
    assert (shared_dir / "remote").read_bytes() == b"short+more"
    with pytest.raises(FailedPrecondition, match="file exists"):
        client.filesystem.upload(remote, io.BytesIO(b"x"), mode="x")
    sink = io.BytesIO()
    assert client.filesystem.download(remote, sink) == 10 and sink.getvalue() == b"short+more"
    assert client.filesystem.upload(str(shared_dir / "empty"), io.BytesIO(b"")) == 0
    assert (shared_dir / "empty").read_bytes() == b""


class Broken(io.RawIOBase):
    """A reader that fails after its first block."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise OSError("the local disk went away")
        return b"x" * 10


def test_failed_transfers_leave_nothing_open(client: Client, shared_dir: Path) -> None:
    before = open_handles(client)
    with pytest.raises(OSError, match="went away"):
        client.filesystem.upload(str(shared_dir / "remote"), Broken())
    assert open_handles(client) == before
    local = shared_dir / "local"
    local.write_bytes(b"precious")
    with pytest.raises(NotFound):
        client.filesystem.download_file(str(shared_dir / "nowhere"), local)
    assert local.read_bytes() == b"precious"  # a failed download leaves the local file as it was
    assert sorted(p.name for p in shared_dir.iterdir()) == ["local", "remote"]
    assert open_handles(client) == before


# --------------------------------------------------------------------------------------------- stock client


@pytest.fixture
def stock(node: Any) -> Any:
    g8core = pytest.importorskip("g8core")
    return g8core.Client(node.host, node.port, node.password)


def test_stock_client_handles(stock: Any, shared_dir: Path) -> None:
    path = str(shared_dir / "f")
    fd = stock.filesystem.open(path, "w")
    assert stock.filesystem.write(fd, b"x" * 1000) is None
    assert stock.filesystem.close(fd) is None
    fd = stock.filesystem.open(path)  # the default mode, "r"
    assert stock.filesystem.read(fd) == b"x" * 1000
    assert stock.filesystem.read(fd) == b""
    stock.filesystem.close(fd)
    fd = stock.filesystem.open(path, "a", 0o600)
    stock.filesystem.write(fd, b"y")
    stock.filesystem.close(fd)
    assert (shared_dir / "f").read_bytes() == b"x" * 1000 + b"y"


def test_stock_client_paths(stock: Any, shared_dir: Path) -> None:
    base = str(shared_dir)
    assert stock.filesystem.mkdir(f"{base}/a/b") is None
    (shared_dir / "a" / "b" / "f").write_bytes(b"abc")
    assert stock.filesystem.exists(f"{base}/a/b/f") is True
    assert stock.filesystem.exists(f"{base}/nope") is False
    listed = stock.filesystem.list(f"{base}/a/b")
    assert [(e["name"], e["size"], e["is_dir"]) for e in listed] == [("f", 3, False)]
    assert stock.filesystem.move(f"{base}/a/b/f", f"{base}/a/g") is None
    assert stock.filesystem.chmod(f"{base}/a", 0o700, True) is None
    assert (shared_dir / "a" / "g").stat().st_mode & 0o777 == 0o700
    assert stock.filesystem.chown(f"{base}/a", "nobody", "nogroup", True) is None
    assert (shared_dir / "a" / "g").stat().st_uid == 65534
    assert stock.filesystem.remove(f"{base}/a") is None
    assert not (shared_dir / "a").exists()
    with pytest.raises(RuntimeError) as failed:  # g8core raises RuntimeError(state, result)
        stock.filesystem.list(f"{base}/nope")
    assert failed.value.args[1].state == "ERROR"


def test_stock_client_upload_and_download(stock: Any, shared_dir: Path) -> None:
    source, back = shared_dir / "source", shared_dir / "back"
    source.write_bytes(os.urandom(3 * 512 * 1024 + 99))  # g8core sends 512 KiB blocks
    (shared_dir / "remote").write_bytes(b"an older and longer file" * 100000)
    stock.filesystem.upload_file(str(shared_dir / "remote"), str(source))  # mode "wx"
    assert _sha256(shared_dir / "remote") == _sha256(source)
    stock.filesystem.download_file(str(shared_dir / "remote"), str(back))
    # g8core never closes its local file: its data may sit in the writer's buffer until the
    # garbage collector closes it. Wait for the bytes to land.
    wait_for(lambda: back.stat().st_size == source.stat().st_size, timeout=10, what="download flushed")
    assert _sha256(back) == _sha256(source)

