"""The chunk cache over a real local directory store.

Fetches are counted by a wrapper that delegates every call to the real DirStore; where a test
needs readers to pile up behind one fetch, the wrapper holds the fetch until the test lets it go.
Failures of network stores (down, silent, restarted) are in tests/integration/test_stores.py.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from wire import wait_for

from g8os.fs.cache import ChunkCache
from g8os.fs.chunks import (
    ChunkCorrupt,
    ChunkMissing,
    StoreUnavailable,
    chunk_id,
    compress,
)
from g8os.fs.store import DirStore

pytestmark = pytest.mark.timeout(120)


def make_chunk(seed: int, size: int = 64 * 1024) -> tuple[str, bytes]:
    plain = random.Random(seed).randbytes(size)
    return chunk_id(plain), plain


class CountingStore:
    """Delegates to a real store, counting the ids asked for. With `gate`, every get waits for
    the gate first, so a test can make readers queue up behind a fetch that is in progress."""

    def __init__(self, inner: DirStore, gate: threading.Event | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.gate = gate
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self._lock = threading.Lock()

    @property
    def fetched(self) -> list[str]:
        with self._lock:
            return [c for call in self.calls for c in call]

    def get(self, ids: Iterable[str]) -> dict[str, bytes]:
        ids = list(ids)
        with self._lock:
            self.calls.append(ids)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        return self.inner.get(ids)

    def put(self, chunks: Mapping[str, bytes]) -> None:
        self.inner.put(chunks)

    def exists(self, ids: Iterable[str]) -> set[str]:
        return self.inner.exists(ids)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def store(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path / "store")


@pytest.fixture
def counting(store: DirStore) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def cache(tmp_path: Path, counting: CountingStore) -> Iterator[ChunkCache]:
    c = ChunkCache(tmp_path / "cache", counting, timeout=10, memory=0)
    try:
        yield c
    finally:
        c.close()


def put(store: DirStore, *plains: bytes) -> list[str]:
    store.put({chunk_id(p): compress(p) for p in plains})
    return [chunk_id(p) for p in plains]


def test_cold_then_warm_read(cache: ChunkCache, store: DirStore, counting: CountingStore) -> None:
    cid, plain = make_chunk(1)
    put(store, plain)
    assert cache.get(cid) == plain
    assert cache.get(cid) == plain
    assert counting.fetched == [cid]
    path = cache.directory / cid[:2] / cid
    assert path.read_bytes() == plain  # plain content, so a hit is a plain read
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["fetches"]) == (1, 1, 1)
    assert stats["bytes"] == len(plain) and stats["entries"] == 1


def test_ten_concurrent_readers_of_a_cold_chunk_cause_one_fetch(tmp_path: Path, store: DirStore) -> None:
    cid, plain = make_chunk(2, 1 << 20)
    put(store, plain)
    gate = threading.Event()
    counting = CountingStore(store, gate)
    results: list[bytes] = []
    errors: list[BaseException] = []
    with ChunkCache(tmp_path / "cache", counting, timeout=30, workers=4, memory=0) as cache:
        start = threading.Barrier(10)

        def read() -> None:
            start.wait()
            try:
                results.append(cache.get(cid))
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(10)]
        for t in readers:
            t.start()
        # every reader has missed and is waiting before the one fetch may proceed
        wait_for(lambda: cache.stats()["misses"] == 10, timeout=20, what="ten readers waiting")
        assert counting.entered.is_set()
        gate.set()
        for t in readers:
            t.join(30)
        assert not errors
        assert results == [plain] * 10
        assert counting.calls == [[cid]]
        assert cache.stats()["fetches"] == 1


def test_missing_chunk_then_present(cache: ChunkCache, store: DirStore) -> None:
    cid, plain = make_chunk(3)
    with pytest.raises(ChunkMissing):
        cache.get(cid)
    put(store, plain)  # no negative caching: the next read asks again
    assert cache.get(cid) == plain
    assert cache.stats()["fetch_errors"] == 1


def test_tampered_store_blob_is_corrupt_and_not_cached(cache: ChunkCache, store: DirStore) -> None:
    cid, plain = make_chunk(4)
    other = make_chunk(5)[1]
    store.put({cid: compress(other)})  # a valid zstd frame, of the wrong content
    with pytest.raises(ChunkCorrupt):
        cache.get(cid)
    cid2 = make_chunk(6)[0]
    store.put({cid2: b"\x28\xb5\x2f\xfd garbage"})  # not a zstd frame at all
    with pytest.raises(ChunkCorrupt):
        cache.get(cid2)
    cid3, plain3 = make_chunk(7)
    store.put({cid3: compress(plain3)[:-10]})  # truncated
    with pytest.raises(ChunkCorrupt):
        cache.get(cid3)
    assert cache.stats()["bytes"] == 0
    assert not any(p.is_file() for p in cache.directory.rglob("*"))
    # repaired at the source: served at once (nothing bad was remembered)
    (store.root / cid[:2] / cid).write_bytes(compress(plain))
    assert cache.get(cid) == plain


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow"])
def test_corrupt_cache_file_is_detected_and_fetched_again(
        cache: ChunkCache, store: DirStore, counting: CountingStore, damage: str) -> None:
    cid, plain = make_chunk(8)
    put(store, plain)
    assert cache.get(cid) == plain
    path = cache.directory / cid[:2] / cid
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    else:
        data += b"\0" * 10
    path.write_bytes(bytes(data))
    assert cache.get(cid) == plain
    assert path.read_bytes() == plain
    assert counting.fetched == [cid, cid]
    stats = cache.stats()
    assert stats["corrupt"] == 1 and stats["bytes"] == len(plain)


def test_corrupt_cache_file_found_on_start(tmp_path: Path, store: DirStore, counting: CountingStore) -> None:
    cid, plain = make_chunk(9)
    put(store, plain)
    (tmp_path / "cache" / cid[:2]).mkdir(parents=True)
    (tmp_path / "cache" / cid[:2] / cid).write_bytes(b"not the chunk")
    with ChunkCache(tmp_path / "cache", counting, memory=0) as cache:
        assert cache.stats()["entries"] == 1
        assert cache.get(cid) == plain
        assert cache.stats()["corrupt"] == 1 and counting.fetched == [cid]


def test_quota_evicts_least_recently_used(tmp_path: Path, store: DirStore, counting: CountingStore) -> None:
    size = 32 * 1024
    chunks = [make_chunk(100 + n, size) for n in range(5)]
    put(store, *(p for _, p in chunks))
    (a, pa), (b, _), (c, _), (d, _), (e, _) = chunks
    with ChunkCache(tmp_path / "cache", counting, quota=3 * size, memory=0) as cache:
        for cid, _ in chunks[:3]:
            cache.get(cid)
        assert cache.get(a) == pa          # a is now the most recently used
        cache.get(d)                       # over quota: b, the least recently used, goes
        assert not (cache.directory / b[:2] / b).exists()
        assert {x for x in (a, c, d) if cache.contains(x)} == {a, c, d}
        cache.get(e)                       # then c
        assert not cache.contains(c) and not (cache.directory / c[:2] / c).exists()
        stats = cache.stats()
        assert stats["evictions"] == 2 and stats["bytes"] == 3 * size <= cache.quota
        on_disk = sorted(p.name for p in cache.directory.glob("*/*"))
        assert on_disk == sorted([a, d, e])
        fetched = len(counting.fetched)
        assert cache.get(a) == pa and len(counting.fetched) == fetched  # still cached
        cache.get(b)                       # evicted: fetched again
        assert len(counting.fetched) == fetched + 1


def test_restart_keeps_lru_order_from_file_times(tmp_path: Path, store: DirStore,
                                                counting: CountingStore) -> None:
    size = 16 * 1024
    chunks = [make_chunk(200 + n, size) for n in range(4)]
    put(store, *(p for _, p in chunks))
    with ChunkCache(tmp_path / "cache", counting, memory=0) as cache:
        for cid, _ in chunks:
            cache.get(cid)
    now = time.time()
    ages = {chunks[0][0]: 10, chunks[1][0]: 40, chunks[2][0]: 30, chunks[3][0]: 20}  # seconds ago
    for cid, age in ages.items():
        os.utime(tmp_path / "cache" / cid[:2] / cid, (now - age, now - age))
    # a smaller quota on start: the two least recently used (ages 40 and 30) go
    with ChunkCache(tmp_path / "cache", counting, quota=2 * size, memory=0) as cache:
        assert cache.stats()["evictions"] == 2
        assert {cid for cid, _ in chunks if cache.contains(cid)} == {chunks[0][0], chunks[3][0]}
        fetched = len(counting.fetched)
        assert cache.get(chunks[0][0]) == chunks[0][1]
        assert len(counting.fetched) == fetched


def test_start_ignores_strangers_and_clears_stale_temporaries(tmp_path: Path, store: DirStore,
                                                               counting: CountingStore) -> None:
    cid, plain = make_chunk(10)
    sub = tmp_path / "cache" / cid[:2]
    sub.mkdir(parents=True)
    stale = sub / f".{cid}.1.2.tmp"
    stale.write_bytes(b"half a chunk")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    young = sub / f".{cid}.3.4.tmp"  # maybe another process's write in progress: left alone
    young.write_bytes(b"being written")
    (sub / "README").write_text("not a chunk")
    with ChunkCache(tmp_path / "cache", counting, memory=0) as cache:
        assert not stale.exists() and young.exists()
        assert cache.stats()["entries"] == 0
        put(store, plain)
        assert cache.get(cid) == plain


def test_not_a_chunk_id(cache: ChunkCache, counting: CountingStore) -> None:
    for bad in ["../../etc/passwd", "AB" * 32, "0" * 63, ""]:
        with pytest.raises(ChunkMissing):
            cache.get(bad)
    assert counting.calls == []


def test_prefetch_does_not_block_and_fills_the_cache(tmp_path: Path, store: DirStore) -> None:
    chunks = [make_chunk(300 + n) for n in range(20)]
    put(store, *(p for _, p in chunks))
    gate = threading.Event()
    counting = CountingStore(store, gate)
    with ChunkCache(tmp_path / "cache", counting, memory=0) as cache:
        started = time.monotonic()
        assert cache.prefetch([cid for cid, _ in chunks] + ["not-an-id"]) == 20
        assert time.monotonic() - started < 1.0  # returned although every fetch is held
        assert cache.prefetch([cid for cid, _ in chunks]) == 0  # already queued
        gate.set()
        wait_for(lambda: all(cache.contains(cid) for cid, _ in chunks), timeout=20, what="prefetched")
        fetched = len(counting.fetched)
        assert fetched == 20
        assert len(counting.calls) < 20  # batched: several ids per store call
        for cid, plain in chunks:
            assert cache.get(cid) == plain
        assert len(counting.fetched) == fetched


def test_a_demand_read_waits_for_a_queued_prefetch_instead_of_fetching_twice(
        tmp_path: Path, store: DirStore) -> None:
    cid, plain = make_chunk(11)
    put(store, plain)
    gate = threading.Event()
    counting = CountingStore(store, gate)
    with ChunkCache(tmp_path / "cache", counting, workers=1, memory=0) as cache:
        assert cache.prefetch([cid]) == 1
        wait_for(counting.entered.is_set, timeout=10, what="prefetch started")
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(cache.get(cid)))
        reader.start()
        wait_for(lambda: cache.stats()["misses"] == 1, timeout=10, what="demand read waiting")
        gate.set()
        reader.join(20)
        assert got == [plain]
        assert counting.fetched == [cid]


def test_deadline_then_the_late_fetch_still_fills_the_cache(tmp_path: Path, store: DirStore) -> None:
    cid, plain = make_chunk(12)
    put(store, plain)
    gate = threading.Event()
    counting = CountingStore(store, gate)
    with ChunkCache(tmp_path / "cache", counting, timeout=0.5, memory=0) as cache:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            cache.get(cid)
        assert 0.4 < time.monotonic() - started < 3.0
        gate.set()
        wait_for(lambda: cache.contains(cid), timeout=10, what="late fetch cached")
        assert cache.get(cid) == plain
        assert counting.fetched == [cid]


def test_close_releases_waiting_readers(tmp_path: Path, store: DirStore) -> None:
    cid, plain = make_chunk(13)
    put(store, plain)
    gate = threading.Event()
    counting = CountingStore(store, gate)
    cache = ChunkCache(tmp_path / "cache", counting, timeout=30, memory=0)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            cache.get(cid)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(counting.entered.is_set, timeout=10, what="fetch started")
        closer = threading.Thread(target=cache.close)
        closer.start()
        reader.join(10)
        assert not reader.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], StoreUnavailable)
        gate.set()  # the worker's fetch ends, so close() can join it
        closer.join(10)
        assert not closer.is_alive()
        with pytest.raises(StoreUnavailable):
            cache.get(cid)
    finally:
        gate.set()
        cache.close()


def test_memory_copies_serve_repeated_reads(tmp_path: Path, store: DirStore, counting: CountingStore) -> None:
    cid, plain = make_chunk(14)
    put(store, plain)
    with ChunkCache(tmp_path / "cache", counting, memory=1 << 20) as cache:
        assert cache.get(cid) == plain
        (cache.directory / cid[:2] / cid).unlink()  # the memory copy answers, verified already
        assert cache.get(cid) == plain
        assert counting.fetched == [cid]
