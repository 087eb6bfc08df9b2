"""Chunk stores: where compressed chunks live, behind one interface.

Every backend speaks `get(ids) -> {id: blob}` (ids it lacks are absent), `put({id: blob})`
and `exists(ids) -> set(ids)`; blobs are chunks exactly as stored (zstd-compressed, see
fs/chunks.py). `open_store(url)` picks the backend from the URL:

    dir:///path, /path                    DirStore    <root>/<id[:2]>/<id>
    http://host[:port]/base, https://...  HttpStore   GET/PUT/HEAD base/<id[:2]>/<id> (any static server)
    redis://[[user]:password@]host[:port][/db]        RedisStore  GET/SET/EXISTS, pipelined
    zdb://[:password@]host[:port]                     RedisStore  the same commands, spoken to 0-db

A `Router` puts several stores behind the same interface, choosing by the id's hex prefix.

Failure model, which the cache and the mount build on: an id a store does not have is simply
absent from `get`'s answer (the caller decides it is missing); a store that cannot be reached, or
does not answer within its `timeout`, raises `chunks.StoreUnavailable` — never a hang, never a
partial silent answer. A store that answers but refuses a write raises `StoreRefused`.
Store URLs may carry credentials (`user:password@`, `?token=`); `public_url` is the only form
ever written into an flist.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from g8os.fs.chunks import CHUNK_SIZE, ChunkError, StoreUnavailable, is_chunk_id

DEFAULT_TIMEOUT = 10.0
T = TypeVar("T")
_MAX_BLOB = 2 * CHUNK_SIZE  # more than any compressed chunk: a bigger answer is not a chunk


class Store(Protocol):
    url: str  # as given, credentials included: never written into an flist (see public_url)

    def get(self, ids: Iterable[str]) -> dict[str, bytes]: ...
    def put(self, chunks: Mapping[str, bytes]) -> None: ...
    def exists(self, ids: Iterable[str]) -> set[str]: ...
    def close(self) -> None: ...


class StoreRefused(ChunkError):
    """The store answered but will not take the write (read-only server, no permission)."""


class SomeStoresUnavailable(StoreUnavailable):
    """Raised by a Router when a store that might hold some of the ids could not be asked.

    `found` carries what the other stores did return, so a batch fetch does not throw away the
    chunks it got because one shard is down.
    """

    def __init__(self, message: str, found: dict[str, bytes]) -> None:
        super().__init__(message)
        self.found = found


# ------------------------------------------------------------------------------------------ urls


def public_url(url: str) -> str:
    """`url` without anything secret: no user, no password, no query (tokens), no fragment.

    This is the only form of a store URL that goes into a built flist; whoever mounts it supplies
    credentials through a local route override.
    """
    if url.startswith("/"):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError("not a store URL (scheme://...)")
    if scheme.lower() == "dir":
        return url  # a local path: nothing secret, and "@" or "?" may be part of the name
    # Everything up to the last "@" is credentials, even a password with an unquoted "/", "?"
    # or "#" in it: a mangled public URL is an error someone sees, a leaked password is not.
    rest = rest.rpartition("@")[2]
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{rest}"


def _deadline_left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise StoreUnavailable(f"{what}: timed out")
    return left


# ------------------------------------------------------------------------------------ directory


class DirStore:
    """A local directory laid out like the HTTP store: <root>/<id[:2]>/<id>."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"dir://{self.root}"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, chunk: str) -> Path:
        return self.root / chunk[:2] / chunk

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        found = {}
        for chunk in ids:
            try:
                found[chunk] = self._path(chunk).read_bytes()
            except FileNotFoundError:
                pass
        return found

    def put(self, chunks: Mapping[str, bytes]) -> None:
        for chunk, blob in chunks.items():
            path = self._path(chunk)
            if path.exists():
                continue
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{chunk}.{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)

    def exists(self, ids: Iterable[str]) -> set[str]:
        return {chunk for chunk in ids if self._path(chunk).exists()}

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------- http


