"""The client's side of the protocol, against a real redis-server and no node.

The test plays core0's side itself (`FakeCore`: pop `core:default`, push the flag, the stream and the
result with canned values) so what is tested is how the client writes commands and reads results,
flags and streams; the node's behaviour is tested in tests/integration against a real node.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis
from click.testing import CliRunner

from g8os.client import (
    AlreadyExists,
    Client,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    JobNotFound,
    JobTimeoutError,
    Message,
    NotAcknowledged,
    NotFound,
    ProcessError,
    Response,
    ResultError,
    ResultLevelError,
    Return,
    Timeout,
    Unavailable,
    UnknownCommandError,
    Unreachable,
    error_for_result,
)
from g8os.client.cli import cli, exit_code_for
from g8os.client.transport import default_writer
from g8os.messages.command import (
    Command,
    Flag,
    Result,
    State,
    flag_key,
    result_key,
    stream_key,
    stream_message,
)

pytestmark = pytest.mark.timeout(60)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def redis_socket(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a unix socket, stopped when the test ends."""
    folder = tmp_path
    short = None
    if len(str(tmp_path / "r.sock")) > 100:  # unix socket paths are limited to 108 bytes
        short = Path(tempfile.mkdtemp(prefix="g8r", dir="/tmp"))
        folder = short
    sock = str(folder / "r.sock")
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(unix_socket_path=sock, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                threading.Event().wait(0.02)  # poll interval, bounded by the deadline
        probe.close()
        yield sock
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def rds(redis_socket: str) -> Iterator[redis.Redis]:
    """The test's own connection, to plant and inspect protocol keys."""
    r = redis.Redis(unix_socket_path=redis_socket)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def client(redis_socket: str) -> Iterator[Client]:
    c = Client(unix_socket=redis_socket, timeout=2)
    try:
        yield c
    finally:
        c.close()


@attrs.define
class Answer:
    """What FakeCore does with one command: acknowledge it, then (if `result`) stream and finish."""

    result: Result | None = None
    stream: list[tuple[str, int, int]] = attrs.field(factory=list)  # (text, level, flags)


Handler = Callable[[dict[str, Any]], Answer | None]


class FakeCore:
    """core0's side of the protocol, from canned answers. A handler returning None leaves the
    command unacknowledged; a command with no handler gets an UNKNOWN_CMD result."""

    def __init__(self, sock: str) -> None:
        self.r = redis.Redis(unix_socket_path=sock)
        self.handlers: dict[str, Handler] = {}
        self.received: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def on(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.r.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.r.blpop(["core:default"], 0.1)
            if not item:
                continue
            raw = json.loads(item[1])
            self.received.append(raw)
            handler = self.handlers.get(raw["command"])
            if handler is None:
                answer: Answer | None = Answer(Result.failure(
                    Command.from_wire(raw), code=404, message=f"unknown command {raw['command']}",
                    state=State.UNKNOWN_CMD))
            else:
                answer = handler(raw)
            if answer is None:
                continue
            publish(self.r, raw["id"], answer, stream=bool(raw.get("stream")))


def publish(r: redis.Redis, job_id: str, answer: Answer, *, stream: bool = True) -> None:
    """Do what core0 does for one job: flag, stream messages, result, expiries."""
    r.rpush(flag_key(job_id), "")
    if stream:
        for text, level, flags in answer.stream:
            r.rpush(stream_key(job_id), stream_message(0, job_id, text, level, flags))
    if answer.result is not None:
        r.rpush(result_key(job_id), answer.result.to_json())
        r.expire(result_key(job_id), 300)
        r.expire(flag_key(job_id), 300)


@pytest.fixture
def core(redis_socket: str) -> Iterator[FakeCore]:
    fake = FakeCore(redis_socket)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def builtin(raw: dict[str, Any], value: Any) -> Answer:
    return Answer(Result.builtin(Command.from_wire(raw), value))


def failure(raw: dict[str, Any], code: int, message: str) -> Answer:
    return Answer(Result.failure(Command.from_wire(raw), code=code, message=message))


def process(raw: dict[str, Any], *, code: int = 0, stdout: str = "", stderr: str = "",
            state: State | None = None, data: str = "", level: int = 0) -> Answer:
    state = state or (State.SUCCESS if code == 0 else State.ERROR)
    return Answer(Result(id=raw["id"], command=raw["command"], state=state, code=code, data=data,
                         level=level, streams=[stdout, stderr]))


def result_payload(**fields: Any) -> dict[str, Any]:
    base = {"id": "j", "command": "core.system", "state": "SUCCESS", "code": 0, "data": "", "level": 0,
            "streams": ["", ""], "critical": "", "starttime": 1_700_000_000_250, "time": 12,
            "tags": None, "container": 0}
    return base | fields


# --------------------------------------------------------------------------------------------- Return


def test_return_exposes_the_result_fields() -> None:
    ret = Return(result_payload(streams=["out\n", "err\n"], tags=["a"], container=3, time=42,
                                level=20, data='{"a": 1}'))
    assert (ret.id, ret.command, ret.state, ret.code) == ("j", "core.system", State.SUCCESS, 0)
    assert ret.starttime == pytest.approx(1_700_000_000.25)  # seconds; the wire has milliseconds
    assert ret.time == 42
    assert (ret.stdout, ret.stderr) == ("out\n", "err\n")
    assert ret.tags == ["a"] and ret.container == 3
    assert ret.json() == {"a": 1}
    assert ret.payload["data"] == '{"a": 1}'
    assert ret.success and ret.exit_status == 0


def test_return_tolerates_missing_streams_and_unknown_state() -> None:
    ret = Return({"id": "x", "state": "EXPLODED"})
    assert ret.stdout == "" and ret.stderr == "" and ret.code == 0
    assert ret.state == "EXPLODED" and not ret.success


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1000, 0), (1003, 3), (1255, 255), (999, None),
                                              (404, None)])
