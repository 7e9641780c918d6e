"""``ImportanceLoader``: the importance-sampled, pruned data loader a trainer iterates.

Each ``epoch(e)`` is a Ray Data dataset of read tasks (see ``plan`` and ``tasks``)
iterated in batches and handed over as torch tensors. Epoch 0 is the initialization epoch (Alg. 3)
served as a streaming pass; after it every epoch samples with replacement from
the store. At the end of an epoch the loader flushes its reports and, once for all
ranks (rank 0, between barriers), applies ``end_epoch(eps)``, pruning every
``prune_every`` epochs and optional readmission.

With the embedded ``LocalStore``, read tasks reach the store through the same gRPC
API as a deployed one, served by the trainer process on 127.0.0.1: there is one
table, the trainer's reports go to it directly, and Ray workers draw plans from it
while the epoch runs (a single machine; several nodes use a deployed store).
"""

from __future__ import annotations

import bisect
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from isloader.data.catalog import ShardCatalog
from isloader.importance import importance_metric
from isloader.pipeline.plan import ReadTask, sampling_tasks, skip_rows, streaming_tasks
from isloader.pipeline.reporter import Reporter
from isloader.pipeline.tasks import CatalogRef, TaskContext, Transform, run_read_task
from isloader.store.api import ImportanceStore

__all__ = ["ImportanceLoader", "EpochCounters"]


@dataclass
class EpochCounters:
    """What one epoch did, per rank."""

    epoch: int
    mode: str = ""
    steps: int = 0
    samples: int = 0
    distinct_samples: int = 0
    bytes_fetched: float = 0.0
    cache_hits: float = 0.0
    cache_lookups: float = 0.0
    max_plan_staleness: int = 0  # reports sent between a plan's draw and its use
    reporter_max_depth: int = 0
    seconds: float = 0.0
    active_after: int = 0
    pruned_after: int = 0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.cache_lookups if self.cache_lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cache_hit_rate": self.cache_hit_rate}


