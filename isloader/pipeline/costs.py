"""How sampled windows read: the paper's independent draws, or locality-aware draws when
the endpoint cannot serve the misses (docs/architecture.md, "Reading at streaming
speed"). Pure numpy, tested without Ray.

With row-granular reads a miss costs one row's bytes and one request, so independent
draws per step cost ``m = B (1 - c)`` misses (``c``: the importance mass the caches
hold), served at most ``concurrency`` at a time:

    fetch time per step  ~  m * row_bytes / bandwidth  +  m * latency / concurrency

Windows are fetched ahead while earlier ones train, so that time hides behind the step
as long as it is shorter. Locality-aware draws (``G`` units a window, exact marginals)
put a window's misses into fewer units, at a variance cost of about
``v = 1 + 2 W B / (G U)``. They are chosen only when independent draws would not keep
up and locality's time per step times ``v`` (the steps it takes for the same progress)
is still the smaller, or where ``price_per_request`` is given and they keep up with
fewer requests.

What locality saves depends on the fetcher's merging (``merged_reads``): misses of a
unit closer than the merge gap ``g = latency * bandwidth / concurrency`` are read in
one request, *with the bytes between them*. With ``k`` misses spread over a unit the
gaps between them are about exponential with mean ``m = unit_bytes / (k + 1)``, so a
unit costs ``1 + (k - 1) e^(-g/m)`` requests and ``k`` rows plus
``(k - 1) (m - (m + g) e^(-g/m))`` bytes of gaps. Dense misses in a unit merge into
one read of all of it; sparse ones stay one request each, and locality then saves
nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Endpoint", "DrawChoice", "choose_draws", "expected_coverage", "merged_reads"]


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


def merged_reads(
    misses: float, unit_bytes: float, row_bytes: float, gap: float
) -> tuple[float, float]:
    """Expected requests and bytes to read ``misses`` rows spread at random over one
    unit of ``unit_bytes``, ranges closer than ``gap`` merged (module docstring)."""
    if misses <= 0:
        return 0.0, 0.0
    mean_gap = max(unit_bytes - misses * row_bytes, 0.0) / (misses + 1.0)
    if mean_gap <= 0:
        return 1.0, unit_bytes
    apart = float(np.exp(-gap / mean_gap))  # a gap too wide to merge
    requests = 1.0 + (misses - 1.0) * apart
    gap_bytes = (misses - 1.0) * (mean_gap - (mean_gap + gap) * apart)
    return requests, misses * row_bytes + max(gap_bytes, 0.0)


def choose_draws(
    *,
    batch_size: int,
    window: int,
    coverage: float,
    row_bytes: float,
    step_seconds: float,
    endpoint: Endpoint,
    locality_units: int,
    unit_bytes: float,
    unit_rows: float,
) -> DrawChoice:
    """Independent draws unless the endpoint cannot serve their misses within a step
    (or, with a price per request, they cost more); see the module docstring.

    ``locality_units`` is the ``G`` locality-aware draws would use (0: none is safe, as
    when rows are clustered), ``unit_bytes`` the mean stored bytes of a unit and
    ``unit_rows`` its mean active rows.
    """
    e = endpoint
    misses = batch_size * max(0.0, 1.0 - coverage)
    independent = misses * row_bytes / e.bandwidth + misses * e.latency / e.concurrency
    if locality_units <= 0:
        return DrawChoice("independent", 0, independent, misses, independent, float("inf"))
    # a window's misses fall in its G units; each unit's are read merged where close
    per_window = batch_size * window * max(0.0, 1.0 - coverage)
    units_hit = locality_units * (1.0 - np.exp(-per_window / max(locality_units, 1)))
    gap = e.latency * e.bandwidth / e.concurrency
    per_unit = merged_reads(per_window / max(units_hit, 1e-9), unit_bytes, row_bytes, gap)
    requests = units_hit * per_unit[0] / window
    nbytes = units_hit * per_unit[1] / window
    locality = nbytes / e.bandwidth + requests * e.latency / e.concurrency
    if e.price_per_request > 0 and requests < misses and locality <= step_seconds:
        use_locality = True  # it keeps up and costs fewer requests
    elif independent <= step_seconds:
        use_locality = False  # the paper's draws keep up: no variance to pay
    else:
        variance = 1.0 + 2.0 * window * batch_size / max(locality_units * unit_rows, 1.0)
        use_locality = max(locality, step_seconds) * variance < independent
    if use_locality:
        return DrawChoice("locality", locality_units, locality, requests, independent, locality)
    return DrawChoice("independent", 0, independent, misses, independent, locality)
