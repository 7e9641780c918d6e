"""The training loop every method and every peer loader runs: same model, same loop,
every cost counted.

Training time excludes evaluation and includes everything a loader costs (plan draws,
reports, epoch-end steps, loading). ``step_ms`` adds a fixed emulated accelerator time
to every step (as MLPerf Storage / DLIO emulate GPUs), so the same run shows this
machine's CPU-bound regime and a GPU-bound one; the time the loop waits for its next
batch is counted apart (``data_wait_seconds``), so ``1 - wait / time`` is the share of
the time the accelerator would be busy. With an emulated endpoint, each epoch's bytes
and GETs are read from the endpoint's own counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isloader.data.catalog import ShardCatalog
from isloader.demo.data import TestSet
from isloader.demo.methods import loader_options, random_prune
from isloader.pipeline.loader import ImportanceLoader
from isloader.store.api import ImportanceStore
from isloader.store.local import LocalStore

__all__ = ["RunResult", "build_model", "evaluate", "train_loop", "train_method"]

Batches = Callable[[int], Iterable[dict[str, Any]]]


@dataclass
class RunResult:
    """One method, one seed: an entry per epoch, plus importance histograms."""

    method: str
    seed: int
    epochs: list[dict[str, float]] = field(default_factory=list)
    histograms: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
        """One per-epoch figure (``key``) across the run's epochs."""
        return [e[key] for e in self.epochs]


def build_model(inputs: int, classes: int, seed: int) -> torch.nn.Module:
    """The paper's small classifier: a 3-layer MLP, the same initialisation per seed."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, classes),
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``."""
    logits = model(torch.as_tensor(np.array(x)))  # a copy: Arrow-backed arrays are read-only
    target = torch.as_tensor(np.array(y)).long()
    loss = F.cross_entropy(logits, target).item()
    return float((logits.argmax(1) == target).float().mean()), float(loss)


def train_loop(
    method: str,
    seed: int,
    batches: Batches,
    test_set: TestSet,
    *,
    epochs: int,
    lr: float = 1e-3,
    step_ms: float = 0.0,
    endpoint: Any = None,
    report: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RunResult:
    """Train the paper's model on ``batches(epoch)`` for ``epochs`` epochs.

    A batch holds ``x``, ``y`` and optionally ``weight`` (the loss is
    ``mean(weight * per_sample_loss)``). ``report(batch, outputs)`` runs after each step
    (isloader sends q there); ``after_epoch(epoch)`` runs inside the timed epoch and
    returns entries for it (a loader's counters); ``endpoint`` (an
    ``EmulatedObjectStore``) has each epoch's bytes and GETs counted at the endpoint.
    """
    x_test, y_test = test_set
    model = build_model(x_test.shape[1], int(y_test.max()) + 1, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = RunResult(method, seed)
    train_seconds = 0.0
    for epoch in range(epochs):
        before = endpoint.stats() if endpoint is not None else None
        start = time.perf_counter()
        wait, steps = 0.0, 0
        model.train()
        iterator = iter(batches(epoch))
        while True:
            asked = time.perf_counter()
            batch = next(iterator, None)
            wait += time.perf_counter() - asked
            if batch is None:
                break
            out = model(batch["x"])
            per_sample = F.cross_entropy(out, batch["y"], reduction="none")
            weight = batch.get("weight")
            loss = (weight * per_sample).mean() if weight is not None else per_sample.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step_ms:
                time.sleep(step_ms / 1000)  # the emulated accelerator's share of the step
            if report is not None:
                report(batch, out.detach())
            steps += 1
        extra = after_epoch(epoch) if after_epoch is not None else {}
        epoch_seconds = time.perf_counter() - start
        train_seconds += epoch_seconds
        served = endpoint.stats().minus(before) if endpoint is not None else None
        model.eval()
        acc, test_loss = evaluate(model, x_test, y_test)
        entry = {
            "epoch": epoch,
            "steps": steps,
            "train_seconds": train_seconds,
            "epoch_seconds": epoch_seconds,
            "data_wait_seconds": wait,
            "test_acc": acc,
            "test_loss": test_loss,
            "endpoint_bytes": float(served.bytes_sent) if served else 0.0,
            "endpoint_gets": float(served.gets) if served else 0.0,
            **extra,
        }
        result.epochs.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    return result


def train_method(
    method: str,
    dataset: str | ShardCatalog,
    test_set: TestSet,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
    step_ms: float = 0.0,
    endpoint: Any = None,
    store: ImportanceStore | None = None,
    target_active: list[int] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **loader: Any,
) -> RunResult:
    """Train one isloader method; returns per-epoch accuracy, loss, time, reads and
    diagnostics.

    ``store``: a deployed store to use (its state is the caller's to reset); else an
    embedded ``LocalStore``. ``loader``: more ``ImportanceLoader`` arguments (storage
    options, transform, caches).
    """
    catalog = dataset if isinstance(dataset, ShardCatalog) else ShardCatalog.open(dataset)
    own_store = store is None
    store = store or LocalStore(len(catalog))
    loader_ = ImportanceLoader(
        catalog,
        store=store,
        batch_size=batch_size,
        columns=loader.pop("columns", ["x", "y"]),
        seed=seed,
        **loader_options(method),
        **loader,
    )
    result = RunResult(method, seed)

    def after_epoch(epoch: int) -> dict[str, float]:
        if method == "random_prune" and target_active and epoch < len(target_active):
            random_prune(store, target_active[epoch], seed + epoch)
        stats = store.stats()
        if stats.histogram:
            result.histograms[epoch] = (list(stats.histogram), list(stats.histogram_edges))
        counters = loader_.history[-1].as_dict()
        return {
            "active": stats.active,
            "pruned_share": stats.pruned / stats.num_samples,
            **{k: counters[k] for k in _COUNTERS},
        }

    try:
        run = train_loop(
            method, seed, loader_.epoch, test_set, epochs=epochs, lr=lr, step_ms=step_ms,
            endpoint=endpoint, after_epoch=after_epoch, on_epoch=on_epoch,
            report=lambda batch, out: loader_.report(batch["index"], out, batch["y"]),
        )  # fmt: skip
    finally:
        loader_.close()
        if own_store:
            store.close()
    run.histograms = result.histograms
    return run


_COUNTERS = (
    "bytes_fetched",
    "requests",
    "cache_hit_rate",
    "cache_mass_covered",
    "units_per_window",
    "draw_mode",
    "predicted_fetch_s_per_step",
    "measured_fetch_s_per_step",
    "step_seconds",
    "miss_bytes",
    "read_amplification",
    "max_plan_staleness",
    "staleness_bound",
    "max_weight",
    "weight_ess",
    "steps_weight_over_10",
)
