import numpy as np
import pytest

from isloader.store.sumtree import SumTree
from tests.helpers import in_order_leaves


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 13, 1000, 4097])
def test_find_matches_a_prefix_sum_search_in_leaf_order(n: int) -> None:
    rng = np.random.default_rng(n)
    leaves = rng.random(n) * (rng.random(n) > 0.3)  # some zero-mass leaves
    leaves[-1] = 0.5
    tree = SumTree(n)
    tree.leaves[:] = leaves
    tree.rebuild()
    assert tree.total() == pytest.approx(leaves.sum())
    order = in_order_leaves(n)
    assert sorted(order) == list(range(n))
    targets = rng.random(500) * tree.total()
    expected = order[np.searchsorted(np.cumsum(leaves[order]), targets, side="right")]
    np.testing.assert_array_equal(tree.find(targets), expected)


@pytest.mark.parametrize("n", [1, 5, 1001])
def test_refresh_equals_a_full_rebuild(n: int) -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(n)
    tree.leaves[:] = rng.random(n)
    tree.rebuild()
    for _ in range(30):
        pos = rng.integers(0, n, 64)  # repeats included
        tree.leaves[pos] = rng.random(64)
        tree.refresh(pos)
    refreshed = tree._nodes.copy()
    tree.rebuild()
    np.testing.assert_array_equal(refreshed, tree._nodes)  # exact: recomputed, not added
    assert tree.total() == pytest.approx(tree.leaves.sum(), rel=1e-12)


def test_memory_is_sixteen_bytes_per_leaf_including_the_leaves() -> None:
    assert SumTree(1_000_000).nbytes == 16 * 1_000_000
