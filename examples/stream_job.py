"""Run a job on a g8os node and print its output as the job produces it.

With g8os installed (`pip install -e .` in a checkout), start a node as root and keep the JSON
line it prints (or use any node's connection JSON):

    core0 sandbox up --detach > node.json
    python examples/stream_job.py --connect node.json
    python examples/stream_job.py --sandbox default -- sh -c 'for i in 1 2 3; do echo $i; sleep 1; done'

`--connect` takes that JSON text itself or a file holding it; `--sandbox NAME` finds a local
sandbox by name instead. Without a command after `--`, a short script that writes to stdout and
stderr runs. Each line is printed with the seconds since the job started and its stream; then the
result, and the script exits with the job's exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from g8os.client import Client

DEMO = "echo starting; sleep 0.3; echo 'working...' >&2; sleep 0.3; echo done"
STREAMS = {1: "out", 2: "err"}


def connect(args: argparse.Namespace) -> Client:
    """A client from --connect (JSON text, or a file whose last JSON line is the node's), else
    from the local sandbox --sandbox."""
    if args.connect:
        text = args.connect if args.connect.lstrip().startswith("{") else Path(args.connect).read_text()
        lines = [line for line in text.splitlines() if line.lstrip().startswith("{")]
        return Client.from_info(json.loads(lines[-1]) if len(lines) > 1 else json.loads(text))
    return Client.from_sandbox(args.sandbox)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default=os.environ.get("G8OS_CONNECT"), metavar="JSON_OR_FILE")
    parser.add_argument("--sandbox", default="default", metavar="NAME")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (after --)")
    args = parser.parse_args()
    argv = [a for a in args.command if a != "--"] or ["sh", "-c", DEMO]

    with connect(args) as client:
        # stream=True: the node pushes every output line to the job's stream as it is written.
        job = client.system(argv, stream=True)
        started = time.monotonic()
        print(f"job {job.id}: {' '.join(argv)}")
        for message in job.messages():  # ends with the job's last message
            if message.end and not message.text:
                continue  # the end-of-job marker carries no text
            stream = STREAMS.get(message.level, f"level {message.level}")
            print(f"{time.monotonic() - started:6.2f}s {stream}: {message.text.rstrip()}", flush=True)
        result = job.get()  # the result: state, exit status, the last 100 lines of each stream
        print(f"{result.state}: exit status {result.exit_status}, {result.time} ms on the node")
        return result.exit_status if result.exit_status is not None else 1


if __name__ == "__main__":
    sys.exit(main())
