"""A sum tree over non-negative float64 leaves, vectorised over batches.

Sampling ``i`` with probability ``P(i) = m_i / sum_j m_j`` is a descent from the root:
draw ``u ~ U[0, total)``, go left while ``u`` falls under the left child's sum, else
subtract it and go right. The tree uses the heap layout over ``n`` leaves for any
``n``: node ``k`` has children ``2k`` and ``2k+1``, internal nodes are ``1..n-1``
and the leaves are nodes ``n..2n-1`` (16 bytes per leaf in all). Leaves sit at two
depths when ``n`` is not a power of two; the descent does not care.

Writes are split in two so a batch of updates is cheap: the caller writes leaves
through ``leaves`` (a view) and later calls ``refresh(positions)``, which recomputes
every touched ancestor once per level from its two children. Recomputing instead of
adding deltas means no floating-point drift accumulates in the tree.

Draws restricted to a contiguous leaf range ``[lo, hi)`` (a *unit*: a Parquet row
group, a run of tar samples) use the range's canonical cover: the ``O(log n)``
perfect subtrees, left to right, that the bottom-up segment-tree walk visits. Their
sums give the range's mass ``M``; a draw ``u ~ U[0, M)`` picks the covering subtree
whose prefix interval holds ``u`` and descends inside it, so it lands on leaf ``i``
with probability ``m_i / M``. Inside a perfect subtree leaves are in index order, for
any ``n``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]


class SumTree:
    """Sums over ``n`` leaves in heap layout; see the module docstring."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"SumTree needs at least one leaf, got {n}")
        self._n = n
        self._nodes = np.zeros(2 * n, dtype=np.float64)
        self._depth = int(2 * n - 1).bit_length() - 1  # depth of the deepest leaf

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes of the tree's node array (leaves and inner sums)."""
        return self._nodes.nbytes

    @property
    def leaves(self) -> np.ndarray:
        """The leaf values, writable; call ``refresh`` or ``rebuild`` after writing."""
        return self._nodes[self._n :]

    def total(self) -> float:
        """Sum of all leaves (as of the last refresh or rebuild)."""
        return float(self._nodes[1])

    def rebuild(self) -> None:
        """Recompute every internal node, one vectorised step per level: O(n)."""
        nodes = self._nodes
        level_start = 1 << max(self._depth - 1, 0)
        while level_start >= 1:
            lo, hi = level_start, min(2 * level_start, self._n)
            if lo < hi:
                nodes[lo:hi] = nodes[2 * lo : 2 * hi : 2] + nodes[2 * lo + 1 : 2 * hi : 2]
            level_start >>= 1

    def refresh(self, positions: np.ndarray) -> None:
        """Recompute the ancestors of the leaves at 0-based ``positions`` (any order)."""
        nodes = np.unique(np.asarray(positions, dtype=np.int64)) + self._n
        while nodes.size:
            nodes >>= 1
            # Sorted input stays sorted under >>, so duplicates are neighbours.
            keep = np.empty(nodes.size, dtype=np.bool_)
            keep[0] = True
            np.not_equal(nodes[1:], nodes[:-1], out=keep[1:])
            nodes = nodes[keep]
            if nodes[0] == 0:
                nodes = nodes[1:]
            self._nodes[nodes] = self._nodes[2 * nodes] + self._nodes[2 * nodes + 1]

    def cover(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The canonical cover of each leaf range ``[lo[k], hi[k])``, one row per range.

        Rows hold node ids left to right, padded with 0 (the unused root slot, whose
        sum is 0), so ``sums(cover).sum(axis=1)`` is each range's mass.
        """
        left = np.asarray(lo, dtype=np.int64) + self._n
        right = np.asarray(hi, dtype=np.int64) + self._n
        if left.size and ((left < self._n).any() or (right > 2 * self._n).any()):
            raise ValueError("leaf range outside the tree")
        heads, tails = [], []
        while (left < right).any():
            open_ = left < right
            take = open_ & (left & 1).astype(bool)
            heads.append(np.where(take, left, 0))
            left = left + take
            take = open_ & (right & 1).astype(bool)
            right = right - take
            tails.append(np.where(take, right, 0))
            left >>= 1
            right >>= 1
        if not heads:
            return np.zeros((left.size, 1), dtype=np.int64)
        return np.stack(heads + tails[::-1], axis=1)

    def sums(self, nodes: np.ndarray) -> np.ndarray:
        """The sum held by each node id (0 for the padding id 0)."""
        return self._nodes[nodes]

    def find_in(self, cover: np.ndarray, which: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """For each draw, the 0-based leaf of range ``which`` (a row of ``cover``) whose
        prefix interval, counted from the range's first leaf, holds ``targets`` (a ``u``
        in ``[0, mass of that range)``).

        The covers' sums are laid end to end, so one ``searchsorted`` places every draw;
        rounding at a range's top can land on a zero-mass leaf or on padding (-1),
        which callers check and redraw.
        """
        sums = self._nodes[cover].ravel()
        width = cover.shape[1]
        ends = np.cumsum(sums)
        starts = ends - sums
        first = np.asarray(which, dtype=np.int64) * width
        target = starts[first] + np.asarray(targets, dtype=np.float64)
        pos = np.searchsorted(ends, target, side="right")
        pos = np.clip(pos, first, first + width - 1)
        node = cover.ravel()[pos]
        remaining = np.maximum(target - starts[pos], 0.0)
        leaf = self._descend(np.maximum(node, 1), remaining)
        return np.where(node > 0, leaf, -1)  # -1: landed on padding, the caller redraws

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each ``u`` in ``[0, total)`` the 0-based leaf whose prefix interval holds it.

        A caller that cannot rule out rounding at the very top of the range checks the
        returned leaves have positive mass.
        """
        remaining = np.array(targets, dtype=np.float64)
        return self._descend(np.ones(remaining.shape, dtype=np.int64), remaining)

    def _descend(self, node: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """From each ``node`` down to the leaf whose prefix interval holds ``remaining``."""
        nodes, n = self._nodes, self._n
        for _ in range(self._depth):
            internal = node < n
            left = np.where(internal, 2 * node, 0)
            left_sum = nodes[left]
            right = internal & (remaining >= left_sum)
            remaining = np.where(right, remaining - left_sum, remaining)
            node = np.where(internal, left + right, node)
        return node - n
