"""Elastic resume: a state saved by W ranks mid-epoch resumes on W' ranks. The rest of
the epoch is what the W-rank run had left: no row or draw read twice, equal steps per
rank, and the sampled draws distributed as ``p`` (chi-square). Read tasks run
in-process here (``run_read_task``), as a read worker runs them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isloader.data.catalog import ShardCatalog
from isloader.pipeline.core import LoaderCore
from isloader.pipeline.plan import ReadTask, redistribute
from isloader.pipeline.tasks import run_read_task
from isloader.store.local import LocalStore
from tests.helpers import chi_square_pvalue

N, B, STEPS = 60, 4, 120  # 120 steps of 4 draws per rank: a thousand draws or more left


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> ShardCatalog:
    root = tmp_path_factory.mktemp("elastic")
    table = pa.table({"x": np.arange(N, dtype=np.float64), "y": np.arange(N) % 3})
    pq.write_table(table.slice(0, 30), root / "a.parquet", row_group_size=6)
    pq.write_table(table.slice(30), root / "b.parquet", row_group_size=6)
    return ShardCatalog.build(str(root))


@pytest.fixture(scope="module")
def store() -> LocalStore:
    store = LocalStore(N)
    store.update(np.arange(N), np.random.default_rng(0).lognormal(0, 1, N))
    return store


def _cores(catalog, store, world: int) -> list[LoaderCore]:
    return [
        LoaderCore(
            catalog,
            store=store,
            batch_size=B,
            window=3,
            seed=5,
            world_size=world,
            rank=r,
            steps_per_epoch=STEPS,
            memory_bytes=0,
        )
        for r in range(world)
    ]


def _rows(core: LoaderCore, tasks: list[ReadTask], epoch: int) -> list[np.ndarray]:
    """Each task's delivered ``index`` column, run as a read worker runs it."""
    context = core.task_context(epoch, catalog=core.catalog, store=core.store, clock=None)
    return [run_read_task(t, context)[0]["index"] for t in tasks]


@pytest.mark.parametrize("epoch", [0, 1], ids=["streaming", "sampling"])
@pytest.mark.parametrize("before,after", [(2, 3), (3, 1)])
def test_a_state_of_w_ranks_resumes_on_w_prime(catalog, store, epoch, before, after) -> None:
    done = 7 if epoch else 2  # steps every rank had finished when the state was saved
    old = _cores(catalog, store, before)

    # what the W-rank run had left: each rank's own tasks after its first `done` batches
    def rest(cores: list[LoaderCore]) -> list[np.ndarray]:
        return [np.concatenate(_rows(c, c.resumed_tasks(epoch, [(before, done)]), epoch))
                for c in cores]  # fmt: skip

    reference = np.concatenate(rest(old))
    shares = rest(_cores(catalog, store, after))
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) % B == 0  # equal steps
    union = np.concatenate(shares)
    left_out = len(reference) - len(union)
    assert 0 <= left_out < after * B  # at most W' - 1 batches of the epoch left out
    missing = Counter(reference.tolist()) - Counter(union.tolist())
    assert not Counter(union.tolist()) - Counter(reference.tolist())  # nothing read twice
    assert sum(missing.values()) == left_out
    if epoch:  # sampled draws: distributed as p
        q = store.lookup(np.arange(N))
        assert chi_square_pvalue(union, q / q.sum()) > 1e-3


def test_redistribute_cuts_tasks_at_run_edges_and_counts_steps() -> None:
    tasks = [ReadTask(rows=12, seed=(0, 1, f, 0), count=12, first_step=f // 4, shuffle=False)
             for f in range(0, 36, 12)]  # fmt: skip
    tasks[0] = ReadTask(rows=12, seed=(0, 1, 0, 0), count=12, skip=4, shuffle=False)
    shares = [redistribute(tasks, world=2, rank=r, batch_size=4, first_step=5) for r in (0, 1)]
    kept = [sum(t.kept for t in s) for s in shares]
    assert kept == [16, 16]  # 32 rows left: two runs of 4 batches
    assert [(t.skip, t.take, t.first_step) for t in shares[0]] == [(4, 8, 5), (0, 8, 7)]
    assert [(t.skip, t.take, t.first_step) for t in shares[1]] == [(8, 4, 5), (0, 12, 6)]
