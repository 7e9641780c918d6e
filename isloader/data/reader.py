"""``ShardReader``: rows by global index, reading only the units that hold them.

``read(indices)`` groups the indices by unit (a Parquet row group, or a run of tar
samples), takes each needed unit from the memory tier, then the node's disk tier
(``UnitCache``), and fetches the rest with one merged range request per unit (all
issued together so fsspec runs them concurrently). It returns the rows in the
order asked, duplicates included, with an ``index`` column.

Cached units hold only their active rows once the store's pruned flags are known
(``set_importance``): a pruned row is never drawn again, so the cache holds the
active set. A row that is not in its cached unit (readmitted since) is a miss.

When every unit of a column set has been read whole and they fit in half the memory
tier, the reader keeps them as one *resident* table in global row order: a sampled
read is then one ``take``, not a gather over hundreds of units (a dataset cached
locally reads as fast at random as in order).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.cache import ByteLRU, CacheCounters, UnitCache
from isloader.data.catalog import ShardCatalog
from isloader.data.fetch import RangeFetcher, ReaderCounters
from isloader.data.parquet import ParquetFooters, column_chunk_range
from isloader.data.webdataset import samples_to_table, unit_samples
from isloader.errors import CorruptShardError, InvalidArgumentError
from isloader.store.records import UnitStats

__all__ = ["ShardReader", "ReaderSettings", "default_cache_dir", "disk_tier_enabled"]

_ROW = "__row"
_TOO_LARGE: set[int] = set()  # marks a column set whose units cannot all stay resident


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
        memory_bytes: memory tier per process (default 256 MiB).
        cache_dir: the node's disk tier (default ``default_cache_dir()``; a
            ``{node}`` in it is replaced by the Ray node id, for several Ray nodes on
            one filesystem). ``""`` turns the disk tier off.
        cache_bytes: disk tier limit; None: a quarter of the free space there, at
            most 64 GiB.
        cache_local: also cache datasets on the local filesystem (default False:
            they are local already).
        merge_gap: ranges of one shard closer than this many bytes are fetched in one
            request (default 64 KiB).
        verify: check each shard's size and etag before reading it (and every
            ``verify_every`` seconds after).
    """

    columns: tuple[str, ...] | None = None
    memory_bytes: int = 256 << 20
    cache_dir: str | None = None
    cache_bytes: int | None = None
    cache_local: bool = False
    merge_gap: int = 64 << 10
    verify: bool = True
    verify_every: float = 60.0


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
            if "columns" in overrides and overrides["columns"] is not None:
                overrides["columns"] = tuple(overrides["columns"])
            settings = ReaderSettings(**{**settings.__dict__, **overrides})
        self.catalog = catalog
        self.settings = settings
        self._fetcher = RangeFetcher(
            catalog, verify=settings.verify, verify_every=settings.verify_every
        )
        self._footers = ParquetFooters(self._fetcher)
        self._memory = ByteLRU(settings.memory_bytes)
        self._resident: dict[tuple[str, ...] | None, pa.Table] = {}
        self._whole: dict[tuple[str, ...] | None, set[int]] = {}  # units read whole
        self._disk: dict[tuple[str, ...] | None, UnitCache | None] = {}
        self._pruned: np.ndarray | None = None
        self._mass: np.ndarray | None = None

    @property
    def columns(self) -> list[str] | None:
        return list(self.settings.columns) if self.settings.columns is not None else None

    @property
    def counters(self) -> ReaderCounters:
        return self._fetcher.counters

    @property
    def disk_counters(self) -> CacheCounters:
        """The disk tier's counters, summed over the column sets read."""
        total = CacheCounters()
        for cache in filter(None, self._disk.values()):
            for name in total.__dict__:
                setattr(total, name, getattr(total, name) + getattr(cache.counters, name))
        return total

    def __len__(self) -> int:
        return len(self.catalog)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles with every setting; caches start empty in the copy (the disk tier is
        found again where it lives)."""
        return ShardReader, (self.catalog, self.settings)

    # -- importance ------------------------------------------------------------------

    def set_importance(self, stats: UnitStats) -> None:
        """The store's per-unit mass and pruned flags (refreshed at each epoch end): the
        disk tier keeps units by mass, and caches only active rows."""
        self._mass = np.asarray(stats.mass, dtype=np.float64)
        self._pruned = np.asarray(stats.pruned, dtype=np.bool_)
        for cache in filter(None, self._disk.values()):
            cache.set_mass(self._mass)

    def covered_mass_share(self, columns: list[str] | None = None) -> float:
        """Share of the importance mass whose units the disk tier holds."""
        cache = self._disk_cache(self._column_key(columns))
        return cache.covered_mass_share() if cache is not None else 0.0

    # -- reads -----------------------------------------------------------------------

    def read(self, indices: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Rows at ``indices`` in that order (repeats allowed) plus an ``index`` column."""
        idx = np.asarray(indices, dtype=np.int64)
        key = self._column_key(columns)
        units, rows = self.catalog.units_of(idx)
        resident = self._resident.get(key)
        if resident is not None:
            self.counters.add(cache_hits=len(np.unique(units)))
            result = resident.take(pa.array(idx)).append_column("index", pa.array(idx))
            self.counters.add(bytes_returned=result.nbytes)
            return result
        needed, inverse = np.unique(units, return_inverse=True)
        tables = self._units(needed, key, full=False)
        positions = _positions(tables, inverse, rows)
        missing = np.unique(inverse[positions < 0])
        if missing.size:  # rows not in their cached unit: fetch those units whole
            for k, table in zip(missing, self._load(needed[missing], key), strict=True):
                tables[k] = table
                self._keep(int(needed[k]), key, table, disk=True)
            positions = _positions(tables, inverse, rows)
        merged = _concat([t.drop_columns([_ROW]) for t in tables]) if tables else None
        result = merged.take(pa.array(positions)) if merged is not None else pa.table({})
        result = result.append_column("index", pa.array(idx))
        self.counters.add(bytes_returned=result.nbytes)
        return result

    def read_units(self, units: np.ndarray, columns: list[str] | None = None) -> pa.Table:
        """Whole units in order, every row (a streaming pass)."""
        units = np.asarray(units, dtype=np.int64)
        key = self._column_key(columns)
        resident = self._resident.get(key)
        if resident is not None:
            b = self.catalog.unit_bounds
            tables = [resident.slice(b[u], b[u + 1] - b[u]) for u in units]
            self.counters.add(cache_hits=len(units))
            index = np.concatenate([np.arange(b[u], b[u + 1]) for u in units] or [[]])
            result = _concat(tables).append_column("index", pa.array(index, pa.int64()))
            self.counters.add(bytes_returned=result.nbytes)
            return result
        tables = self._units(units, key, full=True)
        index = np.concatenate(
            [
                self.catalog.unit_bounds[u] + np.arange(t.num_rows)
                for u, t in zip(units, tables, strict=True)
            ]
            or [np.zeros(0, np.int64)]
        )
        result = _concat([t.drop_columns([_ROW]) for t in tables])
        result = result.append_column("index", pa.array(index, pa.int64()))
        self.counters.add(bytes_returned=result.nbytes)
        return result

    # -- units -----------------------------------------------------------------------

    def _column_key(self, columns: list[str] | None) -> tuple[str, ...] | None:
        columns = columns if columns is not None else self.columns
        return tuple(columns) if columns is not None else None

    def _units(self, units: np.ndarray, key: tuple[str, ...] | None, full: bool) -> list:
        """Each unit's table (with ``__row``): memory tier, disk tier, then one fetch.

        ``full``: only tables holding every row of their unit count as hits.
        """
        rows = self.catalog.unit_rows
        disk = self._disk_cache(key)
        out: list[pa.Table | None] = []
        missing = []
        for i, unit in enumerate(units):
            u = int(unit)
            table = self._memory.get((u, key))
            if table is None and disk is not None:
                table = disk.get(u)
                if table is not None:
                    self._memory.put((u, key), table, table.nbytes)
            if table is not None and full and table.num_rows != rows[u]:
                table = None
            out.append(table)
            if table is None:
                missing.append(i)
        self.counters.add(cache_hits=len(units) - len(missing), cache_misses=len(missing))
        if missing:
            fetched = self._load(units[missing], key)
            for i, table in zip(missing, fetched, strict=True):
                out[i] = table
                self._keep(int(units[i]), key, table, disk=disk is not None)
        self._note_whole(key, units, out)
        return out

    def _note_whole(self, key: tuple[str, ...] | None, units: np.ndarray, tables: list) -> None:
        """Once every unit was read whole and all fit in half the memory tier, keep
        them as one resident table (and free the per-unit entries)."""
        whole = self._whole.setdefault(key, set())
        if whole is _TOO_LARGE:
            return
        rows = self.catalog.unit_rows
        whole.update(int(u) for u, t in zip(units, tables, strict=True) if t.num_rows == rows[u])
        if len(whole) < self.catalog.num_units:
            return
        tables = [self._memory.get((u, key)) for u in range(self.catalog.num_units)]
        complete = all(t is not None and t.num_rows == rows[u] for u, t in enumerate(tables))
        size = sum(t.nbytes for t in tables if t is not None)
        if size > self.settings.memory_bytes // 2:
            self._whole[key] = _TOO_LARGE
        elif complete:
            resident = _concat([t.drop_columns([_ROW]) for t in tables]).combine_chunks()
            self._resident[key] = resident
            for u in range(self.catalog.num_units):
                self._memory.discard((u, key))
        else:
            whole.clear()  # evicted meanwhile: count again

    def _keep(self, unit: int, key: tuple[str, ...] | None, table: pa.Table, disk: bool) -> None:
        """A fetched unit into both tiers (active rows only, once pruning is known)."""
        if self._pruned is not None:
            lo, hi = self.catalog.unit_bounds[unit], self.catalog.unit_bounds[unit + 1]
            active = ~self._pruned[lo:hi]
            if not active.all():
                table = table.filter(pa.array(active))
        self._memory.put((unit, key), table, table.nbytes)
        cache = self._disk_cache(key) if disk else None
        if cache is not None:
            cache.put(unit, table)

    def _load(self, units: np.ndarray, key: tuple[str, ...] | None) -> list[pa.Table]:
        columns = list(key) if key is not None else None
        if self.catalog.format == "parquet":
            tables = self._load_parquet(units, columns)
        else:
            tables = self._load_tar(units, columns)
        return [
            t.append_column(_ROW, pa.array(np.arange(t.num_rows, dtype=np.int32))) for t in tables
        ]

    def _load_parquet(self, units: np.ndarray, columns: list[str] | None) -> list[pa.Table]:
        shards = self.catalog.unit_shard[units]
        groups = self.catalog.unit_local[units]
        starts, ends = np.empty(len(units), np.int64), np.empty(len(units), np.int64)
        self._footers.prefetch(shards)
        for i, (shard, rg) in enumerate(zip(shards, groups, strict=True)):
            meta = self._footers.get(int(shard))[0]
            names = meta.schema.to_arrow_schema().names
            if columns is not None and (unknown := set(columns) - set(names)):
                raise InvalidArgumentError(f"unknown columns {sorted(unknown)}; have {names}")
            wanted = list(range(meta.num_columns)) if columns is None else _leaves(meta, columns)
            starts[i], ends[i] = column_chunk_range(meta, int(rg), wanted)
        blobs = self._fetcher.fetch(shards, starts, ends, gap=self.settings.merge_gap)
        return [
            self._footers.decode(int(shard), int(rg), columns, int(start), blob)
            for shard, rg, start, blob in zip(shards, groups, starts, blobs, strict=True)
        ]

    def _load_tar(self, units: np.ndarray, columns: list[str] | None) -> list[pa.Table]:
        spans = [self.catalog.unit_span(int(u)) for u in units]
        shards = self.catalog.unit_shard[units]
        blobs = self._fetcher.fetch(
            shards,
            np.array([s for s, _ in spans], np.int64),
            np.array([e for _, e in spans], np.int64),
            gap=self.settings.merge_gap,
        )
        tables = []
        for unit, shard, blob in zip(units, shards, blobs, strict=True):
            try:
                samples = unit_samples(blob, columns)
            except tarfile.TarError as exc:
                uri = self.catalog.uri(int(shard))
                raise CorruptShardError(uri, f"unit {unit} is not tar members ({exc})") from exc
            rows = int(self.catalog.unit_rows[unit])
            if len(samples) != rows:
                uri = self.catalog.uri(int(shard))
                raise CorruptShardError(
                    uri, f"unit {unit} holds {len(samples)} samples, not {rows}"
                )
            tables.append(samples_to_table(samples, columns))
        return tables

    def _disk_cache(self, key: tuple[str, ...] | None) -> UnitCache | None:
        """The disk tier for one column set (made on first use), or None when off."""
        if key in self._disk:
            return self._disk[key]
        s = self.settings
        if not disk_tier_enabled(self.catalog, s):
            self._disk[key] = None
            return None
        directory = s.cache_dir if s.cache_dir is not None else default_cache_dir()
        if "{node}" in directory:
            directory = directory.replace("{node}", _node_id())
        namespace = hashlib.sha1(f"{self.catalog.root}|{self.catalog.format}".encode())
        path = os.path.join(directory, namespace.hexdigest()[:16])
        limit = s.cache_bytes if s.cache_bytes is not None else _default_limit(directory)
        catalog = self.catalog
        columns = repr(key).encode()

        @functools.lru_cache(maxsize=1 << 16)
        def key_for(unit: int) -> str:
            shard = catalog.shards[int(catalog.unit_shard[unit])]
            where = f"{shard.path}|{shard.fingerprint}|{catalog.unit_bounds[unit]}"
            return hashlib.sha1(where.encode() + columns).hexdigest()[:24]

        mass = self._mass if self._mass is not None else catalog.unit_rows.astype(np.float64)
        cache = UnitCache(path, limit, key_for=key_for, default_mass=mass)
        self._disk[key] = cache
        return cache


def _positions(tables: list[pa.Table], which: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position of each asked row (unit ``which``, row ``rows``) in the concatenation of
    ``tables`` by their ``__row`` columns; -1 where a row is not there."""
    held = [t.column(_ROW).to_numpy() for t in tables]
    span = np.int64(1 << 32)  # keys (table, row) sort like the concatenation
    keys = np.concatenate(
        [k * span + h.astype(np.int64) for k, h in enumerate(held)] or [np.zeros(0, np.int64)]
    )
    asked = which.astype(np.int64) * span + rows
    pos = np.searchsorted(keys, asked)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    found = (keys[pos] == asked) if len(keys) else np.zeros(len(asked), bool)
    return np.where(found, pos, -1)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default")


def _leaves(meta: Any, columns: list[str]) -> list[int]:
    """Indices of the leaf columns (column chunks) that make up top-level ``columns``."""
    wanted = set(columns)
    return [
        i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] in wanted
    ]


def _node_id() -> str:
    """The Ray node id where Ray runs this process, else the host name."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()[:16]
    except ImportError:
        pass
    return os.uname().nodename


def _default_limit(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    stat = os.statvfs(directory)
    return int(min(stat.f_bavail * stat.f_frsize // 4, 64 << 30))
