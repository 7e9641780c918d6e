"""The trainer's half of the method, shared by the Ray loader and the PyTorch dataset.

Per batch, ``report`` sends ``q_new`` (Eq. 7) for the batch's indices. At an epoch's
end, ``finish_epoch`` flushes the reports and, once for all ranks (rank 0, between
barriers), applies Alg. 1 line 13 (``q += eps``), Alg. 2 every ``prune_every``
epochs and the optional readmission. Every rank then reads the store's counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from isloader.data.catalog import ShardCatalog
from isloader.importance import importance_metric
from isloader.pipeline.reporter import Reporter
from isloader.store.api import ImportanceStore
from isloader.store.records import TableStats

__all__ = ["MethodSettings", "EpochProtocol", "distributed_rank_world", "open_for_store"]


@dataclass(frozen=True)
class MethodSettings:
    """The method's knobs (see ``ImportanceLoader`` for each)."""

    sampling: str = "importance"
    metric: str = "output_grad_norm"
    loss: str = "cross_entropy"
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    eps: float = 1e-3
    q_floor: float = 0.05
    prune_every: int = 0
    prune_k: float = 2.0
    readmit_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in ("importance", "uniform"):
            raise ValueError(f"sampling must be 'importance' or 'uniform', got {self.sampling!r}")
        if self.prune_every < 0:
            raise ValueError(f"prune_every must be >= 0, got {self.prune_every}")
        if not self.q_floor >= 0:
            raise ValueError(f"q_floor must be >= 0, got {self.q_floor}")


def distributed_rank_world() -> tuple[int, int]:
    """Rank and world size from torch.distributed, else ``RANK`` / ``WORLD_SIZE``."""
    import os

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def open_for_store(
    dataset: str | ShardCatalog, store: ImportanceStore, storage_options: dict[str, Any] | None
) -> ShardCatalog:
    """The dataset's catalog (loaded, or built and saved), checked against the store.

    Raises:
        ValueError: the store holds another number of samples than the dataset.
    """
    catalog = (
        dataset
        if isinstance(dataset, ShardCatalog)
        else ShardCatalog.open(dataset, storage_options)
    )
    if store.num_samples != len(catalog):
        raise ValueError(f"the store holds {store.num_samples} samples, the dataset {len(catalog)}")
    return catalog


def rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else those of ``distributed_rank_world``."""
    default_rank, default_world = distributed_rank_world()
    return (
        default_rank if rank is None else rank,
        default_world if world_size is None else world_size,
    )


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class EpochProtocol:
    """Reports and epoch-end steps against one store, for one rank."""

    def __init__(self, store: ImportanceStore, method: MethodSettings, rank: int) -> None:
        self.store = store
        self.method = method
        self.rank = rank
        metric = importance_metric(method.metric, loss=method.loss, loss_fn=method.loss_fn)
        self.reporter = Reporter(store, metric, floor=method.q_floor)

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> bool:
        """Send ``q_new`` for the batch; False (nothing sent) for the uniform baseline."""
        if self.method.sampling == "uniform":
            return False
        self.reporter.report(index, outputs, targets)
        return True

    def finish_epoch(self, epoch: int) -> TableStats:
        """Flush, run the epoch-end steps once for all ranks, return the store's stats."""
        m = self.method
        self.reporter.flush()
        _barrier()
        if self.rank == 0 and m.sampling == "importance":
            self.store.end_epoch(epoch, m.eps)
            if m.prune_every and epoch >= 1 and epoch % m.prune_every == 0:
                self.store.prune(m.prune_k, epoch=epoch)
                if m.readmit_fraction:
                    self.store.readmit(m.readmit_fraction, seed=(m.seed, epoch), epoch=epoch)
        _barrier()
        return self.store.stats()

    def close(self) -> None:
        """Send every queued report and wait for the store to acknowledge them."""
        self.reporter.close()
