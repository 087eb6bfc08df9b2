"""Every script in examples/ runs against the session's sandbox node as its docstring says, and
prints what it promises. Each one is a subprocess given the node as a user gives it: `--connect`
with the file `core0 sandbox up` records (the JSON line it prints), or `--sandbox NAME`.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from terminal import clean_env
from wire import wait_for

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT = 30


def connect_file(node: Any) -> str:
    from g8os.client import sandbox_file

    return str(sandbox_file(node.name))


def example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          env=clean_env(), stdin=subprocess.DEVNULL, timeout=WAIT + 30)


def test_every_example_is_tested_and_documented() -> None:
    scripts = sorted(path.name for path in EXAMPLES.glob("*.py"))
    tested = {"stream_job.py", "services.py", "watch_crash.py"}
    assert set(scripts) == tested, "an example without a test (add it here and below)"
    for script in scripts:
        text = (EXAMPLES / script).read_text()
        assert text.startswith('"""') and "--connect" in text and "core0 sandbox up" in text, script


def test_stream_job(node: Any) -> None:
    run = example("stream_job.py", "--connect", connect_file(node))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"job [0-9a-f-]{36}: sh -c .*", lines[0])
    timed = [re.fullmatch(r"\s*(\d+\.\d\d)s (out|err): (.*)", line) for line in lines[1:4]]
    assert all(timed), lines
    assert [(m.group(2), m.group(3)) for m in timed] == [("out", "starting"), ("err", "working..."),
                                                           ("out", "done")]
    # Printed as produced: the script sleeps 0.3 s between lines, so the times grow by that much.
    times = [float(m.group(1)) for m in timed]
    assert times[1] - times[0] >= 0.25 and times[2] - times[1] >= 0.25, times
    assert re.fullmatch(r"SUCCESS: exit status 0, \d+ ms on the node", lines[4])

    failed = example("stream_job.py", "--sandbox", node.name, "--", "sh", "-c", "echo bye; exit 3")
    assert failed.returncode == 3
    assert "out: bye" in failed.stdout and "ERROR: exit status 3" in failed.stdout


def test_services(node: Any) -> None:
    run = example("services.py", "--connect", connect_file(node), "--for", "0", "--db-port", "16380",
                  "--web-port", "18080")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith("start order: db, web, worker\n")
    # Each starts only once the ones it needs said they were ready, and they stop in reverse.
    order = [line.split(" (")[0].split(" after")[0] for line in out.splitlines()
             if line.startswith(("starting", "stopped")) or " ready after " in line]
    assert order == ["starting db", "db ready", "starting web", "web ready", "starting worker",
                     "worker ready", "stopped worker", "stopped web", "stopped db"]
    assert "worker ready: db says +PONG, web says 200" in out  # it really reached both
    assert re.search(r"^  web\s+pid \d+\s+running$", out, re.M)
    assert "all services ready" in out
    client = node.client()
    try:  # nothing left running
        for job_id in re.findall(r"\(job ([0-9a-f-]{36})\)", out):
            assert client.response_for(job_id).get(timeout=WAIT).state == "KILLED"
    finally:
        client.close()


def test_services_stops_what_it_started_when_one_fails(node: Any) -> None:
    # The node's own Redis holds 6379: db cannot listen there, and nothing after it starts.
    run = example("services.py", "--sandbox", node.name, "--for", "0", "--db-port", "6379")
    assert run.returncode == 1
    assert "db did not become ready: ended before it was ready (ERROR, exit status 1)" in run.stderr
    assert "starting web" not in run.stdout and "stopped db (ERROR)" in run.stdout


def test_watch_crash_of_a_job(node: Any) -> None:
    run = example("watch_crash.py", "--connect", connect_file(node))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    job_id = re.search(r"started job ([0-9a-f-]{36})", out).group(1)
    first = re.search(rf"running: /jobs/{job_id} as pid (\d+)", out).group(1)
    assert f"killed /jobs/{job_id} (pid {first}) with SIGKILL" in out
    assert re.search(rf"crash seen: /job/restarting /jobs/{job_id}: .*killed by SIGKILL", out)
    second = re.search(rf"back: /job/start /jobs/{job_id} as pid (\d+)", out).group(1)
    assert second != first
    assert f"/jobs/{job_id}: running, pid {second}, restarts 1, last error: killed by SIGKILL" in out
    assert f"  output: run with pid {first}\n  output: run with pid {second}\n" in out
    assert out.rstrip().endswith(f"stopped job {job_id}: KILLED")


def test_watch_crash_of_a_heavy_actor(node: Any) -> None:
    client = node.client()
    before = client.actor.inspect("/stats")
    run = example("watch_crash.py", "--sandbox", node.name, "--kill", "/stats")
    assert run.returncode == 0, run.stderr
    assert f"killed /stats (pid {before['pid']}) with SIGKILL" in run.stdout
    assert "crash seen: /actor/exited /stats: killed by actor.kill (signal 9)" in run.stdout
    after = client.actor.inspect("/stats")
    assert f"back: /actor/ready /stats as pid {after['pid']}" in run.stdout
    assert after["restarts"] == before["restarts"] + 1
    client.close()


def test_watch_crash_watching(node: Any) -> None:
    child = pexpect.spawn(sys.executable, [str(EXAMPLES / "watch_crash.py"), "--connect", connect_file(node),
                                           "--watch"], env=clean_env(), encoding="utf-8", timeout=WAIT)
    client = node.client()
    job = None
    try:
        child.expect("watching for crashes")
        job = client.bash("exec sleep 300", max_restart=2)
        path = f"/jobs/{job.id}"
        wait_for(lambda: client.actor.inspect(path)["state"] == "running", what="the job running")
        client.actor.kill(path)
        child.expect(re.escape(f"CRASH {path}: ") + r".*killed by SIGKILL")
        child.expect(re.escape(f"BACK  {path} (pid ") + r"\d+\)")
        child.kill(signal.SIGINT)  # Ctrl-C ends the watch, with status 0
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.close(force=True)
        if job is not None:
            try:
                client.job.kill(job.id, signal.SIGKILL)
            except Exception:
                pass
            job.get(timeout=WAIT)
        client.close()
