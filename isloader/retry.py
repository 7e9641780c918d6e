"""One retry helper: exponential backoff with full jitter, within a time budget.

Only errors the caller calls transient are retried; everything else surfaces at
once. The budget is wall time, so a few seconds of a restarting shard or a
throttling object store are ridden out, and a dead one fails in bounded time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["RetryPolicy"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``budget``: seconds of retrying after the first failure; delays start at ``base``
    and double up to ``cap``, each drawn uniformly from ``[0, delay]`` (full jitter)."""

    budget: float = 5.0
    base: float = 0.05
    cap: float = 1.0

    def call(self, fn: Callable[[], T], transient: Callable[[BaseException], bool]) -> T:
        """``fn()``, retried while its error is transient and the budget lasts.

        Raises:
            The last error, once it is not transient or the budget is spent.
        """
        deadline = None
        delay = self.base
        while True:
            try:
                return fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.budget
                if now >= deadline:
                    raise
                time.sleep(min(random.uniform(0, delay), max(0.0, deadline - now)))
                delay = min(delay * 2, self.cap)
