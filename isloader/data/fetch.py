"""Byte-range fetching: merged, concurrent, retried, checked against the catalog.

Every read of shard bytes goes through ``RangeFetcher``, which is also where the
read-amplification counters are kept.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isloader.data.cache import DiskCache
from isloader.data.catalog import ShardCatalog, shard_fingerprint
from isloader.errors import MissingShardError, ShardChangedError

__all__ = ["RangeFetcher", "ReaderCounters", "merge_ranges"]

_TRANSIENT = (ConnectionError, TimeoutError, OSError)
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError)


@dataclass
class ReaderCounters:
    """Read amplification = ``bytes_fetched / bytes_returned``; the figure that matters."""

    bytes_fetched: int = 0
    bytes_returned: int = 0
    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to several counters at once (readers share them across threads)."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    @property
    def cache_hit_rate(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0

    @property
    def read_amplification(self) -> float:
        return self.bytes_fetched / self.bytes_returned if self.bytes_returned else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "bytes_fetched": self.bytes_fetched,
            "bytes_returned": self.bytes_returned,
            "requests": self.requests,
            "cache_hit_rate": self.cache_hit_rate,
            "read_amplification": self.read_amplification,
        }


def merge_ranges(
    starts: np.ndarray, ends: np.ndarray, gap: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge ranges closer than ``gap`` bytes; returns merged starts, ends and, for each
    input range, the merged range holding it."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    running_end = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > running_end[:-1] + gap
    group = np.cumsum(new) - 1
    merged_starts = s[new]
    merged_ends = np.maximum.reduceat(e, np.flatnonzero(new)) if len(s) else e
    owner = np.empty(len(s), dtype=np.int64)
    owner[order] = group
    return merged_starts, merged_ends, owner


class RangeFetcher:
    """Fetches byte ranges of a catalog's shards (concurrently where fsspec can)."""

    def __init__(
        self,
        catalog: ShardCatalog,
        *,
        disk_cache: DiskCache | None = None,
        retries: int = 4,
        verify: bool = True,
    ) -> None:
        self.catalog = catalog
        self.fs = catalog.filesystem()
        self.disk_cache = disk_cache
        self.retries = retries
        self.verify = verify
        self.counters = ReaderCounters()
        self._verified: set[int] = set()
        self._lock = threading.Lock()

    def _full_path(self, shard: int) -> str:
        root = self.fs._strip_protocol(self.catalog.root).rstrip("/")
        return f"{root}/{self.catalog.shards[shard].path}"

    def check(self, shard: int) -> None:
        """Raise unless the shard still has the size and fingerprint it was indexed with."""
        if not self.verify or shard in self._verified:
            return
        entry, uri = self.catalog.shards[shard], self.catalog.uri(shard)
        try:
            info = self._retry(self.fs.info, self._full_path(shard))
        except FileNotFoundError:
            raise MissingShardError(uri, "listed in the catalog but not found") from None
        if int(info["size"]) != entry.size:
            raise ShardChangedError(
                uri, f"size {info['size']} != {entry.size} at indexing (truncated or rewritten)"
            )
        if entry.fingerprint and shard_fingerprint(info) != entry.fingerprint:
            raise ShardChangedError(uri, "etag/mtime differs from the catalog: re-run the index")
        with self._lock:
            self._verified.add(shard)

    def fetch(self, shards: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        """The bytes ``[start, end)`` of each shard, in the order asked."""
        for shard in np.unique(shards):
            self.check(int(shard))
        out: list[bytes | None] = [None] * len(shards)
        todo = []
        for i, (shard, start, end) in enumerate(zip(shards, starts, ends, strict=True)):
            key = (self.catalog.shards[shard].path, self.catalog.shards[shard].fingerprint)
            cached = self.disk_cache.get((*key, int(start), int(end))) if self.disk_cache else None
            if cached is not None:
                out[i] = cached
            else:
                todo.append(i)
        if todo:
            paths = [self._full_path(int(shards[i])) for i in todo]
            blobs = self._retry(
                self.fs.cat_ranges,
                paths,
                [int(starts[i]) for i in todo],
                [int(ends[i]) for i in todo],
                on_error="raise",
            )
            self.counters.add(requests=len(todo), bytes_fetched=sum(len(b) for b in blobs))
            for i, blob in zip(todo, blobs, strict=True):
                if isinstance(blob, Exception):
                    raise blob
                out[i] = blob
                if self.disk_cache is not None:
                    entry = self.catalog.shards[shards[i]]
                    self.disk_cache.put(
                        (entry.path, entry.fingerprint, int(starts[i]), int(ends[i])), blob
                    )
        return out  # type: ignore[return-value]

    def fetch_merged(
        self, shards: np.ndarray, starts: np.ndarray, ends: np.ndarray, gap: int
    ) -> list[bytes]:
        """Like ``fetch``, but ranges of one shard closer than ``gap`` bytes travel in one
        request (remote storage is latency-bound: fewer, larger requests win)."""
        shards = np.asarray(shards, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if not len(shards):
            return []
        span = int(ends.max()) + gap + 1  # lay the shards end to end so they never merge
        keyed_starts, keyed_ends = starts + shards * span, ends + shards * span
        merged_starts, merged_ends, owner = merge_ranges(keyed_starts, keyed_ends, gap)
        merged_shards = merged_starts // span
        blobs = self.fetch(
            merged_shards, merged_starts - merged_shards * span, merged_ends - merged_shards * span
        )
        base = merged_starts[owner]
        return [
            blobs[o][s - b : e - b]
            for o, s, e, b in zip(owner, keyed_starts, keyed_ends, base, strict=True)
        ]

    def _retry(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        delay = 0.05
        for attempt in range(1, self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except _PERMANENT:
                raise
            except _TRANSIENT:
                if attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")
