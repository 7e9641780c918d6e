"""How sampled windows read: the paper's independent draws, or locality-aware draws when
the endpoint cannot serve the misses (docs/architecture.md, "Reading at streaming
speed"). Pure numpy, tested without Ray.

With row-granular reads a miss costs one row's bytes and one request, so independent
draws per step cost ``m = B (1 - c)`` misses (``c``: the importance mass the caches
hold), served at most ``concurrency`` at a time:

    fetch time per step  ~  m * row_bytes / bandwidth  +  m * latency / concurrency

Windows are fetched ahead while earlier ones train, so that time hides behind the step
as long as it is shorter. Locality-aware draws (``G`` units a window, exact marginals)
turn many scattered misses into fewer, larger requests, at a variance cost of about
``1 + 2 W B / (G U)``; they are chosen only when independent draws would not keep up,
or cost more per request where ``price_per_request`` is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Endpoint", "DrawChoice", "choose_draws", "expected_coverage"]


@dataclass(frozen=True)
class Endpoint:
    """What the read workers measured of their storage."""

    latency: float  # seconds before a request's first byte
    bandwidth: float  # bytes per second, all requests together
    concurrency: int  # requests served at once
    price_per_request: float = 0.0  # optional, in any currency


@dataclass(frozen=True)
class DrawChoice:
    """The mode chosen and what it is predicted to cost per step."""

    mode: str  # "independent" or "locality"
    units: int  # G for locality-aware draws, 0 for independent ones
    predicted_fetch_s_per_step: float
    predicted_requests_per_step: float
    independent_fetch_s_per_step: float
    locality_fetch_s_per_step: float

    def as_dict(self) -> dict[str, float | str]:
        """The choice and its predicted costs, for ``history``."""
        return asdict(self)


def expected_coverage(
    q: np.ndarray, row_bytes: np.ndarray, budget: float, scale: float = 1.0
) -> float:
    """The share of the mass that a cache of ``budget`` bytes keeping rows by ``q / bytes``
    holds (``q`` of a sample of rows, each standing for ``scale`` rows)."""
    q = np.asarray(q, float)
    total = q.sum()
    if total <= 0 or budget <= 0:
        return 0.0
    order = np.argsort(-q / np.maximum(row_bytes, 1.0))
    fits = np.cumsum(np.asarray(row_bytes, float)[order]) * scale <= budget
    return float(q[order][fits].sum() / total)


def choose_draws(
    *,
    batch_size: int,
    window: int,
    coverage: float,
    row_bytes: float,
    step_seconds: float,
    endpoint: Endpoint,
    locality_units: int,
    unit_rows: float,
) -> DrawChoice:
    """Independent draws unless the endpoint cannot serve their misses within a step
    (or, with a price per request, they cost more); see the module docstring.

    ``locality_units`` is the ``G`` locality-aware draws would use (0: none is safe, as
    when rows are clustered), ``unit_rows`` the mean active rows of a unit.
    """
    e = endpoint
    misses = batch_size * max(0.0, 1.0 - coverage)
    independent = misses * row_bytes / e.bandwidth + misses * e.latency / e.concurrency
    if locality_units <= 0:
        return DrawChoice("independent", 0, independent, misses, independent, float("inf"))
    # a window's misses fall in its G units, neighbours merged: about one request per unit
    # holding a miss, and the bytes of the rows between them
    per_window = batch_size * window * max(0.0, 1.0 - coverage)
    units_hit = locality_units * (1.0 - np.exp(-per_window / max(locality_units, 1)))
    requests = units_hit / window
    spread = min(unit_rows, per_window / max(units_hit, 1e-9)) if units_hit else 0.0
    nbytes = requests * spread * row_bytes * 2.0  # rows between the misses come along
    locality = nbytes / e.bandwidth + requests * e.latency / e.concurrency
    if e.price_per_request > 0 and requests < misses and locality <= step_seconds:
        use_locality = True  # it keeps up and costs fewer requests
    elif independent <= step_seconds:
        use_locality = False  # the paper's draws keep up: no variance to pay
    else:
        use_locality = locality < independent
    if use_locality:
        return DrawChoice("locality", locality_units, locality, requests, independent, locality)
    return DrawChoice("independent", 0, independent, misses, independent, locality)
