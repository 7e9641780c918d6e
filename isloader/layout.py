"""A dataset's units as both sides know them: the store (locality-aware draws, unit
masses) and the data plane (streaming reads, the cache). A neutral module, so neither
side imports the other."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["UnitLayout", "UnitStats"]


@dataclass(frozen=True)
class UnitLayout:
    """Units: contiguous index ranges read as one piece (a Parquet row group, a run of
    samples in one tar). ``bounds`` rises strictly from 0 to N; unit ``u`` is
    ``[bounds[u], bounds[u + 1])``. Stores know a layout by its ``name``, a digest of
    the bounds, so two loaders of one dataset share it."""

    bounds: np.ndarray

    @property
    def name(self) -> str:
        """A digest of the bounds: the store knows a layout by it."""
        data = np.ascontiguousarray(self.bounds, dtype="<i8").tobytes()
        return hashlib.sha1(data).hexdigest()[:20]

    def __len__(self) -> int:
        return len(self.bounds) - 1


class UnitStats(NamedTuple):
    """Per unit of a layout (from ``first_unit`` on): importance mass and active rows;
    and the pruned flag of every index (what the importance-aware cache needs)."""

    first_unit: int
    mass: np.ndarray
    active: np.ndarray
    pruned: np.ndarray
