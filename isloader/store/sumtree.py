"""A sum tree over non-negative float64 leaves, vectorised over batches.

Sampling ``i`` with probability ``P(i) = m_i / sum_j m_j`` is a prefix-sum search:
draw ``u ~ U[0, total)`` and find the first leaf whose inclusive prefix sum exceeds
``u``. The tree is a Fenwick (binary indexed) tree: ``n + 1`` float64 cells, 8 bytes
per leaf, ``O(log n)`` per search and per leaf update, every step a numpy operation
over the whole batch. It stores prefix sums only; the leaves themselves live with
the caller (``ImportanceTable`` keeps ``q``), which is what keeps the table at
18 bytes per sample.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]


class SumTree:
    """Prefix sums over ``n`` leaves; see the module docstring for the layout."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"SumTree size must be >= 0, got {n}")
        self._n = n
        # 1-based cells 1..n; cell 0 unused; cell n+1 is an +inf sentinel, so a search
        # step past the end (clipped onto it) never moves right.
        self._cells = np.zeros(n + 2, dtype=np.float64)
        self._cells[-1] = np.inf
        self._top = 1 << (n.bit_length() - 1) if n else 0

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._cells.nbytes

    def build(self, leaves: np.ndarray) -> None:
        """Rebuild from scratch in O(n): clears accumulated floating-point drift."""
        cells = self._cells
        cells[0] = 0.0
        cells[1:-1] = leaves
        step = 1
        while step < self._n:
            # Cells whose lowest set bit is `step` feed cell i + step; all of a
            # cell's inputs have a smaller lowest bit, so one pass per level is exact.
            width = 2 * step
            count = self._n // width
            cells[width::width][:count] += cells[step::width][:count]
            step = width

    def total(self) -> float:
        """Sum of all leaves, O(log n)."""
        total = 0.0
        i = self._n
        while i > 0:
            total += self._cells[i]
            i &= i - 1
        return float(total)

    def add(self, positions: np.ndarray, deltas: np.ndarray) -> None:
        """Add ``deltas`` to the leaves at 0-based ``positions`` (repeats allowed)."""
        i = np.asarray(positions, dtype=np.int64) + 1
        d = np.asarray(deltas, dtype=np.float64)
        while i.size:
            np.add.at(self._cells, i, d)
            i = i + (i & -i)
            inside = i <= self._n
            i, d = i[inside], d[inside]

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each target ``u`` the 0-based leaf ``i`` with ``prefix(i) <= u < prefix(i+1)``.

        Results are clipped to ``n - 1``; a caller that cannot rule out rounding at
        the very top of the range checks the returned leaves have positive mass.
        """
        remaining = np.array(targets, dtype=np.float64)
        pos = np.zeros(remaining.shape, dtype=np.int64)
        sentinel = self._n + 1
        step = self._top
        while step:
            nxt = pos + step
            values = self._cells[np.minimum(nxt, sentinel)]  # past the end -> +inf
            go = values <= remaining
            pos = np.where(go, nxt, pos)
            remaining = np.where(go, remaining - values, remaining)
            step >>= 1
        return np.minimum(pos, max(self._n - 1, 0))
