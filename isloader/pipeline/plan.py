"""Which rows each read task of an epoch serves: pure numpy, no Ray.

Two kinds of epoch (docs/architecture.md, "The method"):

- a **streaming** pass (the initialization epoch, Alg. 3, and the uniform
  baseline): shards in a shuffled order, each read sequentially a unit (row group
  / tar sample) at a time, tasks of about ``window * batch_size`` rows dealt to the
  ranks in turn; rows are shuffled inside each task (the shuffle buffer). Ranks
  with fewer rows repeat their first rows so every rank takes the same number of
  steps (a DDP requirement); or a **permutation**: every row once in a uniformly
  random order (``permutation_tasks``: random reads, for data that is local or
  cached);
- a **sampling** epoch: ``steps`` batches per rank (``N / (B * world)`` by the
  equal-steps convention), in windows of ``window`` batches; each window is one
  task that draws its plan from the store when it runs, seeded by
  ``(seed, epoch, step, rank)``, once the trainer is close enough (``first_step``
  and the step clock keep plans no staler than ``window + prefetch`` steps).

And the rules that pick how a sampling window reads: ``units_per_window`` (how many
units a locality-aware window may touch) and ``layout_clustering`` (whether the
units are too alike inside and too different from each other for that to be safe).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "ReadTask",
    "streaming_tasks",
    "permutation_tasks",
    "redistribute",
    "sampling_tasks",
    "skip_rows",
    "units_per_window",
    "label_clustering",
]

_STREAM = 0x57
_PERMUTE = 0x50


@dataclass(frozen=True)
class ReadTask:
    """One read task: whole ``units``, explicit ``indices``, or ``count`` sampled rows.

    ``skip`` drops that many leading rows and ``take`` keeps that many of the rest (0:
    all), for resuming mid-epoch, on as many ranks or on others; ``seed`` fixes the
    in-task shuffle or the plan draw, so every rank that holds a piece of a task sees
    the same rows; ``first_step`` is the epoch step (batch) where a sampling window
    starts.
    """

    rows: int
    seed: tuple[int, ...]
    units: tuple[int, ...] = ()
    indices: tuple[int, ...] = ()
    count: int = 0
    skip: int = 0
    shuffle: bool = True
    first_step: int = 0
    take: int = 0

    @property
    def kept(self) -> int:
        """Rows this task delivers (after ``skip`` and ``take``)."""
        return self.take or self.rows - self.skip


def streaming_tasks(
    unit_rows: np.ndarray,
    unit_shard: np.ndarray,
    unit_starts: np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world: int,
    rows_per_task: int,
) -> list[ReadTask]:
    """This rank's tasks of a streaming pass over every unit."""
    rng = np.random.default_rng([seed, epoch, _STREAM])
    shards = rng.permutation(int(unit_shard.max()) + 1 if len(unit_shard) else 0)
    by_shard = np.argsort(unit_shard, kind="stable")
    bounds = np.searchsorted(unit_shard[by_shard], np.arange(len(shards) + 1))
    order = np.concatenate(
        [by_shard[bounds[s] : bounds[s + 1]] for s in shards] or [np.zeros(0, np.int64)]
    )
    chunks, current, rows = [], [], 0
    for unit in order:
        current.append(int(unit))
        rows += int(unit_rows[unit])
        if rows >= rows_per_task:
            chunks.append((tuple(current), rows))
            current, rows = [], 0
    if current:
        chunks.append((tuple(current), rows))
    per_rank = [sum(r for _, r in chunks[k::world]) for k in range(world)]
    mine = chunks[rank::world]
    tasks = [
        ReadTask(rows=r, seed=(seed, epoch, i, rank), units=u) for i, (u, r) in enumerate(mine)
    ]
    deficit = max(per_rank) - per_rank[rank]
    if deficit:
        stream = np.concatenate(
            [unit_starts[u] + np.arange(unit_rows[u]) for units, _ in mine for u in units]
            or [np.arange(int(unit_rows.sum()))]
        )
        pad = tuple(int(i) for i in np.resize(stream, deficit))
        tasks.append(ReadTask(rows=deficit, seed=(seed, epoch, len(tasks), rank), indices=pad))
    return tasks


