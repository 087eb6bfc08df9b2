"""The connection to a node and the job protocol spoken over it.

A command is a job: the client `RPUSH`es its JSON to `core:default`, core0 acknowledges it by creating
`result:<id>:flag`, and publishes the final result at `result:<id>` (kept 300 s). Output of a job started
with `stream=True` is pushed to `stream:<id>` as it happens. See docs/protocol.md.

This module holds the three objects of that exchange:

- `Connection`: a redis-py client for one node (TCP, TLS or unix socket), plus `raw()`, which pushes a
  command and waits for core0's acknowledgement;
- `Response`: a handle on a job by id (`get()` its result, `stream()` its output, `exists`, `running`);
- `Return`: a job's result, with `json()` for builtin results.

and the errors a caller may catch. Result errors are `ResultError`s that *also* derive from the
`g8os.messages.errors` class of their code, so both `except NotFound:` and `except ResultError:` work,
and the `Return` is always at `exc.result`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from g8os.messages.command import (
    DEFAULT_QUEUE,
    MAX_COMMAND_BYTES,
    Command,
    DropCommand,
    Flag,
    Level,
    State,
    flag_key,
    result_key,
    stream_key,
)
from g8os.messages.convert import structure
from g8os.messages.errors import (
    AlreadyExists,
    FailedPrecondition,
    G8Error,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_for_code,
)

__all__ = [
    "DEFAULT_TIMEOUT", "SLICE",
    "Connection", "Response", "Return", "Message", "Namespace",
    "Unreachable", "Timeout", "NotAcknowledged", "JobNotFound",
    "ResultError", "InvalidArgumentError", "NotFoundError", "FailedPreconditionError", "InternalError",
    "UnavailableError", "UnknownCommandError", "ProcessError", "JobTimeoutError", "ResultLevelError",
    "error_for_result",
]

DEFAULT_TIMEOUT = 10.0
# Longest single blocking call. The original client waited in 10 s slices too: between slices it checks
# that the job still exists, so a job lost by a restarted node fails fast instead of at the deadline.
SLICE = 10.0
# How often a stream reader with nothing to read checks whether the job is still running.
STREAM_POLL = 1.0
# Redis reads a blocking timeout of 0 (even 0.0001, which it rounds down) as "block forever".
_MIN_BLOCK = 0.01

WriteCallback = Callable[[int, str, int], None]


# --------------------------------------------------------------------------------------------- errors


class Unreachable(ConnectionError):
    """The node's Redis cannot be reached, refused the password, or stopped answering."""


class Timeout(TimeoutError):
    """The client gave up waiting (for an acknowledgement, a result, or stream output)."""


class NotAcknowledged(Timeout):
    """core0 never created the job's flag: it is down, stuck, or not consuming `core:default`.

    The original client silently ignored this case and failed later, confusingly; here it is loud.
    """


class JobNotFound(NotFound):
    """No job with this id is known to the node (never was, or its result expired after 300 s)."""


_FIELD = re.compile(r"^`([^`]+)`:")


class ResultError(G8Error):
    """A job ended with a state other than SUCCESS.

    `result` is the `Return`; `code` the result's code; `state` its state. Subclasses also derive from
    the `g8os.messages.errors` class of the code, so `except NotFound:` catches a 404 result.
    """

    def __init__(self, message: str, *, result: Return | None = None, critical: str = "") -> None:
        G8Error.__init__(self, message, critical=critical)
        self.result = result
        # An instance attribute: it shadows the class-level code of the messages.errors base, so a
        # process failure keeps its 1000+status code.
        self.code = result.code if result is not None else type(self).code
        self.state = result.state if result is not None else None
        match = _FIELD.match(message)
        self.field = match.group(1) if match else ""

    def __reduce__(self):
        return (type(self), (self.message,), dict(self.__dict__))


class InvalidArgumentError(ResultError, InvalidArgument):
    """The node rejected an argument (400); `field` names it when the node did."""


class NotFoundError(ResultError, NotFound):
    """The node did not find what the command names (404), e.g. an unknown job or executable."""


