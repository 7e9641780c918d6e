"""One contract, two implementations: the embedded LocalStore and StoreClient over gRPC.

The gRPC side uses in-process ``StoreServer`` shards (fresh per test, fast); the
tests in test_service.py run real server processes.
"""

from collections.abc import Iterator

import numpy as np
import pytest

from isloader.config import StoreSettings
from isloader.errors import IndexOutOfRangeError, InvalidArgumentError, MessageTooLargeError
from isloader.store.api import ImportanceStore
from isloader.store.client import StoreClient
from isloader.store.limits import MAX_SAMPLE, MAX_VALUE
from isloader.store.local import LocalStore
from isloader.store.records import UnitLayout
from isloader.store.server import StoreServer
from tests.helpers import chi_square_pvalue, window_marginals_pvalue

N = 90


@pytest.fixture(params=["local", "grpc-1", "grpc-3"])
def store(request) -> Iterator[ImportanceStore]:
    if request.param == "local":
        s = LocalStore(N, alpha=0.2)
        yield s
        s.close()
        return
    shards = int(request.param.split("-")[1])
    servers = [
        StoreServer(
            StoreSettings(num_samples=N, shard=i, num_shards=shards, port=0, alpha=0.2)
        ).start()
        for i in range(shards)
    ]
    client = StoreClient([s.address for s in reversed(servers)])  # order must not matter
    yield client
    client.close()
    for s in servers:
        s.stop(grace=0)


def seeded(store: ImportanceStore, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).gamma(0.6, 1.0, N)
    store.update(np.arange(N), q)
    return q


def test_implements_the_protocol(store) -> None:
    assert isinstance(store, ImportanceStore)
    assert store.num_samples == N


def test_global_distribution_and_weights(store) -> None:
    q = seeded(store)
    plan = store.sample(120_000, seed=(0, 1, 2, 3))
    p = q / q.sum()
    assert chi_square_pvalue(plan.indices, p) > 1e-3
    np.testing.assert_allclose(plan.probabilities, p[plan.indices], rtol=1e-9)
    np.testing.assert_allclose(plan.weights, 1.0 / (N * p[plan.indices]), rtol=1e-9)


def test_same_seed_same_plan(store) -> None:
    seeded(store)
    a, b = store.sample(500, seed=(7, 1, 0, 0)), store.sample(500, seed=(7, 1, 0, 0))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, store.sample(500, seed=(7, 1, 0, 1)).indices)


def test_prune_uses_the_global_threshold_then_distribution_follows(store) -> None:
    q = seeded(store)
    k = 2.0
    expected = q <= q.sum() / (k * N)
    assert store.prune(k, epoch=1) == expected.sum() > 0
    assert store.prune(k, epoch=1) == 0
    stats = store.stats()
    assert stats.active == N - expected.sum()
    live = np.where(expected, 0.0, q)
    assert chi_square_pvalue(store.sample(100_000, seed=1).indices, live / live.sum()) > 1e-3
    back = store.readmit(1.0, seed=3, epoch=1)
    assert back == expected.sum()
    assert store.stats().active == N


# Units of 7 rows: with 3 shards of 30, units 4 and 8 straddle two shards.
LAYOUT = UnitLayout(np.r_[np.arange(0, N, 7), N])


def _windows(store: ImportanceStore, windows: int, count: int, units: int, seed: int = 0):
    return [store.sample(count, seed=(seed, w), layout=LAYOUT, units=units) for w in range(windows)]


@pytest.mark.parametrize("pruned", [False, True])
def test_locality_aware_draws_keep_the_exact_marginals_and_weights(store, pruned) -> None:
    q = seeded(store)
    if pruned:
        store.prune(1.5, epoch=1)
        q = np.where(q <= q.sum() / (1.5 * N), 0.0, q)
    plans = _windows(store, windows=2000, count=12, units=3)
    # Draws inside a window are correlated (they share units); across windows they are
    # independent, so the marginal is tested on one draw per window.
    drawn = np.array([p.indices[0] for p in plans])
    p = q / q.sum()
    assert chi_square_pvalue(drawn, p) > 1e-3
    active = int((q > 0).sum())
    for plan in plans[:20]:
        np.testing.assert_allclose(plan.probabilities, p[plan.indices], rtol=1e-9)
        np.testing.assert_allclose(plan.weights, 1.0 / (active * p[plan.indices]), rtol=1e-9)


