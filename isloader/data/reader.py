"""``ShardReader``: rows by global index, reading only the rows that are not held.

One way down (docs/architecture.md, "The data plane"): a read asks the process's memory
tier, then the node's disk tier (``DiskRows``), and fetches what is left through the
format (``FormatReader.read_rows``: a tar sample's span, a Parquet row's pages), through
the ``RangeFetcher``. Fetched rows are offered to both tiers with their density
``p_i / bytes_i`` (``p_i`` from the plan that drew them), so the caches keep the rows of
highest importance per byte and pruned rows never come back. A read returns the rows in
the order asked, duplicates included, with an ``index`` column.

A streaming pass (``read_units``: the initialization epoch, the uniform baseline) reads
whole units. During the initialization epoch q is measured as the trainer goes: streamed
rows wait in ``pending`` until their q is known (``settle``, a few tasks later), then are
offered like any other, so the cache starts the first sampled epoch with the rows of
highest q it saw.

When a whole dataset has been read and fits in half the memory tier, the reader keeps
it as one *resident* table: a sampled read is then one ``take`` (a small local dataset
reads as fast at random as in order).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.catalog import ShardCatalog
from isloader.data.fetch import RangeFetcher, ReaderCounters
from isloader.data.rowcache import DiskRows, MemoryRows, RowCodec

__all__ = ["ShardReader", "ReaderSettings", "default_cache_dir", "disk_tier_enabled"]

Importance = Callable[[np.ndarray], np.ndarray]  # indices -> p (0 for pruned)


def default_cache_dir() -> str:
    """``$ISLOADER_CACHE_DIR``, else ``~/.cache/isloader``."""
    return os.environ.get("ISLOADER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "isloader"
    )


@dataclass(frozen=True)
class ReaderSettings:
    """How a reader caches and fetches; pickled with it, so Ray tasks get the same.

    Args:
        columns: default columns to return (all when None).
        memory_bytes: the memory tier of this process (default 64 MiB), part of the
            cache budget; a dataset that fits in half of it is kept resident.
        cache_dir: the node's disk tier (default ``default_cache_dir()``; a ``{node}``
            in it names the node, for several nodes on one filesystem: the pipeline
            puts the Ray node id there, else the host name). ``""`` turns it off.
        cache_bytes: disk tier limit, in the bytes its file's used pages take; None: a
            quarter of the free space there, at most 64 GiB.
        cache_local: also cache datasets on the local filesystem (default False:
            they are local already).
        merge_gap: ranges of one shard closer than this many bytes are fetched in one
            request (default None: what a request costs in bytes, measured).
        concurrency: requests in flight at once (default 64).
        verify: refuse bytes of a shard that changed since indexing.
        pending_bytes: rows a streaming pass holds until their q is measured.
    """

    columns: tuple[str, ...] | None = None
    memory_bytes: int = 64 << 20
    cache_dir: str | None = None
    cache_bytes: int | None = None
    cache_local: bool = False
    merge_gap: int | None = None
    concurrency: int = 64
    verify: bool = True
    verify_every: float = 60.0
    pending_bytes: int = 32 << 20


def disk_tier_enabled(catalog: ShardCatalog, settings: ReaderSettings) -> bool:
    """Whether readers of ``catalog`` use a disk tier: on unless turned off, and for
    local datasets only with ``cache_local``."""
    if settings.cache_dir == "":
        return False
    protocols = catalog.filesystem().protocol
    local = "file" in (protocols if isinstance(protocols, tuple) else (protocols,))
    return settings.cache_local or not local


class ShardReader:
    """Random access to a catalog's rows; see the module docstring.

    Args:
        catalog: a ``ShardCatalog`` or the dataset URI (its index is loaded).
        settings: ``ReaderSettings``; keyword arguments override single fields.
    """

    def __init__(
        self,
        catalog: ShardCatalog | str,
        settings: ReaderSettings | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(catalog, str):
            catalog = ShardCatalog.open(catalog, storage_options)
        settings = settings or ReaderSettings()
        if overrides:
            if overrides.get("columns") is not None:
                overrides["columns"] = tuple(overrides["columns"])
            settings = replace(settings, **overrides)
        self.catalog = catalog
        self.settings = settings
        self._fetcher = RangeFetcher(
            catalog, verify=settings.verify, verify_every=settings.verify_every,
            concurrency=settings.concurrency, merge_gap=settings.merge_gap,
        )  # fmt: skip
        self._format = catalog.codec.reader(catalog, self._fetcher)
        self._tiers: dict[tuple[str, ...] | None, _Tiers] = {}
        self._resident: dict[tuple[str, ...] | None, pa.Table] = {}
        self._whole: dict[tuple[str, ...] | None, dict[int, pa.Table] | None] = {}
        self._pending: deque[tuple[tuple[str, ...] | None, np.ndarray, pa.Table]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()

    @property
    def columns(self) -> list[str] | None:
        """The default columns reads return (None: all)."""
        return list(self.settings.columns) if self.settings.columns is not None else None

    @property
    def counters(self) -> ReaderCounters:
        """What this reader's reads cost (bytes, requests, hits), shared with its fetcher."""
        return self._fetcher.counters

    @property
    def fetcher(self) -> RangeFetcher:
        """The ``RangeFetcher`` every shard byte goes through (timing, counters)."""
        return self._fetcher

    def __len__(self) -> int:
        return len(self.catalog)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles with every setting; caches start empty in the copy (the disk tier is
        found again where it lives)."""
        return ShardReader, (self.catalog, self.settings)

    def close(self) -> None:
        """Release the fetcher's client and the tiers' files."""
        self._fetcher.close()
        for tiers in filter(None, self._tiers.values()):
            tiers.close()
        self._tiers.clear()

    # -- importance ------------------------------------------------------------------

    def rank(self, epoch: int, importance: Importance) -> float:
        """At an epoch's start: every cached row gets its density from ``importance``
        (``p``, 0 for pruned rows, which leave); the disk tier does it once per node.
        Returns the share of the importance mass the caches hold (the expected hit
        rate of independent draws)."""
        self.settle(importance, everything=True)
        covered = 0.0
        for tiers in filter(None, self._tiers.values()):
            covered = max(covered, tiers.rank(epoch, importance, self._format))
        return covered

    def settle(self, importance: Importance, *, everything: bool = False, keep: int = 3) -> None:
        """Offer streamed rows whose q is measured by now (all but the last ``keep``
        tasks' rows, or ``everything``) to the caches, by density."""
        with self._lock:
            take = len(self._pending) if everything else max(0, len(self._pending) - keep)
            ready = [self._pending.popleft() for _ in range(take)]
            self._pending_bytes -= sum(t.nbytes for _, _, t in ready)
        for key, indices, table in ready:
            self._offer(key, indices, table, importance(indices))

    # -- reads -----------------------------------------------------------------------

    def read(
        self,
        indices: np.ndarray,
        columns: list[str] | None = None,
        *,
        probabilities: np.ndarray | None = None,
    ) -> pa.Table:
        """Rows at ``indices`` in that order (repeats allowed) plus an ``index`` column.

        ``probabilities`` (each draw's ``p``, from its plan) rank the rows fetched here
        for the caches.

        Raises:
            IndexOutOfRangeError: an index outside the catalog.
            CorruptShardError, ShardChangedError, MissingShardError: named, with the URI.
            InvalidArgumentError: unknown columns.
        """
        idx = np.asarray(indices, dtype=np.int64)
        self.catalog.units_of(idx)  # bounds check
        key = self._column_key(columns)
        resident = self._resident.get(key)
        if resident is not None:
            self.counters.add(cache_hits=len(idx))
            return self._finish(resident.take(pa.array(idx)), idx)
        unique, inverse = np.unique(idx, return_inverse=True)
        tiers = self._tiers_for(key)
        held = tiers.get(unique) if tiers is not None else {}
        hit = np.isin(unique, np.fromiter(held, np.int64, len(held)))
        missed = unique[~hit]
        draws_hit = int(hit[inverse].sum())
        self.counters.add(cache_hits=draws_hit, cache_misses=len(idx) - draws_hit)
        parts, order = [], []
        if len(held):
            found = unique[hit]
            parts.append(tiers.codec.decode([held[int(i)] for i in found]))
            order.append(found)
        if len(missed):
            fetched = self._format.read_rows(missed, list(key) if key is not None else None)
            stored = self._format.row_bytes(missed, list(key) if key is not None else None)
            self.counters.add(miss_bytes=int(stored.sum()))
            if tiers is not None and probabilities is not None:
                p = _per_index(idx, probabilities, missed)
                tiers.offer(missed, fetched, p / np.maximum(stored, 1.0))
            parts.append(fetched)
            order.append(missed)
        merged = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        where = np.argsort(np.concatenate(order), kind="stable")  # rows of ``unique``
        return self._finish(merged.take(pa.array(where[inverse])), idx)

    def read_units(
        self, units: np.ndarray, columns: list[str] | None = None, *, pending: bool = False
    ) -> pa.Table:
        """Whole units in order, every row (a streaming pass). A unit the caches hold
        whole is read from them; the others are fetched whole and offered to the caches,
        at uniform density, or with ``pending`` held until their q is measured
        (``settle``)."""
        units = np.asarray(units, dtype=np.int64)
        key = self._column_key(columns)
        b = self.catalog.unit_bounds
        spans = [np.arange(b[u], b[u + 1]) for u in units]
        index = np.concatenate(spans or [np.zeros(0, np.int64)]).astype(np.int64)
        resident = self._resident.get(key)
        if resident is not None:
            self.counters.add(cache_hits=len(index))
            return self._finish(resident.take(pa.array(index)), index)
        tiers = self._tiers_for(key)
        held = tiers.get(index) if tiers is not None else {}
        whole = [len(held) and all(int(i) in held for i in span) for span in spans]
        fetch = units[~np.array(whole, bool)] if len(units) else units
        names = list(key) if key is not None else None
        fetched = iter(self._format.read_units(fetch, names) if len(fetch) else [])
        tables = []
        for span, cached in zip(spans, whole, strict=True):
            rows = [held[int(i)] for i in span] if cached else None
            tables.append(tiers.codec.decode(rows) if rows else next(fetched))
        hits = sum(len(span) for span, cached in zip(spans, whole, strict=True) if cached)
        self.counters.add(cache_hits=hits, cache_misses=len(index) - hits)
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        self._note_whole(key, units, tables)
        if tiers is not None and len(fetch):
            new = np.concatenate([s for s, c in zip(spans, whole, strict=True) if not c])
            rows = table.take(pa.array(np.flatnonzero(np.isin(index, new))))
            self.counters.add(miss_bytes=int(self._format.row_bytes(new, names).sum()))
            if pending:
                self._hold(key, new, rows)
            else:
                self._offer(key, new, rows, np.full(len(new), 1.0 / len(self.catalog)))
        return self._finish(table, index)

    def _hold(self, key: Any, indices: np.ndarray, rows: pa.Table) -> None:
        """Keep streamed rows until their q is measured (bounded: the oldest go first)."""
        with self._lock:
            self._pending.append((key, indices, rows))
            self._pending_bytes += rows.nbytes
            while self._pending_bytes > self.settings.pending_bytes and len(self._pending) > 1:
                _, _, old = self._pending.popleft()
                self._pending_bytes -= old.nbytes

    def _finish(self, table: pa.Table, index: np.ndarray) -> pa.Table:
        result = table.append_column("index", pa.array(index, pa.int64()))
        self.counters.add(bytes_returned=result.nbytes)
        return result

    def _offer(self, key: Any, indices: np.ndarray, table: pa.Table, p: np.ndarray) -> None:
        tiers = self._tiers_for(key)
        if tiers is None:
            return
        stored = self._format.row_bytes(indices, list(key) if key is not None else None)
        tiers.offer(indices, table, p / np.maximum(stored, 1.0))

    def _column_key(self, columns: list[str] | None) -> tuple[str, ...] | None:
        columns = columns if columns is not None else self.columns
        return tuple(columns) if columns is not None else None

    def _note_whole(self, key: Any, units: np.ndarray, tables: list[pa.Table]) -> None:
        """Once every unit was read and all fit in half the memory tier, keep them as one
        resident table in global row order (until then the units read are held)."""
        with self._lock:
            held = self._whole.setdefault(key, {})
            if held is None:  # too large to be resident
                return
            held.update((int(u), t) for u, t in zip(units, tables, strict=True))
            if sum(t.nbytes for t in held.values()) > self.settings.memory_bytes // 2:
                self._whole[key] = None
            elif len(held) == self.catalog.num_units:
                ordered = [held[u] for u in range(self.catalog.num_units)]
                self._resident[key] = pa.concat_tables(ordered, promote_options="default")
                self._whole[key] = None

    def _tiers_for(self, key: tuple[str, ...] | None) -> _Tiers | None:
        """The caches of one column set (made on first use), or None when all are off."""
        with self._lock:
            return self._tiers[key] if key in self._tiers else self._make_tiers(key)

    def _make_tiers(self, key: tuple[str, ...] | None) -> _Tiers | None:
        s = self.settings
        disk = None
        if disk_tier_enabled(self.catalog, s):
            directory = s.cache_dir if s.cache_dir is not None else default_cache_dir()
            directory = directory.replace("{node}", os.uname().nodename)  # Ray: resolved before
            name = f"{self.catalog.identity}|{self.catalog.format}|{key!r}"
            path = os.path.join(directory, hashlib.sha1(name.encode()).hexdigest()[:20] + ".rows")
            limit = s.cache_bytes if s.cache_bytes is not None else _default_limit(directory)
            disk = DiskRows(path, limit)
        memory = MemoryRows(s.memory_bytes) if s.memory_bytes > 0 else None
        tiers = _Tiers(memory, disk) if (memory is not None or disk is not None) else None
        self._tiers[key] = tiers
        return tiers

    def cached_bytes(self) -> int:
        """Bytes every tier of this reader holds (disk: its used pages)."""
        return sum(t.nbytes for t in self._tiers.values() if t is not None)


def _per_index(draws: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` (one per draw) at the first draw of each of ``wanted``."""
    order = np.argsort(draws, kind="stable")
    first = np.searchsorted(draws[order], wanted)
    return np.asarray(values, float)[order[first]]


class _Tiers:
    """The memory and disk tiers of one column set, with the codec their rows use."""

    def __init__(self, memory: MemoryRows | None, disk: DiskRows | None) -> None:
        self.memory, self.disk = memory, disk
        self.codec: RowCodec | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.memory, self.disk) if t is not None)

    def get(self, indices: np.ndarray) -> dict[int, bytes]:
        held = self.memory.get(indices) if self.memory is not None else {}
        if self.disk is not None and len(held) < len(indices):
            rest = indices[~np.isin(indices, np.fromiter(held, np.int64, len(held)))]
            held.update(self.disk.get(rest))
        if held and self.codec is None:
            self.codec = RowCodec(self.disk.schema() if self.disk is not None else pa.schema([]))
        return held

    def offer(self, indices: np.ndarray, table: pa.Table, density: np.ndarray) -> None:
        if self.codec is None:
            self.codec = RowCodec(table.schema)
            if self.disk is not None:
                self.disk.remember_schema(table.schema)
        rows = self.codec.encode(table)
        for tier in (self.memory, self.disk):
            if tier is not None:
                tier.offer(indices, rows, density)

    def rank(self, epoch: int, importance: Importance, fmt: Any) -> float:
        def density(indices: np.ndarray) -> np.ndarray:
            p = importance(indices)
            return p / np.maximum(fmt.row_bytes(indices, None), 1.0)

        covered = []
        if self.memory is not None:
            self.memory.rank(density)
            covered.append(float(importance(self.memory.indices()).sum()))
        if self.disk is not None:
            self.disk.rank(epoch, density)
            covered.append(float(importance(self.disk.indices()).sum()))
        return max(covered, default=0.0)

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()


def _default_limit(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    stat = os.statvfs(directory)
    return int(min(stat.f_bavail * stat.f_frsize // 4, 64 << 30))
