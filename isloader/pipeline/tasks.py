"""The body of a read task, run in a worker process (a Ray worker, or a
``torch.utils.data`` worker).

A sampling task waits on the step clock until the trainer is close enough, draws
its plan from the store *then*, reads the rows through the data-plane reader,
applies the user transform and returns numpy columns. Readers and store clients
are kept per worker process, so the memory tier stays warm across the tasks a
worker runs; once per epoch a process refreshes its disk tier's view of the unit
masses and pruned rows from the store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ReaderSettings, ShardReader
from isloader.pipeline.clock import StepClock
from isloader.pipeline.plan import ReadTask
from isloader.store.api import ImportanceStore
from isloader.store.client import StoreConnection
from isloader.store.records import Plan, UnitLayout

__all__ = ["TaskContext", "CatalogRef", "ReadStats", "run_read_task", "table_to_numpy"]

Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

_READERS: dict[str, ShardReader] = {}
_STORES: dict[StoreConnection, ImportanceStore] = {}
_REFRESHED: dict[str, int] = {}
_CLOCK_TIMEOUT = 600.0


class CatalogRef:
    """Holds a Ray object ref without Ray resolving it on the way into the task."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


@dataclass(frozen=True)
class TaskContext:
    """What every read task of one loader epoch needs (pickled once per task).

    ``store`` is a connection (worker processes connect to it) or, in-process, a
    store object; ``units`` is ``G`` for locality-aware draws (0: independent);
    ``clock`` and ``prefetch`` bound plan staleness.
    """

    loader_id: str
    catalog: CatalogRef | ShardCatalog
    reader: ReaderSettings
    store: StoreConnection | ImportanceStore | None
    transform: Transform | None
    epoch: int = 0
    layout: UnitLayout | None = None
    units: int = 0
    clock: StepClock | None = None
    prefetch: int = 0
    refresh_importance: bool = False

    def shard_reader(self) -> ShardReader:
        reader = _READERS.get(self.loader_id)
        if reader is None:
            catalog = self.catalog
            if isinstance(catalog, CatalogRef):
                import ray

                catalog = ray.get(catalog.ref)
            reader = _READERS[self.loader_id] = ShardReader(catalog, self.reader)
        return reader

    def store_client(self) -> ImportanceStore:
        if self.store is None:
            raise RuntimeError("a sampling task needs a store")
        if not isinstance(self.store, StoreConnection):
            return self.store
        client = _STORES.get(self.store)
        if client is None:
            client = _STORES[self.store] = self.store.connect()
        return client


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """Arrow columns to numpy; list columns of equal length become 2-D arrays."""
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            flat = column.combine_chunks()
            width = len(flat[0]) if len(flat) else 0
            values = flat.flatten().to_numpy(zero_copy_only=False)
            out[name] = values.reshape(len(flat), width)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def _refresh(context: TaskContext, reader: ShardReader, store: ImportanceStore) -> None:
    """Once per epoch and process: the disk tier learns the unit masses and pruned rows."""
    if context.layout is None or _REFRESHED.get(context.loader_id) == context.epoch:
        return
    reader.set_importance(store.unit_stats(context.layout))
    _REFRESHED[context.loader_id] = context.epoch


@dataclass(frozen=True)
class ReadStats:
    """What one task's read cost, for the loader's per-epoch counters."""

    bytes_fetched: int = 0
    requests: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    cache_mass_covered: float = 0.0


def run_read_task(
    task: ReadTask, context: TaskContext, plan: Plan | None = None
) -> tuple[dict[str, np.ndarray], ReadStats]:
    """Rows of one task as numpy columns with ``index`` and ``weight``, and its costs.

    A sampling task draws its plan (after the step clock lets it) unless the caller
    drew it just in time and passes it as ``plan``.
    """
    reader = context.shard_reader()
    before = reader.counters.snapshot()
    if task.count:
        if plan is None:
            if context.clock is not None:
                context.clock.wait(task.first_step - context.prefetch, _CLOCK_TIMEOUT)
            layout, units = context.layout, context.units
            plan = context.store_client().sample(task.count, task.seed, layout=layout, units=units)
        if context.refresh_importance:
            _refresh(context, reader, context.store_client())
        table = reader.read(plan.indices)
        weights = plan.weights
    elif task.units:
        table = reader.read_units(np.array(task.units))
        weights = np.ones(table.num_rows)
    else:
        table = reader.read(np.array(task.indices))
        weights = np.ones(table.num_rows)
    if task.shuffle:
        order = np.random.default_rng(task.seed).permutation(table.num_rows)
        table, weights = table.take(pa.array(order)), weights[order]
    if task.skip:
        table, weights = table.slice(task.skip), weights[task.skip :]
    columns = table_to_numpy(table)
    columns["weight"] = weights.astype(np.float32)
    if context.transform is not None:
        columns = context.transform(columns)
    after = reader.counters.snapshot()
    hits = after["cache_hits"] - before["cache_hits"]
    stats = ReadStats(
        bytes_fetched=after["bytes_fetched"] - before["bytes_fetched"],
        requests=after["requests"] - before["requests"],
        cache_hits=hits,
        cache_lookups=hits + after["cache_misses"] - before["cache_misses"],
        cache_mass_covered=reader.covered_mass_share() if context.refresh_importance else 0.0,
    )
    return columns, stats
