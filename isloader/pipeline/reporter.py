"""``Reporter``: sends each batch's ``q_new`` to the store without blocking the step.

``report`` only queues the batch's (detached) outputs: the metric, computed on the
trainer's device from the outputs it already has, the move to the host and the
store call happen on the ``BackgroundSender`` thread, behind a bounded queue (a full
queue applies back-pressure rather than dropping updates; a store that hangs
surfaces as an error, not a stalled step). Reports that queued up while the store
was busy go out as one update. ``floor`` is added to every measurement (see
``ImportanceLoader``'s ``q_floor``).

Idempotent: each update is handed to the store with ``wait=False``, so its request id
``(client_id, seq)`` is fixed when the report is made and every retry (by the client,
or by a later ``flush``) carries the same one; a shard that took the first attempt
recognises the retry and applies it once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from isloader.sender import BackgroundSender
from isloader.store.api import ImportanceStore

__all__ = ["Reporter"]

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Reporter:
    """Background sender of ``(index, q_new)`` pairs to a store."""

    def __init__(
        self, store: ImportanceStore, metric: Metric, max_pending: int = 64, floor: float = 0.0
    ) -> None:
        self._store = store
        self._metric = metric
        self._floor = floor
        self._sender: BackgroundSender[tuple[torch.Tensor, ...]] = BackgroundSender(
            self._send,
            max_batch=4,
            linger=0.01,
            max_pending=max_pending,
            name="isloader-reporter",
        )
        self.reported = 0

    @property
    def max_depth(self) -> int:
        """The deepest the queue of unsent reports has been."""
        return self._sender.max_depth

    @max_depth.setter
    def max_depth(self, value: int) -> None:
        """Reset the high-water mark (the loader does at each epoch's start)."""
        self._sender.max_depth = value

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Queue ``q_new = metric(outputs, targets)`` for ``index`` (computed in the
        background; do not modify ``outputs`` in place afterwards).

        Raises:
            The failure of an earlier report (kept queued; ``flush`` retries it).
        """
        self._sender.submit((index.detach(), outputs.detach(), targets.detach()))
        self.reported += 1

    def flush(self) -> None:
        """Return once every queued report is acknowledged by the store.

        Raises:
            The first failure (the failed update stays queued with its request id;
            the next ``flush`` sends it again).
        """
        self._sender.flush()
        self._store.flush()

    def close(self) -> None:
        """Send what is queued, stop the thread, and wait for the store to acknowledge."""
        self._sender.close()
        self._store.flush()

    def _send(self, batch: list[tuple[torch.Tensor, ...]]) -> None:
        """One metric call and one store update for every queued report."""
        index = torch.cat([i.reshape(-1) for i, _, _ in batch])
        outputs = torch.cat([o for _, o, _ in batch])
        targets = torch.cat([t for _, _, t in batch])
        q = self._metric(outputs, targets).cpu().double().numpy() + self._floor
        self._store.update(index.cpu().numpy().astype(np.int64), q, wait=False)
