"""Timing and reporting shared by the benchmark scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

__all__ = ["time_calls", "report"]


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 5) -> np.ndarray:
    """Seconds per call, ``repeats`` samples after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def report(rows: list[dict], final: dict) -> None:
    """Print a table of ``rows`` and end with the one JSON line tools read."""
    if rows:
        keys = list(rows[0])
        print(" | ".join(f"{k:>14}" for k in keys))
        for row in rows:
            print(
                " | ".join(
                    f"{v:>14.4g}" if isinstance(v, float) else f"{v!s:>14}" for v in row.values()
                )
            )
    print(json.dumps(final))
