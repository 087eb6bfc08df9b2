"""Watch a g8os node's events and react when an actor crashes.

With g8os installed (`pip install -e .` in a checkout), start a node as root and keep the JSON
line it prints (or use any node's connection JSON):

    core0 sandbox up --detach > node.json
    python examples/watch_crash.py --connect node.json               # a job of its own, crashed once
    python examples/watch_crash.py --connect node.json --kill /stats # an actor of the node itself
    python examples/watch_crash.py --sandbox default --watch         # every crash, until Ctrl-C

By default it starts a job that its supervisor re-runs after a failure (`max_restart=3`), follows
the node's events from that moment (`client.events.follow`: the node's event stream, read with
blocking reads, nothing polled), and kills the job's process through the actor tree
(`client.actor.kill`: fault injection, which the supervisor handles as any crash). It reacts to
the crash event by saying what died and why, waits for the event that says it is back, and shows
the new process and the output of both runs (`client.actor.inspect`). Then it stops the job.

`--kill PATH` does the same to an actor that is already there (a heavy actor such as /stats,
which the root restarts in about a millisecond, or a service such as /services/redis) and leaves it
running. `--watch` only follows: one line per crash and per recovery, anywhere on the node.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from g8os.client import Client, NotFound, Timeout


def connect(args: argparse.Namespace) -> Client:
    """A client from --connect (JSON text, or a file whose last JSON line is the node's), else
    from the local sandbox --sandbox."""
    if args.connect:
        text = args.connect if args.connect.lstrip().startswith("{") else Path(args.connect).read_text()
        lines = [line for line in text.splitlines() if line.lstrip().startswith("{")]
        return Client.from_info(json.loads(lines[-1]) if len(lines) > 1 else json.loads(text))
    return Client.from_sandbox(args.sandbox)


def crash(event: dict[str, Any]) -> str | None:
    """Why the actor of `event` crashed, if the event says it did (see docs/events.md)."""
    topic, data = event["topic"], event["data"]
    if topic == "/actor/exited" and not data.get("normal", True):
        return str(data.get("reason") or "exited")
    if topic in ("/actor/failed", "/service/exited", "/service/failed", "/job/restarting"):
        return str(data.get("reason") or data.get("error") or topic).splitlines()[-1]
    if topic == "/job/end" and data.get("state") not in ("SUCCESS", "KILLED"):
        return f"ended {data.get('state')} (code {data.get('code')})"
    return None


def recovered(event: dict[str, Any]) -> bool:
    """The event says an actor runs again after a crash."""
    topic, data = event["topic"], event["data"]
    return topic in ("/actor/ready", "/service/ready") or (topic == "/job/start" and data.get("run", 1) > 1)


def watch(client: Client) -> int:
    """Follow the node's events for ever: one line per crash and per recovery."""
    print("watching for crashes (Ctrl-C stops)", flush=True)
    crashed: set[str] = set()
    try:
        for event in client.events.follow():
            reason = crash(event)
            if reason is not None:
                crashed.add(event["path"])
                print(f"CRASH {event['path']}: {reason}", flush=True)
            elif recovered(event) and event["path"] in crashed:
                crashed.discard(event["path"])
                print(f"BACK  {event['path']} (pid {event['data'].get('pid')})", flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def crash_and_watch(client: Client, path: str, since: str, timeout: float) -> dict[str, Any]:
    """Kill the actor at `path`, then read the events after `since` until it is back; return
    what its supervisor now says of it."""
    reply = client.actor.kill(path, signal.SIGKILL)
    print(f"killed {path} (pid {reply.get('pid')}) with SIGKILL", flush=True)
    seen_crash = False
    for event in client.events.follow(since=since, path=path, timeout=timeout):
        reason = crash(event)
        if reason is not None:
            seen_crash = True
            print(f"crash seen: {event['topic']} {path}: {reason}", flush=True)
        elif seen_crash and recovered(event):
            print(f"back: {event['topic']} {path} as pid {event['data'].get('pid')}", flush=True)
            break
    return client.actor.inspect(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default=os.environ.get("G8OS_CONNECT"), metavar="JSON_OR_FILE")
    parser.add_argument("--sandbox", default="default", metavar="NAME")
    parser.add_argument("--kill", metavar="PATH", help="crash this actor instead of a job of our own")
    parser.add_argument("--watch", action="store_true", help="only report crashes, until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up if the actor is not back within this long")
    args = parser.parse_args()

    with connect(args) as client:
        if args.watch:
            return watch(client)
        since = client.events.list(limit=1)["last"]  # follow from here: nothing of ours is missed
        job = None
        if args.kill:
            path = args.kill
        else:
            job = client.bash('echo "run with pid $$"; exec sleep 300', max_restart=3, tags=["example"])
            path = f"/jobs/{job.id}"
            print(f"started job {job.id} (re-run up to 3 times after a failure)", flush=True)
            for event in client.events.follow(since=since, path=path, topic="/job/start",
                                              timeout=args.timeout):
                print(f"running: {path} as pid {event['data']['pid']}", flush=True)
                since = event["id"]
                break
        try:
            try:
                node = crash_and_watch(client, path, since, args.timeout)
            except Timeout:
                print(f"{path} was not back within {args.timeout:g}s", file=sys.stderr)
                return 1
            print(f"{path}: {node['state']}, pid {node['pid']}, restarts {node['restarts']}, "
                  f"last error: {node['last_error']}", flush=True)
            for line in node.get("recent", []):  # a job's last output lines: one per run here
                print(f"  output: {line['text']}", flush=True)
            return 0
        finally:
            if job is not None:
                try:
                    client.job.kill(job.id, signal.SIGTERM)
                except NotFound:
                    pass  # it ended by itself
                print(f"stopped job {job.id}: {job.get(timeout=args.timeout).state}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
