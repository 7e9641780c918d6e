"""The body of a read task, run by Ray Data in a worker process.

A task draws its plan from the store *when it runs* (not when the dataset is
built), reads the rows through the data-plane reader, applies the user transform,
and returns numpy columns. Readers and store clients are kept per worker process,
so the row-group cache stays warm across the tasks a worker runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ShardReader
from isloader.pipeline.plan import ReadTask
from isloader.store.client import StoreClient, StoreConnection

__all__ = ["TaskContext", "run_read_task", "table_to_numpy"]

Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

_READERS: dict[str, ShardReader] = {}
_STORES: dict[StoreConnection, StoreClient] = {}


class CatalogRef:
    """Holds a Ray object ref without Ray resolving it on the way into the task."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


@dataclass(frozen=True)
class TaskContext:
    """What every read task of one loader needs (pickled once per task)."""

    loader_id: str
    catalog: CatalogRef | ShardCatalog
    columns: list[str] | None
    store: StoreConnection | None
    transform: Transform | None
    cache_bytes: int

    def reader(self) -> ShardReader:
        reader = _READERS.get(self.loader_id)
        if reader is None:
            catalog = self.catalog
            if isinstance(catalog, CatalogRef):
                import ray

                catalog = ray.get(catalog.ref)
            reader = ShardReader(catalog, columns=self.columns, cache_bytes=self.cache_bytes)
            _READERS[self.loader_id] = reader
        return reader

    def store_client(self) -> StoreClient:
        assert self.store is not None, "a sampling task needs a store connection"
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


def run_read_task(task: ReadTask, context: TaskContext) -> dict[str, np.ndarray]:
    """Rows of one task as numpy columns, with ``index``, ``weight`` and bookkeeping."""
    reader = context.reader()
    fetched_before = reader.counters.bytes_fetched
    hits, misses = reader.counters.cache_hits, reader.counters.cache_misses
    drawn_at = time.time()
    if task.count:
        plan = context.store_client().sample(task.count, task.seed)
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
    rows = len(columns["index"])
    fetched = reader.counters.bytes_fetched - fetched_before
    share = 1.0 / max(rows, 1)
    columns["__fetched"] = np.full(rows, fetched * share)
    columns["__hits"] = np.full(rows, (reader.counters.cache_hits - hits) * share)
    columns["__lookups"] = np.full(
        rows, (reader.counters.cache_hits + reader.counters.cache_misses - hits - misses) * share
    )
    columns["__drawn_at"] = np.full(rows, drawn_at)
    return columns
