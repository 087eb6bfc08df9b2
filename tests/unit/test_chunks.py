"""Chunks: ids, compression, verification — also from many threads at once (the builder, the
cache and the mount all use thread pools)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from g8os.fs import chunks

pytestmark = pytest.mark.timeout(60)


def test_round_trip_and_verification():
    plain = os.urandom(1000) * 50
    blob = chunks.compress(plain)
    chunk = chunks.chunk_id(plain)
    assert chunks.is_chunk_id(chunk)
    assert chunks.decompress(blob, chunk) == plain
    with pytest.raises(chunks.ChunkCorrupt):
        chunks.decompress(blob, "0" * 64)
    with pytest.raises(chunks.ChunkCorrupt):
        chunks.decompress(b"not zstd", chunk)
    with pytest.raises(chunks.ChunkCorrupt):
        chunks.decompress(blob[: len(blob) // 2], chunk)


def test_many_threads_at_once():
    samples = [os.urandom(4096) * (1 + i % 16) for i in range(64)]

    def round_trip(plain: bytes) -> bool:
        for _ in range(20):
            if chunks.decompress(chunks.compress(plain), chunks.chunk_id(plain)) != plain:
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, samples))
