"""Chunk stores and the chunk cache against real servers on 127.0.0.1.

- a real redis-server (started here on a free loopback port, persistence on so a restart keeps
  the data, like a real store),
- `python -m http.server` over a DirStore's directory (GET/HEAD; it refuses PUT),
- a small threaded http.server subclass that also takes PUT and wants credentials, run as its
  own process so that stopping it really drops its connections,
- a socket that listens and never answers, for deadlines.

Every server is stopped by its fixture. Nothing listens or connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import pytest
from wire import wait_for

from g8os.fs.cache import ChunkCache
from g8os.fs.chunks import (
    ChunkCorrupt,
    StoreUnavailable,
    chunk_id,
    compress,
    decompress,
)
from g8os.fs.store import (
    DirStore,
    HttpStore,
    RedisStore,
    Router,
    SomeStoresUnavailable,
    Store,
    StoreRefused,
    open_router,
    open_store,
    parse_route,
    public_url,
)

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_PASSWORD = "r3dis-Secret"
HTTP_USER, HTTP_PASSWORD, HTTP_TOKEN = "writer", "h77p-Secret", "t0ken-Secret"
SECRETS = (REDIS_PASSWORD, HTTP_PASSWORD, HTTP_TOKEN)

PUT_SERVER = r'''
import base64, http.server, os, sys
root, port, user, password, token = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

class Handler(http.server.SimpleHTTPRequestHandler):
    """A static chunk directory that also takes PUT, for holders of the password and token."""
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def log_message(self, *args):
        pass

    def allowed(self):
        path, _, query = self.path.partition("?")
        if self.headers.get("Authorization") != expected or f"token={token}" not in query.split("&"):
            self.send_error(401)
            return None
        return path

    def do_GET(self):
        if self.allowed() is not None:
            super().do_GET()

    def do_HEAD(self):
        if self.allowed() is not None:
            super().do_HEAD()

    def do_PUT(self):
        path = self.allowed()
        if path is None:
            return
        parts = path.strip("/").split("/")
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if len(parts) != 3 or parts[0] != "base" or parts[1] != parts[2][:2]:
            self.send_error(400)
            return
        os.makedirs(os.path.join(root, "base", parts[1]), exist_ok=True)
        target = os.path.join(root, "base", parts[1], parts[2])
        with open(target + ".tmp", "wb") as f:
            f.write(body)
        os.replace(target + ".tmp", target)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


# ------------------------------------------------------------------------------------- helpers


def make_chunk(seed: int, size: int = 64 * 1024) -> tuple[str, bytes]:
    plain = random.Random(seed).randbytes(size)
    return chunk_id(plain), plain


def chunk_set(first_seed: int, count: int, size: int = 16 * 1024) -> dict[str, bytes]:
    """{id: stored blob}."""
    out = {}
    for n in range(count):
        cid, plain = make_chunk(first_seed + n, size)
        out[cid] = compress(plain)
    return out


def eventually(fn: Callable[[], T], timeout: float = 15.0) -> T:
    """fn's result once the store answers: a restarted redis-server says LOADING (an error, so
    StoreUnavailable) until it has read its data back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.05)  # poll interval, bounded by the deadline


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A server process on 127.0.0.1:port that a test can stop and start again on that port."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.argv[0]} did not listen on {HOST}:{self.port}") from None
                threading.Event().wait(0.02)  # poll interval, bounded by the deadline

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class CountingStore:
    """Delegates to a real store, counting the ids asked for."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.fetched: list[str] = []
        self._lock = threading.Lock()

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(ids)
        with self._lock:
            self.fetched += ids
        return self.inner.get(ids)

    def put(self, chunks: Mapping[str, bytes]) -> None:
        self.inner.put(chunks)

    def exists(self, ids: Iterable[str]) -> set[str]:
        return self.inner.exists(ids)

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    """redis-server with a password, saving on shutdown so a restart finds its chunks again."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = Server([REDIS_SERVER, "--port", str(port), "--bind", HOST, "--requirepass", REDIS_PASSWORD,
                     "--save", "3600 1", "--appendonly", "no", "--dir", str(data),
                     "--loglevel", "warning"], port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_url(server: Server, db: int = 0) -> str:
    return f"redis://:{REDIS_PASSWORD}@{HOST}:{server.port}/{db}"