def test_exit_status_from_code(code: int, status: int | None) -> None:
    assert Return(result_payload(code=code)).exit_status == status


def test_json_requires_level_20() -> None:
    ret = Return(result_payload(level=0, data="plain"))
    with pytest.raises(ResultLevelError) as caught:
        ret.json()
    assert isinstance(caught.value, ValueError) and caught.value.result is ret
    with pytest.raises(ResultLevelError):
        Return(result_payload(level=20, data="not json")).json()


@pytest.mark.parametrize(("state", "code", "catch", "exact"), [
    ("ERROR", 400, InvalidArgument, None),
    ("ERROR", 404, NotFound, None),
    ("ERROR", 412, FailedPrecondition, None),
    ("ERROR", 500, Internal, None),
    ("ERROR", 503, Unavailable, None),
    ("ERROR", 418, Internal, None),  # unknown builtin codes are internal errors
    ("UNKNOWN_CMD", 404, NotFound, UnknownCommandError),
    ("ERROR", 1003, ProcessError, ProcessError),
    ("KILLED", 999, ProcessError, ProcessError),
    ("TIMEOUT", 999, JobTimeoutError, JobTimeoutError),
])
def test_failed_results_map_to_catchable_classes(state: str, code: int, catch: type, exact: type | None
                                                 ) -> None:
    ret = Return(result_payload(state=state, code=code, level=20 if code < 999 else 0,
                                data=json.dumps("`arguments.name`: must not be empty") if code < 999
                                else "", streams=["", "first\nlast words\n"]))
    with pytest.raises(catch) as caught:
        ret.raise_for_state()
    error = caught.value
    assert isinstance(error, ResultError)
    assert error.result is ret and error.code == code and error.state == state
    if exact is not None:
        assert type(error) is exact
    if code == 400:
        assert error.field == "arguments.name"
    if code == 1003:
        assert error.exit_status == 3 and not error.signaled
        assert "status 3" in error.message and "last words" in error.message
    if code == 999 and state == "KILLED":
        assert error.exit_status is None and error.signaled


def test_success_does_not_raise() -> None:
    ret = Return(result_payload())
    assert ret.raise_for_state() is ret


