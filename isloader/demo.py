"""``isloader demo``: the paper's comparison, end to end through the real pipeline.

MNIST-1D (made offline by the ``mnist1d`` package) is written as Parquet shards and
indexed; a 3-layer MLP is trained with each method through ``ImportanceLoader``
(Ray Data, the embedded ``LocalStore``), from the same initialisation:

- ``uniform``: a shuffled pass per epoch (the baseline);
- ``loss_is``: importance sampling on the loss (the paper's Loss-IS);
- ``ours_is``: importance sampling on the output-gradient norm (Eq. 7);
- ``ours_is_prune``: the same plus online pruning (Alg. 2);
- ``random_prune``: uniform sampling over a random active set whose size follows
  ``ours_is_prune`` epoch by epoch; it separates "fewer samples" from "better
  samples".

Training time excludes evaluation and includes everything the method costs
(plan draws, reports, epoch-end steps).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ShardReader
from isloader.pipeline.loader import ImportanceLoader
from isloader.pipeline.runtime import start_ray
from isloader.pipeline.tasks import table_to_numpy
from isloader.results import value_at_time
from isloader.store.api import ImportanceStore
from isloader.store.local import LocalStore

__all__ = ["METHODS", "RunResult", "make_mnist1d", "train_method", "run_demo", "summarize"]

METHODS: dict[str, dict[str, Any]] = {
    "uniform": {"sampling": "uniform"},
    "loss_is": {"sampling": "importance", "metric": "loss"},
    "ours_is": {"sampling": "importance"},
    "ours_is_prune": {"sampling": "importance", "prune_every": 2, "prune_k": 2.0},
    "random_prune": {"sampling": "importance", "metric": "loss", "eps": 0.0},
}


@dataclass
class RunResult:
    """One method, one seed: an entry per epoch, plus importance histograms."""

    method: str
    seed: int
    epochs: list[dict[str, float]] = field(default_factory=list)
    histograms: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs]


def make_mnist1d(directory: Path, train: int, test: int, seed: int = 0) -> tuple[str, Any]:
    """MNIST-1D as Parquet shards under ``directory/train`` (cached), and the test set."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mnist1d.data import get_dataset_args, make_dataset

    train_dir = directory / "train"
    test_file = directory / "test.npz"
    stamp = directory / "dataset.json"
    config = {"train": train, "test": test, "seed": seed}
    if not (stamp.exists() and json.loads(stamp.read_text()) == config):
        args = get_dataset_args()
        args.num_samples, args.train_split, args.seed = train + test, train / (train + test), seed
        data = make_dataset(args)  # generated locally; never the download path
        train_dir.mkdir(parents=True, exist_ok=True)
        for old in train_dir.glob("*"):
            old.unlink()
        x = data["x"].astype(np.float32)
        bounds = np.linspace(0, train, 9).astype(int)
        for s in range(8):
            rows = slice(bounds[s], bounds[s + 1])
            table = pa.table(
                {
                    "x": pa.array(list(x[rows]), pa.list_(pa.float32())),
                    "y": data["y"][rows].astype(np.int64),
                }
            )
            pq.write_table(table, train_dir / f"part-{s:03d}.parquet", row_group_size=256)
        np.savez(test_file, x=data["x_test"].astype(np.float32), y=data["y_test"])
        ShardCatalog.build(str(train_dir)).save()
        stamp.write_text(json.dumps(config))
    test_set = np.load(test_file)
    return str(train_dir), (test_set["x"], test_set["y"])


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
    logits = model(torch.from_numpy(x))
    target = torch.from_numpy(y).long()
    loss = F.cross_entropy(logits, target).item()
    return float((logits.argmax(1) == target).float().mean()), float(loss)


def _random_prune(store: ImportanceStore, target_active: int, seed: int) -> None:
    """Prune uniformly random active samples down to ``target_active``.

    Victims get q = 0 and Alg. 2 with K = 2 removes exactly them: every other sample
    holds q = 1 (this baseline's constant metric), above the threshold.
    """
    q = store.lookup(np.arange(store.num_samples))
    active = np.flatnonzero(q > 0)
    excess = len(active) - target_active
    if excess > 0:
        victims = np.random.default_rng(seed).choice(active, excess, replace=False)
        store.update(victims, np.zeros(excess))
        store.prune(2.0)


