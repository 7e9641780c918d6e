"""Plain records that cross module and wire boundaries (never protobuf messages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from isloader.layout import UnitLayout, UnitStats

__all__ = ["Plan", "TableStats", "TableState", "ShardView", "UnitLayout", "UnitStats"]


class Plan(NamedTuple):
    """Indices drawn with replacement, their probability under the global ``p`` and
    the unbiased weight ``w = 1 / (N_active * p)`` (1.0 everywhere under uniform q)."""

    indices: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


class ShardView(NamedTuple):
    """What every store response carries so clients keep the global view fresh."""

    total_mass: float
    active_count: int


@dataclass(frozen=True)
class TableStats:
    """A summary of one table (or, summed by the client, of the whole store)."""

    num_samples: int
    active: int
    seen: int
    pruned: int
    total_mass: float
    sum_sq: float
    q_min: float
    q_max: float
    epoch: int
    version: int
    histogram: tuple[int, ...] = ()
    histogram_edges: tuple[float, ...] = ()

    @property
    def q_mean(self) -> float:
        """Mean q over the active samples (0 when none is active)."""
        return self.total_mass / self.active if self.active else 0.0

    @property
    def effective_sample_size(self) -> float:
        """``(sum q)^2 / sum q^2``: N_active for uniform q, 1 when one sample has it all."""
        return self.total_mass**2 / self.sum_sq if self.sum_sq > 0 else 0.0

    @property
    def ready(self) -> bool:
        """True once the initialization epoch has measured every sample."""
        return self.seen + self.pruned >= self.num_samples


@dataclass
class TableState:
    """Everything a snapshot holds: the arrays and a JSON-able ``meta`` dict."""

    q: np.ndarray
    seen: np.ndarray
    pruned: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