class HttpStore:
    """Chunks over HTTP: GET/PUT/HEAD <base>/<id[:2]>/<id>, so any static server (nginx,
    `python -m http.server`) serves a DirStore's directory as it is.

    Requests for several ids run concurrently on a small pool of threads, each keeping its own
    keep-alive `http.client` connection (http.client connections are not thread-safe, and one
    connection per worker is what makes a batch cheap). Credentials in the URL are sent as Basic
    auth, a query string (a token) is appended to every request; neither is ever logged or
    written out (`public_url`).
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, *, workers: int = 4) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) store URL: {public_url(base_url)}")
        self.url = base_url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._query = f"?{parts.query}" if parts.query else ""
        self._headers: dict[str, str] = {"User-Agent": "g8os-flist"}
        if parts.username is not None or parts.password is not None:
            userpass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode()).decode()
        self._public = public_url(base_url).rstrip("/")
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-store")
        self._closed = False

    # -- connections

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _path(self, chunk: str) -> str:
        if not is_chunk_id(chunk):
            raise ValueError(f"not a chunk id: {chunk!r}")
        return f"{self._prefix}/{chunk[:2]}/{chunk}{self._query}"  # the base path as given: already URL form

    def _request(self, method: str, chunk: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        """One request with a deadline of `timeout` for all of it (connect, send, every read).

        A kept-alive connection the server has since closed (idle timeout, restart) fails on first
        use; that request is retried once on a fresh connection — all our requests are idempotent.
        """
        what = f"{method} {self._public}/{chunk[:2]}/{chunk}"
        deadline = time.monotonic() + self.timeout
        path = self._path(chunk)
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                left = _deadline_left(deadline, what)
                conn.timeout = left
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                conn.request(method, path, body=body, headers=headers)
                sock = conn.sock  # getresponse hands it to the response when the server will close
                response = conn.getresponse()
                data = b"" if method == "HEAD" else self._read(sock, response, deadline, what)
                if method == "HEAD" or response.will_close or response.isclosed() is False:
                    response.close()
                if response.will_close or (sock is not None and sock.fileno() < 0):
                    conn.close()
                return response.status, response.reason, data
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    continue
                if isinstance(exc, TimeoutError):
                    raise StoreUnavailable(f"{what}: no answer within {self.timeout:g}s") from None
                raise StoreUnavailable(f"{what}: {exc.__class__.__name__}: {exc}") from None
            except StoreUnavailable:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _read(self, sock: socket.socket | None, response: http.client.HTTPResponse,
              deadline: float, what: str) -> bytes:
        """The body, read piecewise so a server that trickles bytes still meets the deadline
        (read1: one recv per call, where read(n) would wait for all n bytes)."""
        parts: list[bytes] = []
        size = 0
        while not response.isclosed():  # closed by http.client once the whole body is in
            left = _deadline_left(deadline, what)
            if sock is not None and sock.fileno() >= 0:
                sock.settimeout(left)
            part = response.read1(256 * 1024)
            if not part:
                break
            parts.append(part)
            size += len(part)
            if size > _MAX_BLOB:  # not a chunk; what we have fails verification, drop the rest
                response.close()
                if sock is not None:
                    sock.close()
                break
        return b"".join(parts)

    def _map(self, fn: Callable[[str], T], ids: Sequence[str]) -> list[T]:
        if self._closed:
            raise StoreUnavailable(f"{self._public}: store closed")
        if len(ids) == 1:
            return [self._pool.submit(fn, ids[0]).result()]
        return list(self._pool.map(fn, ids))

    # -- the interface

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        def one(chunk: str) -> bytes | None:
            status, reason, data = self._request("GET", chunk)
            if status == 200:
                return data
            if status in (404, 410):
                return None
            raise StoreUnavailable(f"GET {self._public}/{chunk[:2]}/{chunk}: {status} {reason}")

        wanted = list(dict.fromkeys(ids))
        return {c: blob for c, blob in zip(wanted, self._map(one, wanted), strict=True) if blob is not None}

    def put(self, chunks: Mapping[str, bytes]) -> None:
        def one(chunk: str) -> None:
            status, reason, _ = self._request("PUT", chunk, chunks[chunk])
            if status in (200, 201, 204):
                return
            where = f"PUT {self._public}/{chunk[:2]}/{chunk}"
            if status in (401, 403, 405, 501):
                raise StoreRefused(f"{where}: {status} {reason} (this server does not accept uploads "
                                   "there; upload to a store that allows writes)")
            raise StoreUnavailable(f"{where}: {status} {reason}")

        self._map(one, list(chunks))

    def exists(self, ids: Iterable[str]) -> set[str]:
        def one(chunk: str) -> bool:
            status, reason, _ = self._request("HEAD", chunk)
            if status == 200:
                return True
            if status in (404, 410):
                return False
            raise StoreUnavailable(f"HEAD {self._public}/{chunk[:2]}/{chunk}: {status} {reason}")

        wanted = list(dict.fromkeys(ids))
        return {c for c, there in zip(wanted, self._map(one, wanted), strict=True) if there}

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


# ---------------------------------------------------------------------------------------- redis


class _RespError(Exception):
    """An error reply (`-ERR ...`): the server is up but said no."""


class _Resp:
    """One connection speaking RESP2, just enough for GET/SET/EXISTS pipelines.

    Hand-written rather than redis-py so that 0-db works (no CLIENT SETINFO / HELLO / SELECT on
    connect, SET answering with the key instead of +OK) and so that every call has a hard
    deadline with no hidden retry-with-backoff behind it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    @classmethod
    def connect(cls, host: str, port: int, deadline: float, what: str) -> _Resp:
        try:
            sock = socket.create_connection((host, port), timeout=_deadline_left(deadline, what))
        except TimeoutError:
            raise StoreUnavailable(f"{what}: no connection within the deadline") from None
        except OSError as exc:
            raise StoreUnavailable(f"{what}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(args: Sequence[bytes | str]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        return b"".join(out)

    def pipeline(self, commands: Sequence[Sequence[bytes | str]], deadline: float, what: str) -> list[Any]:
        """Send every command at once, then read one reply each (errors come back as _RespError
        values, in place, so one refused SET does not hide the others' answers)."""
        self.sock.settimeout(_deadline_left(deadline, what))
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self._reply(deadline, what) for _ in commands]

    def _fill(self, deadline: float, what: str) -> None:
        self.sock.settimeout(_deadline_left(deadline, what))
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionResetError("connection closed by the server")
        self._buf += data

    def _line(self, deadline: float, what: str) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 2]
                return line
            self._fill(deadline, what)

    def _exact(self, size: int, deadline: float, what: str) -> bytes:
        while len(self._buf) < size + 2:
            self._fill(deadline, what)
        data = bytes(self._buf[:size])
        del self._buf[:size + 2]
        return data

    def _reply(self, deadline: float, what: str) -> Any:
        line = self._line(deadline, what)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return _RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size, deadline, what)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply(deadline, what) for _ in range(count)]
        raise ConnectionResetError(f"not a RESP reply: {line[:40]!r}")


