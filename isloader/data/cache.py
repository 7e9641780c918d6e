"""Caches for fetched data: importance sampling keeps revisiting the hot samples.

``ByteLRU`` holds decoded units (row groups, tar samples) in memory up to a byte
budget. ``DiskCache`` keeps raw fetched byte ranges in a local directory up to a
size limit, evicting the least recently used files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

__all__ = ["ByteLRU", "DiskCache"]


class ByteLRU:
    """A thread-safe LRU bounded by the summed ``nbytes`` of its values."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.capacity:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size


class DiskCache:
    """Fetched byte ranges as files under ``directory``, at most ``limit_bytes`` in all."""

    def __init__(self, directory: str | os.PathLike[str], limit_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.limit = limit_bytes
        self._lock = threading.Lock()
        self._bytes = sum(p.stat().st_size for p in self.directory.glob("*.bin"))

    def _path(self, key: tuple[Any, ...]) -> Path:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        return self.directory / f"{digest}.bin"

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        os.utime(path)  # recency for eviction
        return data

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        if len(data) > self.limit:
            return
        path = self._path(key)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._lock:
            self._bytes += len(data)
            if self._bytes > self.limit:
                self._evict()

    def _evict(self) -> None:
        files = sorted(self.directory.glob("*.bin"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.limit * 0.9:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
        self._bytes = total