def train_method(
    method: str,
    dataset: str,
    test_set: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
    store: ImportanceStore | None = None,
    target_active: list[int] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RunResult:
    """Train one method; returns per-epoch accuracy, loss, time, reads and active size."""
    catalog = ShardCatalog.load(dataset)
    own_store = store is None
    store = store or LocalStore(len(catalog))
    options = dict(METHODS[method])
    if method == "random_prune":
        options["loss_fn"] = lambda z, y: torch.ones(len(z))  # q = 1: uniform sampling
    loader = ImportanceLoader(
        catalog, store=store, batch_size=batch_size, columns=["x", "y"], seed=seed, **options
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
            for batch in loader.epoch(epoch):
                out = model(batch["x"])
                per_sample = F.cross_entropy(out, batch["y"], reduction="none")
                loss = (batch["weight"] * per_sample).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loader.report(batch["index"], out.detach(), batch["y"])
            if method == "random_prune" and target_active and epoch < len(target_active):
                _random_prune(store, target_active[epoch], seed + epoch)
            train_seconds += time.perf_counter() - start
            model.eval()
            acc, test_loss = evaluate(model, x_test, y_test)
            counters = loader.history[-1]
            stats = store.stats()
            entry = {
                "epoch": epoch,
                "train_seconds": train_seconds,
                "test_acc": acc,
                "test_loss": test_loss,
                "steps": counters.steps,
                "samples": counters.samples,
                "bytes_fetched": counters.bytes_fetched,
                "active": stats.active,
                "pruned_share": stats.pruned / stats.num_samples,
            }
            result.epochs.append(entry)
            if stats.histogram:
                result.histograms[epoch] = (list(stats.histogram), list(stats.histogram_edges))
            if on_epoch is not None:
                on_epoch(entry)
    finally:
        loader.close()
        if own_store:
            store.close()
    return result


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per method: at equal steps (the last epoch) and at equal wall time."""
    equal_time = min(r.epochs[-1]["train_seconds"] for r in results)
    rows = []
    for r in results:
        last = r.epochs[-1]
        rows.append(
            {
                "method": r.method,
                "acc_equal_steps": last["test_acc"],
                "loss_equal_steps": last["test_loss"],
                "acc_equal_time": value_at_time(
                    r.series("train_seconds"), r.series("test_acc"), equal_time
                ),
                "train_seconds": last["train_seconds"],
                "samples": sum(r.series("samples")),
                "bytes_fetched": sum(r.series("bytes_fetched")),
                "pruned_share": last["pruned_share"],
            }
        )
    return rows


def plot(results: list[RunResult], directory: Path) -> list[Path]:
    """Accuracy against wall time, importance histograms, active-set size per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot(r.series("train_seconds"), r.series("test_acc"), marker="o", label=r.method)
    ax.set(xlabel="training wall time (s)", ylabel="test accuracy", title="MNIST-1D, 3-layer MLP")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(directory / "accuracy_vs_time.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    source = next((r for r in results if r.method == "ours_is_prune"), results[-1])
    epochs = sorted(source.histograms)
    for epoch in epochs[:: max(1, len(epochs) // 3)]:
        counts, edges = source.histograms[epoch]
        centers = (np.array(edges[:-1]) + np.array(edges[1:])) / 2
        ax.plot(centers, counts, drawstyle="steps-mid", label=f"after epoch {epoch}")
    ax.set(xlabel="importance q (active samples)", ylabel="samples", yscale="log")
    ax.set_title(f"importance histogram ({source.method})")
    ax.legend()
    paths.append(directory / "importance_histogram.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot(r.series("epoch"), r.series("active"), marker="o", label=r.method)
    ax.set(xlabel="epoch", ylabel="active samples", title="active set size")
    ax.legend()
    paths.append(directory / "active_set.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="isloader demo: MNIST-1D (equal steps = same epochs for every method)")
    headers = {
        "method": "method",
        "acc_equal_steps": "acc @ steps",
        "loss_equal_steps": "loss @ steps",
        "acc_equal_time": "acc @ equal time",
        "train_seconds": "train s",
        "samples": "samples read",
        "bytes_fetched": "MB read",
        "pruned_share": "pruned",
    }
    for title in headers.values():
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['acc_equal_steps']:.4f}",
            f"{row['loss_equal_steps']:.4f}",
            f"{row['acc_equal_time']:.4f}",
            f"{row['train_seconds']:.1f}",
            f"{row['samples']:,}",
            f"{row['bytes_fetched'] / 1e6:.1f}",
            f"{row['pruned_share']:.0%}",
        )
    Console(width=150).print(table)


def run_demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``isloader demo`` command: data, the five methods, the table and the PNGs."""
    from tqdm import tqdm

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start_ray()
    if args.dataset:
        dataset = args.dataset
        catalog = ShardCatalog.open(dataset)
        held = np.arange(0, len(catalog), max(1, len(catalog) // 2000))  # an evaluation subset
        columns = table_to_numpy(ShardReader(catalog).read(held, ["x", "y"]))
        test_set = (columns["x"].astype(np.float32), columns["y"].astype(np.int64))
    else:
        print(f"making MNIST-1D ({args.train_size} train / {args.test_size} test) in {out}")
        dataset, test_set = make_mnist1d(out / "data", args.train_size, args.test_size, args.seed)
    deployed = None
    if args.store:
        from isloader.store.client import StoreClient

        token = Path(args.token_file).read_text().strip() if args.token_file else None
        deployed = StoreClient(args.store, token=token)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    if "random_prune" in methods and "ours_is_prune" in methods:  # it follows ours' sizes
        methods = [m for m in methods if m != "random_prune"] + ["random_prune"]
    # Warm-up: Ray starts its worker processes and they import the data plane, so the
    # first method timed does not pay for it.
    train_method("uniform", dataset, test_set, epochs=1, batch_size=args.batch_size, seed=0)
    results: list[RunResult] = []
    target_active = None
    with tqdm(total=len(methods) * args.epochs, unit="epoch") as bar:
        for method in methods:
            bar.set_description(method)
            result = train_method(
                method,
                dataset,
                test_set,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=args.seed,
                store=deployed if method == "ours_is_prune" else None,
                target_active=target_active,
                on_epoch=lambda entry, bar=bar: (
                    bar.update(1),
                    bar.set_postfix(acc=entry["test_acc"]),
                ),
            )
            if method == "ours_is_prune":
                target_active = result.series("active")
            results.append(result)
    rows = summarize(results)
    _print_table(rows)
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "runs": [asdict(r) for r in results]}, indent=1)
    )
    for path in plot(results, out):
        print(f"wrote {path}")
    return rows
