"""``Reporter``: sends each batch's ``q_new`` to the store without blocking the step.

The metric is computed on the trainer's device from the outputs it already has;
moving the result to the host and the RPC happen on a background thread, behind a
bounded queue (a full queue applies back-pressure rather than dropping updates).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from isloader.store.api import ImportanceStore

__all__ = ["Reporter"]

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Reporter:
    """Background sender of ``(index, q_new)`` pairs to a store."""

    def __init__(self, store: ImportanceStore, metric: Metric, max_pending: int = 64) -> None:
        self._store = store
        self._metric = metric
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor]] = queue.Queue(max_pending)
        self._failure: BaseException | None = None
        self.max_depth = 0
        self.reported = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="isloader-reporter")
        self._thread.start()

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Queue ``q_new = metric(outputs, targets)`` for ``index``."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        q = self._metric(outputs.detach(), targets.detach())
        self._queue.put((index.detach(), q.detach()))
        self.max_depth = max(self.max_depth, self._queue.qsize())
        self.reported += 1

    def flush(self) -> None:
        """Return once every queued report is acknowledged by the store."""
        self._queue.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _run(self) -> None:
        while True:
            index, q = self._queue.get()
            try:
                self._store.update(index.cpu().numpy().astype(np.int64), q.cpu().double().numpy())
            except BaseException as exc:  # surfaced by the next report() or flush()
                self._failure = exc
            finally:
                self._queue.task_done()
