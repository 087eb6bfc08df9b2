"""`Client`: one node, its command namespaces, and the process runners.

    from g8os.client import Client

    client = Client.from_sandbox()              # or Client("10.0.0.2", password="...")
    client.ping()                               # 'PONG 0.1.0'
    result = client.system("ls -l /").get()     # a Return: .state .code .stdout .stderr
    client.bash("echo hi; exit 3").get().exit_status   # 3
    client.info.mem()["total"]
    for job in client.job.list(): ...

Names follow the original G8OS client (`g8core`), so code written for it reads the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from g8os.client.actor import ActorManager
from g8os.client.aggregator import AggregatorManager
from g8os.client.btrfs import BtrfsManager
from g8os.client.config import ConfigManager
from g8os.client.disk import DiskManager
from g8os.client.events import EventsManager
from g8os.client.filesystem import FilesystemManager
from g8os.client.info import InfoManager
from g8os.client.job import JobManager
from g8os.client.logger import LoggerManager
from g8os.client.process import ProcessManager
from g8os.client.transport import DEFAULT_TIMEOUT, Connection, Response, Return
from g8os.messages.convert import structure
from g8os.messages.core import Bash, Ping, Subscribe, System
from g8os.messages.errors import InvalidArgument, NotFound

SANDBOX_ROOT = Path("/var/lib/g8os/sandbox")


def sandbox_file(name: str = "default", root: str | os.PathLike[str] | None = None) -> Path:
    """Where `core0 sandbox up` records how to reach sandbox `name`.

    `root` defaults to $G8OS_SANDBOX_ROOT, else /var/lib/g8os/sandbox.
    """
    base = Path(root or os.environ.get("G8OS_SANDBOX_ROOT") or SANDBOX_ROOT)
    return base / name / "sandbox.json"


class Client:
    """A connection to one node and its command namespaces.

    Connect over TCP (`host`, `port`, `password`, `db`, optionally `ssl=True`: TLS without certificate
    verification) or a unix socket (`unix_socket`, which wins over `host`). `timeout` is the default
    number of seconds to wait for core0 to acknowledge a command and for a result. Nothing is sent
    until the first command: call `ping()` to check the node is there.

    Namespaces: `info`, `job`, `process`, `actor`, `filesystem` (files, with chunked
    `upload`/`download`), `logger` (the node log), `events` (`list`, `follow`), `aggregator`.
    Their methods validate their arguments before sending (InvalidArgument), wait for the result,
    and return its decoded JSON, raising the `ResultError` subclass of the result's code on
    failure. The process runners (`system`, `bash`, `subscribe`) return a `Response` at once.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, password: str = "", db: int = 0,
                 timeout: float = DEFAULT_TIMEOUT, *, unix_socket: str | None = None,
                 ssl: bool = False) -> None:
        self.timeout = float(timeout)
        self.connection = Connection(host, port, password, db, unix_socket=unix_socket, ssl=ssl,
                                     timeout=self.timeout)
        self.info = InfoManager(self)
        self.job = JobManager(self)
        self.process = ProcessManager(self)
        self.actor = ActorManager(self)
        self.logger = LoggerManager(self)
        self.events = EventsManager(self)
        self.aggregator = AggregatorManager(self)
        self.config = ConfigManager(self)
        self.filesystem = FilesystemManager(self)
        self.disk = DiskManager(self)
        self.btrfs = BtrfsManager(self)

    # ----------------------------------------------------------------------------------------- making

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | str, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
        """A client from the connection record a node prints or stores: a mapping (or its JSON text)
        with `host`, `port`, `password`, `socket` and optionally `db`, `ssl`. A `socket` that exists
        on this machine is preferred over TCP."""
        if isinstance(info, str):
            info = json.loads(info)
        if not isinstance(info, Mapping):
            raise InvalidArgument("connection info must be a JSON object", field="connect")
        socket = info.get("socket") or None
        if socket and not Path(socket).exists() and info.get("host"):
            socket = None  # the socket is inside another mount namespace; use the TCP forwarder
        return cls(host=info.get("host") or "127.0.0.1", port=int(info.get("port") or 6379),
                   password=info.get("password") or "", db=int(info.get("db") or 0), timeout=timeout,
                   unix_socket=socket, ssl=bool(info.get("ssl", False)))

    @classmethod
    def from_sandbox(cls, name: str = "default", *, root: str | os.PathLike[str] | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> Client:
        """A client for the local sandbox `name`, from its `sandbox.json` (see `sandbox_file`).
        NotFound if that sandbox was never started here."""
        path = sandbox_file(name, root)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotFound(f"no sandbox {name!r} here ({path} does not exist): start it with "
                           f"`core0 sandbox up`")
        return cls.from_info(text, timeout=timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Client:
        """A client from the environment: $G8OS_SOCKET, else $G8OS_HOST (with $G8OS_PORT,
        $G8OS_PASSWORD), else the sandbox named by $G8OS_SANDBOX, else 127.0.0.1:6379.
        $G8OS_TIMEOUT sets the timeout."""
        env = os.environ if environ is None else environ
        timeout = float(env.get("G8OS_TIMEOUT") or DEFAULT_TIMEOUT)
        password = env.get("G8OS_PASSWORD", "")
        if env.get("G8OS_SOCKET"):
            return cls(password=password, timeout=timeout, unix_socket=env["G8OS_SOCKET"])
        if not env.get("G8OS_HOST") and env.get("G8OS_SANDBOX"):
            return cls.from_sandbox(env["G8OS_SANDBOX"], timeout=timeout)
        return cls(host=env.get("G8OS_HOST") or "127.0.0.1", port=int(env.get("G8OS_PORT") or 6379),
                   password=password, timeout=timeout)

    def close(self) -> None:
        """Close the pooled connections (the client reconnects if used again)."""
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.connection.address}>"

    # ----------------------------------------------------------------------------------------- jobs

    def raw(self, command: str, arguments: dict[str, Any] | None = None, *, id: str | None = None,
            queue: str | None = None, max_time: int | None = None, stream: bool = False,
            tags: list[str] | None = None, recurring_period: int | None = None,
            max_restart: int | None = None) -> Response:
        """Send any command and return its `Response` once core0 has acknowledged it.

        The arguments are sent as given, unchecked (the node validates them: a bad one is a 400
        result). `queue` runs jobs sharing the name one after another; `max_time` kills the job after
        that many seconds; `stream` publishes its output as it happens (see `Response.stream`);
        `recurring_period` re-runs it that many seconds after each exit; `max_restart` re-runs it
        after a failure, up to that many runs. NotAcknowledged if core0 does not pick it up in time.
        """
        return self.connection.raw(command, arguments, id=id, queue=queue, max_time=max_time,
                                   stream=stream, tags=tags, recurring_period=recurring_period,
                                   max_restart=max_restart)

    def sync(self, command: str, arguments: dict[str, Any] | None = None, *,
             timeout: float | None = None, **options: Any) -> Return:
        """`raw()`, then wait for the result; raises its `ResultError` unless it is SUCCESS."""
        return self.raw(command, arguments, **options).sync(timeout)

    def json(self, command: str, arguments: dict[str, Any] | None = None, *,
             timeout: float | None = None, **options: Any) -> Any:
        """`sync()`, then decode the result's level-20 JSON data."""
        return self.raw(command, arguments, **options).json(timeout)

    async def ajson(self, command: str, arguments: dict[str, Any] | None = None, *,
                    timeout: float | None = None, **options: Any) -> Any:
        """`json()` for asyncio code, run in a worker thread (`asyncio.to_thread`)."""
        return await asyncio.to_thread(self.json, command, arguments, timeout=timeout, **options)

    def response_for(self, id: str) -> Response:
        """A `Response` for a job started elsewhere, by its id."""
        return self.connection.response_for(id)

    def ping(self) -> str:
        """`core.ping`: "PONG <version>" once core0 answers. Raises Unreachable or NotAcknowledged."""
        structure({}, Ping)
        return self.json(Ping.command_name, {})  # type: ignore[attr-defined]

    def system(self, command: str | list[str], dir: str = "", stdin: str = "",
               env: dict[str, str] | None = None, *, queue: str | None = None,
               max_time: int | None = None, stream: bool = False, tags: list[str] | None = None,
               id: str | None = None, recurring_period: int | None = None,
               max_restart: int | None = None) -> Response:
        """Run an executable on the node (looked up in its PATH) and return its `Response`.

        `command` is a list `[name, *args]`, or a string split as a shell would (`shlex.split`) but
        never run by a shell: use `bash()` for pipes and globbing. `dir` is the working directory,
        `stdin` is fed to the process, `env` adds variables. The result has `stdout`, `stderr`,
        `exit_status`, and `data` if the process printed a level-20 line (`20::{"a": 1}`).
        """
        parts = shlex.split(command) if isinstance(command, str) else list(command)
        if not parts:
            raise InvalidArgument("`arguments.name`: empty command", field="arguments.name")
        arguments: dict[str, Any] = {"name": parts[0], "args": parts[1:], "dir": dir, "stdin": stdin,
                                     "env": env}
        structure(arguments, System, prefix="arguments")
        return self.raw(System.command_name, arguments, queue=queue,  # type: ignore[attr-defined]
                        max_time=max_time, stream=stream, tags=tags, id=id,
                        recurring_period=recurring_period, max_restart=max_restart)

    def bash(self, script: str, stdin: str = "", *, queue: str | None = None,
             max_time: int | None = None, stream: bool = False, tags: list[str] | None = None,
             id: str | None = None, recurring_period: int | None = None,
             max_restart: int | None = None) -> Response:
        """Run a shell script on the node (`sh -c script`) and return its `Response`."""
        arguments = {"script": script, "stdin": stdin}
        structure(arguments, Bash, prefix="arguments")
        return self.raw(Bash.command_name, arguments, queue=queue,  # type: ignore[attr-defined]
                        max_time=max_time, stream=stream, tags=tags, id=id,
                        recurring_period=recurring_period, max_restart=max_restart)

    def subscribe(self, job_id: str, id: str | None = None) -> Response:
        """Follow another job's output: `core.subscribe` replays job `job_id`'s recent messages into
        its own stream, then re-emits new ones until that job ends. Read it with `.stream()` or
        `.messages()`. `id` gives the subscriber job a well-known id."""
        arguments = {"id": job_id}
        structure(arguments, Subscribe, prefix="arguments")
        return self.raw(Subscribe.command_name, arguments, id=id,  # type: ignore[attr-defined]
                        stream=True)
