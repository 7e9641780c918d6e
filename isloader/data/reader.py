"""``ShardReader``: rows by global index, reading only what holds them.

``read(indices)`` groups the indices by unit (a Parquet row group, or a tar sample),
reads each needed unit once (memory LRU first, then one merged range request per
unit, all issued together so fsspec can run them concurrently), and returns the rows
in the order asked, duplicates included, with an ``index`` column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.cache import ByteLRU, DiskCache
from isloader.data.catalog import ShardCatalog
from isloader.data.fetch import RangeFetcher, ReaderCounters
from isloader.data.parquet import ParquetFooters, column_chunk_range
from isloader.data.webdataset import samples_to_table
from isloader.errors import InvalidArgumentError

__all__ = ["ShardReader"]


class ShardReader:
    """Random access to a catalog's rows.

    Args:
        catalog: a ``ShardCatalog`` or the dataset URI (its index is loaded).
        columns: default columns to return (all when None).
        cache_bytes: memory LRU budget for decoded units (default 256 MiB).
        disk_cache_dir, disk_cache_bytes: optional local cache of fetched ranges.
        merge_gap: ranges of one shard closer than this many bytes are fetched in one
            request (default 64 KiB): fewer requests on latency-bound storage, at the
            cost of the bytes in between.
        verify: check each shard's size and etag against the catalog before use.
    """

    def __init__(
        self,
        catalog: ShardCatalog | str,
        *,
        columns: list[str] | None = None,
        cache_bytes: int = 256 << 20,
        disk_cache_dir: str | None = None,
        disk_cache_bytes: int = 4 << 30,
        storage_options: dict[str, Any] | None = None,
        merge_gap: int = 64 << 10,
        verify: bool = True,
    ) -> None:
        if isinstance(catalog, str):
            catalog = ShardCatalog.open(catalog, storage_options)
        self.catalog = catalog
        self.columns = columns
        disk = DiskCache(disk_cache_dir, disk_cache_bytes) if disk_cache_dir else None
        self._fetcher = RangeFetcher(catalog, disk_cache=disk, verify=verify)
        self._footers = ParquetFooters(self._fetcher)
        self._cache = ByteLRU(cache_bytes)
        self.merge_gap = merge_gap

    @property
    def counters(self) -> ReaderCounters:
        return self._fetcher.counters

    def __len__(self) -> int:
        return len(self.catalog)

    def __reduce__(self) -> tuple[Any, ...]:
        """Ray ships readers to tasks by their catalog; caches start empty there."""
        return _rebuild, (self.catalog, self.columns, self._cache.capacity)

    def read(self, indices: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Rows at ``indices`` in that order (repeats allowed) plus an ``index`` column."""
        idx = np.asarray(indices, dtype=np.int64)
        columns = columns if columns is not None else self.columns
        units, rows = self.catalog.units_of(idx)
        needed, inverse = np.unique(units, return_inverse=True)
        tables = self._units(needed, columns)
        sizes = np.array([t.num_rows for t in tables], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        merged = pa.concat_tables(tables) if tables else self._empty(columns)
        result = merged.take(pa.array(offsets[inverse] + rows))
        result = result.append_column("index", pa.array(idx))
        self.counters.add(bytes_returned=result.nbytes)
        return result

    def read_units(self, units: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Whole units in order (the streaming pass of the initialization epoch)."""
        columns = columns if columns is not None else self.columns
        tables = self._units(np.asarray(units, dtype=np.int64), columns)
        starts = self.catalog.unit_starts[units]
        index = np.concatenate(
            [s + np.arange(t.num_rows) for s, t in zip(starts, tables, strict=True)]
        )
        result = pa.concat_tables(tables).append_column("index", pa.array(index, pa.int64()))
        self.counters.add(bytes_returned=result.nbytes)
        return result

    # -- units -----------------------------------------------------------------------

    def _units(self, units: np.ndarray, columns: list[str] | None) -> list[pa.Table]:
        key_cols = tuple(columns) if columns is not None else None
        out: list[pa.Table | None] = []
        missing = []
        for i, unit in enumerate(units):
            table = self._cache.get((int(unit), key_cols))
            out.append(table)
            if table is None:
                missing.append(i)
        self.counters.add(cache_hits=len(units) - len(missing), cache_misses=len(missing))
        if missing:
            load = self._load_parquet if self.catalog.format == "parquet" else self._load_tar
            for i, table in zip(missing, load(units[missing], columns), strict=True):
                out[i] = table
                self._cache.put((int(units[i]), key_cols), table, table.nbytes)
        return out  # type: ignore[return-value]

    def _load_parquet(self, units: np.ndarray, columns: list[str] | None) -> list[pa.Table]:
        shards = self.catalog.unit_shard[units]
        groups = self.catalog.unit_local[units]
        starts, ends = np.empty(len(units), np.int64), np.empty(len(units), np.int64)
        for i, (shard, rg) in enumerate(zip(shards, groups, strict=True)):
            meta = self._footers.get(int(shard))[0]
            names = meta.schema.to_arrow_schema().names
            if columns is not None and (unknown := set(columns) - set(names)):
                raise InvalidArgumentError(f"unknown columns {sorted(unknown)}; have {names}")
            wanted = list(range(len(names))) if columns is None else _leaf_columns(meta, columns)
            starts[i], ends[i] = column_chunk_range(meta, int(rg), wanted)
        blobs = self._fetcher.fetch_merged(shards, starts, ends, self.merge_gap)
        return [
            self._footers.decode(int(shard), int(rg), columns, int(start), blob)
            for shard, rg, start, blob in zip(shards, groups, starts, blobs, strict=True)
        ]

    def _load_tar(self, units: np.ndarray, columns: list[str] | None) -> list[pa.Table]:
        shards = self.catalog.unit_shard[units]
        locals_ = self.catalog.unit_local[units]
        entries = [self.catalog.shards[s].samples[r] for s, r in zip(shards, locals_, strict=True)]
        m_shard, m_start, m_end, m_owner = [], [], [], []
        for u, (shard, (_, members)) in enumerate(zip(shards, entries, strict=True)):
            for ext, offset, length in members:
                if columns is None or ext in columns:
                    m_shard.append(shard)
                    m_start.append(offset)
                    m_end.append(offset + length)
                    m_owner.append((u, ext))
        blobs = self._fetcher.fetch_merged(
            np.array(m_shard), np.array(m_start), np.array(m_end), self.merge_gap
        )
        samples: list[dict[str, bytes]] = [{"__key__": key.encode()} for key, _ in entries]
        for (u, ext), blob in zip(m_owner, blobs, strict=True):
            samples[u][ext] = blob
        return [samples_to_table([s], columns) for s in samples]

    def _empty(self, columns: list[str] | None) -> pa.Table:
        return pa.table({c: pa.array([]) for c in columns or []})


def _leaf_columns(meta: Any, columns: list[str]) -> list[int]:
    """Indices of the leaf columns (column chunks) that make up top-level ``columns``."""
    wanted = set(columns)
    return [
        i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] in wanted
    ]


def _rebuild(catalog: ShardCatalog, columns: list[str] | None, cache_bytes: int) -> ShardReader:
    return ShardReader(catalog, columns=columns, cache_bytes=cache_bytes)
