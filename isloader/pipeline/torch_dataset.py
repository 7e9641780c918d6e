"""``ImportanceDataset``: the loader for plain PyTorch, no Ray.

A ``torch.utils.data.IterableDataset`` over the same plans and readers as
``ImportanceLoader``: ``DataLoader(ImportanceDataset(...), batch_size=None,
num_workers=k)`` yields whole batches (dicts of tensors with ``index`` and
``weight``). Worker ``w`` of ``k`` serves the batches the DataLoader takes from it,
global steps ``w, w + k, w + 2k, ...``, in plan windows of ``window`` of its batches;
a window's plan is drawn in the worker once the trainer has finished the window's
first step minus ``prefetch`` (a shared step clock that ``report`` advances). So a
batch is used at most ``window * k + prefetch`` steps after its plan was drawn.

The trainer calls ``set_epoch(e)`` before each epoch (as with ``DistributedSampler``),
``report`` for each batch and ``end_epoch(e)`` after the last. Rank and world size
come from ``torch.distributed`` as for the Ray loader.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ReaderSettings, disk_tier_enabled
from isloader.pipeline.clock import SharedStepClock
from isloader.pipeline.plan import ReadTask, sampling_tasks, streaming_tasks
from isloader.pipeline.protocol import (
    EpochProtocol,
    MethodSettings,
    open_for_store,
    rank_and_world,
)
from isloader.pipeline.tasks import TaskContext, Transform, WorkerState, run_read_task
from isloader.store.api import ImportanceStore
from isloader.store.records import TableStats

__all__ = ["ImportanceDataset"]


class ImportanceDataset(torch.utils.data.IterableDataset):
    """Importance-sampled, pruned batches for a ``torch.utils.data.DataLoader``.

    Arguments are those of ``ImportanceLoader`` (``dataset``, ``store``,
    ``batch_size``, ``columns``, ``window``, ``prefetch``, the method's knobs, the
    readers' caches); locality-aware draws are on with an explicit
    ``units_per_window`` only.
    """

    def __init__(
        self,
        dataset: str | ShardCatalog,
        *,
        store: ImportanceStore,
        batch_size: int,
        columns: list[str] | None = None,
        window: int = 8,
        prefetch: int = 16,
        units_per_window: int = 0,
        seed: int = 0,
        sampling: str = "importance",
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
        self.method = MethodSettings(
            sampling=sampling, metric=metric, loss=loss, loss_fn=loss_fn, eps=eps,
            q_floor=q_floor, prune_every=prune_every, prune_k=prune_k,
            readmit_fraction=readmit_fraction, seed=seed,
        )  # fmt: skip
        self.catalog = open_for_store(dataset, store, storage_options)
        self.store = store
        self.batch_size, self.window, self.prefetch = batch_size, window, prefetch
        self.units = units_per_window
        self.steps_per_epoch = steps_per_epoch
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.transform = transform
        self.reader_settings = ReaderSettings(
            columns=tuple(columns) if columns is not None else None,
            memory_bytes=memory_bytes,
            cache_dir=cache_dir,
            cache_bytes=cache_bytes,
        )
        self._id = uuid.uuid4().hex
        self._epoch = multiprocessing.get_context().Value("q", 0)
        self._clock = SharedStepClock()
        self._reports = 0
        self._connection = None
        self.protocol: EpochProtocol | None = EpochProtocol(store, self.method, self.rank)
        self._worker: tuple[int, WorkerState] | None = None  # (pid, readers of this process)

    def __getstate__(self) -> dict[str, Any]:
        """Workers get the plans' ingredients and a connection to the store, not the
        trainer-side protocol (its reporter thread stays in the trainer) nor its readers."""
        state = dict(self.__dict__)
        state["protocol"] = None
        state["store"] = self._store_connection()
        state["_worker"] = None
        return state

    def _worker_state(self) -> WorkerState:
        """This process's readers and store clients, kept across its tasks and epochs (a
        forked worker makes its own)."""
        if self._worker is None or self._worker[0] != os.getpid():
            self._worker = (os.getpid(), WorkerState())
        return self._worker[1]

    def _store_connection(self) -> Any:
        if self._connection is None:
            self._connection = getattr(self.store, "connection", self.store)
        return self._connection

    @property
    def epoch(self) -> int:
        """The epoch ``set_epoch`` started (shared with the worker processes)."""
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (call before creating its DataLoader iterator)."""
        self._epoch.value = epoch
        self._reports = 0
        self._clock.reset(0)
        if self.method.sampling == "importance" and epoch > 0:
            self._store_connection()  # serve the embedded store before workers fork

    def mode(self, epoch: int) -> str:
        """``"stream"`` for the initialization epoch and uniform sampling, else ``"sample"``."""
        return "stream" if self.method.sampling == "uniform" or epoch == 0 else "sample"

    # -- worker side --------------------------------------------------------------

    def _tasks(self, epoch: int) -> list[ReadTask]:
        c = self.catalog
        if self.mode(epoch) == "stream":
            return streaming_tasks(
                c.unit_rows, c.unit_shard, c.unit_bounds[:-1], seed=self.method.seed,
                epoch=epoch, rank=self.rank, world=self.world_size,
                rows_per_task=self.window * self.batch_size,
            )  # fmt: skip
        return sampling_tasks(
            num_samples=len(c), batch_size=self.batch_size, world=self.world_size,
            window=self.window, seed=self.method.seed, epoch=epoch, rank=self.rank,
            steps=self.steps_per_epoch,
        )  # fmt: skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        # a worker reaches the store over its connection (a forked copy of an embedded
        # store would be a stale one); in the trainer's own process, the store itself
        here = self.store if info is None else self._store_connection()
        caches = self.method.sampling == "importance" and (
            self.reader_settings.memory_bytes > 0
            or disk_tier_enabled(self.catalog, self.reader_settings)
        )
        sample = self.mode(epoch) == "sample"
        layout = self.catalog.layout if self.units else None
        context = TaskContext(
            loader_id=self._id, catalog=self.catalog, reader=self.reader_settings,
            store=here if (sample or caches) else None, transform=self.transform, epoch=epoch,
            layout=layout, units=self.units, clock=self._clock, prefetch=self.prefetch,
            caches=caches, pending=caches and epoch == 0,
        )  # fmt: skip
        mine = self._tasks(epoch)[worker::workers]
        served = 0  # this worker's batches so far
        pending: list[dict[str, np.ndarray]] = []
        for task in mine:
            if task.count:  # its first batch is global step served * workers + worker
                task = replace(task, first_step=served * workers + worker)
            columns, _ = run_read_task(task, context, state=self._worker_state())
            pending.append(columns)
            for batch in _batches(pending, self.batch_size, final=False):
                served += 1
                yield batch
        for batch in _batches(pending, self.batch_size, final=True):
            yield batch

    # -- trainer side -------------------------------------------------------------

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Send ``q_new`` for this batch (asynchronously) and advance the step clock."""
        if self.protocol is None:
            raise RuntimeError("report() is called in the trainer, not in a worker")
        if self.protocol.report(index, outputs, targets):
            self._reports += 1
            self._clock.advance(self._reports)

    def end_epoch(self, epoch: int) -> TableStats:
        """The epoch-end steps (Alg. 1 line 13, Alg. 2), once for all ranks."""
        if self.protocol is None:
            raise RuntimeError("end_epoch() is called in the trainer, not in a worker")
        return self.protocol.finish_epoch(epoch)

    def close(self) -> None:
        """Send queued reports and release the epoch machinery and this process's
        readers."""
        if self.protocol is not None:
            self.protocol.close()
        if self._worker is not None and self._worker[0] == os.getpid():
            self._worker[1].close()
        self._worker = None


def _batches(
    pending: list[dict[str, np.ndarray]], size: int, *, final: bool
) -> Iterator[dict[str, Any]]:
    """Whole batches out of ``pending`` (kept in place for the rest), as tensors."""
    if not pending:
        return
    merged = (
        pending[0]
        if len(pending) == 1
        else {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    )
    rows = len(merged["index"])
    full = rows if final else rows - rows % size
    for start in range(0, full, size):
        yield {
            k: torch.from_numpy(np.array(v[start : start + size], order="C"))  # owned, writable
            if v.dtype.kind in "biuf"
            else v[start : start + size]
            for k, v in merged.items()
        }
    pending[:] = [{k: v[full:] for k, v in merged.items()}] if full < rows else []
