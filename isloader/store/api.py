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
    def num_samples(self) -> int:
        """N: indices are ``0..N-1`` across every shard."""

    def update(self, indices: np.ndarray, values: np.ndarray, *, wait: bool = True) -> None:
        """Apply Eq. 8 for each index; ``wait=False`` queues it and returns at once
        (a failure is raised by a later call or ``flush``; the update stays queued).

        Raises:
            InvalidArgumentError: non-finite, negative or too large values, a length
                mismatch (nothing is applied).
            IndexOutOfRangeError: an index outside ``0..N-1``.
            StoreUnavailableError: a shard stayed unreachable (or could not log the
                update durably) past the retry budget.
        """

    def flush(self) -> None:
        """Wait until every queued update is acknowledged.

        Raises:
            The first failure of a queued update (it stays queued with its request id,
            so the next ``flush`` sends it again and it is applied once).
        """

    def sample(
        self, count: int, seed: Seed, *, layout: UnitLayout | None = None, units: int = 0
    ) -> Plan:
        """Draw ``count`` indices with replacement from the global ``p``; with ``layout``
        and ``units = G``, restricted to ``G`` units picked by mass (same marginals).

        Raises:
            InvalidArgumentError: a count that is not an integer in ``[0, MAX_SAMPLE]``.
            MessageTooLargeError: a reply that would exceed the message limit.
            UnknownLayoutError: a layout the shards do not know (clients register it).
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def unit_stats(self, layout: UnitLayout) -> UnitStats:
        """Per-unit mass and active rows, and every pruned flag (for the cache).

        Raises:
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` of ``indices`` (0 for pruned samples).

        Raises:
            IndexOutOfRangeError: an index outside ``0..N-1``.
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """``q += eps`` on active samples, once per epoch number; returns whether this
        call applied it (False: that epoch had ended already).

        Raises:
            InvalidArgumentError: an eps that is negative, not finite or would push a q
                past the value bound; an epoch beyond the bound or far ahead of the store.
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def prune(self, k: float, *, epoch: int | None = None) -> int:
        """Alg. 2 with the global threshold ``sum(q) / (K N_active)``; returns how many
        samples it pruned (once per ``epoch`` when one is given).

        Raises:
            InvalidArgumentError: ``k`` not positive and finite.
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def readmit(self, fraction: float, *, seed: Seed = 0, epoch: int | None = None) -> int:
        """Put a random share of pruned samples back; returns how many (once per
        ``epoch`` when one is given; without one it is never retried).

        Raises:
            InvalidArgumentError: a fraction outside ``[0, 1]``.
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def reset(self) -> None:
        """Forget every measurement: all samples unseen and active, epoch 0.

        Raises:
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def stats(self) -> TableStats:
        """Totals over every shard: mass, active, seen and pruned counts, epoch, version,
        the q histogram on fixed edges.

        Raises:
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def snapshot(self) -> list[str]:
        """Write a snapshot of every shard that has a snapshot location; returns their
        paths.

        Raises:
            SnapshotError: a snapshot could not be written.
            StoreUnavailableError: a shard stayed unreachable past the retry budget.
        """

    def close(self) -> None:
        """Send what is queued, then release threads, channels and servers (idempotent)."""
