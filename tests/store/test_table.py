"""The method (docs/architecture.md), checked against exact references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isloader.errors import IndexOutOfRangeError, InvalidArgumentError
from isloader.store import ImportanceTable, TableConfig, prune_threshold
from tests.helpers import chi_square_pvalue, in_order_leaves


def measured_table(n: int = 50, start: int = 0, alpha: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    table = ImportanceTable(TableConfig(start, start + n, alpha=alpha))
    q = rng.gamma(0.7, 1.0, n)
    table.update(np.arange(start, start + n), q)
    return table, q


def exact_p(q: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    live = np.where(pruned, 0.0, q)
    return live / live.sum()


def test_sampled_distribution_matches_exact_p() -> None:
    table, q = measured_table(start=1000)
    plan = table.sample(200_000, np.random.default_rng(1))
    p = exact_p(q, np.zeros(len(q), bool))
    assert chi_square_pvalue(plan.indices - 1000, p) > 1e-3
    np.testing.assert_allclose(plan.probabilities, p[plan.indices - 1000])


def test_distribution_after_updates_prune_and_readmit() -> None:
    table, q = measured_table(n=60, alpha=0.3)
    rng = np.random.default_rng(2)
    for _ in range(5):
        idx = rng.integers(0, 60, 40)
        vals = rng.random(40) * 3
        table.update(idx, vals)
        uniq = np.unique(idx)
        means = np.array([vals[idx == i].mean() for i in uniq])
        q[uniq] = 0.3 * q[uniq] + 0.7 * means
    threshold = prune_threshold(*table.view(), k=2.0)
    pruned = q <= threshold
    assert table.prune(threshold) == pruned.sum() > 0
    p = exact_p(q, pruned)
    assert chi_square_pvalue(table.sample(150_000, rng).indices, p) > 1e-3

    back = table.readmit(0.5, rng)
    assert back == round(0.5 * pruned.sum())
    state = table.export_state()
    assert (state.pruned.sum()) == pruned.sum() - back
    p = exact_p(state.q, state.pruned)
    assert chi_square_pvalue(table.sample(150_000, rng).indices, p) > 1e-3


def test_weights_are_inverse_n_active_p_and_estimate_is_unbiased() -> None:
    table, q = measured_table(n=8)
    table.prune(float(np.sort(q)[1]))  # prune the two smallest
    state = table.export_state()
    p = exact_p(state.q, state.pruned)
    active = (~state.pruned).sum()
    plan = table.sample(1000, np.random.default_rng(3))
    np.testing.assert_allclose(plan.weights, 1.0 / (active * p[plan.indices]))
    # E_p[w * f] over the active set equals the uniform mean of f over it, exactly.
    f = np.arange(8, dtype=float) ** 2
    live = ~state.pruned
    expectation = np.sum(p[live] * (1.0 / (active * p[live])) * f[live])
    assert expectation == pytest.approx(f[live].mean())


def test_locality_aware_draws_have_exact_marginals_and_stay_in_g_units() -> None:
    n, start = 400, 1000
    table, q = measured_table(n=n, start=start, alpha=0.3)
    rng = np.random.default_rng(5)
    bounds = np.unique(np.r_[0, np.sort(rng.choice(np.arange(1, n + start), 80)), n + start])
    table.set_layout("L", bounds)  # units of random sizes, the first one straddling start
    unit_of = np.searchsorted(bounds, np.arange(start, start + n), side="right") - 1
    first = []
    rng = np.random.default_rng(6)
    for _ in range(6000):
        plan = table.sample(8, rng, layout="L", units=3)
        assert len(np.unique(unit_of[plan.indices - start])) <= 3
        first.append(plan.indices[0])
    p = exact_p(q, np.zeros(n, bool))
    assert chi_square_pvalue(np.array(first) - start, p) > 1e-3
    np.testing.assert_allclose(plan.weights, 1.0 / (n * p[plan.indices - start]))


def test_unknown_layout_and_bad_bounds_are_named_errors() -> None:
    from isloader.errors import UnknownLayoutError

    table, _ = measured_table(n=10)
    with pytest.raises(UnknownLayoutError):
        table.sample(4, np.random.default_rng(0), layout="nope", units=2)
    for bad in ([0, 5, 5, 10], [1, 10], [0, 4], [0.0, 10.0]):
        with pytest.raises(InvalidArgumentError):
            table.set_layout("L", np.array(bad))


def test_uniform_q_gives_unit_weights() -> None:
    table = ImportanceTable(TableConfig(0, 10))
    table.update(np.arange(10), np.full(10, 2.5))
    np.testing.assert_allclose(table.sample(100, np.random.default_rng(0)).weights, 1.0)


def test_ema_first_measurement_and_duplicate_averaging() -> None:
    table = ImportanceTable(TableConfig(0, 4, alpha=0.25))
    table.update(np.array([0, 0, 1]), np.array([1.0, 3.0, 5.0]))  # first: set, averaged
    np.testing.assert_allclose(table.importance(np.array([0, 1, 2])), [2.0, 5.0, 1.0])
    table.update(np.array([0, 0]), np.array([4.0, 8.0]))  # mean 6, then EMA once
    assert table.importance(np.array([0]))[0] == pytest.approx(0.25 * 2.0 + 0.75 * 6.0)
    assert table.stats().seen == 2


def test_end_epoch_adds_eps_once_per_epoch_and_not_to_pruned() -> None:
    table, q = measured_table(n=10)
    table.prune(float(np.min(q)))
    assert table.end_epoch(0, 0.1)
    assert not table.end_epoch(0, 0.1)  # another rank, same epoch
    state = table.export_state()
    np.testing.assert_allclose(state.q, np.where(state.pruned, 0.0, q + 0.1))
    assert table.epoch == 1


def test_prune_follows_alg2_and_never_prunes_unseen() -> None:
    table = ImportanceTable(TableConfig(0, 100))
    q = np.linspace(0.0, 2.0, 80)
    table.update(np.arange(80), q)  # 20 samples stay unseen at initial_q=1.0
    total, active = table.view()
    k = 1.5
    threshold = total / (k * active)
    assert prune_threshold(total, active, k) == pytest.approx(threshold)
    expected = q <= threshold
    assert table.prune(threshold, epoch=1) == expected.sum()
    state = table.export_state()
    np.testing.assert_array_equal(state.pruned[:80], expected)
    assert not state.pruned[80:].any()
    assert table.prune(10.0, epoch=1) == 0  # once per epoch
    assert table.view().active_count == 100 - expected.sum()


def test_larger_k_prunes_less() -> None:
    counts = []
    for k in (1.0, 2.0, 4.0):
        table, _ = measured_table(n=500)
        counts.append(table.prune(prune_threshold(*table.view(), k)))
    assert counts[0] > counts[1] > counts[2]


def test_readmitted_samples_are_remeasured_from_the_active_mean() -> None:
    table, q = measured_table(n=100)
    table.prune(float(np.median(q)))
    total, active = table.view()
    before = table.export_state()
    back = table.readmit(1.0, np.random.default_rng(0))
    after = table.export_state()
    returned = before.pruned & ~after.pruned
    assert back == returned.sum() == before.pruned.sum()
    np.testing.assert_allclose(after.q[returned], total / active)
    assert not after.seen[returned].any()


def test_stats_report_ess_histogram_and_counts() -> None:
    table, q = measured_table(n=200)
    s = table.stats()
    assert (s.num_samples, s.active, s.seen, s.pruned) == (200, 200, 200, 0)
    assert s.effective_sample_size == pytest.approx(q.sum() ** 2 / np.sum(q**2))
    assert s.q_mean == pytest.approx(q.mean())
    assert sum(s.histogram) == 200 and len(s.histogram_edges) == len(s.histogram) + 1
    assert s.ready


@pytest.mark.parametrize(
    ("indices", "values", "error"),
    [
        ([1, 2], [1.0, float("nan")], InvalidArgumentError),
        ([1, 2], [1.0, float("inf")], InvalidArgumentError),
        ([1, 2], [1.0, -0.5], InvalidArgumentError),
        ([1, 2], [1.0], InvalidArgumentError),
        ([1, 99], [1.0, 1.0], IndexOutOfRangeError),
        ([-1], [1.0], IndexOutOfRangeError),
        ([1.5], [1.0], InvalidArgumentError),
    ],
)
def test_bad_update_raises_named_error_and_changes_nothing(indices, values, error) -> None:
    table, _ = measured_table(n=10)
    before = table.export_state()
    with pytest.raises(error):
        table.update(np.array(indices), np.array(values))
    after = table.export_state()
    assert after.meta == before.meta
    for name in ("q", "seen", "pruned"):
        assert getattr(after, name).tobytes() == getattr(before, name).tobytes()


def test_retried_request_is_applied_once() -> None:
    table = ImportanceTable(TableConfig(0, 4, alpha=0.5))
    table.update(np.array([0]), np.array([2.0]))
    assert table.update(np.array([0]), np.array([4.0]), request=("c", 7))
    assert not table.update(np.array([0]), np.array([4.0]), request=("c", 7))
    assert table.update(np.array([0]), np.array([4.0]), request=("c", 6))  # out of order is new
    assert table.importance(np.array([0]))[0] == pytest.approx(0.5 * (0.5 * 2 + 0.5 * 4) + 2.0)


def test_memory_per_sample_is_under_24_bytes() -> None:
    table = ImportanceTable(TableConfig(0, 1_000_000))
    assert table.nbytes / 1_000_000 <= 24


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("update"),
            st.lists(st.integers(-2, 33), min_size=0, max_size=12),
            st.lists(
                st.one_of(
                    st.floats(0, 10), st.just(float("nan")), st.just(-1.0), st.just(float("inf"))
                ),
                min_size=0,
                max_size=12,
            ),
        ),
        st.tuples(st.just("prune"), st.one_of(st.floats(-1, 3), st.just(float("nan")))),
        st.tuples(st.just("end_epoch"), st.integers(-1, 5), st.floats(-0.1, 0.5)),
        st.tuples(st.just("readmit"), st.floats(-0.2, 1.2)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_tree_matches_naive_reference_and_rejections_change_nothing(ops) -> None:
    table = ImportanceTable(TableConfig(0, 32, alpha=0.2))
    rng = np.random.default_rng(0)
    for op in ops:
        before = table.export_state()
        try:
            if op[0] == "update":
                table.update(np.array(op[1], dtype=np.int64), np.array(op[2], dtype=float))
            elif op[0] == "prune":
                table.prune(op[1])
            elif op[0] == "end_epoch":
                table.end_epoch(op[1], op[2])
            else:
                table.readmit(op[1], rng)
        except (InvalidArgumentError, IndexOutOfRangeError):
            after = table.export_state()
            assert after.meta == before.meta
            assert after.q.tobytes() == before.q.tobytes()
            assert after.pruned.tobytes() == before.pruned.tobytes()
        state = table.export_state()
        live = np.where(state.pruned, 0.0, state.q)
        total, active = table.view()
        assert total == pytest.approx(live.sum(), rel=1e-9, abs=1e-9)
        assert active == (~state.pruned).sum()
        assert not (state.pruned & ~state.seen).any()  # unseen samples are never pruned
        table._refresh()  # what sample() does before it searches
        assert table._tree.total() == pytest.approx(live.sum(), rel=1e-9, abs=1e-9)
        if total > 0:
            order = in_order_leaves(32)
            targets = rng.random(16) * table._tree.total()
            expected = order[np.searchsorted(np.cumsum(live[order]), targets, side="right")]
            np.testing.assert_array_equal(table._tree.find(targets), expected)