def permutation_tasks(
    num_samples: int, *, seed: int, epoch: int, rank: int, world: int, rows_per_task: int
) -> list[ReadTask]:
    """This rank's tasks of a full random permutation of the rows (each rank the same
    number of rows; the few left over by ``world`` wait for the next epoch)."""
    order = np.random.default_rng([seed, epoch, _PERMUTE]).permutation(num_samples)
    mine = order[rank::world][: num_samples // world]
    return [
        ReadTask(
            rows=len(chunk), seed=(seed, epoch, i, rank), indices=tuple(int(j) for j in chunk),
            shuffle=False,
        )
        for i, chunk in enumerate(np.array_split(mine, max(1, -(-len(mine) // rows_per_task))))
    ]  # fmt: skip


def sampling_tasks(
    *,
    num_samples: int,
    batch_size: int,
    world: int,
    window: int,
    seed: int,
    epoch: int,
    rank: int,
    steps: int | None = None,
) -> list[ReadTask]:
    """This rank's plan windows of a sampling epoch."""
    steps = steps if steps is not None else max(1, num_samples // (batch_size * world))
    tasks = []
    for first in range(0, steps, window):
        count = min(window, steps - first) * batch_size
        tasks.append(
            ReadTask(
                rows=count,
                seed=(seed, epoch, first, rank),
                count=count,
                shuffle=False,
                first_step=first,
            )
        )
    return tasks


def skip_rows(tasks: list[ReadTask], rows: int) -> list[ReadTask]:
    """The tasks left after the first ``rows`` rows were consumed (resuming)."""
    out = []
    for task in tasks:
        if rows >= task.kept:
            rows -= task.kept
            continue
        out.append(replace(task, skip=task.skip + rows, take=task.take and task.take - rows))
        rows = 0
    return out


def redistribute(
    remaining: list[ReadTask], *, world: int, rank: int, batch_size: int, first_step: int
) -> list[ReadTask]:
    """Rank ``rank`` of ``world``'s share of ``remaining``: the tasks every rank of an
    earlier run had left (resuming on another number of ranks).

    The remaining rows, in order, are cut into ``world`` equal runs of whole batches, one
    per rank (ranks step together, so at most ``world - 1`` batches of the epoch are left
    out); a task cut at a run's edge goes to both sides with ``skip`` / ``take``, and its
    seed gives both the same rows (a sampling task draws the same plan). So no row or
    draw is read twice, and what all ranks read is what the earlier run had left.
    Sampling tasks get the ``first_step`` of their first batch on the new rank, counted
    from ``first_step`` (the batches every rank had finished).
    """
    per_rank = sum(t.kept for t in remaining) // batch_size // world * batch_size
    start, end = rank * per_rank, (rank + 1) * per_rank
    out, offset = [], 0
    for task in remaining:
        lo, hi = max(start, offset), min(end, offset + task.kept)
        if lo < hi:
            step = first_step + (lo - start) // batch_size
            out.append(replace(task, skip=task.skip + lo - offset, take=hi - lo,
                               first_step=step if task.count else task.first_step))  # fmt: skip
        offset += task.kept
    return out


def units_per_window(
    draws: int,
    active_rows: np.ndarray,
    mass: np.ndarray,
    *,
    candidates: float = 8.0,
    max_share: float = 0.5,
) -> int:
    """How many units ``G`` a window of ``draws`` locality-aware draws may touch; 0 means
    independent draws.

    ``G = ceil(candidates * draws / U_active)`` with ``U_active`` the mean active rows of
    the units that hold mass: each draw then has ``candidates`` rows to choose from, and
    the variance of the window's weighted gradient is about ``1 + 2 / candidates`` times
    that of independent draws (random row order). When that ``G`` is more than
    ``max_share`` of the units with mass, locality saves little: independent draws.
    """
    live = mass > 0
    units = int(live.sum())
    if draws < 1 or units == 0:
        return 0
    mean_rows = float(active_rows[live].mean())
    g = int(np.ceil(candidates * draws / max(mean_rows, 1.0)))
    return 0 if g > max_share * units else g


def label_clustering(counts: np.ndarray) -> float:
    """How much more the units' label mixes differ than a random row order would make them.

    ``counts[u, k]``: rows of class ``k`` seen in unit ``u``. Each unit's chi-square
    against the global class shares, over its degrees of freedom, averages about 1 when
    rows are in random order and grows with the unit size when similar samples sit
    together (sorted by class, by source). There a window restricted to a few units sees
    a biased slice of the data at each step, and no ``G`` that saves reads is safe.
    (Importance itself cannot tell: after the initialization epoch a sample's ``q``
    depends on when in that epoch it was measured.)
    """
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.sum(axis=1)
    counts = counts[rows > 0]
    rows = rows[rows > 0]
    share = counts.sum(axis=0) / max(rows.sum(), 1.0)
    present = share > 0
    classes = int(present.sum())
    if classes < 2 or len(rows) < 2:
        return 0.0
    expected = rows[:, None] * share[present]
    chi2 = ((counts[:, present] - expected) ** 2 / expected).sum(axis=1)
    return float(np.mean(chi2) / (classes - 1))
