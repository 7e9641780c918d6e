"""Caches for fetched data: importance sampling keeps revisiting the hot samples.

``ByteLRU`` holds decoded units (row groups, tar samples) in memory up to a byte
budget, segmented so that one-off reads cannot flush the hot set. ``DiskCache``
keeps raw fetched byte ranges in a local directory up to a size limit, evicting the
least recently used files.
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
    """A thread-safe segmented LRU bounded by the summed ``nbytes`` of its values.

    New entries go to a probation segment; a second hit promotes an entry to the
    protected segment (``protected_share`` of the budget). Importance sampling hits
    the hot samples again and again while the cold ones come one at a time, so the
    stream of one-off cold reads evicts other cold reads, not the hot set.
    """

    def __init__(self, capacity_bytes: int, protected_share: float = 0.8) -> None:
        self.capacity = capacity_bytes
        self._protected_cap = int(capacity_bytes * protected_share)
        self._probation: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._protected: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._probation_bytes = 0
        self._protected_bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._probation_bytes + self._protected_bytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._protected.get(key)
            if item is not None:
                self._protected.move_to_end(key)
                return item[0]
            item = self._probation.pop(key, None)
            if item is None:
                return None
            self._probation_bytes -= item[1]
            self._protected[key] = item
            self._protected_bytes += item[1]
            while self._protected_bytes > self._protected_cap:  # demote, not drop
                old_key, old = self._protected.popitem(last=False)
                self._protected_bytes -= old[1]
                self._probation[old_key] = old
                self._probation_bytes += old[1]
            self._evict()
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.capacity:
            return
        with self._lock:
            for segment in (self._probation, self._protected):
                old = segment.pop(key, None)
                if old is not None:
                    if segment is self._probation:
                        self._probation_bytes -= old[1]
                    else:
                        self._protected_bytes -= old[1]
            self._probation[key] = (value, nbytes)
            self._probation_bytes += nbytes
            self._evict()

    def _evict(self) -> None:
        while self.nbytes > self.capacity and self._probation:
            _, (_, size) = self._probation.popitem(last=False)
            self._probation_bytes -= size
        while self.nbytes > self.capacity and self._protected:
            _, (_, size) = self._protected.popitem(last=False)
            self._protected_bytes -= size


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
