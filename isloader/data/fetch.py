"""Byte-range fetching: merged, concurrent, retried, checked against the catalog.

Every read of shard bytes goes through ``RangeFetcher``, which is also where the
request and byte counters are kept. Ranges of one shard closer than ``gap`` bytes
travel in one request (``fsspec.utils.merge_offset_ranges``); all requests of a
call go through one ``cat_ranges``, which s3fs runs concurrently.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from fsspec.utils import merge_offset_ranges

from isloader.data.catalog import ShardCatalog, shard_fingerprint
from isloader.errors import MissingShardError, ShardChangedError
from isloader.retry import RetryPolicy

__all__ = ["RangeFetcher", "ReaderCounters"]


def _transient(exc: BaseException) -> bool:
    """Connection drops and timeouts; s3fs has already retried throttling by then."""
    return isinstance(exc, (ConnectionError, TimeoutError))


@dataclass
class ReaderCounters:
    """What reads cost. Read amplification = ``bytes_fetched / bytes_returned``."""

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

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "bytes_fetched": self.bytes_fetched,
                "bytes_returned": self.bytes_returned,
                "requests": self.requests,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
            }

    @property
    def cache_hit_rate(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0

    @property
    def read_amplification(self) -> float:
        return self.bytes_fetched / self.bytes_returned if self.bytes_returned else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            **self.snapshot(),
            "cache_hit_rate": self.cache_hit_rate,
            "read_amplification": self.read_amplification,
        }


class RangeFetcher:
    """Fetches byte ranges of a catalog's shards (concurrently where fsspec can).

    Args:
        catalog: the shards and their indexed sizes and fingerprints.
        retry: retry policy for connection errors (default: 5 s budget).
        verify: check a shard's size and etag before reading it, and again once
            ``verify_every`` seconds have passed (a long-lived reader notices a shard
            rewritten in place).
    """

    def __init__(
        self,
        catalog: ShardCatalog,
        *,
        retry: RetryPolicy | None = None,
        verify: bool = True,
        verify_every: float = 60.0,
    ) -> None:
        self.catalog = catalog
        self.fs = catalog.filesystem()
        self.retry = retry or RetryPolicy()
        self.verify = verify
        self.verify_every = verify_every
        self.counters = ReaderCounters()
        self._verified: dict[int, float] = {}
        self._lock = threading.Lock()
        root = self.fs._strip_protocol(catalog.root).rstrip("/")
        self._paths = [f"{root}/{s.path}" for s in catalog.shards]

    def check(self, shard: int) -> None:
        """Raise unless the shard still has the size and fingerprint it was indexed with.

        Raises:
            MissingShardError: the shard is gone.
            ShardChangedError: its size or etag/mtime changed since indexing.
        """
        if not self.verify:
            return
        now = time.monotonic()
        with self._lock:
            checked = self._verified.get(shard)
        if checked is not None and now - checked < self.verify_every:
            return
        entry, uri = self.catalog.shards[shard], self.catalog.uri(shard)
        try:
            info = self.retry.call(lambda: self.fs.info(self._paths[shard]), _transient)
        except FileNotFoundError:
            raise MissingShardError(uri, "listed in the catalog but not found") from None
        if int(info["size"]) != entry.size:
            raise ShardChangedError(
                uri, f"size {info['size']} != {entry.size} at indexing (truncated or rewritten)"
            )
        if entry.fingerprint and shard_fingerprint(info) != entry.fingerprint:
            raise ShardChangedError(uri, "etag/mtime differs from the catalog: re-run the index")
        with self._lock:
            self._verified[shard] = now

    def fetch(
        self, shards: np.ndarray, starts: np.ndarray, ends: np.ndarray, gap: int = 0
    ) -> list[bytes]:
        """The bytes ``[start, end)`` of each shard, in the order asked; ranges of one
        shard closer than ``gap`` bytes are fetched as one request."""
        shards = np.asarray(shards, dtype=np.int64)
        if not len(shards):
            return []
        for shard in np.unique(shards):
            self.check(int(shard))
        paths = [self._paths[s] for s in shards]
        starts_l = [int(s) for s in starts]
        ends_l = [int(e) for e in ends]
        m_paths, m_starts, m_ends = merge_offset_ranges(paths, starts_l, ends_l, max_gap=gap)
        blobs = self.retry.call(
            lambda: self.fs.cat_ranges(m_paths, m_starts, m_ends, on_error="raise"), _transient
        )
        for blob in blobs:
            if isinstance(blob, Exception):
                raise blob
        self.counters.add(requests=len(blobs), bytes_fetched=sum(len(b) for b in blobs))
        # each asked range lies inside the last merged range of its path starting at or
        # before it (merged ranges of a path are sorted and disjoint)
        by_path: dict[str, list[int]] = {}
        for k, path in enumerate(m_paths):
            by_path.setdefault(path, []).append(k)
        firsts = {p: np.array([m_starts[k] for k in ks]) for p, ks in by_path.items()}
        out = []
        for path, start, end in zip(paths, starts_l, ends_l, strict=True):
            k = by_path[path][int(np.searchsorted(firsts[path], start, side="right")) - 1]
            out.append(blobs[k][start - m_starts[k] : end - m_starts[k]])
        return out