class RedisStore:
    """Chunks as keys of a Redis-protocol server: redis-server, or 0-db (`zdb://`).

    Keys are the ids (hex text), values the stored blobs. Many ids cost one round trip per batch
    of `batch` commands (pipelined GET / SET / EXISTS; 0-db has no MGET). Connections are pooled;
    one that went stale (server restarted) is noticed on use and the call retried once on a new
    connection — GET, SET of a content-addressed key and EXISTS are all idempotent.
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, *, batch: int = 32) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "zdb") or not parts.hostname:
            raise ValueError(f"not a redis:// or zdb:// store URL: {public_url(url)}")
        self.url = url
        self.timeout = timeout
        self.batch = batch
        self.zdb = parts.scheme == "zdb"
        self._host = parts.hostname
        self._port = parts.port or (9900 if self.zdb else 6379)
        self._public = public_url(url)
        path = parts.path.strip("/")
        handshake: list[list[str]] = []
        if parts.password is not None:
            user, password = unquote(parts.username or ""), unquote(parts.password)
            handshake.append(["AUTH", user, password] if user else ["AUTH", password])
        if path:
            if self.zdb:
                raise ValueError(f"{self._public}: 0-db namespaces are not supported (use zdb://host:port)")
            if not path.isdigit():
                raise ValueError(f"{self._public}: the database must be a number")
            handshake.append(["SELECT", path])
        self._handshake = handshake
        self._idle: list[_Resp] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self, deadline: float) -> _Resp:
        conn = _Resp.connect(self._host, self._port, deadline, self._public)
        if self._handshake:
            try:
                replies = conn.pipeline(self._handshake, deadline, self._public)
            except BaseException:
                conn.close()
                raise
            for command, reply in zip(self._handshake, replies, strict=True):
                if isinstance(reply, _RespError):
                    conn.close()
                    raise StoreUnavailable(f"{self._public}: {command[0]} refused: {reply}")
        return conn

    def _call(self, commands: Sequence[Sequence[bytes | str]]) -> list[Any]:
        """One pipelined round trip under a deadline of `timeout`."""
        if self._closed:
            raise StoreUnavailable(f"{self._public}: store closed")
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._new(deadline)
                replies = conn.pipeline(commands, deadline, self._public)
            except StoreUnavailable:
                if conn is not None:
                    conn.close()
                raise
            except (OSError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    continue
                if isinstance(exc, TimeoutError):
                    raise StoreUnavailable(f"{self._public}: no answer within {self.timeout:g}s") from None
                raise StoreUnavailable(f"{self._public}: {exc.__class__.__name__}: {exc}") from None
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
            return replies
        raise AssertionError("unreachable")

    def _batches(self, items: list[str]) -> Iterable[list[str]]:
        for start in range(0, len(items), self.batch):
            yield items[start:start + self.batch]

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for part in self._batches(list(dict.fromkeys(ids))):
            for chunk, reply in zip(part, self._call([["GET", c] for c in part]), strict=True):
                if isinstance(reply, _RespError):
                    raise StoreUnavailable(f"{self._public}: GET {chunk}: {reply}")
                if isinstance(reply, bytes):
                    found[chunk] = reply
        return found

    def put(self, chunks: Mapping[str, bytes]) -> None:
        for part in self._batches(list(chunks)):
            replies = self._call([[b"SET", c.encode(), chunks[c]] for c in part])
            for chunk, reply in zip(part, replies, strict=True):
                if isinstance(reply, _RespError):  # 0-db answers SET with the key, redis with +OK
                    raise StoreRefused(f"{self._public}: SET {chunk} refused: {reply}")

    def exists(self, ids: Iterable[str]) -> set[str]:
        there: set[str] = set()
        for part in self._batches(list(dict.fromkeys(ids))):
            for chunk, reply in zip(part, self._call([["EXISTS", c] for c in part]), strict=True):
                if isinstance(reply, _RespError):
                    raise StoreUnavailable(f"{self._public}: EXISTS {chunk}: {reply}")
                if reply:
                    there.add(chunk)
        return there

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --------------------------------------------------------------------------------------- router


def _prefix(text: str) -> str:
    text = text.lower()
    if not 1 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a hex prefix: {text!r}")
    return text


class Router:
    """Several stores as one, chosen by the chunk id's hex prefix (0-fs's router, rfs's `-s`).

    `routes` are (start, end, store) with inclusive hex prefixes: ("00", "7f") takes every id
    whose first two digits are 00..7f. Overlapping routes replicate: `put` writes to each, `get`
    asks them in list order. For ids the routes did not yield, the `fallbacks` are asked in order
    (a mirror, a LAN cache, a hub). So a local override is just routes placed first.

    An unreachable store does not fail ids another store has; if ids stay missing and a store
    that might have had them was unreachable, `get` raises `SomeStoresUnavailable` (carrying
    what was found) rather than report them absent — the difference between "try again later"
    and "this chunk does not exist".
    """

    def __init__(self, routes: Sequence[tuple[str, str, Store]], fallbacks: Sequence[Store] = ()) -> None:
        self.routes = [(_prefix(start), _prefix(end), store) for start, end, store in routes]
        for start, end, _ in self.routes:
            if start[:len(end)] > end:
                raise ValueError(f"empty route range {start}-{end}")
        self.fallbacks = list(fallbacks)
        described = [f"{s}-{e}={public_url(st.url)}" for s, e, st in self.routes]
        described += [f"*={public_url(st.url)}" for st in self.fallbacks]
        self.url = "router:" + ",".join(described)

    @staticmethod
    def _covers(start: str, end: str, chunk: str) -> bool:
        return chunk[:len(start)] >= start and chunk[:len(end)] <= end

    def _order(self) -> list[Store]:
        """Distinct stores in the order they are asked: routes, then fallbacks."""
        seen: dict[int, Store] = {}
        for store in [st for _, _, st in self.routes] + self.fallbacks:
            seen.setdefault(id(store), store)
        return list(seen.values())

    def _candidates(self, store: Store, chunks: Iterable[str]) -> list[str]:
        if any(store is fb for fb in self.fallbacks):
            return list(chunks)
        return [c for c in chunks
                if any(st is store and self._covers(s, e, c) for s, e, st in self.routes)]

    def _ask(self, ids: Iterable[str],
             query: Callable[[Store, list[str]], Mapping[str, Any]]) -> dict[str, Any]:
        """Ask the stores in order for the ids still missing; `query(store, ids)` answers what that
        store holds. Ids missing everywhere while a store that may have them was down raise
        SomeStoresUnavailable (with what was found), not a silent "absent"."""
        missing = dict.fromkeys(ids)
        found: dict[str, Any] = {}
        failed: dict[str, str] = {}  # id -> why a store that may have it could not be asked
        for store in self._order():
            ask = self._candidates(store, missing)
            if not ask:
                continue
            try:
                got = query(store, ask)
            except ChunkError as exc:
                failed.update(dict.fromkeys(ask, str(exc)))
                continue
            for chunk, value in got.items():
                if chunk in missing:
                    found[chunk] = value
                    del missing[chunk]
        still = [c for c in missing if c in failed]
        if still:
            reasons = "; ".join(sorted(set(failed[c] for c in still)))
            raise SomeStoresUnavailable(f"{len(still)} chunk(s) unreachable: {reasons}", found)
        return found

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        return self._ask(ids, lambda store, ask: store.get(ask))

    def exists(self, ids: Iterable[str]) -> set[str]:
        return set(self._ask(ids, lambda store, ask: dict.fromkeys(store.exists(ask), True)))

    def put(self, chunks: Mapping[str, bytes]) -> None:
        """Each chunk to every route covering it; a chunk no route covers to the first fallback."""
        plan: dict[int, tuple[Store, dict[str, bytes]]] = {}
        for chunk, blob in chunks.items():
            targets = [st for s, e, st in self.routes if self._covers(s, e, chunk)]
            if not targets:
                if not self.fallbacks:
                    raise ValueError(f"no route covers chunk {chunk}")
                targets = self.fallbacks[:1]
            for store in targets:
                plan.setdefault(id(store), (store, {}))[1][chunk] = blob
        for store, part in plan.values():
            store.put(part)

    def route_table(self) -> list[tuple[str, str, str]]:
        """(start, end, public url) rows as an flist records them; fallbacks as ("00", "ff", url)
        after the routes, since a full-range route tried last is what a fallback is."""
        rows = [(s, e, public_url(st.url)) for s, e, st in self.routes]
        rows += [("00", "ff", public_url(st.url)) for st in self.fallbacks]
        return rows

    def close(self) -> None:
        for store in self._order():
            store.close()


def parse_route(spec: str) -> tuple[str, str, str]:
    """"00-7f=URL" → ("00", "7f", URL); a bare URL is the whole range ("00", "ff")."""
    head, sep, url = spec.partition("=")
    if sep and "-" in head and "/" not in head:
        start, _, end = head.partition("-")
        return _prefix(start), _prefix(end), url
    return "00", "ff", spec


def open_router(routes: Iterable[tuple[str, str, str]], fallbacks: Iterable[str] = (), *,
                timeout: float = DEFAULT_TIMEOUT) -> Router:
    """A Router over store URLs; one store per distinct URL, however many routes name it."""
    opened: dict[str, Store] = {}

    def store(url: str) -> Store:
        if url not in opened:
            opened[url] = open_store(url, timeout=timeout)
        return opened[url]

    return Router([(s, e, store(u)) for s, e, u in routes], [store(u) for u in fallbacks])


def open_store(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Store:
    """The store a URL names: dir:///path or /path, http(s)://, redis://, zdb://."""
    if url.startswith("dir://"):
        return DirStore(url[len("dir://"):])
    if url.startswith("/"):
        return DirStore(url)
    scheme = url.partition("://")[0].lower()
    if scheme in ("http", "https"):
        return HttpStore(url, timeout)
    if scheme in ("redis", "zdb"):
        return RedisStore(url, timeout)
    raise ValueError(f"unsupported store URL: {public_url(url) if '://' in url else url}")
