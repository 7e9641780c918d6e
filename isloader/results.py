"""Small statistics for comparing training runs: time-to-target and paired intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["time_to_target", "value_at_time", "paired_ci", "ratio_ci", "compare_methods"]


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


def _total(result: Any, key: str) -> float:
    """``key`` summed over every epoch of one run (0 where an epoch lacks it)."""
    return float(sum(e.get(key, 0.0) for e in result.epochs))


def compare_methods(runs: dict[str, list[Any]], baseline: str = "uniform") -> dict[str, Any]:
    """Per method, over paired seeds: accuracy at equal steps and its paired interval
    against ``baseline``, the time to reach the baseline's final accuracy as a ratio of
    the baseline's time (geometric mean, interval on log ratios), accuracy at the
    baseline's time, and what the method cost per epoch (time, bytes, requests, cache
    hits, plan staleness, weight tails).

    ``runs[method]`` holds one result per seed, in the same seed order for every method;
    a result has ``epochs`` (dicts per epoch) and ``series(key)``.
    """
    base = runs[baseline]
    out: dict[str, Any] = {}
    for method, results in runs.items():
        final = [r.epochs[-1]["test_acc"] for r in results]
        deltas = [a - b.epochs[-1]["test_acc"] for a, b in zip(final, base, strict=True)]
        ratios, reached = [], 0
        for r, b in zip(results, base, strict=True):
            t = time_to_target(
                r.series("train_seconds"), r.series("test_acc"), b.epochs[-1]["test_acc"]
            )
            reached += math.isfinite(t)
            ratios.append(t / b.epochs[-1]["train_seconds"])
        finite = [x for x in ratios if math.isfinite(x)]
        at_time = [
            value_at_time(
                r.series("train_seconds"), r.series("test_acc"), b.epochs[-1]["train_seconds"]
            )
            for r, b in zip(results, base, strict=True)
        ]
        later = [e for r in results for e in (r.epochs[1:] or r.epochs)]
        remote = any(e.get("endpoint_gets") for r in results for e in r.epochs)
        nbytes, gets = (
            ("endpoint_bytes", "endpoint_gets") if remote else ("bytes_fetched", "requests")
        )

        def mean(key: str, default: float = 0.0, epochs: list = later) -> float:
            return float(np.mean([e.get(key, default) for e in epochs]))

        out[method] = {
            "acc_equal_steps": float(np.mean(final)),
            "acc_delta_vs_baseline": paired_ci(deltas),
            "time_to_baseline_acc_ratio": (
                ratio_ci(finite, [1.0] * len(finite))
                if len(finite) == len(results)
                else (math.nan, math.nan, math.nan)
            ),
            "time_to_baseline_acc_ratios": ratios,
            "reached_baseline_acc": f"{reached}/{len(results)}",
            "acc_at_baseline_time": float(np.nanmean(at_time)),
            "train_seconds": float(np.mean([r.epochs[-1]["train_seconds"] for r in results])),
            "epoch_seconds": mean("epoch_seconds"),
            "epoch_seconds_by_seed": [
                float(np.mean([e["epoch_seconds"] for e in (r.epochs[1:] or r.epochs)]))
                for r in results
            ],
            "data_wait_share": float(
                np.mean(
                    [_total(r, "data_wait_seconds") / _total(r, "epoch_seconds") for r in results]
                )
            ),
            "bytes_total": float(np.mean([_total(r, nbytes) for r in results])),
            "gets_total": float(np.mean([_total(r, gets) for r in results])),
            "bytes_per_epoch": mean(nbytes),
            "requests_per_epoch": mean(gets),
            "bytes_by_epoch": [
                float(np.mean([r.epochs[i].get(nbytes, 0.0) for r in results]))
                for i in range(len(results[0].epochs))
            ],
            "cache_hit_rate": mean("cache_hit_rate"),
            "max_plan_staleness": int(max(e.get("max_plan_staleness", 0) for e in later)),
            "staleness_bound": int(max(e.get("staleness_bound", 0) for e in later)),
            "max_weight": float(max(e.get("max_weight", 1.0) for e in later)),
            "weight_ess": mean("weight_ess", 1.0),
            "steps_weight_over_10": mean("steps_weight_over_10"),
            "pruned_share": float(
                np.mean([r.epochs[-1].get("pruned_share", 0.0) for r in results])
            ),
            "curves": [
                {"seconds": r.series("train_seconds"), "acc": r.series("test_acc")} for r in results
            ],
        }
    return out