class FailedPreconditionError(ResultError, FailedPrecondition):
    """The target's state forbids the operation (412)."""


class InternalError(ResultError, Internal):
    """The node failed internally (500); `critical` holds its summary."""


class UnavailableError(ResultError, Unavailable):
    """The part of the node that owns the command is down or restarting (503); retry later."""


class UnknownCommandError(ResultError, NotFound):
    """The node has no such command (state UNKNOWN_CMD)."""


class ProcessError(ResultError):
    """A process exited non-zero (code 1000 + status) or was killed by a signal (code 999)."""

    @property
    def exit_status(self) -> int | None:
        """The process's exit status, or None when a signal ended it."""
        return self.result.exit_status if self.result is not None else None

    @property
    def signaled(self) -> bool:
        return self.code == 999


class JobTimeoutError(ProcessError):
    """The job ran past its `max_time` and was killed (state TIMEOUT)."""


class ResultLevelError(ResultError, ValueError):
    """`json()` was asked of a result that is not level-20 JSON."""


_BY_BASE: dict[type[G8Error], type[ResultError]] = {
    InvalidArgument: InvalidArgumentError,
    NotFound: NotFoundError,
    FailedPrecondition: FailedPreconditionError,
    AlreadyExists: FailedPreconditionError,
    Internal: InternalError,
    Unavailable: UnavailableError,
}


def error_for_result(result: Return) -> ResultError:
    """The exception describing a failed result (not raised: the caller decides)."""
    state, code = result.state, result.code
    if state == State.UNKNOWN_CMD:
        cls: type[ResultError] = UnknownCommandError
    elif state == State.TIMEOUT:
        cls = JobTimeoutError
    elif code >= 999:
        cls = ProcessError
    else:
        cls = _BY_BASE.get(error_for_code(code), InternalError)
    return cls(_describe_failure(result), result=result, critical=result.critical)


def _describe_failure(result: Return) -> str:
    reason = ""
    if result.level == Level.RESULT_JSON and result.data:
        try:
            decoded = json.loads(result.data)
            reason = decoded if isinstance(decoded, str) else json.dumps(decoded)
        except ValueError:
            reason = result.data
    if result.state == State.UNKNOWN_CMD:
        return reason or f"unknown command {result.command!r}"
    if result.code >= 999 or result.state == State.TIMEOUT:
        if result.state == State.TIMEOUT:
            head = f"{result.command} {result.id} ran out of time and was killed"
        elif result.exit_status is None:
            head = f"{result.command} {result.id} was killed by a signal"
        else:
            head = f"{result.command} {result.id} exited with status {result.exit_status}"
        tail = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
        return f"{head}: {tail[0]}" if tail else head
    return reason or f"{result.command} {result.id} ended {result.state} (code {result.code})"


# --------------------------------------------------------------------------------------------- results


