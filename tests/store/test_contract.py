"""One contract, two implementations: the embedded LocalStore and StoreClient over gRPC.

The gRPC side uses in-process ``StoreServer`` shards (fresh per test, fast); the
tests in test_service.py run real server processes.
"""

from collections.abc import Iterator

import numpy as np
import pytest

from isloader.config import StoreSettings
from isloader.errors import IndexOutOfRangeError, InvalidArgumentError
from isloader.store.api import ImportanceStore
from isloader.store.client import StoreClient
from isloader.store.local import LocalStore
from isloader.store.server import StoreServer
from tests.helpers import chi_square_pvalue

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
