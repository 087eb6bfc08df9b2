"""Start services on a g8os node in dependency order, each only once the ones it needs are ready.

With g8os installed (`pip install -e .` in a checkout), start a node as root and keep the JSON
line it prints (or use any node's connection JSON):

    core0 sandbox up --detach > node.json
    python examples/services.py --connect node.json              # until Ctrl-C
    python examples/services.py --sandbox default --for 10       # for 10 seconds

Three services run as jobs on the node: `db` (a redis-server), `web` (Python's http.server), and
`worker`, which needs both and proves it by talking to them. A service is ready when a line of its
output matches its `ready` pattern, read from the job's output stream as it is produced. Services
start in dependency order (a cycle or an unknown dependency is an error before anything starts),
and stop in reverse order: SIGTERM, then wait for each to end. If one does not become ready in
time, or ends first, those already started are stopped and the script exits 1.

All of it goes through the client: `client.system(..., stream=True)`, `Response.messages()`,
`client.job.kill()`, `client.actor.tree("/jobs")`.
"""

from __future__ import annotations

import argparse
import contextlib
import graphlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from g8os.client import Client, NotFound, Response, Timeout

WORKER = """
import socket, sys, time, urllib.request
db = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
db.sendall(b"PING\\r\\n")
pong = db.recv(64).decode().strip()
status = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}/").status
print(f"worker ready: db says {pong}, web says {status}", flush=True)
while True:
    time.sleep(1)
"""


def services(db_port: int, web_port: int) -> dict[str, dict[str, Any]]:
    """What to run: argv, the services it needs (`after`), and the output line that says it is ready."""
    return {
        "db": {"argv": ["redis-server", "--port", str(db_port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"],
               "after": [], "ready": r"Ready to accept connections"},
        "web": {"argv": ["python3", "-u", "-m", "http.server", str(web_port), "--bind", "127.0.0.1",
                         "--directory", "/"],
                "after": ["db"], "ready": r"Serving HTTP on"},
        "worker": {"argv": ["python3", "-u", "-c", WORKER, str(db_port), str(web_port)],
                   "after": ["db", "web"], "ready": r"worker ready"},
    }


def connect(args: argparse.Namespace) -> Client:
    """A client from --connect (JSON text, or a file whose last JSON line is the node's), else
    from the local sandbox --sandbox."""
    if args.connect:
        text = args.connect if args.connect.lstrip().startswith("{") else Path(args.connect).read_text()
        lines = [line for line in text.splitlines() if line.lstrip().startswith("{")]
        return Client.from_info(json.loads(lines[-1]) if len(lines) > 1 else json.loads(text))
    return Client.from_sandbox(args.sandbox)


def start_order(specs: dict[str, dict[str, Any]]) -> list[str]:
    """The services, each after those it needs; ValueError on a cycle or an unknown name."""
    for name, spec in specs.items():
        unknown = set(spec["after"]) - specs.keys()
        if unknown:
            raise ValueError(f"{name} needs {', '.join(sorted(unknown))}, which is not a service")
    try:
        return list(graphlib.TopologicalSorter({n: s["after"] for n, s in specs.items()}).static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"dependency cycle: {' -> '.join(exc.args[1])}")


def wait_ready(job: Response, pattern: str, timeout: float) -> str:
    """Read the job's output as it comes until a line matches `pattern`; return that line.
    RuntimeError if the job ends first, Timeout if nothing matches in time."""
    for message in job.messages(timeout=timeout):
        if re.search(pattern, message.text):
            return message.text.strip()
        if message.end:
            break
    result = job.get(timeout=5)
    last = (result.stderr or result.stdout).strip().splitlines()
    raise RuntimeError(f"ended before it was ready ({result.state}, exit status {result.exit_status})"
                       + (f": {last[-1]}" if last else ""))


def stop(client: Client, started: list[tuple[str, Response]]) -> None:
    """Stop the services in reverse start order: SIGTERM, then wait for the job's result."""
    for name, job in reversed(started):
        if job.peek() is None:  # still running
            with contextlib.suppress(NotFound):  # unless it ended in the meantime
                client.job.kill(job.id, signal.SIGTERM)
        result = job.get(timeout=15)
        print(f"stopped {name} ({result.state})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default=os.environ.get("G8OS_CONNECT"), metavar="JSON_OR_FILE")
    parser.add_argument("--sandbox", default="default", metavar="NAME")
    parser.add_argument("--for", dest="hold", type=float, default=None, metavar="SECONDS",
                        help="stop the services after this long (default: at Ctrl-C)")
    parser.add_argument("--ready-timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--db-port", type=int, default=6380)
    parser.add_argument("--web-port", type=int, default=8080)
    args = parser.parse_args()

    specs = services(args.db_port, args.web_port)
    order = start_order(specs)
    print(f"start order: {', '.join(order)}", flush=True)
    with connect(args) as client:
        started: list[tuple[str, Response]] = []
        try:
            for name in order:
                spec = specs[name]
                began = time.monotonic()
                job = client.system(spec["argv"], stream=True, tags=["example-services", name])
                started.append((name, job))
                print(f"starting {name} (job {job.id})", flush=True)
                try:
                    line = wait_ready(job, spec["ready"], args.ready_timeout)
                except (RuntimeError, Timeout) as exc:
                    print(f"{name} did not become ready: {exc}", file=sys.stderr, flush=True)
                    return 1
                print(f"{name} ready after {time.monotonic() - began:.2f}s: {line}", flush=True)

            # The jobs as the node's supervision tree sees them.
            ours = {job.id: name for name, job in started}
            for entry in client.actor.tree("/jobs")["children"]:
                if entry["name"] in ours:
                    print(f"  {ours[entry['name']]:<7} pid {entry['pid']:<6} {entry['state']}", flush=True)
            print("all services ready" + ("; Ctrl-C stops them" if args.hold is None else ""), flush=True)
            try:
                time.sleep(args.hold if args.hold is not None else 1e9)
            except KeyboardInterrupt:
                pass
            return 0
        finally:
            stop(client, started)


if __name__ == "__main__":
    sys.exit(main())
