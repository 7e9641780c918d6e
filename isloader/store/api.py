"""What every importance store offers: ``LocalStore`` in-process, ``StoreClient`` over gRPC.

Trainers and the pipeline are written against this protocol, so switching from the
embedded store to a deployed one is a configuration change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from isloader.store.records import Plan, TableStats, UnitLayout, UnitStats

__all__ = ["ImportanceStore", "Seed", "seed_sequence"]

Seed = int | Sequence[int]


def seed_sequence(seed: Seed) -> np.random.SeedSequence:
    """``(seed, epoch, step, rank)`` tuples and plain ints alike become one seed sequence."""
    entropy = [int(s) for s in seed] if isinstance(seed, Sequence) else int(seed)
    return np.random.SeedSequence(entropy)


@runtime_checkable
class ImportanceStore(Protocol):
    """The store operations of docs/architecture.md: measure, sample, and the epoch-level steps."""

    @property
    def num_samples(self) -> int: ...

    def update(self, indices: np.ndarray, values: np.ndarray, *, wait: bool = True) -> None:
        """Apply Eq. 8 for each index; ``wait=False`` queues it and returns at once."""

    def flush(self) -> None:
        """Wait until every queued update is acknowledged (raising the first failure)."""

    def sample(
        self, count: int, seed: Seed, *, layout: UnitLayout | None = None, units: int = 0
    ) -> Plan:
        """Draw ``count`` indices with replacement from the global ``p``; with ``layout``
        and ``units = G``, restricted to ``G`` units picked by mass (same marginals)."""

    def unit_stats(self, layout: UnitLayout) -> UnitStats:
        """Per-unit mass and active rows, and every pruned flag (for the cache)."""

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` of ``indices``."""

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """``q += eps`` on active samples, once per epoch number."""

    def prune(self, k: float, *, epoch: int | None = None) -> int:
        """Alg. 2 with the global threshold ``sum(q) / (K N_active)``; returns how many."""

    def readmit(self, fraction: float, *, seed: Seed = 0, epoch: int | None = None) -> int:
        """Put a random share of pruned samples back; returns how many."""

    def reset(self) -> None:
        """Forget every measurement: all samples unseen and active, epoch 0."""

    def stats(self) -> TableStats: ...

    def snapshot(self) -> list[str]:
        """Write a snapshot of every shard that has a snapshot location."""

    def close(self) -> None: ...