class Return:
    """The result of a job, as published at `result:<id>`.

    Attribute names follow the original client. `payload` is the raw decoded dict.
    """

    __slots__ = ("_payload",)

    def __init__(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise ValueError(f"a result must be a JSON object, got {type(payload).__name__}")
        self._payload = payload

    @classmethod
    def from_json(cls, text: str | bytes) -> Return:
        """Decode the JSON text stored at `result:<id>`."""
        return cls(json.loads(text))

    @property
    def payload(self) -> dict[str, Any]:
        return self._payload

    @property
    def id(self) -> str:
        return str(self._payload.get("id", ""))

    @property
    def command(self) -> str:
        return str(self._payload.get("command", ""))

    @property
    def state(self) -> State | str:
        """A `State` (a str enum); an unknown state string is returned as is."""
        raw = self._payload.get("state", "")
        try:
            return State(raw)
        except ValueError:
            return str(raw)

    @property
    def success(self) -> bool:
        return self.state == State.SUCCESS

    @property
    def code(self) -> int:
        """0 on success; 400/404/412/500/503 for builtins; 1000 + exit status, or 999 on a signal."""
        return int(self._payload.get("code") or 0)

    @property
    def exit_status(self) -> int | None:
        """A process's exit status (0 on success); None if a signal ended it or it is not a process."""
        code = self.code
        if code == 0:
            return 0
        if 1000 <= code < 1256:
            return code - 1000
        return None

    @property
    def data(self) -> str:
        """The last result-level message (level 20-23, 30): the JSON text of a builtin's value."""
        return str(self._payload.get("data") or "")

    @property
    def level(self) -> int:
        """Level of `data`: 20 for JSON, 0 when a process printed no result message."""
        return int(self._payload.get("level") or 0)

    @property
    def streams(self) -> list[str]:
        streams = self._payload.get("streams") or []
        return [str(s or "") for s in [*streams, "", ""][:2]]

    @property
    def stdout(self) -> str:
        """The last 100 lines of the process's stdout."""
        return self.streams[0]

    @property
    def stderr(self) -> str:
        """The last 100 lines of the process's stderr."""
        return self.streams[1]

    @property
    def critical(self) -> str:
        """The last level-9 message, or the summary of an internal failure."""
        return str(self._payload.get("critical") or "")

    @property
    def starttime(self) -> float:
        """Start of the job, in seconds since the epoch (the wire has milliseconds)."""
        return (self._payload.get("starttime") or 0) / 1000

    @property
    def time(self) -> int:
        """Duration of the job in milliseconds."""
        return int(self._payload.get("time") or 0)

    @property
    def tags(self) -> list[str] | None:
        return self._payload.get("tags")

    @property
    def container(self) -> int:
        """0 for the host, else the id of the container the job ran in."""
        return int(self._payload.get("container") or 0)

    def json(self) -> Any:
        """The decoded level-20 `data`; ResultLevelError if the result is not JSON."""
        if self.level != Level.RESULT_JSON:
            raise ResultLevelError(f"{self.command} {self.id}: expected a JSON result (level 20), "
                                   f"got level {self.level}", result=self)
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise ResultLevelError(f"{self.command} {self.id}: level-20 data is not JSON: {exc}",
                                   result=self)

    def raise_for_state(self) -> Return:
        """Raise the `ResultError` subclass for this result unless it is SUCCESS; return self."""
        if not self.success:
            raise error_for_result(self)
        return self

    def __repr__(self) -> str:
        return f"<Return {self.command} {self.id} {self.state} code={self.code} level={self.level}>"

    def __str__(self) -> str:
        return (f"STATE: {self.state} (code {self.code})\nSTDOUT:\n{self.stdout}\nSTDERR:\n{self.stderr}\n"
                f"DATA:\n{self.data}\n")


@attrs.frozen
class Message:
    """One entry of a job's output stream (`stream:<id>`)."""

    job: str
    container: int
    text: str
    level: int
    flags: int
    epoch: int  # nanoseconds since the epoch

    @classmethod
    def from_json(cls, text: str | bytes) -> Message:
        return cls.from_entry(json.loads(text))

    @classmethod
    def from_entry(cls, body: dict[str, Any]) -> Message:
        """From a decoded entry: the shape of `stream:<id>`, which `logger:<queue>` lists share."""
        inner = body.get("message") or {}
        meta = int(inner.get("meta") or 0)
        return cls(job=str(body.get("command") or ""), container=int(body.get("core") or 0),
                   text=str(inner.get("message") or ""), level=meta >> 16, flags=meta & 0xFFFF,
                   epoch=int(inner.get("epoch") or 0))

    @property
    def end(self) -> bool:
        """This is the job's last message."""
        return bool(self.flags & (Flag.EXIT_SUCCESS | Flag.EXIT_ERROR))

    @property
    def success(self) -> bool:
        """Last message of a job that ended well."""
        return bool(self.flags & Flag.EXIT_SUCCESS)

    @property
    def time(self) -> float:
        """When the message was emitted, in seconds since the epoch."""
        return self.epoch / 1e9

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def default_writer(level: int, text: str, flags: int) -> None:
    """The default stream callback: level 1 to stdout, every other level to stderr."""
    if not text and flags & (Flag.EXIT_SUCCESS | Flag.EXIT_ERROR):
        return  # a bare end-of-job marker
    out = sys.stdout if level == Level.STDOUT else sys.stderr
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()


# --------------------------------------------------------------------------------------------- connection


def _redis_error(exc: redis.RedisError, where: str) -> Exception:
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return Unreachable(f"{where}: authentication failed ({exc})")
    if isinstance(exc, redis.ConnectionError):
        return Unreachable(f"{where}: cannot reach the node ({exc})")
    if isinstance(exc, redis.TimeoutError):
        return Unreachable(f"{where}: the node stopped answering ({exc})")
    text = str(exc)
    if text.startswith(("NOAUTH", "WRONGPASS")):
        return Unreachable(f"{where}: authentication failed ({text})")
    return Unreachable(f"{where}: redis error ({text})")


class Connection:
    """One node's Redis, with the job protocol on top.

    TCP (`host`, `port`, `password`, `db`) or a unix socket (`unix_socket`); `ssl=True` speaks TLS without
    verifying the certificate (nodes use self-signed ones, as the original client assumed). Nothing is
    connected until the first call. A dropped connection is re-opened and the call retried, `retries`
    times with exponential backoff; after that, or on a bad password, calls raise `Unreachable`.
    redis-py's pool is thread-safe, so one Connection may serve many threads (see `Response.aget`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, password: str = "", db: int = 0, *,
                 unix_socket: str | None = None, ssl: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float = 5.0, retries: int = 3) -> None:
        self.host, self.port, self.db = host, port, db
        self.unix_socket = unix_socket or None
        self.ssl = ssl
        self.timeout = float(timeout)
        options: dict[str, Any] = {
            "password": password or None,
            "db": db,
            # A blocking call lasts at most SLICE seconds; the socket must outwait it, or every long
            # wait would look like a dead node.
            "socket_timeout": SLICE + 5.0,
            "socket_connect_timeout": connect_timeout,
            # Retry only dropped connections: re-sending after a socket timeout could block another
            # 15 s per attempt on a node that is alive but stuck. A re-sent RPUSH is harmless: core0
            # drops a command whose id already has a flag.
            "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries,
                           supported_errors=(redis.ConnectionError,)),
        }
        if self.unix_socket:
            self.redis = redis.Redis(unix_socket_path=self.unix_socket, **options)
        else:
            if ssl:
                options.update(ssl=True, ssl_cert_reqs="none", ssl_check_hostname=False)
            self.redis = redis.Redis(host=host, port=port, socket_keepalive=True, **options)

    @property
    def address(self) -> str:
        """Where the node is, for messages: `unix:/path` or `host:port`."""
        return f"unix:{self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Connection {self.address}{' tls' if self.ssl else ''}>"

    def call(self, name: str, *args: Any) -> Any:
        """Run one redis command by method name; redis errors become `Unreachable`."""
        try:
            return getattr(self.redis, name)(*args)
        except redis.RedisError as exc:
            raise _redis_error(exc, self.address) from exc

    def ping(self) -> bool:
        """Redis-level PING (the node's bus is up; says nothing about core0: see `Client.ping`)."""
        return bool(self.call("ping"))

    def exists(self, key: str) -> bool:
        return bool(self.call("exists", key))

    def ttl(self, key: str) -> int:
        return int(self.call("ttl", key))

    def peek(self, key: str) -> bytes | None:
        """The last element of a list, without removing it (RPOPLPUSH of a list onto itself)."""
        return self.call("rpoplpush", key, key)

    def wait_peek(self, key: str, timeout: float) -> bytes | None:
        """`peek`, blocking up to `timeout` seconds (at most SLICE) for the list to appear."""
        return self.call("brpoplpush", key, key, max(min(timeout, SLICE), _MIN_BLOCK))

    def pop(self, key: str, timeout: float | None = None) -> bytes | None:
        """Remove and return the first element of a list; block up to `timeout` seconds if given."""
        if timeout is None:
            return self.call("lpop", key)
        item = self.call("blpop", [key], max(min(timeout, SLICE), _MIN_BLOCK))
        return item[1] if item else None

    def close(self) -> None:
        """Close every pooled connection (the object stays usable: it reconnects on demand)."""
        self.redis.close()

    # ----------------------------------------------------------------------------------------- jobs

    def raw(self, command: str, arguments: dict[str, Any] | None = None, *, id: str | None = None,
            queue: str | None = None, max_time: int | None = None, stream: bool = False,
            tags: list[str] | None = None, recurring_period: int | None = None,
            max_restart: int | None = None, timeout: float | None = None) -> Response:
        """Push a command to `core:default` and wait until core0 acknowledges it.

        The envelope is validated here (InvalidArgument before anything is sent); the arguments are not:
        `raw` sends what it is given, and the node answers a bad argument with a 400 result. Returns the
        job's `Response` once `result:<id>:flag` exists. If it does not appear within `timeout` (default:
        the connection's), the command is withdrawn from the queue if still there, and
        `NotAcknowledged` (a `TimeoutError`) is raised.
        """
        wait = self.timeout if timeout is None else float(timeout)
        job_id = id if id is not None else str(uuid.uuid4())
        body = {"id": job_id, "command": command, "arguments": {} if arguments is None else arguments,
                "queue": queue, "max_time": max_time, "stream": stream, "tags": tags,
                "recurring_period": recurring_period, "max_restart": max_restart}
        try:
            envelope = Command.from_wire(body)
        except DropCommand as exc:  # core0 would drop it silently: say so now instead
            raise InvalidArgument(f"`id`: {exc}", field="id")
        text = json.dumps(envelope.to_wire())
        if len(text.encode()) > MAX_COMMAND_BYTES:
            raise InvalidArgument(f"command is {len(text.encode())} bytes, more than the node accepts "
                                  f"({MAX_COMMAND_BYTES})", field="arguments")
        flag = flag_key(job_id)
        if id is not None and self.exists(flag):
            # core0 would drop the duplicate and we would be watching the older job.
            raise AlreadyExists(f"job id {job_id!r} is already in use on the node")

        self.call("rpush", DEFAULT_QUEUE, text)
        if self._wait_flag(flag, wait):
            return Response(self, job_id, command=command)
        # Not acknowledged. Take the command back so it does not run later, unseen by anyone.
        if self.call("lrem", DEFAULT_QUEUE, 1, text):
            raise NotAcknowledged(f"{self.address}: core0 did not pick up {command} (job {job_id}) within "
                                  f"{wait:g}s; the command was withdrawn. Is core0 running?")
        # core0 popped it between our deadline and the LREM: it is about to acknowledge.
        if self._wait_flag(flag, 1.0):
            return Response(self, job_id, command=command)
        raise NotAcknowledged(f"{self.address}: core0 took {command} (job {job_id}) from the queue but "
                              f"did not acknowledge it within {wait:g}s")

    def _wait_flag(self, flag: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.peek(flag) is not None
            if self.wait_peek(flag, remaining) is not None:
                return True

    def response_for(self, job_id: str) -> Response:
        """A `Response` for a job started elsewhere (by another client, or before a restart)."""
        return Response(self, job_id)


# --------------------------------------------------------------------------------------------- responses


class Response:
    """A handle on one job, by id: its result, its output stream and whether it still runs.

    Reading never consumes anything: `get()` can be repeated (for the 300 s the node keeps the result),
    and by several clients at once. Stream output, however, is popped: one reader per stream.
    """

    def __init__(self, connection: Connection, id: str, *, command: str = "") -> None:
        self._connection = connection
        self._id = id
        self._command = command

    @property
    def id(self) -> str:
        return self._id

    @property
    def exists(self) -> bool:
        """The node knows this job (running, or ended less than 300 s ago)."""
        return self._connection.exists(flag_key(self._id))

    @property
    def running(self) -> bool:
        """The job has not ended yet (its flag has no expiry)."""
        return self._connection.ttl(flag_key(self._id)) == -1

    def __repr__(self) -> str:
        return f"<Response {self._command or 'job'} {self._id}>"

    def _what(self) -> str:
        return f"{self._command} (job {self._id})" if self._command else f"job {self._id}"

    def peek(self) -> Return | None:
        """The result if the job has ended, else None; never waits."""
        value = self._connection.peek(result_key(self._id))
        return Return.from_json(value) if value is not None else None

    def get(self, timeout: float | None = None) -> Return:
        """Wait for the job's result and return it, whatever its state.

        `timeout` in seconds (default: the connection's; `0` checks once; `math.inf` waits for ever).
        Raises `JobNotFound` (a NotFound) as soon as the node does not know the job, and `Timeout`
        (a TimeoutError) at the deadline.
        """
        wait = self._connection.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        key = result_key(self._id)
        while True:
            if not self.exists:
                # The flag and the result expire together, but check the result anyway: a node that
                # lost the flag and kept the result still has an answer for us.
                found = self.peek()
                if found is not None:
                    return found
                raise JobNotFound(f"{self._what()} is not known to the node (never started, or its "
                                  f"result expired)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                found = self.peek()
                if found is not None:
                    return found
                raise Timeout(f"{self._what()} did not finish within {wait:g}s")
            value = self._connection.wait_peek(key, remaining)
            if value is not None:
                return Return.from_json(value)

    def sync(self, timeout: float | None = None) -> Return:
        """`get()`, then raise the `ResultError` for the result unless it is SUCCESS."""
        return self.get(timeout).raise_for_state()

    def json(self, timeout: float | None = None) -> Any:
        """`sync()`, then decode the level-20 JSON data."""
        return self.sync(timeout).json()

    async def aget(self, timeout: float | None = None) -> Return:
        """`get()` for asyncio code: the blocking call runs in a worker thread (`asyncio.to_thread`),
        so the event loop stays free; cancelling the awaiting task does not stop that thread early."""
        return await asyncio.to_thread(self.get, timeout)

    async def ajson(self, timeout: float | None = None) -> Any:
        """`json()` in a worker thread, as `aget`."""
        return await asyncio.to_thread(self.json, timeout)

    def messages(self, timeout: float | None = None, *, idle: float | None = None) -> Iterator[Message]:
        """Yield the job's stream messages as they arrive (requires `stream=True` on the job).

        Ends after the message carrying an end-of-job flag, or once the job is no longer running and
        nothing is left to read, or (with `idle`) when nothing has arrived for `idle` seconds.
        `timeout` bounds the whole iteration (None: until the job ends); `Timeout` is raised when it
        runs out.
        """
        key = stream_key(self._id)
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet_since = time.monotonic()
        while True:
            wait = STREAM_POLL if idle is None else min(STREAM_POLL, idle)
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise Timeout(f"{self._what()}: stream still open after {timeout:g}s")
            value = self._connection.pop(key, wait)
            if value is None:
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    return
                if self.running:
                    continue
                # Ended: drain what was pushed between our last read and the end, then stop.
                while (value := self._connection.pop(key)) is not None:
                    message = Message.from_json(value)
                    yield message
                    if message.end:
                        return
                return
            quiet_since = time.monotonic()
            message = Message.from_json(value)
            yield message
            if message.end:
                return

    def stream(self, callback: WriteCallback | None = None, timeout: float | None = None) -> None:
        """Call `callback(level, text, flags)` for each stream message until the job ends.

        The default callback writes level-1 lines to stdout and all others to stderr.
        """
        write = callback if callback is not None else default_writer
        if not callable(write):
            raise TypeError("callback must be callable")
        for message in self.messages(timeout):
            write(message.level, message.text, message.flags)


# --------------------------------------------------------------------------------------------- namespaces


class JsonCaller(Protocol):
    def json(self, command: str, arguments: dict[str, Any] | None = None, **options: Any) -> Any: ...


class Namespace:
    """Base of the command namespaces (`client.info`, `client.job`...): validate, send, decode."""

    def __init__(self, client: JsonCaller) -> None:
        self._client = client

    def _call(self, request: type, **arguments: Any) -> Any:
        # Unset optional fields are left out: the node applies the same defaults as the request class.
        sent = {name: value for name, value in arguments.items() if value is not None}
        structure(sent, request, prefix="arguments")  # InvalidArgument here, before anything is sent
        return self._client.json(request.command_name, sent)  # type: ignore[attr-defined]