def test_result_error_survives_pickling() -> None:
    import pickle

    error = error_for_result(Return(result_payload(state="ERROR", code=404, level=20, data='"gone"')))
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, NotFound) and copy.result.code == 404 and copy.message == "gone"


def test_message_decodes_meta() -> None:
    text = stream_message(3, "job", "hello", 2, Flag.EXIT_ERROR, epoch_ns=1_500_000_000)
    message = Message.from_json(text)
    assert (message.job, message.container, message.text, message.level) == ("job", 3, "hello", 2)
    assert message.end and not message.success and message.time == pytest.approx(1.5)


# --------------------------------------------------------------------------------------------- validation


OFFLINE = "/nonexistent/g8os-test.sock"


@pytest.mark.parametrize(("call", "field"), [
    (lambda c: c.system(""), "arguments.name"),
    (lambda c: c.system([]), "arguments.name"),
    (lambda c: c.system("ls", env={"A": 1}), "arguments.env[A]"),
    (lambda c: c.system(["ls", "a\0b"]), "arguments.args"),
    (lambda c: c.bash(""), "arguments.script"),
    (lambda c: c.subscribe(""), "arguments.id"),
    (lambda c: c.job.kill(""), "arguments.id"),
    (lambda c: c.job.kill("x", signal=123456), "arguments.signal"),
    (lambda c: c.job.killall(signal=0), "arguments.signal"),
    (lambda c: c.job.unschedule(""), "arguments.id"),
    (lambda c: c.process.list(pid=0), "arguments.pid"),
    (lambda c: c.process.kill("12"), "arguments.pid"),
    (lambda c: c.actor.tree("jobs"), "arguments.path"),
    (lambda c: c.actor.inspect("/a b"), "arguments.path"),
    (lambda c: c.actor.kill("/jobs", signal=-1), "arguments.signal"),
    (lambda c: c.raw("core.ping", id=""), "id"),
    (lambda c: c.raw("core.ping", [1]), "arguments"),  # type: ignore[arg-type]
    (lambda c: c.raw("core.ping", {}, tags=[1]), "tags"),  # type: ignore[list-item]
    (lambda c: c.raw("core.ping", {}, max_time=-1), "max_time"),
])
def test_bad_arguments_fail_before_sending(call: Callable[[Client], Any], field: str) -> None:
    # The client points at a socket that does not exist: had it tried to send, this would be
    # Unreachable instead of InvalidArgument.
    c = Client(unix_socket=OFFLINE)
    with pytest.raises(InvalidArgument) as caught:
        call(c)
    assert caught.value.field == field


# --------------------------------------------------------------------------------------------- transport


def test_unreachable_is_a_connection_error() -> None:
    with pytest.raises(Unreachable) as caught:
        Client(unix_socket=OFFLINE).ping()
    assert isinstance(caught.value, ConnectionError)
    assert exit_code_for(caught.value) == 3


def test_wrong_password_is_unreachable(redis_socket: str, rds: redis.Redis) -> None:
    rds.config_set("requirepass", "s3cret")  # our own connection stays authenticated
    with pytest.raises(Unreachable, match="auth"):
        Client(unix_socket=redis_socket, password="wrong").connection.ping()
    with pytest.raises(Unreachable):
        Client(unix_socket=redis_socket).connection.ping()
    assert Client(unix_socket=redis_socket, password="s3cret").connection.ping()


def test_dropped_connection_is_reopened(client: Client, rds: redis.Redis) -> None:
    assert client.connection.ping()
    killed = rds.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert client.connection.ping()  # retried on a new connection, invisible to the caller


