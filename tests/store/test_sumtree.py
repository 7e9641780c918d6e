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


@pytest.mark.parametrize("n", [1, 2, 3, 7, 13, 100, 1001])
def test_range_cover_sums_and_draws_inside_a_range_follow_q(n: int) -> None:
    from tests.helpers import chi_square_pvalue

    rng = np.random.default_rng(n)
    leaves = rng.gamma(0.5, 1.0, n) * (rng.random(n) > 0.2)
    leaves[n // 2] = 1.0  # at least one leaf with mass
    tree = SumTree(n)
    tree.leaves[:] = leaves
    tree.rebuild()
    lo = rng.integers(0, n, 40)
    hi = np.minimum(lo + rng.integers(1, max(2, n // 3), 40), n)
    lo[0], hi[0] = 0, n  # the whole tree is a range too
    cover = tree.cover(lo, hi)
    mass = tree.sums(cover).sum(axis=1)
    expected = np.array([leaves[a:b].sum() for a, b in zip(lo, hi, strict=True)])
    np.testing.assert_allclose(mass, expected, rtol=1e-12)
    k = int(np.argmax(hi - lo))  # the widest range gets the statistical check
    draws = tree.find_in(cover, np.full(40_000, k), rng.random(40_000) * mass[k])
    assert ((draws >= lo[k]) & (draws < hi[k])).all()
    if (leaves[lo[k] : hi[k]] > 0).sum() > 1:
        assert chi_square_pvalue(draws - lo[k], leaves[lo[k] : hi[k]] / mass[k]) > 1e-3
    which = rng.integers(0, 40, 5000)  # many ranges at once: each draw stays in its own
    usable = mass[which] > 0
    which = which[usable]
    draws = tree.find_in(cover, which, rng.random(which.size) * mass[which])
    assert ((draws >= lo[which]) & (draws < hi[which])).all()
