"""A worker's read tasks against the store: what they ask of it, and how often. Tasks
run in-process (``run_read_task``) with one ``WorkerState``, as a read actor runs them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from isloader.data.catalog import ShardCatalog
from isloader.pipeline.core import LoaderCore
from isloader.pipeline.tasks import WorkerState, run_read_task
from isloader.store.local import LocalStore
from isloader.store.records import TableStats

N = 200


class CountingStore(LocalStore):
    """A local store that counts the ``stats`` calls made of it."""

    stats_calls = 0

    def stats(self) -> TableStats:
        self.stats_calls += 1
        return super().stats()


def test_sampling_tasks_ask_the_store_for_its_totals_once_per_epoch_not_per_task(
    tmp_path,
) -> None:
    table = pa.table({"x": np.arange(N, dtype=np.float64), "y": np.arange(N) % 3})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=20)
    catalog = ShardCatalog.build(str(tmp_path))
    store = CountingStore(N)
    q = np.random.default_rng(0).lognormal(0, 1, N)
    store.update(np.arange(N), q)
    # a memory tier smaller than twice the data, so the rows are cached, not resident
    core = LoaderCore(catalog, store=store, batch_size=8, window=2, seed=1, memory_bytes=4000)
    assert core.caches  # importance sampling with a memory tier: tasks rank the caches
    state = WorkerState()
    try:
        context = core.task_context(0, catalog=catalog, store=store, clock=None)
        for task in core.epoch_tasks(0):  # the initialization epoch fills the caches
            run_read_task(task, context, state=state)
        for epoch in (1, 2):
            tasks = [t for t in core.epoch_tasks(epoch) if t.count]
            assert len(tasks) > 3
            context = core.task_context(epoch, catalog=catalog, store=store, clock=None)
            before = store.stats_calls
            rows = [run_read_task(t, context, state=state)[0] for t in tasks]
            # one ranking of the caches per epoch asks for Q; the other tasks ask nothing
            assert store.stats_calls - before == 1
            index = np.concatenate([r["index"] for r in rows])
            weight = np.concatenate([r["weight"] for r in rows])
            expected = 1.0 / (N * q[index] / q.sum())  # w = 1 / (N p): the plan's own weights
            np.testing.assert_allclose(weight, expected, rtol=1e-5)
    finally:
        state.close()
        store.close()
