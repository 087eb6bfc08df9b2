"""The stock G8OS 1.0 client (`g8core` 1.0.0 from PyPI), unmodified, against a sandbox node."""

from __future__ import annotations

import subprocess

import pytest

g8core = pytest.importorskip("g8core")
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stock(node):
    return g8core.Client(node.host, node.port, node.password)


def test_ping(stock):
    assert stock.ping().startswith("PONG")


def test_system(stock):
    result = stock.system("ls /").get()
    assert result.state == "SUCCESS"
    assert "proc" in result.stdout.split()


def test_system_failure_and_stdin(stock):
    result = stock.system("cat", stdin="hello").get()
    assert result.stdout == "hello"
    failed = stock.system("false").get()
    assert failed.state == "ERROR"


def test_bash(stock):
    result = stock.bash("echo $((6 * 7)); echo oops >&2").get()
    assert result.state == "SUCCESS"
    assert result.stdout == "42" and result.stderr == "oops"


@pytest.mark.parametrize("name", ["cpu", "mem", "disk", "nic", "os"])
def test_info(stock, name):
    value = getattr(stock.info, name)()
    assert value


def test_process_list_and_kill(stock):
    started = stock.bash("sleep 120")
    pid = None
    for _ in range(200):
        listed = stock.process.list()
        sleeps = [p for p in listed if p["name"] == "sleep" and "120" in p["cmdline"]]
        if sleeps:
            pid = sleeps[0]["pid"]
            break
        subprocess.run(["sleep", "0.02"], check=True)
    assert pid is not None
    assert stock.process.kill(str(pid)) is True
    assert started.get(timeout=20).state == "ERROR"
