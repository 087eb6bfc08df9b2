"""The chunk cache: verified plain chunks on local disk, in front of a (slow, remote) store.

Layout: <dir>/<id[:2]>/<id>, each file the chunk's plain content, so a hit is a plain read.

Why it is built this way:
- Verified on every read from disk, not only when written: a file can rot, be truncated by a
  crash (files are not fsynced; a rename can reach the disk before the data does), or be edited.
  A bad file is deleted and the chunk fetched again; nothing unverified is ever returned.
- Written to a temporary file and renamed, so a reader never sees half a chunk.
- Single flight: the first miss of an id starts one fetch on a worker thread; every other reader
  of that id waits on the same fetch. Ten readers of a cold chunk cost one download.
- Every `get` has a deadline (`timeout`): readers wait on the fetch with a timeout instead of
  running it themselves, so a store that hangs gives StoreUnavailable (EIO) in time, while the
  fetch goes on in the background and fills the cache if it ever completes.
- No negative caching: a missing or unreachable chunk is asked for again on the next read, so
  reads work again as soon as the store is back.
- A size quota with least-recently-used eviction. Access order lives in memory; on start it is
  rebuilt from the files' atime/mtime (hits touch the file), so order survives restarts.
- Offline once warm: a cached chunk is served without any call to the store.
- A few recently used chunks are also kept in memory (`memory` bytes): the kernel reads a 1 MiB
  chunk in 128 KiB pieces, and hashing the whole file for each piece would be 8× the work.

One ChunkCache per directory per process. Another process sharing the directory is tolerated
(files it adds are found on hit; a file it deletes is fetched again) but each process only counts
what it has seen against its quota.
"""

from __future__ import annotations

import errno
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from g8os.fs.chunks import (
    CHUNK_SIZE,
    ChunkCorrupt,
    ChunkError,
    ChunkMissing,
    StoreUnavailable,
    decompress,
    is_chunk_id,
    verify,
)
from g8os.fs.store import SomeStoresUnavailable, Store, public_url

DEMAND, PREFETCH, STOP = 0, 1, -1  # queue priorities: lower first; demand reads jump prefetch
BATCH = 16                         # ids per store call from one worker (one pipelined round trip)
MAX_QUEUED = 4096                  # prefetch stops queueing beyond this backlog
STALE_TMP = 3600.0                 # seconds after which a leftover .tmp file is debris of a crash


class _Flight:
    """One fetch of one id, shared by everyone who wants it."""

    __slots__ = ("chunk", "done", "error", "plain", "priority", "started")

    def __init__(self, chunk: str, priority: int) -> None:
        self.chunk = chunk
        self.priority = priority
        self.started = False
        self.done = threading.Event()
        self.plain: bytes | None = None
        self.error: ChunkError | None = None


def _fresh(error: ChunkError) -> ChunkError:
    """A new exception per waiter: one exception object raised in several threads at once would
    have its traceback rewritten under each of them."""
    try:
        return type(error)(*error.args)
    except TypeError:
        return StoreUnavailable(str(error))


