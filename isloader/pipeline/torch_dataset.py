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
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from isloader.data.catalog import ShardCatalog
from isloader.pipeline.clock import SharedStepClock
from isloader.pipeline.core import LoaderCore
from isloader.pipeline.protocol import EpochProtocol
from isloader.pipeline.tasks import WorkerState, run_read_task
from isloader.store.api import ImportanceStore
from isloader.store.records import TableStats

__all__ = ["ImportanceDataset"]


class ImportanceDataset(LoaderCore, torch.utils.data.IterableDataset):
    """Importance-sampled, pruned batches for a ``torch.utils.data.DataLoader``.

    Takes every argument of ``LoaderCore`` (those of ``ImportanceLoader`` but the Ray
    ones), and ``units_per_window``: locality-aware draws over that many units per
    window (default 0: the paper's independent draws; no cost model chooses here).
    """

    def __init__(
        self,
        dataset: str | ShardCatalog,
        *,
        store: ImportanceStore,
        batch_size: int,
        units_per_window: int = 0,
        **options: Any,
    ) -> None:
        LoaderCore.__init__(self, dataset, store=store, batch_size=batch_size, **options)
        self.units = units_per_window
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
        if self.sampling == "importance" and epoch > 0:
            self._store_connection()  # serve the embedded store before workers fork

    # -- worker side --------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        # a worker reaches the store over its connection (a forked copy of an embedded
        # store would be a stale one); in the trainer's own process, the store itself
        here = self.store if info is None else self._store_connection()
        context = self.task_context(epoch, catalog=self.catalog, store=here, clock=self._clock)
        mine = self.epoch_tasks(epoch)[worker::workers]
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
