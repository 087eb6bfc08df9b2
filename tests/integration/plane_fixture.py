"""A fake actor plane for the tests of PID 1 and the sandbox keeper, run by path through init's --plane.

Seen from PID 1 it behaves like g8os.boot.node: `plane_fixture.py --config FILE --notify-fd N`,
a fake Thespian admin that double-forks away and is reparented to PID 1 (a long `sleep`), the
`admin` and `ready` notify lines, orphaned grandchildren, SIGTERM to stop, SIGUSR1 to reopen logs.

PLANE_MODE (environment, inherited through PID 1) picks the behaviour:
  normal    the above; on SIGTERM it kills its admin and exits 0
  stubborn  ignores SIGTERM (PID 1 must kill it at the deadline)
  redis     also runs redis-server on the config's unix socket and answers `core.ping`
            (for the keeper's tests)
  crash     exits 3 at once (PID 1 restarts it with backoff; the node never gets ready)

Every event is one line in <run_dir>/plane.log: "<time> <event> <pid> [detail]". What the node looks
like from inside goes to <run_dir>/probe-<pid>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from g8os.boot.config import NodeConfig

ORPHAN_SCRIPT = "sleep 0.3 & sleep 0.6 & exit 0"  # its sleeps are orphaned when sh exits
ORPHAN_BATCHES = 3


def record(run_dir: Path, event: str, detail: str = "") -> None:
    with open(run_dir / "plane.log", "a") as f:
        f.write(f"{time.time():.3f} {event} {os.getpid()} {detail}".rstrip() + "\n")


def notify(fd: int, **event: object) -> None:
    os.write(fd, (json.dumps(event) + "\n").encode())


def mounts() -> list[dict[str, str]]:
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields, tail = left.split(), right.split()
        rows.append({"point": fields[4], "fstype": tail[0], "super": tail[2] if len(tail) > 2 else ""})
    return rows


def probe(config: NodeConfig) -> None:
    run_dir = Path(config.run_dir)
    info = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "hostname": socket.gethostname(),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "lo_flags": int(Path("/sys/class/net/lo/flags").read_text(), 16),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "thesplog_file": os.environ.get("THESPLOG_FILE"),
        "thesplog_threshold": os.environ.get("THESPLOG_THRESHOLD"),
        "stdin": os.readlink("/proc/self/fd/0"),
        "mounts": mounts(),
        "state_dir_is_dir": os.path.isdir(config.state_dir),
    }
    tmp = run_dir / f"probe-{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(run_dir / f"probe-{os.getpid()}.json")


def fake_admin() -> int:
    """Like Thespian's admin: started through an intermediate that exits, so PID 1 adopts it."""
    out = subprocess.run(["sh", "-c", "sleep 1000 >/dev/null 2>&1 </dev/null & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def spawn_orphans(run_dir: Path) -> None:
    for _ in range(ORPHAN_BATCHES):
        subprocess.run(["sh", "-c", ORPHAN_SCRIPT], check=True)
    record(run_dir, "orphans", str(ORPHAN_BATCHES * 2))


def start_redis(config: NodeConfig) -> subprocess.Popen:
    server = subprocess.Popen([
        "redis-server", "--port", "0", "--unixsocket", config.redis.socket, "--unixsocketperm", "600",
        "--requirepass", config.redis.password, "--dir", config.state_dir, "--save", "",
        "--appendonly", "no", "--daemonize", "no",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=config.redis.socket, password=config.redis.password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.05)


def answer_pings(client: redis.Redis) -> None:
    popped = client.blpop(["core:default"], timeout=0.5)
    if popped is None:
        return
    command = json.loads(popped[1])
    now = int(time.time() * 1000)
    result = {"id": command["id"], "command": command["command"], "state": "SUCCESS", "code": 0,
              "data": json.dumps("PONG fixture"), "level": 20, "streams": ["", ""], "critical": "",
              "starttime": now, "time": 0, "container": 0, "tags": None}
    client.rpush(f"result:{command['id']}", json.dumps(result))
    client.expire(f"result:{command['id']}", 300)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--notify-fd", type=int, required=True)
    args = parser.parse_args()
    config = NodeConfig.load(args.config)
    run_dir = Path(config.run_dir)
    mode = os.environ.get("PLANE_MODE", "normal")
    record(run_dir, "start", mode)
    if mode == "crash":
        return 3

    received: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda signum, _frame: received.append(signum))

    probe(config)
    admin = fake_admin()
    record(run_dir, "admin", str(admin))
    notify(args.notify_fd, event="admin", pid=admin)
    server = client = None
    if mode == "redis":
        server = start_redis(config)
        client = redis.Redis(unix_socket_path=config.redis.socket, password=config.redis.password)
    spawn_orphans(run_dir)
    notify(args.notify_fd, event="ready")
    record(run_dir, "ready")

    while True:
        if client is not None:
            answer_pings(client)
        else:
            select.select([wake_r], [], [])
            os.read(wake_r, 4096)
        while received:
            sig = received.pop(0)
            if sig == signal.SIGUSR1:
                record(run_dir, "usr1")
            elif mode == "stubborn":
                record(run_dir, "term-ignored")
            else:
                record(run_dir, "term")
                if server is not None:
                    server.terminate()
                    server.wait()
                os.kill(admin, signal.SIGTERM)  # like the real plane stopping its tree
                return 0


if __name__ == "__main__":
    sys.exit(main())