def _distributed_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _to_torch(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Numeric numpy columns as tensors (sharing memory where the array is writable: Ray
    hands out read-only views, which are copied once); others stay numpy."""
    out: dict[str, Any] = {}
    for name, array in columns.items():
        if array.dtype.kind in "biuf":
            writable = array.flags.writeable and array.flags.c_contiguous
            out[name] = torch.from_numpy(array if writable else np.array(array, order="C"))
        else:
            out[name] = array
    return out


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class ImportanceLoader:
    """Batches of torch tensors with ``index`` and ``weight`` columns.

    Args:
        dataset: dataset URI (its index is loaded, or built) or a ``ShardCatalog``.
        store: ``LocalStore`` or ``StoreClient``.
        batch_size: per-rank batch size B.
        columns: columns to read (all when None); must be numeric after ``transform``.
        window: batches per plan window; plans are at most this many steps stale.
        seed: fixes every plan, with the epoch, step and rank.
        sampling: ``"importance"`` (the paper) or ``"uniform"`` (a shuffled pass
            every epoch: the baseline).
        metric: ``"output_grad_norm"`` (Eq. 7) or ``"loss"`` (Loss-IS); ``loss``
            picks the analytic form (``"cross_entropy"``, ``"mse"``), ``loss_fn``
            any per-sample loss through autograd.
        eps: exploration floor added at each epoch end (Alg. 1 line 13).
        prune_every, prune_k: Alg. 2 every ``prune_every`` epochs after epoch 0
            (0 disables), threshold ``sum(q) / (K N_active)``.
        readmit_fraction: share of pruned samples put back at each prune (0: off).
        steps_per_epoch: override of the equal-steps default ``N / (B * world)``.
        rank, world_size: default from torch.distributed or RANK / WORLD_SIZE.
        transform: function on each task's numpy columns (decode, augment).
        prefetch_batches: batches Ray prepares ahead of the trainer.
    """

    def __init__(
        self,
        dataset: str | ShardCatalog,
        *,
        store: ImportanceStore,
        batch_size: int,
        columns: list[str] | None = None,
        window: int = 16,
        seed: int = 0,
        sampling: str = "importance",
        metric: str = "output_grad_norm",
        loss: str = "cross_entropy",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eps: float = 1e-3,
        prune_every: int = 0,
        prune_k: float = 2.0,
        readmit_fraction: float = 0.0,
        steps_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Transform | None = None,
        prefetch_batches: int = 4,
        cache_bytes: int = 256 << 20,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if sampling not in ("importance", "uniform"):
            raise ValueError(f"sampling must be 'importance' or 'uniform', got {sampling!r}")
        if batch_size < 1 or window < 1:
            raise ValueError("batch_size and window must be >= 1")
        self.catalog = (
            dataset
            if isinstance(dataset, ShardCatalog)
            else ShardCatalog.open(dataset, storage_options)
        )
        if store.num_samples != len(self.catalog):
            raise ValueError(
                f"the store holds {store.num_samples} samples, the dataset {len(self.catalog)}"
            )
        self.store = store
        self.batch_size = batch_size
        self.columns = columns
        self.window = window
        self.seed = seed
        self.sampling = sampling
        self.eps = eps
        self.prune_every = prune_every
        self.prune_k = prune_k
        self.readmit_fraction = readmit_fraction
        self.steps_per_epoch = steps_per_epoch
        default_rank, default_world = _distributed_rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.transform = transform
        self.prefetch_batches = prefetch_batches
        self.cache_bytes = cache_bytes
        self.reporter = Reporter(store, importance_metric(metric, loss=loss, loss_fn=loss_fn))
        self.history: list[EpochCounters] = []
        self._id = uuid.uuid4().hex
        self._context: TaskContext | None = None
        self._position = (0, 0)  # (epoch, batches consumed in it)
        self._report_times: list[float] = []

    # -- the epoch protocol -------------------------------------------------------

    def mode(self, epoch: int) -> str:
        """``"stream"`` for the initialization epoch and the uniform baseline."""
        return "stream" if self.sampling == "uniform" or epoch == 0 else "sample"

    def tasks(self, epoch: int) -> list[ReadTask]:
        """This rank's read tasks of ``epoch`` (after any resume position)."""
        c = self.catalog
        if self.mode(epoch) == "stream":
            tasks = streaming_tasks(
                np.diff(c.unit_starts),
                c.unit_shard,
                c.unit_starts[:-1],
                seed=self.seed,
                epoch=epoch,
                rank=self.rank,
                world=self.world_size,
                rows_per_task=self.window * self.batch_size,
            )
        else:
            tasks = sampling_tasks(
                num_samples=len(c),
                batch_size=self.batch_size,
                world=self.world_size,
                window=self.window,
                seed=self.seed,
                epoch=epoch,
                rank=self.rank,
                steps=self.steps_per_epoch,
            )
        done_epoch, done_batches = self._position
        if done_epoch == epoch and done_batches:
            tasks = skip_rows(tasks, done_batches * self.batch_size)
        return tasks

    def dataset(self, epoch: int) -> Any:
        """The Ray dataset of ``epoch`` for this rank (what ``epoch()`` iterates)."""
        import ray

        tasks = self.tasks(epoch)
        context = self._task_context()
        ds = ray.data.range(max(len(tasks), 1), override_num_blocks=max(len(tasks), 1))

        def read(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return run_read_task(tasks[int(batch["id"][0])], context)

        if not tasks:
            return ds.limit(0)
        return ds.map_batches(read, batch_size=None, batch_format="numpy")

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate one epoch's batches; the epoch-end steps run when it is exhausted."""
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # resumable, reproducible order
        counters = EpochCounters(epoch=epoch, mode=self.mode(epoch))
        if self._position[0] != epoch:
            self._position = (epoch, 0)
        self._report_times.clear()  # plans of this epoch are drawn after it starts
        start = time.perf_counter()
        seen = []
        # iter_batches + torch.from_numpy (zero-copy) is several times faster here than
        # iter_torch_batches, which re-formats every batch through Arrow.
        batches = self.dataset(epoch).iter_batches(
            batch_size=self.batch_size,
            batch_format="numpy",
            prefetch_batches=self.prefetch_batches,
            drop_last=False,
        )
        for columns in batches:
            counters.bytes_fetched += float(columns.pop("__fetched").sum())
            counters.cache_hits += float(columns.pop("__hits").sum())
            counters.cache_lookups += float(columns.pop("__lookups").sum())
            drawn = float(columns.pop("__drawn_at").min())
            stale = len(self._report_times) - bisect.bisect_right(self._report_times, drawn)
            counters.max_plan_staleness = max(counters.max_plan_staleness, stale)
            batch = _to_torch(columns)
            counters.steps += 1
            counters.samples += len(batch["index"])
            seen.append(columns["index"])
            self._position = (epoch, self._position[1] + 1)
            yield batch
        self._finish_epoch(epoch, counters, seen, start)

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Send ``q_new`` for this batch (asynchronously; never blocks the step)."""
        if self.sampling == "uniform":
            return  # the uniform baseline measures nothing
        self._report_times.append(time.time())
        self.reporter.report(index, outputs, targets)

    def _finish_epoch(
        self, epoch: int, counters: EpochCounters, seen: list[np.ndarray], start: float
    ) -> None:
        self.reporter.flush()
        _barrier()
        if self.rank == 0 and self.sampling == "importance":
            self.store.end_epoch(epoch, self.eps)
            if self.prune_every and epoch >= 1 and epoch % self.prune_every == 0:
                self.store.prune(self.prune_k, epoch=epoch)
                if self.readmit_fraction:
                    self.store.readmit(self.readmit_fraction, seed=(self.seed, epoch), epoch=epoch)
        _barrier()
        stats = self.store.stats()
        counters.active_after, counters.pruned_after = stats.active, stats.pruned
        counters.distinct_samples = int(np.unique(np.concatenate(seen)).size) if seen else 0
        counters.reporter_max_depth = self.reporter.max_depth
        counters.seconds = time.perf_counter() - start
        self.reporter.max_depth = 0
        self.history.append(counters)
        self._position = (epoch + 1, 0)

    # -- resume ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: resuming continues with the same remaining plan."""
        return {"epoch": self._position[0], "batches": self._position[1], "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(
                f"state was saved with seed {state.get('seed')}, loader has {self.seed}"
            )
        self._position = (int(state["epoch"]), int(state["batches"]))

    def close(self) -> None:
        self.reporter.flush()

    def _task_context(self) -> TaskContext:
        if self._context is None:
            import ray

            connection = getattr(self.store, "connection", None)
            self._context = TaskContext(
                loader_id=self._id,
                catalog=CatalogRef(ray.put(self.catalog)),
                columns=self.columns,
                store=connection if self.sampling == "importance" else None,
                transform=self.transform,
                cache_bytes=self.cache_bytes,
            )
        return self._context
