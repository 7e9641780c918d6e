"""Epoch plans without Ray: coverage, equal steps, resume arithmetic."""

import numpy as np
import pytest

from isloader.pipeline.plan import sampling_tasks, skip_rows, streaming_tasks


def catalog_like(rows_per_unit: list[int], shards: list[int]):
    rows = np.array(rows_per_unit)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    return rows, np.array(shards), starts


def served(tasks, rows, starts) -> list[int]:
    out = []
    for t in tasks:
        for u in t.units:
            out.extend(range(starts[u], starts[u] + rows[u]))
        out.extend(t.indices)
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
def test_streaming_pass_serves_every_sample_and_equal_rows_per_rank(world: int) -> None:
    rows, shards, starts = catalog_like([10, 7, 10, 3, 10, 10, 5], [0, 0, 1, 1, 2, 2, 3])
    per_rank = [
        streaming_tasks(
            rows, shards, starts, seed=1, epoch=0, rank=r, world=world, rows_per_task=12
        )
        for r in range(world)
    ]
    all_rows = [served(t, rows, starts) for t in per_rank]
    assert set().union(*all_rows) == set(range(rows.sum()))
    assert len({len(r) for r in all_rows}) == 1  # DDP: the same number of rows per rank
    assert sum(t.rows for t in per_rank[0]) == len(all_rows[0])
    if world == 1:  # a shard's units are read together (sequentially), in file order
        units = [u for t in per_rank[0] for u in t.units]
        runs = [
            shards[u] for i, u in enumerate(units) if i == 0 or shards[units[i - 1]] != shards[u]
        ]
        assert len(runs) == len(set(runs))
        for s in set(runs):
            mine = [u for u in units if shards[u] == s]
            assert mine == sorted(mine)


def test_shard_order_is_shuffled_per_epoch_and_seeded() -> None:
    rows, shards, starts = catalog_like([5] * 8, list(range(8)))
    order = lambda e: [  # noqa: E731
        t.units
        for t in streaming_tasks(
            rows, shards, starts, seed=3, epoch=e, rank=0, world=1, rows_per_task=5
        )
    ]
    assert order(0) == order(0)
    assert order(0) != order(1)


def test_sampling_epoch_has_equal_steps_in_windows() -> None:
    tasks = sampling_tasks(
        num_samples=1000, batch_size=32, world=2, window=4, seed=0, epoch=3, rank=1
    )
    steps = 1000 // (32 * 2)
    assert sum(t.count for t in tasks) == steps * 32
    assert [t.seed for t in tasks][:2] == [(0, 3, 0, 1), (0, 3, 4, 1)]
    assert all(t.count <= 4 * 32 for t in tasks)


def test_skip_rows_drops_whole_tasks_then_part_of_one() -> None:
    tasks = sampling_tasks(
        num_samples=640, batch_size=10, world=1, window=2, seed=0, epoch=1, rank=0
    )
    left = skip_rows(tasks, 25)
    assert left[0].seed == tasks[1].seed and left[0].skip == 5
    assert len(left) == len(tasks) - 1
    assert skip_rows(tasks, 0) == tasks
