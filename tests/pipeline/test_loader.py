"""The loader on a real Ray pipeline with the embedded store (one process)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isloader.pipeline import ImportanceLoader
from isloader.store.local import LocalStore

N, B = 480, 32

pytestmark = pytest.mark.usefixtures("ray_session")


def train_epoch(
    loader: ImportanceLoader, model: torch.nn.Module, epoch: int, step_ms: float = 0.0
) -> list[np.ndarray]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = []
    for batch in loader.epoch(epoch):
        time.sleep(step_ms / 1000)  # an accelerator's share of the step
        out = model(batch["feat"])
        loss = (batch["weight"] * F.cross_entropy(out, batch["label"], reduction="none")).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loader.report(batch["index"], out.detach(), batch["label"])
        batches.append(batch)
    return batches


def test_init_epoch_sees_every_sample_then_importance_weights_follow_the_store(dataset) -> None:
    with LocalStore(N) as store:
        loader = ImportanceLoader(
            dataset, store=store, batch_size=B, columns=["feat", "label"], window=3, eps=0.0
        )
        model = torch.nn.Linear(3, 7)
        batches = train_epoch(loader, model, 0)
        served = np.concatenate([b["index"].numpy() for b in batches])
        assert sorted(served) == list(range(N))  # Alg. 3: each sample once
        assert all(torch.all(b["weight"] == 1) for b in batches)
        assert store.stats().seen == N
        first = loader.history[0]
        assert first.mode == "stream" and first.steps == N // B and first.bytes_fetched > 0

        q = store.lookup(np.arange(N))
        batches = list(loader.epoch(1))  # no reports: the store stays as it is
        idx = np.concatenate([b["index"].numpy() for b in batches])
        weights = np.concatenate([b["weight"].numpy() for b in batches])
        np.testing.assert_allclose(weights, q.sum() / (N * q[idx]), rtol=1e-5)
        assert len(batches) == N // B  # equal steps
        for b in batches:  # the rows are the rows of those indices
            feat = b["feat"].numpy()
            np.testing.assert_array_equal(feat[:, 0], b["index"].numpy().astype(np.float32))


def test_pruning_shrinks_the_active_set_and_keeps_equal_steps(dataset) -> None:
    with LocalStore(N) as store:
        loader = ImportanceLoader(
            dataset, store=store, batch_size=B, columns=["feat", "label"], window=4,
            prune_every=1, prune_k=1.0,
        )  # fmt: skip
        model = torch.nn.Linear(3, 7)
        for e in range(3):
            train_epoch(loader, model, e)
        h = loader.history
        assert h[0].pruned_after == 0 and h[1].pruned_after > 0
        assert h[2].steps == h[1].steps == N // B
        pruned = ~np.isin(np.arange(N), np.flatnonzero(store.lookup(np.arange(N)) > 0))
        batches = list(loader.epoch(3))
        served = np.concatenate([b["index"].numpy() for b in batches])
        assert not np.isin(served, np.flatnonzero(pruned)).any()  # pruned rows never served


def test_resume_mid_epoch_gives_the_same_remaining_batches(dataset) -> None:
    with LocalStore(N) as store:
        # eps=0: the epoch end of the first full pass leaves the sampling state alone.
        def make() -> ImportanceLoader:
            return ImportanceLoader(
                dataset, store=store, batch_size=B, columns=["label"], window=2, eps=0.0
            )

        loader = make()
        train = ImportanceLoader(dataset, store=store, batch_size=B, columns=["feat", "label"])
        train_epoch(train, torch.nn.Linear(3, 7), 0)  # measured store state
        full = [b["index"].numpy() for b in loader.epoch(1)]

        first = make()
        first.load_state_dict({"epoch": 1, "batches": 0, "seed": 0})
        it = first.epoch(1)
        head = [next(it)["index"].numpy() for _ in range(5)]
        state = first.state_dict()
        assert state == {"epoch": 1, "batches": 5, "seed": 0, "units_per_window": 0,
                         "world_size": 1, "phases": [[1, 0]]}  # fmt: skip

        resumed = make()
        resumed.load_state_dict(state)
        tail = [b["index"].numpy() for b in resumed.epoch(1)]
        assert len(head) + len(tail) == len(full)
        for got, want in zip(head + tail, full, strict=True):
            np.testing.assert_array_equal(got, want)


def test_uniform_baseline_streams_every_epoch(dataset) -> None:
    with LocalStore(N) as store:
        loader = ImportanceLoader(
            dataset, store=store, batch_size=B, columns=["label"], sampling="uniform"
        )
        for e in (0, 1):
            served = np.concatenate([b["index"].numpy() for b in loader.epoch(e)])
            assert sorted(served) == list(range(N))
        assert store.stats().seen == 0  # the uniform baseline measures nothing


class DrawSpy:
    """Records, for each plan the store draws, how many reports the trainer had sent."""

    def __init__(self, store: LocalStore, loader: ImportanceLoader) -> None:
        self.draws: list[tuple[Counter, int]] = []
        start = loader.protocol.reporter.reported
        real = store._shard.sample

        def sample(count, seed, **kwargs):
            plan, view = real(count, seed, **kwargs)
            sent = loader.protocol.reporter.reported - start
            self.draws.append((Counter(plan.indices.tolist()), sent))
            return plan, view

        store._shard.sample = sample

    def staleness(self, served: list[np.ndarray]) -> list[int]:
        """Steps between each served batch's plan draw and its use (the client reorders
        a plan's draws, so a batch is matched to the plan holding all its indices)."""
        out = []
        for step, idx in enumerate(served):
            batch = Counter(idx.tolist())
            sent = next(s for drawn, s in self.draws if not batch - drawn)
            out.append(step - sent)
        return out


