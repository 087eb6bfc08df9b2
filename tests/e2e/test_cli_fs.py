"""`g8os fs` through the installed console script against a real node: ls, get, put, mkdir, rm, their
`--json` documents and exit codes, and the progress bar on a real terminal (pexpect).

Paths both the test and the node see live in `shared_dir` (under /var/tmp; the node has its own /tmp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest

pytestmark = pytest.mark.timeout(90)

G8OS = os.path.join(os.path.dirname(sys.executable), "g8os")  # the console script pip installed
WAIT = 60
CONNECTION_VARS = {"G8OS_HOST", "G8OS_PORT", "G8OS_PASSWORD", "G8OS_SOCKET", "G8OS_SANDBOX", "G8OS_CONNECT",
                   "G8OS_TIMEOUT"}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}


def node_args(node: Any) -> list[str]:
    return ["--host", node.host, "--port", str(node.port), "--password", node.password or ""]


def g8os(node: Any, *args: str, input: bytes | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([G8OS, *node_args(node), *args], capture_output=True, env=clean_env(), input=input,
                          cwd=cwd, timeout=WAIT)


def document(result: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(result.stdout)


def test_help() -> None:
    result = subprocess.run([G8OS, "fs", "--help"], capture_output=True, text=True, env=clean_env(),
                            timeout=WAIT)
    assert result.returncode == 0
    for command in ("ls", "get", "put", "mkdir", "rm"):
        assert command in result.stdout
    assert subprocess.run([G8OS, "fs", "put", "only-one"], capture_output=True, env=clean_env(),
                          timeout=WAIT).returncode == 2


def test_put_ls_get(node: Any, shared_dir: Path) -> None:
    local = shared_dir / "local.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    local.write_bytes(data)
    remote = str(shared_dir / "remote.bin")

    put = g8os(node, "fs", "put", str(local), remote)
    assert put.returncode == 0, put.stderr
    assert b"remote.bin" in put.stdout
    assert (shared_dir / "remote.bin").read_bytes() == data

    listed = g8os(node, "--json", "fs", "ls", str(shared_dir))
    assert listed.returncode == 0
    entries = {e["name"]: e for e in document(listed)["entries"]}
    assert entries["remote.bin"]["size"] == len(data) and entries["remote.bin"]["type"] == "file"
    assert document(listed)["path"] == str(shared_dir)

    human = g8os(node, "fs", "ls", str(shared_dir))
    assert human.returncode == 0
    assert b"remote.bin" in human.stdout and b"-rw-r--r--" in human.stdout and b"3.0 MiB" in human.stdout

    got = g8os(node, "fs", "get", remote, str(shared_dir / "back.bin"), "--json")
    assert got.returncode == 0
    assert document(got) == {"remote": remote, "local": str(shared_dir / "back.bin"), "bytes": len(data)}
    assert (shared_dir / "back.bin").read_bytes() == data


def test_get_defaults_and_stdout(node: Any, shared_dir: Path) -> None:
    (shared_dir / "remote.txt").write_bytes(b"some text\n")
    here = shared_dir / "here"
    here.mkdir()
    assert g8os(node, "fs", "get", str(shared_dir / "remote.txt"), cwd=here).returncode == 0
    assert (here / "remote.txt").read_bytes() == b"some text\n"  # named after REMOTE, in the cwd
    into = shared_dir / "into"
    into.mkdir()
    assert g8os(node, "fs", "get", str(shared_dir / "remote.txt"), str(into)).returncode == 0
    assert (into / "remote.txt").read_bytes() == b"some text\n"  # a directory gets REMOTE's name inside
    piped = g8os(node, "fs", "get", str(shared_dir / "remote.txt"), "-")
    assert piped.returncode == 0 and piped.stdout == b"some text\n"  # only the data on stdout


def test_put_from_stdin_trailing_slash_and_modes(node: Any, shared_dir: Path) -> None:
    remote = str(shared_dir / "from-stdin")
    assert g8os(node, "fs", "put", "-", remote, input=b"piped").returncode == 0
    assert (shared_dir / "from-stdin").read_bytes() == b"piped"

    appended = g8os(node, "--json", "fs", "put", "--append", "-", remote, input=b"+more")
    assert appended.returncode == 0 and document(appended)["bytes"] == 5
    assert (shared_dir / "from-stdin").read_bytes() == b"piped+more"

    (shared_dir / "named.txt").write_bytes(b"n")
    (shared_dir / "dir").mkdir()
    assert g8os(node, "fs", "put", str(shared_dir / "named.txt"), f"{shared_dir}/dir/").returncode == 0
    assert (shared_dir / "dir" / "named.txt").read_bytes() == b"n"

    refused = g8os(node, "--json", "fs", "put", "--no-clobber", str(shared_dir / "named.txt"), remote)
    assert refused.returncode == 1
    error = document(refused)["error"]
    assert error["code"] == 412 and "exists" in error["message"]
    assert (shared_dir / "from-stdin").read_bytes() == b"piped+more"  # untouched


def test_mkdir_and_rm(node: Any, shared_dir: Path) -> None:
    made = g8os(node, "--json", "fs", "mkdir", f"{shared_dir}/a/b", f"{shared_dir}/c")
    assert made.returncode == 0
    assert document(made) == {"created": [f"{shared_dir}/a/b", f"{shared_dir}/c"]}
    assert (shared_dir / "a" / "b").is_dir() and (shared_dir / "c").is_dir()
    removed = g8os(node, "fs", "rm", f"{shared_dir}/a", f"{shared_dir}/c")
    assert removed.returncode == 0 and b"removed" in removed.stdout
    assert sorted(p.name for p in shared_dir.iterdir()) == []


def test_exit_codes(node: Any, shared_dir: Path) -> None:
    missing = g8os(node, "--json", "fs", "get", str(shared_dir / "nothing"), str(shared_dir / "out"))
    assert missing.returncode == 4
    assert document(missing)["error"]["code"] == 404
    assert not (shared_dir / "out").exists() and list(shared_dir.iterdir()) == []  # no partial file
    assert g8os(node, "fs", "ls", str(shared_dir / "nothing")).returncode == 4
    assert g8os(node, "fs", "rm", str(shared_dir / "nothing")).returncode == 4

    unreadable = g8os(node, "--json", "fs", "put", str(shared_dir / "no-local"), str(shared_dir / "x"))
    assert unreadable.returncode == 2
    assert "cannot read" in document(unreadable)["error"]["message"]

    relative = g8os(node, "--json", "fs", "ls", "relative/path")
    assert relative.returncode == 2 and document(relative)["error"]["field"] == "arguments.path"

    refused = g8os(node, "--json", "fs", "ls", f"/var/lib/g8os/sandbox/{node.name}/state")
    assert refused.returncode == 1
    assert "core0's own state" in document(refused)["error"]["message"]
    human = g8os(node, "fs", "rm", f"/var/lib/g8os/sandbox/{node.name}")
    assert human.returncode == 1 and b"error: refused" in human.stderr
    assert Path(f"/var/lib/g8os/sandbox/{node.name}/state").is_dir()


def test_progress_on_a_terminal(node: Any, shared_dir: Path) -> None:
    local = shared_dir / "big"
    local.write_bytes(os.urandom(8 * 1024 * 1024))
    child = pexpect.spawn(G8OS, [*node_args(node), "fs", "put", str(local), str(shared_dir / "copy")],
                          env=clean_env(), encoding="utf-8", timeout=WAIT, dimensions=(40, 160))
    child.expect(r"put \S*copy")        # the progress bar: its description,
    child.expect("/8.0 MiB")            # the total it counts towards,
    child.expect("copy: 8.0 MiB")       # then the summary line once done
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (shared_dir / "copy").stat().st_size == 8 * 1024 * 1024
