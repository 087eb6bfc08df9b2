"""Chunks: the unit of flist data. Fixed 1 MiB pieces of a file, named by the BLAKE3-256 hash of
their plain content, stored zstd-compressed. Every byte served is verified against its name
first: a tampered or truncated chunk is an error, never wrong data.
"""

from __future__ import annotations

import threading

import blake3
import zstandard

CHUNK_SIZE = 1 << 20           # bytes of plain content per chunk (the last one of a file is shorter)
HASH = "blake3"                # recorded in every flist; the only algorithm of format version 1
ID_LENGTH = 64                 # hex digits of a chunk id
ZSTD_LEVEL = 3

# zstandard's (de)compressor objects are not thread-safe, and the builder, the cache and the
# mount all work from thread pools: one pair per thread.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


class ChunkError(Exception):
    """A chunk could not be served: reads of it fail with EIO."""


class ChunkMissing(ChunkError):
    """No store has the chunk."""


class ChunkCorrupt(ChunkError):
    """The chunk's content does not match its id (tampered, truncated, or not zstd)."""


class StoreUnavailable(ChunkError):
    """The store could not be reached (down, or too slow for the deadline)."""


def chunk_id(plain: bytes) -> str:
    return blake3.blake3(plain).hexdigest()


def is_chunk_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def compress(plain: bytes) -> bytes:
    return _compressor().compress(plain)


def decompress(blob: bytes, chunk: str) -> bytes:
    """The plain content of a stored chunk, verified against its id."""
    try:
        plain = _decompressor().decompress(blob, max_output_size=CHUNK_SIZE)
    except zstandard.ZstdError as exc:
        raise ChunkCorrupt(f"chunk {chunk}: not a zstd frame ({exc})") from None
    if chunk_id(plain) != chunk:
        raise ChunkCorrupt(f"chunk {chunk}: content does not match its id")
    return plain


def verify(chunk: str, plain: bytes) -> bool:
    return chunk_id(plain) == chunk
