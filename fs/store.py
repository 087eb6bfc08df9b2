"""Chunk stores: where compressed chunks live, behind one interface.

Every backend speaks `get(ids) -> {id: blob}` (ids it lacks are absent), `put({id: blob})`
and `exists(ids) -> set(ids)`; blobs are chunks exactly as stored (zstd-compressed, see
fs/chunks.py). `open_store(url)` picks the backend from the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol


class Store(Protocol):
    url: str  # as given, credentials included: never written into an flist (see public_url)

    def get(self, ids: Iterable[str]) -> dict[str, bytes]: ...
    def put(self, chunks: Mapping[str, bytes]) -> None: ...
    def exists(self, ids: Iterable[str]) -> set[str]: ...
    def close(self) -> None: ...


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


def open_store(url: str, *, timeout: float = 10.0) -> Store:
    """dir:///path or /path → DirStore. Other schemes (http, redis, zdb) join here."""
    if url.startswith("dir://"):
        return DirStore(url[len("dir://"):])
    if url.startswith("/"):
        return DirStore(url)
    raise ValueError(f"unsupported store URL: {url}")
