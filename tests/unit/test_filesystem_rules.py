"""filesystem.*'s pure rules: open modes, base64 blocks, which paths are core0's own, how paths resolve.

The node-level behaviour (real files, real refusals) is in tests/integration/test_filesystem.py; here
are the cases too dangerous to try on a real node (`remove /`), and the mode table in full.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from g8os.actors.files import Policy, os_error, resolve, resolve_entry
from g8os.messages.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from g8os.messages.filesystem import decode_block, open_flags
from g8os.system.mountinfo import mounts_below

pytestmark = pytest.mark.timeout(30)

R, W, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
CREAT, TRUNC, APPEND, EXCL = os.O_CREAT, os.O_TRUNC, os.O_APPEND, os.O_EXCL


@pytest.mark.parametrize("mode, flags, readable, writable", [
    ("r", R, True, False),
    ("r+", RW, True, True),
    ("+r", RW, True, True),
    ("+", RW, True, True),                      # G8OS 1.0: '+' alone is read/write
    ("w", W | CREAT | TRUNC, False, True),
    ("w+", RW | CREAT | TRUNC, True, True),
    ("a", W | CREAT | APPEND, False, True),
    ("a+", RW | CREAT | APPEND, True, True),
    ("x", W | CREAT | EXCL, False, True),
    ("x+", RW | CREAT | EXCL, True, True),
    ("wx", W | CREAT | TRUNC, False, True),     # g8core 1.0.0's upload
    ("xw", W | CREAT | TRUNC, False, True),
    ("wx+", RW | CREAT | TRUNC, True, True),
    ("ax", W | CREAT | APPEND, False, True),
])
def test_modes(mode, flags, readable, writable):
    assert open_flags(mode) == (flags, readable, writable)


@pytest.mark.parametrize("mode, reason", [
    ("", "empty"), ("rw", "mixes"), ("ra", "mixes"), ("wa", "mixes"), ("rr", "repeated"),
    ("w++", "repeated"), ("rb", "unknown"), ("q", "unknown"), ("rx", "existing"), ("R", "unknown"),
])
def test_bad_modes(mode, reason):
    with pytest.raises(ValueError, match=reason):
        open_flags(mode)


def test_blocks():
    data = os.urandom(1000)
    assert decode_block(base64.b64encode(data).decode()) == data
    assert decode_block(base64.encodebytes(data).decode()) == data  # g8core: a line every 76 chars
    assert decode_block("") == b""
    for bad in ("abc", "ab!d", "YQ==YQ=="):
        with pytest.raises(ValueError, match="not base64"):
            decode_block(bad)


POLICY = Policy(("/var/lib/g8os/sandbox/n", "/run/g8os"))


@pytest.mark.parametrize("path", ["/var/lib/g8os/sandbox/n", "/var/lib/g8os/sandbox/n/state/redis.conf",
                                  "/run/g8os", "/run/g8os/jobs/x"])
def test_inside_is_refused(path):
    with pytest.raises(FailedPrecondition, match="core0's own state"):
        POLICY.check(path)


@pytest.mark.parametrize("path", ["/", "/var", "/var/lib/g8os", "/var/lib/g8os/sandbox", "/run"])
def test_above_is_refused_for_whole_trees_only(path):
    POLICY.check(path)  # listing /var, or chmod of /run itself, is fine
    with pytest.raises(FailedPrecondition, match="refused"):
        POLICY.check(path, whole_tree=True)


@pytest.mark.parametrize("path", ["/var/lib/g8os/sandbox/n2", "/var/lib/g8os/sandbox/n-other/x",
                                  "/run/g8os2", "/var/tmp", "/run/user"])
def test_neighbours_are_not_refused(path):
    POLICY.check(path)
    POLICY.check(path, whole_tree=True)


def test_root_is_never_a_whole_tree():
    with pytest.raises(FailedPrecondition, match="whole node"):
        Policy(()).check("/", whole_tree=True)


def test_resolution(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real = os.path.realpath(tmp_path / "real")
    assert resolve(str(tmp_path / "link")) == real
    assert resolve(str(tmp_path / "link" / ".." / "real" / "f")) == os.path.join(real, "f")
    # an entry is the link itself; its parents are resolved
    assert resolve_entry(str(tmp_path / "link")) == os.path.join(os.path.realpath(tmp_path), "link")
    assert resolve_entry(str(tmp_path / "link" / "f")) == os.path.join(real, "f")
    assert resolve_entry(str(tmp_path / "link") + "/..") == os.path.realpath(tmp_path)


def test_mounts_below():
    assert "/proc" in mounts_below("/proc")
    assert "/" in mounts_below("/")
    assert mounts_below("/proc/self/no-such-dir") == []


@pytest.mark.parametrize("number, cls", [(2, NotFound), (20, NotFound), (17, AlreadyExists),
                                         (13, FailedPrecondition), (39, FailedPrecondition),
                                         (22, InvalidArgument)])
def test_os_errors(number, cls):
    error = os_error(OSError(number, os.strerror(number), "/x"), "open")
    assert type(error) is cls and error.message.startswith("open /x: ")


def test_node_config_sets_the_limits(tmp_path: Path):
    """The FilesActor takes its bounds from the node config (in-process, on real files: no actor
    system needed for its worker-side methods)."""
    from g8os.actors.files import FilesActor
    from g8os.boot.config import NodeConfig, RedisConfig
    from g8os.messages.filesystem import FilesystemOpen

    config = NodeConfig(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                        redis=RedisConfig(socket=str(tmp_path / "run" / "redis.sock")),
                        files_max_handles=2, files_idle_timeout=7.5)
    config.save(tmp_path / "config.json")  # the fields survive the node's config file
    config = NodeConfig.load(tmp_path / "config.json")
    assert (config.files_max_handles, config.files_idle_timeout) == (2, 7.5)
    (tmp_path / "state").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    actor = FilesActor()
    actor.config = config
    umask = os.umask(0o022)
    try:
        actor.on_start()
        first = actor._open(FilesystemOpen(file=str(tmp_path / "f")))
        actor._open(FilesystemOpen(file=str(tmp_path / "f"), idle_timeout=1.0))
        with pytest.raises(FailedPrecondition, match=r"too many open handles \(2\)"):
            actor._open(FilesystemOpen(file=str(tmp_path / "f")))
        assert actor.handles[first].idle_timeout == 7.5
        with pytest.raises(FailedPrecondition, match="core0's own state"):
            actor._open(FilesystemOpen(file=str(tmp_path / "state" / "x"), mode="w"))
        assert not (tmp_path / "state" / "x").exists()
    finally:
        actor.on_stop()
        os.umask(umask)
    assert actor.handles == {}
