"""The cost model that chooses how sampled windows read (pure numpy, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from fsspec.utils import merge_offset_ranges

from isloader.pipeline.costs import Endpoint, choose_draws, expected_coverage, merged_reads

FAST = Endpoint(latency=0.02, bandwidth=25e6, concurrency=64)


def _choose(endpoint: Endpoint, coverage: float = 0.8, step: float = 0.02, units: int = 30):
    return choose_draws(
        batch_size=128, window=8, coverage=coverage, row_bytes=4096, step_seconds=step,
        endpoint=endpoint, locality_units=units, unit_bytes=1024 * 4096,
        unit_rows=1024,
    )  # fmt: skip


def test_independent_draws_when_the_endpoint_keeps_up() -> None:
    choice = _choose(FAST)
    misses = 128 * 0.2
    expected = misses * 4096 / 25e6 + misses * 0.02 / 64
    assert choice.mode == "independent" and choice.units == 0
    assert choice.predicted_fetch_s_per_step == pytest.approx(expected)
    assert choice.predicted_requests_per_step == pytest.approx(misses)


def test_locality_when_independent_misses_cannot_be_served_within_a_step() -> None:
    slow = Endpoint(latency=0.2, bandwidth=25e6, concurrency=2)  # few, slow requests
    choice = _choose(slow, coverage=0.0, step=0.01)
    assert choice.mode == "locality" and choice.units == 30
    assert choice.locality_fetch_s_per_step < choice.independent_fetch_s_per_step
    assert choice.predicted_requests_per_step < 128


def test_a_price_per_request_prefers_fewer_requests_that_keep_up() -> None:
    few = Endpoint(latency=0.02, bandwidth=25e6, concurrency=4)  # a wide merge gap
    priced = Endpoint(latency=0.02, bandwidth=25e6, concurrency=4, price_per_request=4e-7)
    assert _choose(few, step=1.0).mode == "independent"
    choice = _choose(priced, step=1.0)
    assert choice.mode == "locality"
    assert choice.predicted_requests_per_step < 128 * 0.2


def test_locality_is_not_chosen_where_merging_saves_no_request() -> None:
    """With a gap far below the spacing of a unit's misses, locality reads the same rows
    in as many requests: it would pay the variance for nothing (the defect that read
    whole tar units at 14x the sampled bytes came from an estimate that ignored this)."""
    choice = _choose(FAST, coverage=0.0, step=0.001)
    assert choice.mode == "independent"
    assert choice.locality_fetch_s_per_step >= 0.95 * choice.independent_fetch_s_per_step


@pytest.mark.parametrize("misses,gap", [(4, 8 << 10), (16, 64 << 10), (64, 64 << 10), (8, 1 << 20)])
def test_merged_reads_matches_the_fetchers_merging(misses: int, gap: int) -> None:
    """Requests and bytes predicted for random misses in a unit against what fsspec's
    range merging (the fetcher's) makes of them."""
    rng = np.random.default_rng(misses)
    rows, row = 256, 4096
    requests, nbytes = [], []
    for _ in range(2000):
        starts = np.sort(rng.choice(rows, misses, replace=False)) * row
        merged = merge_offset_ranges(["u"] * misses, list(starts), list(starts + row), gap)
        requests.append(len(merged[1]))
        nbytes.append(sum(e - s for s, e in zip(merged[1], merged[2], strict=True)))
    predicted = merged_reads(misses, rows * row, row, gap)
    assert predicted[0] == pytest.approx(np.mean(requests), rel=0.15)
    assert predicted[1] == pytest.approx(np.mean(nbytes), rel=0.15)


def test_no_locality_where_it_is_unsafe() -> None:
    slow = Endpoint(latency=0.2, bandwidth=25e6, concurrency=2)
    assert _choose(slow, coverage=0.0, step=0.01, units=0).mode == "independent"


def test_expected_coverage_keeps_the_rows_of_highest_q_per_byte() -> None:
    q = np.array([5.0, 1.0, 3.0, 1.0])
    assert expected_coverage(q, np.full(4, 10.0), budget=20) == pytest.approx(8 / 10)
    assert expected_coverage(q, np.array([10.0, 1.0, 30.0, 1.0]), 12) == pytest.approx(7 / 10)
    sample = np.random.default_rng(0).lognormal(0, 1, 200_000)
    half = expected_coverage(sample, np.ones(len(sample)), budget=100_000)
    assert half == pytest.approx(0.84, abs=0.01)  # lognormal sigma 1 at half the rows
    scaled = expected_coverage(sample[:20_000], np.ones(20_000), budget=100_000, scale=10)
    assert scaled == pytest.approx(half, abs=0.02)
