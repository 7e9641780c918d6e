"""The training loop every method runs: same model, same steps, every cost counted.

Training time excludes evaluation and includes everything the method costs (plan
draws, reports, epoch-end steps, loading).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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

__all__ = ["RunResult", "build_model", "evaluate", "train_method"]


@dataclass
class RunResult:
    """One method, one seed: an entry per epoch, plus importance histograms."""

    method: str
    seed: int
    epochs: list[dict[str, float]] = field(default_factory=list)
    histograms: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
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
    logits = model(torch.as_tensor(np.array(x)))  # a copy: Arrow-backed arrays are read-only
    target = torch.as_tensor(np.array(y)).long()
    loss = F.cross_entropy(logits, target).item()
    return float((logits.argmax(1) == target).float().mean()), float(loss)


def train_method(
    method: str,
    dataset: str | ShardCatalog,
    test_set: TestSet,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
    store: ImportanceStore | None = None,
    target_active: list[int] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **loader: Any,
) -> RunResult:
    """Train one method; returns per-epoch accuracy, loss, time, reads and diagnostics.

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
    x_test, y_test = test_set
    model = build_model(x_test.shape[1], int(y_test.max()) + 1, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    result = RunResult(method, seed)
    train_seconds = 0.0
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            model.train()
            for batch in loader_.epoch(epoch):
                out = model(batch["x"])
                per_sample = F.cross_entropy(out, batch["y"], reduction="none")
                loss = (batch["weight"] * per_sample).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loader_.report(batch["index"], out.detach(), batch["y"])
            if method == "random_prune" and target_active and epoch < len(target_active):
                random_prune(store, target_active[epoch], seed + epoch)
            epoch_seconds = time.perf_counter() - start
            train_seconds += epoch_seconds
            model.eval()
            acc, test_loss = evaluate(model, x_test, y_test)
            c = loader_.history[-1]
            stats = store.stats()
            entry = {
                "epoch": epoch,
                "train_seconds": train_seconds,
                "epoch_seconds": epoch_seconds,
                "test_acc": acc,
                "test_loss": test_loss,
                "active": stats.active,
                "pruned_share": stats.pruned / stats.num_samples,
                **{k: c.as_dict()[k] for k in _COUNTERS},
            }
            result.epochs.append(entry)
            if stats.histogram:
                result.histograms[epoch] = (list(stats.histogram), list(stats.histogram_edges))
            if on_epoch is not None:
                on_epoch(entry)
    finally:
        loader_.close()
        if own_store:
            store.close()
    return result


_COUNTERS = (
    "steps",
    "samples",
    "bytes_fetched",
    "requests",
    "cache_hit_rate",
    "cache_mass_covered",
    "units_per_window",
    "max_plan_staleness",
    "staleness_bound",
    "max_weight",
    "weight_ess",
    "steps_weight_over_10",
)
