"""The body of a read task, run in a worker process (a Ray worker, or a
``torch.utils.data`` worker).

A sampling task waits on the step clock until the trainer is close enough, draws its
plan from the store *then*, reads the rows through the data-plane reader (its caches,
then row-granular fetches), applies the user transform and returns numpy columns.
A ``WorkerState`` keeps readers and store clients across the tasks one worker runs, so
the caches stay warm: the read actor that runs the tasks owns it (and drops it with the
actor), a ``DataLoader`` worker keeps it on its copy of the dataset, and a Ray Data read
task makes one for itself. With caches and importance sampling, the first sampled task of
an epoch in each process ranks the caches by the store's current q (pruned rows leave;
the disk tier does it once per node), and the initialization epoch's streamed rows wait
in the reader until their q is measured (``ShardReader.settle``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ReaderSettings, ShardReader
from isloader.errors import TrainerStalledError
from isloader.layout import UnitLayout
from isloader.pipeline.clock import StepClock
from isloader.pipeline.plan import ReadTask
from isloader.store.api import ImportanceStore
from isloader.store.client import StoreConnection
from isloader.store.records import Plan

__all__ = [
    "TaskContext",
    "CatalogRef",
    "ReadStats",
    "WorkerState",
    "run_read_task",
    "table_to_numpy",
]

Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

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
    ``clock`` and ``prefetch`` bound plan staleness; ``caches``: rank the caches by the
    store's q (importance sampling with caches); ``pending``: hold streamed rows for the
    caches until their q is measured (the initialization epoch).
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
    caches: bool = False
    pending: bool = False


class WorkerState:
    """What one worker process keeps across the read tasks it runs: a reader (and so its
    caches) per loader, a store client per connection, and the epoch each loader's caches
    were last ranked for. ``close`` releases them all. Safe for the tasks of a threaded
    actor: each is made once, under a lock."""

    def __init__(self) -> None:
        self._readers: dict[str, ShardReader] = {}
        self._stores: dict[StoreConnection, ImportanceStore] = {}
        self._ranked: dict[str, tuple[int, float]] = {}  # loader -> (epoch, mass covered)
        self._lock = threading.RLock()

    def reader(self, context: TaskContext) -> ShardReader:
        """The reader of the loader's dataset in this process (made on first use)."""
        with self._lock:
            return self._reader(context)

    def _reader(self, context: TaskContext) -> ShardReader:
        reader = self._readers.get(context.loader_id)
        if reader is None:
            catalog, settings = context.catalog, context.reader
            if isinstance(catalog, CatalogRef):
                import ray

                catalog = ray.get(catalog.ref)
                if settings.cache_dir and "{node}" in settings.cache_dir:
                    node = ray.get_runtime_context().get_node_id()[:16]
                    directory = settings.cache_dir.replace("{node}", node)
                    settings = replace(settings, cache_dir=directory)
            reader = self._readers[context.loader_id] = ShardReader(catalog, settings)
        return reader

    def store(self, context: TaskContext) -> ImportanceStore:
        """The loader's store: the object itself in-process, else this process's client
        of its connection (made on first use)."""
        if context.store is None:
            raise RuntimeError("a sampling task needs a store")
        if not isinstance(context.store, StoreConnection):
            return context.store
        with self._lock:
            client = self._stores.get(context.store)
            if client is None:
                client = self._stores[context.store] = context.store.connect()
        return client

    def rank_once(self, context: TaskContext, reader: ShardReader, importance: Callable) -> float:
        """Once per epoch and process: rank the caches by the store's q; returns the mass
        they held then (the hit rate to expect of independent draws)."""
        with self._lock:
            ranked = self._ranked.get(context.loader_id)
            if ranked is None or ranked[0] != context.epoch:
                covered = reader.rank(context.epoch, importance)
                ranked = self._ranked[context.loader_id] = (context.epoch, covered)
        return ranked[1]

    def release(self, loader_id: str) -> None:
        """Drop one loader's reader (its memory tier, its files)."""
        with self._lock:
            reader = self._readers.pop(loader_id, None)
            self._ranked.pop(loader_id, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        """Close every reader and store client this state made."""
        for loader_id in list(self._readers):
            self.release(loader_id)
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for client in stores:
            client.close()


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


class _Importance:
    """``p_i = q_i / Q`` of the store (0 for pruned samples), for the caches. ``Q`` is
    asked of the store on the first call, not per task: most tasks never rank a cache,
    and a ``Stats`` round trip (a histogram over the table) would sit before every
    task's first fetch."""

    def __init__(self, store: ImportanceStore) -> None:
        self.store = store
        self.total: float | None = None

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        if self.total is None:
            self.total = max(self.store.stats().total_mass, 1e-300)
        return self.store.lookup(np.asarray(indices, np.int64)) / self.total


def _wait_for_trainer(
    clock: StepClock, task: ReadTask, prefetch: int, timeout: float = _CLOCK_TIMEOUT
) -> None:
    """Block until the trainer is within ``prefetch`` steps of the task's window.

    Raises:
        TrainerStalledError: it did not get there within ``timeout`` seconds.
    """
    wanted = task.first_step - prefetch
    finished = clock.wait(wanted, timeout)
    if finished < wanted:
        _, epoch, _, rank = task.seed
        raise TrainerStalledError(
            f"rank {rank} finished {finished} steps of epoch {epoch} in {timeout:.0f} s; "
            f"the window at step {task.first_step} may be drawn once it has finished "
            f"{wanted} (it stopped reporting: is it alive, and does it call report()?)"
        )


@dataclass(frozen=True)
class ReadStats:
    """What one task's read cost, for the loader's per-epoch counters."""

    bytes_fetched: int = 0
    requests: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    cache_mass_covered: float = 0.0
    miss_bytes: int = 0  # stored bytes of the rows that missed every cache
    fetch_seconds: float = 0.0
    cached_bytes: int = 0  # what this process's caches hold (disk: the node's)
    latency: float | None = None  # what the process's fetcher measured
    bandwidth: float | None = None


def run_read_task(
    task: ReadTask,
    context: TaskContext,
    plan: Plan | None = None,
    state: WorkerState | None = None,
) -> tuple[dict[str, np.ndarray], ReadStats]:
    """Rows of one task as numpy columns with ``index`` and ``weight``, and its costs.

    A sampling task draws its plan (after the step clock lets it) unless the caller
    drew it just in time and passes it as ``plan``. ``state`` keeps readers and store
    clients for the worker's next tasks; without one, the task makes and closes its own.

    Raises:
        TrainerStalledError: the trainer did not come within reach of the window.
    """
    if state is None:
        state = WorkerState()
        try:
            return run_read_task(task, context, plan, state)
        finally:
            state.close()
    reader = state.reader(context)
    with reader.counters.tally() as delta:  # this task's costs, not a concurrent one's
        columns, covered = _read(task, context, plan, state, reader)
    hits = int(delta["cache_hits"])
    timing = reader.fetcher.timing
    stats = ReadStats(
        bytes_fetched=int(delta["bytes_fetched"]),
        requests=int(delta["requests"]),
        cache_hits=hits,
        cache_lookups=hits + int(delta["cache_misses"]),
        cache_mass_covered=covered,
        miss_bytes=int(delta["miss_bytes"]),
        fetch_seconds=float(delta["fetch_seconds"]),
        cached_bytes=reader.cached_bytes(),
        latency=timing.latency,
        bandwidth=timing.bandwidth,
    )
    return columns, stats


def _read(
    task: ReadTask, context: TaskContext, plan: Plan | None, state: WorkerState,
    reader: ShardReader,
) -> tuple[dict[str, np.ndarray], float]:  # fmt: skip
    """The task's rows as transformed numpy columns, and the mass its caches held."""
    store = state.store(context) if context.store is not None else None
    importance = _Importance(store) if context.caches and store is not None else None
    covered = 0.0
    kept = slice(task.skip, task.skip + task.kept)  # the rows this task delivers
    if task.count:
        if plan is None:
            if context.clock is not None:
                _wait_for_trainer(context.clock, task, context.prefetch)
            layout, units = context.layout, context.units
            plan = state.store(context).sample(task.count, task.seed, layout=layout, units=units)
        plan = Plan(*(column[kept] for column in plan))  # read only the draws kept
        if importance is not None:
            covered = state.rank_once(context, reader, importance)
        table = reader.read(plan.indices, probabilities=plan.probabilities)
        weights = plan.weights
    elif task.units:
        if importance is not None and context.pending:
            reader.settle(importance)
        table = reader.read_units(np.array(task.units), pending=context.pending)
        weights = np.ones(table.num_rows)
    else:
        table = reader.read(np.array(task.indices))
        weights = np.ones(table.num_rows)
    if task.shuffle:
        order = np.random.default_rng(task.seed).permutation(table.num_rows)
        table, weights = table.take(pa.array(order)), weights[order]
    if not task.count and task.kept < table.num_rows:
        table, weights = table.slice(task.skip, task.kept), weights[kept]
    columns = table_to_numpy(table)
    columns["weight"] = weights.astype(np.float32)
    if context.transform is not None:
        columns = context.transform(columns)
    return columns, covered