@pytest.mark.parametrize("units", [0, 3])
def test_every_draw_of_every_window_has_the_exact_marginal(store, units) -> None:
    """All draws, not one per window: independent windows (``units=0``) and
    locality-aware ones, on one and on three shards."""
    q = seeded(store)
    plans = [
        store.sample(12, seed=(7, w), layout=LAYOUT if units else None, units=units)
        for w in range(1500)
    ]
    assert window_marginals_pvalue([p.indices for p in plans], q / q.sum()) > 1e-3
    skewed = q.copy()
    skewed[np.argmax(q)] *= 1.5  # the test must see a 1.5x error in one row's p
    assert window_marginals_pvalue([p.indices for p in plans], skewed / skewed.sum()) < 1e-3


def test_locality_aware_windows_touch_few_units_and_seeds_reproduce(store) -> None:
    seeded(store)
    plans = _windows(store, windows=50, count=300, units=2)
    unit_of = np.searchsorted(LAYOUT.bounds, np.arange(N), side="right") - 1
    touched = [len(np.unique(unit_of[p.indices])) for p in plans]
    # two units per window, split across at most 3 shards (each shard keeps >= 1)
    assert max(touched) <= 4 and np.mean(touched) < 3.5
    again = _windows(store, windows=50, count=300, units=2)
    for a, b in zip(plans, again, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
    other = _windows(store, windows=1, count=300, units=2, seed=1)[0]
    assert not np.array_equal(other.indices, plans[0].indices)


def test_unit_stats_sum_pieces_of_straddling_units(store) -> None:
    q = seeded(store)
    store.prune(2.0, epoch=1)
    live = np.where(q <= q.sum() / (2.0 * N), 0.0, q)
    stats = store.unit_stats(LAYOUT)
    starts = LAYOUT.bounds[:-1]
    np.testing.assert_allclose(stats.mass, np.add.reduceat(live, starts))
    np.testing.assert_array_equal(stats.active, np.add.reduceat((live > 0).astype(int), starts))
    np.testing.assert_array_equal(stats.pruned, live == 0)


def test_update_ema_and_lookup(store) -> None:
    q = seeded(store)
    store.update(np.array([3, 3, 80]), np.array([1.0, 3.0, 4.0]))
    got = store.lookup(np.array([3, 80, 5]))
    np.testing.assert_allclose(got, [0.2 * q[3] + 0.8 * 2.0, 0.2 * q[80] + 0.8 * 4.0, q[5]])


def test_async_updates_are_all_applied_after_flush(store) -> None:
    q = seeded(store)
    for i in range(30):
        store.update(np.array([i, 89]), np.array([float(i), 1.0]), wait=False)
    store.flush()
    expected = 0.2 * q[:30] + 0.8 * np.arange(30)
    np.testing.assert_allclose(store.lookup(np.arange(30)), expected)
    assert store.lookup(np.array([89]))[0] == pytest.approx(0.2**30 * q[89] + (1 - 0.2**30))


def test_end_epoch_once_per_epoch(store) -> None:
    q = seeded(store)
    assert store.end_epoch(0, 0.5)
    assert not store.end_epoch(0, 0.5)
    np.testing.assert_allclose(store.lookup(np.arange(N)), q + 0.5)
    assert store.stats().epoch == 1


@pytest.mark.parametrize(
    ("indices", "values", "error"),
    [
        ([0, 1], [1.0, np.nan], InvalidArgumentError),
        ([0, 1], [1.0, -2.0], InvalidArgumentError),
        ([0, 1], [1.0], InvalidArgumentError),
        ([0, N], [1.0, 1.0], IndexOutOfRangeError),
    ],
)
def test_bad_input_leaves_state_unchanged(store, indices, values, error) -> None:
    seeded(store)
    before = store.stats()
    with pytest.raises(error):
        store.update(np.array(indices), np.array(values))
    assert store.stats() == before


def test_reset_forgets_every_measurement(store) -> None:
    seeded(store)
    store.end_epoch(0, 0.1)
    store.prune(2.0, epoch=1)
    store.reset()
    stats = store.stats()
    assert (stats.seen, stats.pruned, stats.active, stats.epoch) == (0, 0, N, 0)
    np.testing.assert_allclose(store.lookup(np.arange(N)), 1.0)
    assert store.end_epoch(0, 0.1)  # epoch numbers start over


def test_both_answer_the_same_at_the_limits(store) -> None:
    """A snapshot with no location configured writes none; over-limit requests get the
    same error in-process and over the wire, and change nothing."""
    seeded(store)
    store.update(np.array([0]), np.array([0.6 * MAX_VALUE]))
    before = store.stats()
    assert store.snapshot() == []
    with pytest.raises(MessageTooLargeError):
        store.sample(MAX_SAMPLE + 1, 0)
    with pytest.raises(InvalidArgumentError):
        store.update(np.array([0]), np.array([MAX_VALUE * 10]))
    with pytest.raises(InvalidArgumentError):
        store.end_epoch(0, 0.6 * MAX_VALUE)  # would push q[0] (about 0.48 of it) past it
    assert store.stats() == before
