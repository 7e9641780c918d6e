"""``LoaderCore``: what the Ray loader and the PyTorch dataset are, said once.

Both front ends (``ImportanceLoader``, ``ImportanceDataset``) take the same dataset,
store, batch, window and method knobs and the same reader caches, cut an epoch into the
same read tasks and hand each task the same ``TaskContext``; they differ only in who
runs the tasks (Ray actors, or ``DataLoader`` worker processes) and in what each adds
on top (the Ray loader: a cost model for the draws, resume, Ray Data). This class is
that common part (docs/architecture.md, "The pipeline").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import torch

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ReaderSettings, disk_tier_enabled
from isloader.pipeline.plan import (
    ReadTask,
    permutation_tasks,
    redistribute,
    sampling_tasks,
    skip_rows,
    streaming_tasks,
)
from isloader.pipeline.protocol import MethodSettings, open_for_store, rank_and_world
from isloader.pipeline.tasks import TaskContext, Transform
from isloader.store.api import ImportanceStore

__all__ = ["LoaderCore", "DEFAULT_WINDOW", "DEFAULT_PREFETCH"]

DEFAULT_WINDOW = 8
DEFAULT_PREFETCH = 16


class LoaderCore:
    """The settings and epoch plan both front ends share.

    Args:
        dataset: dataset URI (its index is loaded, or built) or a ``ShardCatalog``.
        store: ``LocalStore`` or ``StoreClient``.
        batch_size: per-rank batch size B.
        columns: columns to read (all when None); must be numeric after ``transform``.
        window: batches per plan window (default 8).
        prefetch: steps a plan may be drawn ahead of its window (default 16). A batch
            is used at most ``window + prefetch`` steps after its plan was drawn
            (``window=1, prefetch=0`` is the paper exactly, and slow).
        seed: fixes every plan, with the epoch, step and rank.
        sampling: ``"importance"`` (the paper) or ``"uniform"`` (a shuffled pass
            every epoch: the baseline).
        uniform_order: how the uniform baseline shuffles: ``"stream"`` (default: shards
            in a random order, units read whole, rows shuffled within each task, as
            streaming loaders do) or ``"permutation"`` (every row once in a uniformly
            random order: random reads, for local or cached data).
        metric: ``"output_grad_norm"`` (Eq. 7) or ``"loss"`` (Loss-IS); ``loss``
            picks the analytic form (``"cross_entropy"``, ``"mse"``), ``loss_fn``
            any per-sample loss through autograd.
        eps: exploration floor added at each epoch end (Alg. 1 line 13).
        q_floor: added to every measurement (default 0.05; 0 is the paper's metric
            exactly). Between two measurements a confident sample's q can be tiny and its
            weight ``1 / (N_active p)`` huge; measured on MNIST-1D (in-memory replay, 4
            seeds, 8 epochs) half the sampled steps held a weight above 10 and one seed
            in four collapsed without it. A floor mixes in a little uniform sampling
            (defensive importance sampling): the weights stay exact for the ``p`` drawn
            from, so the gradient stays unbiased, and they are bounded.
        prune_every, prune_k: Alg. 2 every ``prune_every`` epochs after epoch 0
            (0 disables), threshold ``sum(q) / (K N_active)``.
        readmit_fraction: share of pruned samples put back at each prune (0: off).
        steps_per_epoch: override of the equal-steps default ``N / (B * world)``.
        rank, world_size: default from torch.distributed or RANK / WORLD_SIZE.
        transform: function on each task's numpy columns (decode, augment).
        cache_dir, cache_bytes, memory_bytes: the readers' caches (``ReaderSettings``: a
            disk tier of rows per node for remote datasets and a memory tier per read
            worker, both kept by importance per byte).
        storage_options: fsspec options to reach the dataset.

    Raises:
        ValueError: a setting out of range, or a store of another size than the dataset.
    """

    def __init__(
        self,
        dataset: str | ShardCatalog,
        *,
        store: ImportanceStore,
        batch_size: int,
        columns: list[str] | None = None,
        window: int = DEFAULT_WINDOW,
        prefetch: int = DEFAULT_PREFETCH,
        seed: int = 0,
        sampling: str = "importance",
        uniform_order: str = "stream",
        metric: str = "output_grad_norm",
        loss: str = "cross_entropy",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eps: float = 1e-3,
        q_floor: float = 0.05,
        prune_every: int = 0,
        prune_k: float = 2.0,
        readmit_fraction: float = 0.0,
        steps_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Transform | None = None,
        cache_dir: str | None = None,
        cache_bytes: int | None = None,
        memory_bytes: int = 64 << 20,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1 or window < 1 or prefetch < 0:
            raise ValueError("batch_size and window must be >= 1, prefetch >= 0")
        if uniform_order not in ("stream", "permutation"):
            raise ValueError(f"uniform_order: 'stream' or 'permutation', not {uniform_order!r}")
        self.method = MethodSettings(
            sampling=sampling, metric=metric, loss=loss, loss_fn=loss_fn, eps=eps,
            q_floor=q_floor, prune_every=prune_every, prune_k=prune_k,
            readmit_fraction=readmit_fraction, seed=seed,
        )  # fmt: skip
        self.catalog = open_for_store(dataset, store, storage_options)
        self.store = store
        self.batch_size, self.columns = batch_size, columns
        self.window, self.prefetch = window, prefetch
        self.seed, self.sampling, self.uniform_order = seed, sampling, uniform_order
        self.steps_per_epoch = steps_per_epoch
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.transform = transform
        self.reader_settings = ReaderSettings(
            columns=tuple(columns) if columns is not None else None,
            memory_bytes=memory_bytes,
            cache_dir=cache_dir,
            cache_bytes=cache_bytes,
        )
        self.units = 0  # G of locality-aware draws (0: independent)
        self._disk_tier = disk_tier_enabled(self.catalog, self.reader_settings)
        self._id = uuid.uuid4().hex

    @property
    def caches(self) -> bool:
        """Whether read tasks keep rows by importance (importance sampling with a tier)."""
        has_tier = self._disk_tier or self.reader_settings.memory_bytes > 0
        return self.sampling == "importance" and has_tier

    def mode(self, epoch: int) -> str:
        """``"stream"`` for the initialization epoch and the uniform baseline, else
        ``"sample"``."""
        return "stream" if self.sampling == "uniform" or epoch == 0 else "sample"

    def epoch_tasks(
        self, epoch: int, *, rank: int | None = None, world: int | None = None
    ) -> list[ReadTask]:
        """This rank's read tasks of ``epoch`` (or rank ``rank`` of ``world``'s): a
        shuffled streaming pass, a uniform permutation, or sampling windows of
        ``window`` batches."""
        c, rows = self.catalog, self.window * self.batch_size
        rank = self.rank if rank is None else rank
        world = self.world_size if world is None else world
        where = {"seed": self.seed, "epoch": epoch, "rank": rank, "world": world}
        if self.sampling == "uniform" and self.uniform_order == "permutation":
            return permutation_tasks(len(c), rows_per_task=rows, **where)
        if self.mode(epoch) == "stream":
            return streaming_tasks(
                c.unit_rows, c.unit_shard, c.unit_bounds[:-1], rows_per_task=rows, **where
            )
        return sampling_tasks(
            num_samples=len(c), batch_size=self.batch_size, window=self.window,
            steps=self.steps_per_epoch, **where,
        )  # fmt: skip

    def resumed_tasks(self, epoch: int, phases: list[tuple[int, int]]) -> list[ReadTask]:
        """This rank's tasks of ``epoch`` after its earlier ``phases``: ``(world, steps)``
        for each run of the epoch so far (its first made the epoch's plan; ranks step
        together). Where a phase's world equals the next one's, each rank goes on with
        its own tasks; where it differs, the tasks all ranks had left are shared out
        (``plan.redistribute``: nothing read twice, at most ``world - 1`` batches left
        out), so a state saved by W ranks resumes on W' ranks."""
        b = self.batch_size
        first = phases[0][0]
        ranks = [self.epoch_tasks(epoch, rank=r, world=first) for r in range(first)]
        done = 0
        for i, (world, steps) in enumerate(phases):
            ranks = [skip_rows(tasks, steps * b) for tasks in ranks]
            done += steps
            following = phases[i + 1][0] if i + 1 < len(phases) else self.world_size
            if following != world:
                remaining = [task for tasks in ranks for task in tasks]
                ranks = [
                    redistribute(remaining, world=following, rank=r, batch_size=b, first_step=done)
                    for r in range(following)
                ]
        return ranks[self.rank]

    def task_context(self, epoch: int, *, catalog: Any, store: Any, clock: Any) -> TaskContext:
        """What every read task of ``epoch`` needs; ``catalog``, ``store`` and ``clock``
        as the front end's workers reach them (the store and clock only where the tasks
        use them)."""
        sample = self.mode(epoch) == "sample"
        caches = self.caches
        return TaskContext(
            loader_id=self._id, catalog=catalog, reader=self.reader_settings,
            store=store if (sample or caches) else None, transform=self.transform,
            epoch=epoch, layout=self.catalog.layout if self.units else None,
            units=self.units, clock=clock if sample else None, prefetch=self.prefetch,
            caches=caches, pending=caches and epoch == 0,
        )  # fmt: skip