@pytest.fixture
def static_http(tmp_path: Path) -> Iterator[tuple[Server, DirStore]]:
    """`python -m http.server` serving a DirStore's directory: the read-only HTTP store."""
    store = DirStore(tmp_path / "static")
    port = free_port()
    server = Server([sys.executable, "-m", "http.server", "--bind", HOST, "--directory", str(store.root),
                     str(port)], port)
    server.start()
    try:
        yield server, store
    finally:
        server.stop()


@pytest.fixture
def put_http(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """The writable HTTP server; chunks land in <root>/base/xx/<id>."""
    root = tmp_path / "put"
    root.mkdir()
    port = free_port()
    server = Server([sys.executable, "-c", PUT_SERVER, str(root), str(port), HTTP_USER, HTTP_PASSWORD,
                     HTTP_TOKEN], port)
    server.start()
    try:
        yield server, root
    finally:
        server.stop()


def put_url(server: Server, password: str = HTTP_PASSWORD) -> str:
    return f"http://{HTTP_USER}:{password}@{HOST}:{server.port}/base?token={HTTP_TOKEN}"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections are taken by the kernel and then never answered."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(64)
        yield s.getsockname()[1]


def no_secret_in(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


# --------------------------------------------------------------------------------------- stores


def test_dir_store_round_trip(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "d"))
    assert isinstance(store, DirStore)
    chunks = chunk_set(1, 5)
    store.put(chunks)
    missing = make_chunk(99)[0]
    assert store.get([*chunks, missing]) == chunks
    assert store.exists([*chunks, missing]) == set(chunks)
    for cid in chunks:
        assert (tmp_path / "d" / cid[:2] / cid).is_file()
    same = open_store(f"dir://{tmp_path / 'd'}")
    assert same.get(chunks) == chunks


def test_http_store_reads_any_static_server(static_http: tuple[Server, DirStore]) -> None:
    server, dir_store = static_http
    chunks = chunk_set(10, 12)
    dir_store.put(chunks)
    missing = make_chunk(98)[0]
    store = open_store(f"http://{HOST}:{server.port}/", timeout=5)
    try:
        assert isinstance(store, HttpStore)
        got = store.get([*chunks, missing])
        assert got == chunks
        assert store.exists([*chunks, missing]) == set(chunks)
        cid = next(iter(chunks))
        assert decompress(store.get([cid])[cid], cid) == decompress(chunks[cid], cid)
        with pytest.raises(StoreRefused, match=r"501.*does not accept uploads"):
            store.put({missing: compress(b"x")})
    finally:
        store.close()


def test_http_store_put_with_credentials(put_http: tuple[Server, Path]) -> None:
    server, root = put_http
    chunks = chunk_set(20, 25)
    store = HttpStore(put_url(server), timeout=5)
    try:
        assert store.exists(chunks) == set()
        store.put(chunks)
        for cid, blob in chunks.items():
            assert (root / "base" / cid[:2] / cid).read_bytes() == blob
        assert store.get(chunks) == chunks
        assert store.exists([*chunks, make_chunk(97)[0]]) == set(chunks)
    finally:
        store.close()

    wrong = HttpStore(put_url(server, password="not-it"), timeout=5)
    try:
        with pytest.raises(StoreRefused, match="401") as refused:
            wrong.put(chunk_set(60, 1))
        with pytest.raises(StoreUnavailable, match="401") as unavailable:
            wrong.get(list(chunks)[:1])
        for exc in (refused.value, unavailable.value):
            assert no_secret_in(str(exc)) and "not-it" not in str(exc)
    finally:
        wrong.close()


def test_http_store_down_then_back(put_http: tuple[Server, Path]) -> None:
    server, _ = put_http
    chunks = chunk_set(30, 3)
    store = HttpStore(put_url(server), timeout=3)
    try:
        store.put(chunks)
        assert store.get(chunks) == chunks  # leaves kept-alive connections behind
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as down:
            store.get(chunks)
        assert time.monotonic() - started < 3 + 1
        assert no_secret_in(str(down.value))
        server.start()  # same port, data still on disk; old connections are stale now
        assert store.get(chunks) == chunks
        assert store.exists(chunks) == set(chunks)
    finally:
        store.close()


def test_redis_store_round_trip_in_pipelined_batches(redis_server: Server) -> None:
    chunks = chunk_set(40, 70)  # more than two batches of 32
    store = open_store(redis_url(redis_server, db=2), timeout=5)
    other_db = RedisStore(redis_url(redis_server, db=3), timeout=5)
    try:
        assert isinstance(store, RedisStore) and store.batch == 32
        missing = make_chunk(96)[0]
        assert store.exists([*chunks, missing]) == set()
        store.put(chunks)
        assert store.get([*chunks, missing]) == chunks
        assert store.exists([*chunks, missing]) == set(chunks)
        assert other_db.get(chunks) == {}  # /db selects a database
        big_id, big_plain = make_chunk(95, 1 << 20)
        store.put({big_id: compress(big_plain)})
        assert decompress(store.get([big_id])[big_id], big_id) == big_plain
    finally:
        store.close()
        other_db.close()


def test_redis_store_wrong_password_is_unavailable_and_secret(redis_server: Server) -> None:
    store = RedisStore(f"redis://:wrong-one@{HOST}:{redis_server.port}", timeout=5)
    try:
        with pytest.raises(StoreUnavailable, match="AUTH") as exc:
            store.get([make_chunk(1)[0]])
        assert "wrong-one" not in str(exc.value)
    finally:
        store.close()


def test_redis_store_down_then_back(redis_server: Server) -> None:
    chunks = chunk_set(50, 5)
    store = RedisStore(redis_url(redis_server), timeout=3)
    try:
        store.put(chunks)
        assert store.get(chunks) == chunks  # a pooled connection stays open
        redis_server.stop()
        started = time.monotonic()
        for call in (store.get, store.exists, lambda ids: store.put({i: chunks[i] for i in ids})):
            with pytest.raises(StoreUnavailable) as down:
                call(list(chunks))
            assert no_secret_in(str(down.value))
        assert time.monotonic() - started < 3
        redis_server.start()
        assert eventually(lambda: store.get(chunks)) == chunks
    finally:
        store.close()


@pytest.mark.parametrize("scheme", ["redis", "zdb", "http"])
def test_a_silent_server_is_unavailable_within_the_timeout(silent_port: int, scheme: str) -> None:
    store = open_store(f"{scheme}://{HOST}:{silent_port}", timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get([make_chunk(1)[0]])
        assert 0.9 <= time.monotonic() - started < 3
    finally:
        store.close()


@pytest.mark.parametrize("protocol", [b"HTTP/1.0", b"HTTP/1.1"])
def test_a_trickling_http_server_meets_the_deadline(protocol: bytes) -> None:
    """A byte every 0.1 s keeps every single recv inside its timeout; the request as a whole
    must still end at `timeout`."""
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(4)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(protocol + b" 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.wait(0.1):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        return

        thread = threading.Thread(target=serve)
        thread.start()
        store = HttpStore(f"http://{HOST}:{listener.getsockname()[1]}", timeout=1)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.get([make_chunk(1)[0]])
            assert time.monotonic() - started < 2
        finally:
            stop.set()
            thread.join(10)
            store.close()


# ---------------------------------------------------------------------------------------- router


def test_router_by_prefix_with_fallback(tmp_path: Path, redis_server: Server,
                                        static_http: tuple[Server, DirStore]) -> None:
    server, mirror = static_http
    low = DirStore(tmp_path / "low")
    high = RedisStore(redis_url(redis_server), timeout=3)
    fallback = HttpStore(f"http://{HOST}:{server.port}", timeout=3)
    router = Router([("00", "7f", low), ("80", "ff", high)], [fallback])
    try:
        chunks = chunk_set(70, 40)
        router.put(chunks)
        lows = {c for c in chunks if c[0] in "01234567"}
        assert lows and lows != set(chunks)
        assert low.exists(chunks) == lows
        assert high.exists(chunks) == set(chunks) - lows
        assert router.get(chunks) == chunks
        assert router.exists(chunks) == set(chunks)

        only_mirrored = chunk_set(200, 6)  # in neither route: found through the fallback
        mirror.put(only_mirrored)
        assert router.get([*chunks, *only_mirrored]) == {**chunks, **only_mirrored}
        assert router.exists(only_mirrored) == set(only_mirrored)
        nowhere = make_chunk(94)[0]
        assert router.get([nowhere]) == {}
        assert router.exists([nowhere]) == set()

        # a route down: what other stores have is still served; the rest is "unreachable", not absent
        redis_server.stop()
        highs_mirrored = {c: b for c, b in only_mirrored.items() if c[0] not in "01234567"}
        lows_only = {c: chunks[c] for c in lows}
        assert router.get([*lows_only, *highs_mirrored]) == {**lows_only, **highs_mirrored}
        stranded = sorted(set(chunks) - lows)
        with pytest.raises(SomeStoresUnavailable) as exc:
            router.get([*lows_only, *stranded])
        assert exc.value.found == lows_only
        assert no_secret_in(str(exc.value))
        with pytest.raises(StoreUnavailable):
            router.exists(stranded)
        redis_server.start()
        assert eventually(lambda: router.get(chunks)) == chunks

        assert router.route_table() == [("00", "7f", f"dir://{low.root}"),
                                        ("80", "ff", f"redis://{HOST}:{redis_server.port}/0"),
                                        ("00", "ff", f"http://{HOST}:{server.port}")]
        assert no_secret_in(router.url) and no_secret_in(repr(router.route_table()))
    finally:
        router.close()


def test_router_overlapping_routes_replicate_and_uncovered_ids_need_a_fallback(tmp_path: Path) -> None:
    a, b, c = (DirStore(tmp_path / name) for name in "abc")
    chunks = chunk_set(300, 30)
    Router([("0", "f", a), ("00", "3f", b)]).put(chunks)
    assert a.exists(chunks) == set(chunks)
    assert b.exists(chunks) == {x for x in chunks if x[:2] <= "3f"}
    half = Router([("00", "7f", a)])
    highs = {x: blob for x, blob in chunks.items() if x[0] >= "8"}
    with pytest.raises(ValueError, match="no route"):
        half.put(highs)
    Router([("00", "7f", a)], [c]).put(highs)  # the first fallback takes what no route covers
    assert c.exists(chunks) == set(highs)
    with pytest.raises(ValueError):
        Router([("80", "7f", a)])
    with pytest.raises(ValueError):
        Router([("0g", "ff", a)])


def test_open_router_and_parse_route(tmp_path: Path, redis_server: Server) -> None:
    url = redis_url(redis_server)
    assert parse_route(f"00-7f={url}") == ("00", "7f", url)
    assert parse_route(url) == ("00", "ff", url)
    assert parse_route("/some/dir") == ("00", "ff", "/some/dir")
    router = open_router([("00", "7f", url), ("80", "ff", url)], [str(tmp_path / "fb")], timeout=3)
    try:
        stores = {id(st) for _, _, st in router.routes}
        assert len(stores) == 1  # one connection pool per distinct URL
        chunks = chunk_set(400, 10)
        router.put(chunks)
        assert router.get(chunks) == chunks
    finally:
        router.close()


# ------------------------------------------------------------------------------------ public_url


@pytest.mark.parametrize(("url", "public"), [
    (f"redis://:{REDIS_PASSWORD}@10.0.0.1:6379/2", "redis://10.0.0.1:6379/2"),
    (f"redis://admin:{REDIS_PASSWORD}@h:6379", "redis://h:6379"),
    (f"zdb://:{REDIS_PASSWORD}@hub.example:9900", "zdb://hub.example:9900"),
    (f"https://{HTTP_USER}:{HTTP_PASSWORD}@cdn.example/chunks?token={HTTP_TOKEN}", "https://cdn.example/chunks"),
    (f"http://cdn.example:8080/c?sig={HTTP_TOKEN}&x=1#frag", "http://cdn.example:8080/c"),
    (f"http://u:{HTTP_PASSWORD[:3]}/{HTTP_PASSWORD[3:]}@h/base", "http://h/base"),  # unquoted "/"
    (f"redis://:{REDIS_PASSWORD[:3]}?{REDIS_PASSWORD[3:]}@h:1", "redis://h:1"),  # unquoted "?"
    ("https://[::1]:8443/s", "https://[::1]:8443/s"),
    ("http://plain.example/base/", "http://plain.example/base/"),
    ("dir:///var/cache/chunks", "dir:///var/cache/chunks"),
    ("/var/cache/chunks", "/var/cache/chunks"),
])
def test_public_url_never_carries_secrets(url: str, public: str) -> None:
    assert public_url(url) == public
    assert no_secret_in(public)
    assert HTTP_PASSWORD[:3] not in public.replace("https", "")


def test_store_errors_and_urls_never_show_secrets(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    for url in (f"redis://:{REDIS_PASSWORD}@{HOST}:{port}", f"zdb://:{REDIS_PASSWORD}@{HOST}:{port}",
                f"http://{HTTP_USER}:{HTTP_PASSWORD}@{HOST}:{port}/b?token={HTTP_TOKEN}"):
        store = open_store(url, timeout=2)
        try:
            with pytest.raises(StoreUnavailable) as exc:
                store.get([make_chunk(1)[0]])
            assert no_secret_in(str(exc.value)), str(exc.value)
        finally:
            store.close()
    with pytest.raises(ValueError) as bad:
        open_store(f"ftp://u:{HTTP_PASSWORD}@h/x")
    assert no_secret_in(str(bad.value))
    with pytest.raises(ValueError, match="namespaces"):
        open_store(f"zdb://:{REDIS_PASSWORD}@{HOST}:9900/ns")


# ----------------------------------------------------------------------------------------- cache


def test_cache_ten_concurrent_readers_one_fetch_over_http(tmp_path: Path,
                                                          static_http: tuple[Server, DirStore]) -> None:
    server, dir_store = static_http
    cid, plain = make_chunk(500, 1 << 20)
    dir_store.put({cid: compress(plain)})
    counting = CountingStore(HttpStore(f"http://{HOST}:{server.port}", timeout=5))
    results: list[bytes] = []
    with ChunkCache(tmp_path / "cache", counting, timeout=10, memory=0) as cache:
        barrier = threading.Barrier(10)

        def read() -> None:
            barrier.wait()
            results.append(cache.get(cid))

        readers = [threading.Thread(target=read) for _ in range(10)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        assert results == [plain] * 10
        assert counting.fetched == [cid]
    counting.close()


def test_cache_tampered_chunk_over_http(tmp_path: Path, static_http: tuple[Server, DirStore]) -> None:
    server, dir_store = static_http
    cid, plain = make_chunk(501)
    blob = bytearray(compress(plain))
    blob[len(blob) // 2] ^= 0xFF
    dir_store.put({cid: bytes(blob)})
    store = HttpStore(f"http://{HOST}:{server.port}", timeout=5)
    with ChunkCache(tmp_path / "cache", store, timeout=10) as cache:
        with pytest.raises(ChunkCorrupt):
            cache.get(cid)
        assert cache.stats()["bytes"] == 0
        assert not any(p.is_file() for p in cache.directory.rglob("*"))
    store.close()


def test_cache_works_offline_once_warm(tmp_path: Path, redis_server: Server) -> None:
    chunks = {cid: plain for cid, plain in (make_chunk(600 + n, 256 * 1024) for n in range(6))}
    store = RedisStore(redis_url(redis_server), timeout=2)
    store.put({cid: compress(p) for cid, p in chunks.items()})
    counting = CountingStore(store)
    cold = make_chunk(699)[0]
    with ChunkCache(tmp_path / "cache", counting, timeout=5, memory=0) as cache:
        for cid, plain in chunks.items():
            assert cache.get(cid) == plain
        redis_server.stop()
        fetched = len(counting.fetched)
        for _ in range(3):
            for cid, plain in chunks.items():
                assert cache.get(cid) == plain
        assert len(counting.fetched) == fetched  # the store was never asked
        with pytest.raises(StoreUnavailable):
            cache.get(cold)
    # and after a restart of the reader, with the store still down
    with ChunkCache(tmp_path / "cache", counting, timeout=5) as cache:
        for cid, plain in chunks.items():
            assert cache.get(cid) == plain
        assert len(counting.fetched) == fetched + 1
    store.close()


def test_cache_store_stopped_mid_read_then_restarted(tmp_path: Path, redis_server: Server) -> None:
    chunks = {cid: plain for cid, plain in (make_chunk(700 + n, 1 << 20) for n in range(16))}
    store = RedisStore(redis_url(redis_server), timeout=2)
    store.put({cid: compress(p) for cid, p in chunks.items()})
    outcomes: list[tuple[str, float]] = []  # ("ok" | "bad" | error name, seconds)
    done = threading.Event()
    # a quota of four chunks: reading round and round keeps fetching, so the stop lands mid-stream
    with ChunkCache(tmp_path / "cache", store, timeout=3, quota=4 << 20, memory=0) as cache:
        def reader() -> None:
            while not done.is_set():
                for cid, plain in chunks.items():
                    started = time.monotonic()
                    try:
                        outcome = "ok" if cache.get(cid) == plain else "bad"
                    except Exception as exc:
                        outcome = type(exc).__name__
                    outcomes.append((outcome, time.monotonic() - started))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            wait_for(lambda: len(outcomes) >= 5, timeout=30, what="some chunks read")
            redis_server.stop()
            wait_for(lambda: any(o == "StoreUnavailable" for o, _ in outcomes), timeout=30,
                     what="reads failing while the store is down")
        finally:
            done.set()
            thread.join(60)
        assert not thread.is_alive()
        kinds = {outcome for outcome, _ in outcomes}
        assert kinds == {"ok", "StoreUnavailable"}, kinds  # an error, never wrong bytes
        assert max(seconds for _, seconds in outcomes) < 3 + 1  # never past the deadline
        assert cache.stats()["evictions"] > 0
        redis_server.start()
        eventually(lambda: store.exists(chunks))  # loaded its data back: it answers again
        for cid, plain in chunks.items():
            assert cache.get(cid) == plain
    store.close()


def test_cache_deadline_with_a_silent_store(tmp_path: Path, silent_port: int) -> None:
    store = RedisStore(f"redis://{HOST}:{silent_port}", timeout=30)  # the store alone would wait 30 s
    with ChunkCache(tmp_path / "cache", store, timeout=1) as cache:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="within 1s"):
            cache.get(make_chunk(1)[0])
        assert 0.9 <= time.monotonic() - started < 2.5
    store.close()