def test_plans_are_never_staler_than_window_plus_prefetch(dataset) -> None:
    with LocalStore(N) as store:
        loader = ImportanceLoader(
            dataset, store=store, batch_size=B, columns=["feat", "label"], window=2, prefetch=3
        )
        model = torch.nn.Linear(3, 7)
        train_epoch(loader, model, 0)
        spy = DrawSpy(store, loader)
        served = []
        for batch in loader.epoch(1):  # a slow trainer: read tasks could run far ahead
            time.sleep(0.02)
            served.append(batch["index"].numpy())
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
        staleness = spy.staleness(served)
        assert max(staleness) <= 2 + 3 == loader.staleness_bound
        assert loader.history[-1].max_plan_staleness >= max(staleness)  # reported honestly
        assert loader.history[-1].max_plan_staleness <= loader.staleness_bound


def test_read_importance_is_a_ray_dataset_for_iter_torch_batches(dataset) -> None:
    import isloader

    with LocalStore(N) as store:
        loader = ImportanceLoader(
            dataset, store=store, batch_size=B, columns=["feat", "label"], window=2, prefetch=3
        )
        model = torch.nn.Linear(3, 7)
        train_epoch(loader, model, 0)
        q = store.lookup(np.arange(N))
        spy = DrawSpy(store, loader)
        ds = isloader.read_importance(loader, 1)
        assert ds.count() == (N // B) * B  # a ray.data.Dataset like any other
        spy.draws.clear()
        loader._start_epoch(1, clock=True)  # a fresh clock for the counted pass
        ds = isloader.read_importance(loader, 1)
        served = []
        for batch in ds.iter_torch_batches(batch_size=B):
            time.sleep(0.02)
            served.append(batch["index"].numpy())
            if len(served) <= 2:  # drawn before the first report changed q
                w, idx = batch["weight"].numpy(), batch["index"].numpy()
                np.testing.assert_allclose(w, q.sum() / (N * q[idx]), rtol=1e-5)
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
        loader.end_epoch(1)
        assert len(served) == N // B
        assert max(spy.staleness(served)) <= loader.staleness_bound
        assert loader.history[-1].active_after == N


@pytest.mark.parametrize("case", ["fast", "priced", "clustered"])
def test_the_cost_model_picks_how_windows_read_after_the_init_epoch(s3_bucket, tmp_path, case):
    """A fast endpoint keeps the paper's independent draws; one that charges per request
    gets locality-aware draws that touch few units; a clustered layout gets neither
    locality nor silence."""
    import warnings

    import pyarrow.parquet as pq
    import s3fs

    from tests.data.shards import expected_rows

    n = 4000
    table = expected_rows(n)
    if case == "clustered":
        table = table.sort_by("label")
    bucket, options = s3_bucket
    with s3fs.S3FileSystem(**options).open(f"{bucket}/d/part-000.parquet", "wb") as f:
        pq.write_table(table, f, row_group_size=100)
    with LocalStore(n) as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = ImportanceLoader(
            f"{bucket}/d", store=store, batch_size=32, columns=["feat", "label"], window=1,
            storage_options=options, cache_dir=str(tmp_path / "cache"), cache_bytes=0,
            memory_bytes=0, price_per_request=1e-6 if case == "priced" else 0.0,
        )  # fmt: skip
        train_epoch(loader, torch.nn.Linear(3, 7), 0, step_ms=20)  # both modes keep up
        clustered = [w for w in caught if "clustered" in str(w.message)]
        assert bool(clustered) == (case == "clustered")
        choice = loader.draw_choice
        assert choice is not None and choice.predicted_fetch_s_per_step > 0
        if case == "priced":
            assert choice.mode == "locality" and loader.units == 3  # ceil(8 * 32 / 100)
        else:
            assert choice.mode == "independent" and loader.units == 0
        batches = list(loader.epoch(1))
        units = [np.unique(b["index"].numpy() // 100) for b in batches]
        if case == "priced":
            assert max(len(u) for u in units) <= 3
        counters = loader.history[-1]
        assert counters.draw_mode == choice.mode
        assert counters.predicted_fetch_s_per_step == choice.predicted_fetch_s_per_step
        assert counters.measured_fetch_s_per_step > 0 and counters.step_seconds > 0