def test_unacknowledged_command_times_out_and_is_withdrawn(redis_socket: str, rds: redis.Redis) -> None:
    c = Client(unix_socket=redis_socket, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(NotAcknowledged) as caught:
        c.ping()
    assert 0.3 <= time.monotonic() - start < 5
    assert isinstance(caught.value, TimeoutError)
    assert "core0" in str(caught.value)
    assert rds.llen("core:default") == 0  # it will not run later behind the caller's back


def test_raw_sends_the_whole_envelope(client: Client, core: FakeCore) -> None:
    core.on("info.cpu", lambda raw: builtin(raw, []))
    response = client.raw("info.cpu", {}, queue="q1", max_time=7, stream=True, tags=["t"],
                          recurring_period=30, max_restart=2)
    sent = core.received[-1]
    assert sent["id"] == response.id and uuid.UUID(sent["id"])
    assert sent == {"id": response.id, "command": "info.cpu", "arguments": {}, "queue": "q1",
                    "max_time": 7, "stream": True, "tags": ["t"], "recurring_period": 30,
                    "max_restart": 2}


def test_ping_round_trip(client: Client, core: FakeCore) -> None:
    core.on("core.ping", lambda raw: builtin(raw, "PONG test"))
    assert client.ping() == "PONG test"


def test_namespace_calls_send_validated_arguments(client: Client, core: FakeCore) -> None:
    core.on("job.kill", lambda raw: builtin(raw, True))
    core.on("process.list", lambda raw: builtin(raw, [{"pid": 1}]))
    core.on("actor.tree", lambda raw: builtin(raw, [{"path": "/"}]))
    core.on("info.version", lambda raw: builtin(raw, {"version": "0.1.0"}))
    assert client.job.kill("abc", signal.SIGKILL) is True
    assert core.received[-1]["arguments"] == {"id": "abc", "signal": 9}
    assert client.process.list() == [{"pid": 1}]
    assert core.received[-1]["arguments"] == {}  # unset optionals are left out
    assert client.actor.tree() == [{"path": "/"}]
    assert core.received[-1]["arguments"] == {"path": "/"}
    assert client.info.version() == {"version": "0.1.0"}


def test_system_splits_a_string_like_a_shell(client: Client, core: FakeCore) -> None:
    core.on("core.system", lambda raw: process(raw, stdout="ok\n"))
    result = client.system("echo 'a b' c", dir="/tmp", env={"X": "1"}).get()
    assert result.stdout == "ok\n"
    assert core.received[-1]["arguments"] == {"name": "echo", "args": ["a b", "c"], "dir": "/tmp",
                                              "stdin": "", "env": {"X": "1"}}


def test_error_result_raises_its_class_with_the_result(client: Client, core: FakeCore) -> None:
    core.on("job.list", lambda raw: failure(raw, 404, "no job nope"))
    with pytest.raises(NotFound) as caught:
        client.job.list("nope")
    assert caught.value.message == "no job nope"
    assert caught.value.result.command == "job.list"


def test_unknown_command(client: Client, core: FakeCore) -> None:
    result = client.raw("no.such", {}).get()
    assert result.state == State.UNKNOWN_CMD
    with pytest.raises(UnknownCommandError):
        client.json("no.such", {})


def test_duplicate_id_is_refused(client: Client, rds: redis.Redis) -> None:
    rds.rpush(flag_key("taken"), "")
    with pytest.raises(AlreadyExists):
        client.raw("core.ping", {}, id="taken")
    assert rds.llen("core:default") == 0


# --------------------------------------------------------------------------------------------- Response


def test_get_is_repeatable_and_reports_state(client: Client, rds: redis.Redis) -> None:
    rds.rpush(flag_key("j"), "")
    response = client.response_for("j")
    assert response.exists and response.running
    assert response.peek() is None
    publish(rds, "j", Answer(Result.from_json(json.dumps(result_payload(id="j")))), stream=False)
    first, second = response.get(), response.get()
    assert first.payload == second.payload and first.id == "j"
    assert response.exists and not response.running
    assert rds.llen(result_key("j")) == 1  # reading did not consume it


def test_get_fails_fast_for_an_unknown_job(client: Client) -> None:
    start = time.monotonic()
    with pytest.raises(JobNotFound):
        client.response_for("never").get(timeout=30)
    assert time.monotonic() - start < 2


def test_get_times_out(client: Client, rds: redis.Redis) -> None:
    rds.rpush(flag_key("slow"), "")
    start = time.monotonic()
    with pytest.raises(Timeout) as caught:
        client.response_for("slow").get(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert isinstance(caught.value, TimeoutError) and "slow" in str(caught.value)
    with pytest.raises(Timeout):
        client.response_for("slow").get(timeout=0)  # 0 checks once, never blocks for ever


def test_get_waits_for_a_result_that_comes_later(client: Client, rds: redis.Redis) -> None:
    rds.rpush(flag_key("later"), "")
    answer = Answer(Result.from_json(json.dumps(result_payload(id="later"))))
    timer = threading.Timer(0.2, publish, (redis.Redis(connection_pool=rds.connection_pool), "later",
                                           answer))
    timer.start()
    try:
        assert client.response_for("later").get(timeout=10).id == "later"
    finally:
        timer.cancel()
        timer.join()  # it may still be setting the expiries: not after the Redis server is gone


def test_aget_runs_in_a_thread(client: Client, rds: redis.Redis) -> None:
    publish(rds, "a", Answer(Result.from_json(json.dumps(result_payload(id="a", level=20,
                                                                        data="[1, 2]")))))

    async def main() -> Any:
        response = client.response_for("a")
        return (await response.aget()).id, await response.ajson()

    assert asyncio.run(main()) == ("a", [1, 2])


def test_stream_calls_back_until_the_end_flag(client: Client, rds: redis.Redis) -> None:
    publish(rds, "s", Answer(stream=[("out", 1, Flag.STREAM), ("err", 2, Flag.STREAM),
                                     ('{"a": 1}', 20, Flag.STREAM), ("", 1, Flag.EXIT_SUCCESS),
                                     ("after the end", 1, 0)]))
    seen: list[tuple[int, str, int]] = []
    client.response_for("s").stream(lambda level, text, flags: seen.append((level, text, flags)))
    assert seen == [(1, "out", 1), (2, "err", 1), (20, '{"a": 1}', 1), (1, "", 2)]
    assert rds.llen(stream_key("s")) == 1  # stopped at the end flag


def test_stream_ends_when_the_job_has_ended(client: Client, rds: redis.Redis) -> None:
    publish(rds, "e", Answer(Result.from_json(json.dumps(result_payload(id="e"))),
                             stream=[("one", 1, 0), ("two", 2, 0)]))  # no end flag
    start = time.monotonic()
    texts = [m.text for m in client.response_for("e").messages()]
    assert texts == ["one", "two"]
    assert time.monotonic() - start < 5


def test_messages_timeout_and_idle(client: Client, rds: redis.Redis) -> None:
    rds.rpush(flag_key("quiet"), "")  # running, silent
    with pytest.raises(Timeout):
        list(client.response_for("quiet").messages(timeout=0.3))
    rds.rpush(stream_key("quiet"), stream_message(0, "quiet", "hi", 1))
    assert [m.text for m in client.response_for("quiet").messages(idle=0.3)] == ["hi"]


def test_default_writer_splits_stdout_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    default_writer(1, "to out", 0)
    default_writer(2, "to err", 0)
    default_writer(7, "warning", 0)
    default_writer(1, "", Flag.EXIT_SUCCESS)
    captured = capsys.readouterr()
    assert captured.out == "to out\n"
    assert captured.err == "to err\nwarning\n"


def test_response_repr_and_id(client: Client) -> None:
    response = Response(client.connection, "x1", command="core.ping")
    assert response.id == "x1" and "core.ping" in repr(response)


# --------------------------------------------------------------------------------------------- making


def test_from_sandbox_and_env(tmp_path: Path, redis_socket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sandboxes" / "box"
    folder.mkdir(parents=True)
    (folder / "sandbox.json").write_text(json.dumps(
        {"host": "127.0.0.1", "port": 1, "password": "", "socket": redis_socket}))
    c = Client.from_sandbox("box", root=tmp_path / "sandboxes")
    assert c.connection.unix_socket == redis_socket and c.connection.ping()
    with pytest.raises(NotFound):
        Client.from_sandbox("missing", root=tmp_path / "sandboxes")

    monkeypatch.setenv("G8OS_SANDBOX_ROOT", str(tmp_path / "sandboxes"))
    assert Client.from_env({"G8OS_SANDBOX": "box"}).connection.unix_socket == redis_socket
    env_socket = Client.from_env({"G8OS_SOCKET": redis_socket, "G8OS_TIMEOUT": "3"})
    assert env_socket.connection.unix_socket == redis_socket and env_socket.timeout == 3
    tcp = Client.from_env({"G8OS_HOST": "10.1.2.3", "G8OS_PORT": "7000", "G8OS_SANDBOX": "box"})
    assert (tcp.connection.host, tcp.connection.port, tcp.connection.unix_socket) == ("10.1.2.3", 7000, None)
    # A socket that is not on this machine (inside the sandbox's mounts) falls back to TCP.
    far = Client.from_info({"host": "127.0.0.1", "port": 6390, "socket": "/not/here.sock"})
    assert far.connection.unix_socket is None and far.connection.port == 6390


# --------------------------------------------------------------------------------------------- CLI


CLEAN_ENV = {name: None for name in ("G8OS_HOST", "G8OS_PORT", "G8OS_PASSWORD", "G8OS_SOCKET",
                                     "G8OS_SANDBOX", "G8OS_CONNECT", "G8OS_TIMEOUT")}


def run_cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=CLEAN_ENV, input=input, catch_exceptions=False)


def test_cli_help_documents_exit_codes() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    for line in ("0  ok", "2  bad arguments", "3  node unreachable", "4  not found", "5  timeout"):
        assert line in result.stdout
    for command in ("ping", "system", "jobs", "kill", "tree", "logs"):
        assert command in result.stdout


@pytest.mark.parametrize("args", [
    ("kill",),                                  # missing JOB
    ("kill", "j", "--signal", "NOPE"),
    ("--connect", "{not json", "ping"),
    ("--socket", OFFLINE, "system", "--env", "NOEQUALS", "ls"),
    ("--socket", OFFLINE, "tree", "relative/path"),  # refused by the client before sending
    ("no-such-command",),
])
def test_cli_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert run_cli(*args).exit_code == 2


def test_cli_unreachable_exits_3_with_json_error() -> None:
    result = run_cli("--socket", OFFLINE, "--json", "ping")
    assert result.exit_code == 3
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "Unreachable" and error["exit"] == 3


def test_cli_core0_not_answering_exits_3(redis_socket: str) -> None:
    assert run_cli("--socket", redis_socket, "--timeout", "0.3", "ping").exit_code == 3


def test_cli_ping(redis_socket: str, core: FakeCore) -> None:
    core.on("core.ping", lambda raw: builtin(raw, "PONG 9.9"))
    human = run_cli("--socket", redis_socket, "ping")
    assert human.exit_code == 0 and "PONG 9.9" in human.stdout
    machine = run_cli("--socket", redis_socket, "ping", "--json")
    assert json.loads(machine.stdout)["reply"] == "PONG 9.9"


def test_cli_connect_accepts_sandbox_output(tmp_path: Path, redis_socket: str, core: FakeCore) -> None:
    core.on("core.ping", lambda raw: builtin(raw, "PONG 1"))
    line = json.dumps({"host": "127.0.0.1", "port": 1, "password": "", "socket": redis_socket})
    saved = tmp_path / "up.log"
    saved.write_text(f"starting sandbox...\n{line}\n")
    assert run_cli("--connect", line, "ping").exit_code == 0
    assert run_cli("--connect", str(saved), "ping").exit_code == 0
    assert run_cli("--connect", "-", "ping", input=line).exit_code == 0


JOBS = [{"cmd": {"id": "j1", "command": "core.system", "arguments": {"name": "sleep", "args": ["10"]}},
         "pid": 42, "cpu": 0.5, "rss": 1048576, "starttime": int(time.time() * 1000) - 65_000}]


def test_cli_jobs(redis_socket: str, core: FakeCore) -> None:
    core.on("job.list", lambda raw: builtin(raw, JOBS) if not raw["arguments"].get("id")
            else failure(raw, 404, f"no job {raw['arguments']['id']}"))
    human = run_cli("--socket", redis_socket, "jobs")
    assert human.exit_code == 0
    assert "j1" in human.stdout and "sleep 10" in human.stdout and "1.0 MiB" in human.stdout
    assert json.loads(run_cli("--socket", redis_socket, "--json", "jobs").stdout) == JOBS
    missing = run_cli("--socket", redis_socket, "--json", "jobs", "nope")
    assert missing.exit_code == 4
    assert json.loads(missing.stdout)["error"]["code"] == 404


def test_cli_kill(redis_socket: str, core: FakeCore) -> None:
    core.on("job.kill", lambda raw: builtin(raw, None))
    result = run_cli("--socket", redis_socket, "kill", "j1", "--signal", "KILL")
    assert result.exit_code == 0 and "SIGKILL" in result.stdout
    assert core.received[-1]["arguments"] == {"id": "j1", "signal": 9}
    assert run_cli("--socket", redis_socket, "-q", "kill", "j1", "-s", "15").stdout == ""


@pytest.mark.parametrize(("answer", "exit_code"), [
    (dict(code=0, stdout="hello\n"), 0),
    (dict(code=1003, stdout="hello\n", stderr="bad\n"), 3),     # the process's own status
    (dict(code=1000 + 42), 42),
    (dict(code=999, state=State.KILLED), 1),
    (dict(code=404, level=20, data='"executable not found: nope"'), 4),
    (dict(code=999, state=State.TIMEOUT), 5),
])
def test_cli_system_exit_codes(redis_socket: str, core: FakeCore, answer: dict[str, Any], exit_code: int
                               ) -> None:
    core.on("core.system", lambda raw: process(raw, **answer))
    human = run_cli("--socket", redis_socket, "system", "whatever", "-x")
    assert human.exit_code == exit_code
    assert core.received[-1]["arguments"]["args"] == ["-x"]
    if answer.get("stdout"):
        assert human.stdout == answer["stdout"]
    if answer.get("stderr"):
        assert answer["stderr"] in human.stderr
    machine = run_cli("--socket", redis_socket, "--json", "system", "whatever")
    assert machine.exit_code == exit_code
    document = json.loads(machine.stdout)
    assert document["code"] == answer["code"]


def test_cli_system_json_decodes_level_20(redis_socket: str, core: FakeCore) -> None:
    core.on("core.system", lambda raw: process(raw, data='{"a": 1}', level=20))
    document = json.loads(run_cli("--socket", redis_socket, "--json", "system", "x").stdout)
    assert document["value"] == {"a": 1} and document["exit_status"] == 0


def test_cli_system_stream(redis_socket: str, core: FakeCore) -> None:
    core.on("core.system", lambda raw: Answer(
        process(raw, code=1001).result,
        stream=[("line 1", 1, 1), ("oops", 2, 1), ("line 2", 1, 1), ("", 2, Flag.EXIT_ERROR)]))
    result = run_cli("--socket", redis_socket, "system", "--stream", "x")
    assert result.exit_code == 1
    assert core.received[-1]["stream"] is True
    assert result.stdout == "line 1\nline 2\n" and "oops" in result.stderr


def test_cli_system_timeout_exits_5(redis_socket: str, core: FakeCore) -> None:
    core.on("core.system", lambda raw: Answer())  # acknowledged, never finishes
    assert run_cli("--socket", redis_socket, "--timeout", "0.5", "system", "sleep", "100").exit_code == 5


TREE = [{"path": "/", "kind": "root", "pid": 10, "state": "running", "restarts": 0, "uptime": 100},
        {"path": "/jobs", "kind": "supervisor", "pid": 11, "state": "running", "restarts": 2,
         "uptime": 3700, "last_error": "boom"},
        {"path": "/jobs/web", "kind": "process", "pid": 99, "state": "running", "restarts": 0,
         "uptime": 5}]


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_cli_tree(redis_socket: str, core: FakeCore, shape: str) -> None:
    nested = dict(TREE[0], children=[dict(TREE[1], children=[TREE[2]])])
    core.on("actor.tree", lambda raw: builtin(raw, TREE if shape == "flat" else nested))
    human = run_cli("--socket", redis_socket, "tree")
    assert human.exit_code == 0
    lines = human.stdout.splitlines()
    assert lines[0].startswith("/") and "root" in lines[0]
    assert any("jobs" in line and "restarts 2" in line and "boom" in line and "1h01m" in line
               for line in lines)
    web = next(line for line in lines if "web" in line)
    assert web.index("web") > lines[1].index("jobs")  # indented under /jobs
    machine = run_cli("--socket", redis_socket, "--json", "tree", "/")
    assert json.loads(machine.stdout) == (TREE if shape == "flat" else nested)


def test_cli_logs(redis_socket: str, rds: redis.Redis, core: FakeCore) -> None:
    # An ended job: its kept output.
    publish(rds, "done", Answer(Result(id="done", command="core.system", state=State.SUCCESS,
                                       streams=["kept out\n", "kept err\n"])))
    ended = run_cli("--socket", redis_socket, "logs", "done")
    assert ended.exit_code == 0 and ended.stdout == "kept out\n" and "kept err" in ended.stderr
    # A running job, followed through core.subscribe.
    rds.rpush(flag_key("live"), "")
    core.on("core.subscribe", lambda raw: Answer(
        Result.builtin(Command.from_wire(raw), None),
        stream=[("a", 1, 1), ("b", 2, 1), ("c", 1, 1), ("", 1, Flag.EXIT_SUCCESS)]))
    followed = run_cli("--socket", redis_socket, "logs", "-f", "live")
    assert followed.exit_code == 0 and followed.stdout == "a\nc\n" and "b" in followed.stderr
    assert core.received[-1]["arguments"] == {"id": "live"} and core.received[-1]["stream"] is True
    document = json.loads(run_cli("--socket", redis_socket, "--json", "logs", "-f", "live").stdout)
    assert [m["text"] for m in document["messages"]] == ["a", "b", "c", ""]
    # An unknown job.
    assert run_cli("--socket", redis_socket, "logs", "nope").exit_code == 4


def test_cli_logs_of_a_running_job_without_follow(redis_socket: str, rds: redis.Redis,
                                                  core: FakeCore) -> None:
    rds.rpush(flag_key("busy"), "")  # running, and it will not end during the test
    core.on("core.subscribe", lambda raw: Answer(stream=[("recent 1", 1, 1), ("recent 2", 1, 1)]))
    core.on("job.kill", lambda raw: builtin(raw, None))
    result = run_cli("--socket", redis_socket, "logs", "busy")
    assert result.exit_code == 0 and result.stdout == "recent 1\nrecent 2\n"
    subscriber = next(raw for raw in core.received if raw["command"] == "core.subscribe")
    # The subscriber is not left following the job for nobody.
    assert core.received[-1] == {**core.received[-1], "command": "job.kill"}
    assert core.received[-1]["arguments"]["id"] == subscriber["id"]


def test_cli_logs_follow_timeout_exits_5(redis_socket: str, rds: redis.Redis, core: FakeCore) -> None:
    rds.rpush(flag_key("forever"), "")
    core.on("core.subscribe", lambda raw: Answer())
    core.on("job.kill", lambda raw: builtin(raw, None))
    assert run_cli("--socket", redis_socket, "--timeout", "0.5", "logs", "-f", "forever").exit_code == 5
    # The subscriber is not left following the job for nobody.
    subscriber = next(raw for raw in core.received if raw["command"] == "core.subscribe")
    assert core.received[-1]["command"] == "job.kill"
    assert core.received[-1]["arguments"]["id"] == subscriber["id"]


def test_exit_code_mapping() -> None:
    assert exit_code_for(NotAcknowledged("x")) == 3
    assert exit_code_for(Timeout("x")) == 5
    assert exit_code_for(JobNotFound("x")) == 4
    assert exit_code_for(InvalidArgument("x")) == 2
    assert exit_code_for(Internal("x")) == 1
    assert exit_code_for(ValueError("x")) is None
