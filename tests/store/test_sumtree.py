import numpy as np
import pytest

from isloader.store.sumtree import SumTree


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 13, 1000, 4097])
def test_find_matches_searchsorted_on_prefix_sums(n: int) -> None:
    rng = np.random.default_rng(n)
    leaves = rng.random(n) * (rng.random(n) > 0.3)  # some zero-mass leaves
    leaves[-1] = 0.5
    tree = SumTree(n)
    tree.build(leaves)
    assert tree.total() == pytest.approx(leaves.sum())
    targets = rng.random(500) * leaves.sum()
    expected = np.searchsorted(np.cumsum(leaves), targets, side="right")
    np.testing.assert_array_equal(tree.find(targets), expected)


def test_add_keeps_prefix_sums_exact_with_repeated_positions() -> None:
    rng = np.random.default_rng(0)
    n = 1001
    leaves = rng.random(n)
    tree = SumTree(n)
    tree.build(leaves)
    for _ in range(50):
        pos = rng.integers(0, n, 64)  # repeats included
        delta = rng.random(64) - 0.25
        delta = np.maximum(delta, -leaves[pos] / 64)  # keep leaves >= 0
        tree.add(pos, delta)
        np.add.at(leaves, pos, delta)
    targets = rng.random(300) * leaves.sum()
    np.testing.assert_array_equal(
        tree.find(targets), np.searchsorted(np.cumsum(leaves), targets, side="right")
    )
    assert tree.total() == pytest.approx(leaves.sum(), rel=1e-12)


def test_memory_is_eight_bytes_per_leaf() -> None:
    assert SumTree(1_000_000).nbytes == 8 * (1_000_000 + 2)
