"""Small statistics for comparing training runs: time-to-target and paired intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["time_to_target", "value_at_time", "paired_ci", "ratio_ci"]


def time_to_target(times: Sequence[float], values: Sequence[float], target: float) -> float:
    """First time ``values`` reaches ``target``, interpolated linearly between the two
    evaluations that straddle it; ``inf`` when it never does."""
    t, v = np.asarray(times, float), np.asarray(values, float)
    hit = np.flatnonzero(v >= target)
    if not hit.size:
        return math.inf
    i = int(hit[0])
    if i == 0 or v[i] == v[i - 1]:
        return float(t[i])
    frac = (target - v[i - 1]) / (v[i] - v[i - 1])
    return float(t[i - 1] + frac * (t[i] - t[i - 1]))


def value_at_time(times: Sequence[float], values: Sequence[float], at: float) -> float:
    """The last evaluated value at or before time ``at`` (NaN before the first)."""
    t, v = np.asarray(times, float), np.asarray(values, float)
    i = int(np.searchsorted(t, at, side="right")) - 1
    return float(v[i]) if i >= 0 else math.nan


def paired_ci(differences: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its Student-t interval ``(mean, low, high)``."""
    from scipy import stats

    d = np.asarray(differences, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        m = float(d.mean()) if d.size else math.nan
        return m, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def ratio_ci(
    numerators: Sequence[float], denominators: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """Geometric-mean ratio with a paired interval computed on log ratios."""
    logs = np.log(np.asarray(numerators, float) / np.asarray(denominators, float))
    mean, low, high = paired_ci(logs, level)
    return math.exp(mean), math.exp(low), math.exp(high)