class ChunkCache:
    """Verified chunks on local disk in front of `store`; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], store: Store, *, quota: int = 10 * 2**30,
                 timeout: float = 30.0, workers: int = 4, memory: int = 32 * 2**20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.quota = quota
        self.timeout = timeout
        self._memory_limit = memory
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()  # id -> size on disk, least recent first
        self._bytes = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._flights: dict[str, _Flight] = {}
        self._queue: queue.PriorityQueue[tuple[int, int, str | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._counts = dict.fromkeys(
            ("hits", "misses", "fetches", "evictions", "fetch_errors", "corrupt", "write_errors"), 0)
        self._closed = False
        self._scan()
        self._workers = [threading.Thread(target=self._work, name=f"chunk-cache-{n}", daemon=True)
                         for n in range(max(1, workers))]
        for worker in self._workers:
            worker.start()

    # ---------------------------------------------------------------------------- public API

    def get(self, chunk_id: str) -> bytes:
        """The verified plain content of a chunk, from memory, disk, or the store.

        Raises ChunkMissing (no store has it), ChunkCorrupt (what the store has does not match
        its id), StoreUnavailable (store down, or no answer within `timeout`).
        """
        if not is_chunk_id(chunk_id):
            raise ChunkMissing(f"not a chunk id: {chunk_id!r}")
        deadline = time.monotonic() + self.timeout
        while True:
            with self._lock:
                if self._closed:
                    raise StoreUnavailable("chunk cache closed")
                plain = self._memory.get(chunk_id)
                if plain is not None:
                    self._memory.move_to_end(chunk_id)
                    if chunk_id in self._index:
                        self._index.move_to_end(chunk_id)
                    self._counts["hits"] += 1
                    return plain
            plain = self._read_file(chunk_id)
            if plain is not None:
                with self._lock:
                    self._counts["hits"] += 1
                    self._remember(chunk_id, plain)
                return plain
            with self._lock:
                if chunk_id in self._index or chunk_id in self._memory:
                    continue  # a fetch finished between our read and now: read again, no new fetch
                self._counts["misses"] += 1
                flight = self._flights.get(chunk_id)
                if flight is None:
                    flight = self._flights[chunk_id] = _Flight(chunk_id, DEMAND)
                    self._queue.put((DEMAND, next(self._seq), chunk_id))
                elif flight.priority != DEMAND and not flight.started:
                    flight.priority = DEMAND  # a queued prefetch someone now waits for: move it up
                    self._queue.put((DEMAND, next(self._seq), chunk_id))
            break
        if not flight.done.wait(max(0.0, deadline - time.monotonic())):
            raise StoreUnavailable(f"chunk {chunk_id}: not fetched within {self.timeout:g}s "
                                   f"from {public_url(self.store.url)}")
        if flight.error is not None:
            raise _fresh(flight.error) from None
        assert flight.plain is not None
        return flight.plain

    def prefetch(self, ids: Iterable[str]) -> int:
        """Queue background fetches of chunks not cached yet; returns how many were queued.

        Never blocks: it only looks at the in-memory index, queues behind demand reads, and stops
        queueing (dropping the rest) once MAX_QUEUED fetches are waiting.
        """
        queued = 0
        with self._lock:
            if self._closed:
                return 0
            for chunk in ids:
                if self._queue.qsize() >= MAX_QUEUED:
                    break
                if not is_chunk_id(chunk) or chunk in self._index or chunk in self._flights:
                    continue
                self._flights[chunk] = _Flight(chunk, PREFETCH)
                self._queue.put((PREFETCH, next(self._seq), chunk))
                queued += 1
        return queued

    def contains(self, chunk_id: str) -> bool:
        """Whether the chunk is cached, as far as this process knows (no verification)."""
        with self._lock:
            return chunk_id in self._index

    def stats(self) -> dict[str, int]:
        """Counters since start: hits (memory or disk), misses, fetches (ids asked of the store),
        fetch_errors (ids that came back missing, corrupt or unreachable), corrupt (cache files
        found bad), evictions, write_errors; and bytes/entries now on disk, quota, in_flight."""
        with self._lock:
            return {**self._counts, "bytes": self._bytes, "entries": len(self._index),
                    "quota": self.quota, "in_flight": len(self._flights)}

    def close(self) -> None:
        """Stop the workers; readers still waiting get StoreUnavailable. The store is the
        caller's: it is not closed here."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._flights.values())
            self._flights.clear()
        for flight in waiting:
            flight.error = StoreUnavailable("chunk cache closed")
            flight.done.set()
        for _ in self._workers:
            self._queue.put((STOP, next(self._seq), None))
        deadline = time.monotonic() + 1.0  # a worker stuck in a hung store call is a daemon: let it be
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> ChunkCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ the disk

    def _path(self, chunk: str) -> Path:
        return self.directory / chunk[:2] / chunk

    def _scan(self) -> None:
        """Index what is already on disk, least recently used first, and trim to the quota."""
        found: list[tuple[int, str, int]] = []
        now = time.time()
        for sub in os.scandir(self.directory):
            if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 2):
                continue
            for entry in os.scandir(sub.path):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    if now - st.st_mtime > STALE_TMP:  # a younger one may be another process's
                        self._unlink(Path(entry.path))
                    continue
                if is_chunk_id(entry.name) and entry.name[:2] == sub.name and entry.is_file(
                        follow_symlinks=False):
                    found.append((max(st.st_atime_ns, st.st_mtime_ns), entry.name, st.st_size))
        found.sort()
        with self._lock:
            for _, chunk, size in found:
                self._index[chunk] = size
                self._bytes += size
            self._evict(self.quota)

    def _read_file(self, chunk: str) -> bytes | None:
        """The cached file's content if it is there and verifies; a bad file is removed."""
        path = self._path(chunk)
        try:
            with open(path, "rb") as f:
                data = f.read(CHUNK_SIZE + 1)
        except FileNotFoundError:
            with self._lock:
                self._forget(chunk)
            return None
        except OSError:  # unreadable (EIO on the cache disk): act as if absent, fetch again
            with self._lock:
                self._forget(chunk)
            self._unlink(path)
            return None
        if len(data) > CHUNK_SIZE or not verify(chunk, data):
            with self._lock:
                self._counts["corrupt"] += 1
                self._forget(chunk)
                self._unlink(path)
            return None
        with self._lock:
            if chunk in self._index:
                self._index.move_to_end(chunk)
            else:  # written by another process, or by us before a restart we did not scan
                self._add(chunk, len(data))
        try:
            os.utime(path)  # so the LRU order survives a restart (see _scan)
        except OSError:
            pass
        return data

    def _write_file(self, chunk: str, plain: bytes) -> None:
        """Into the cache via a temporary file and a rename; on ENOSPC make room once and retry.
        A chunk that cannot be written is still served, just not cached."""
        path = self._path(chunk)
        tmp = path.with_name(f".{chunk}.{os.getpid()}.{threading.get_ident()}.tmp")
        for attempt in (1, 2):
            try:
                path.parent.mkdir(exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(plain)
                os.replace(tmp, path)
                break
            except OSError as exc:
                self._unlink(tmp)
                if attempt == 1 and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    with self._lock:
                        self._evict(self._bytes // 2)
                    continue
                with self._lock:
                    self._counts["write_errors"] += 1
                return
        with self._lock:
            if chunk in self._index:
                self._index.move_to_end(chunk)
            else:
                self._add(chunk, len(plain))
            self._evict(self.quota)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    # ----------------------------------------------------------- bookkeeping (under _lock)

    def _add(self, chunk: str, size: int) -> None:
        self._index[chunk] = size
        self._bytes += size

    def _forget(self, chunk: str) -> None:
        size = self._index.pop(chunk, None)
        if size is not None:
            self._bytes -= size

    def _evict(self, limit: int) -> None:
        """Delete least recently used files until the cache holds at most `limit` bytes."""
        while self._bytes > limit and self._index:
            chunk, size = self._index.popitem(last=False)
            self._bytes -= size
            self._unlink(self._path(chunk))
            self._counts["evictions"] += 1

    def _remember(self, chunk: str, plain: bytes) -> None:
        """Keep a verified chunk in memory (bounded by `memory` bytes, least recent out first)."""
        if len(plain) > self._memory_limit or chunk in self._memory:
            return
        self._memory[chunk] = plain
        self._memory_bytes += len(plain)
        while self._memory_bytes > self._memory_limit:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= len(old)

    # ---------------------------------------------------------------------------- workers

    def _work(self) -> None:
        while True:
            priority, _, chunk = self._queue.get()
            if chunk is None:
                return
            batch = [chunk]
            while len(batch) < BATCH:  # more of the same priority, for one round trip
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0] != priority or item[2] is None:
                    self._queue.put(item)
                    break
                batch.append(item[2])
            flights = self._claim(batch)
            if flights:
                self._fetch(flights)

    def _claim(self, batch: list[str]) -> list[_Flight]:
        """The flights of `batch` nobody has started yet (an id can be queued twice when a
        prefetch is promoted to a demand read), now marked started."""
        claimed = []
        with self._lock:
            for chunk in dict.fromkeys(batch):
                flight = self._flights.get(chunk)
                if flight is None or flight.started:
                    continue
                flight.started = True
                claimed.append(flight)
        return claimed

    def _fetch(self, flights: list[_Flight]) -> None:
        ids = [f.chunk for f in flights]
        with self._lock:
            self._counts["fetches"] += len(ids)
        failure: ChunkError | None = None
        try:
            blobs = self.store.get(ids)
        except SomeStoresUnavailable as exc:
            blobs, failure = exc.found, StoreUnavailable(str(exc))
        except ChunkError as exc:
            blobs, failure = {}, exc
        except Exception as exc:  # a store bug or a local I/O error: still EIO, never a crash
            blobs = {}
            failure = StoreUnavailable(f"{public_url(self.store.url)}: {exc.__class__.__name__}: {exc}")
        for flight in flights:
            blob = blobs.get(flight.chunk)
            if blob is None:
                self._finish(flight, error=failure or ChunkMissing(
                    f"chunk {flight.chunk}: not in {public_url(self.store.url)}"))
                continue
            try:
                plain = decompress(blob, flight.chunk)
            except ChunkCorrupt as exc:
                self._finish(flight, error=exc)
                continue
            if not self._closed:
                self._write_file(flight.chunk, plain)
            self._finish(flight, plain=plain)

    def _finish(self, flight: _Flight, *, plain: bytes | None = None,
                error: ChunkError | None = None) -> None:
        with self._lock:
            if error is not None:
                self._counts["fetch_errors"] += 1
            elif flight.priority == DEMAND and plain is not None:
                self._remember(flight.chunk, plain)
            if self._flights.get(flight.chunk) is flight:
                del self._flights[flight.chunk]
            if flight.done.is_set():  # close() already answered its readers
                return
        flight.plain, flight.error = plain, error
        flight.done.set()
