"""The demo's table and plots: each method against uniform, in the same run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from isloader.demo.methods import UNIFORM
from isloader.demo.train import RunResult
from isloader.results import time_to_target, value_at_time

__all__ = ["baseline_of", "summarize", "print_table", "plot"]


def baseline_of(results: list[RunResult]) -> RunResult:
    """The better uniform run (the fastest of the uniform baselines), else the first."""
    uniform = [r for r in results if r.method in UNIFORM]
    return min(uniform, key=lambda r: r.epochs[-1]["train_seconds"]) if uniform else results[0]


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per method: at equal steps (the last epoch), against the better uniform
    run's time and final accuracy, and what loading cost (bytes and GETs counted at the
    endpoint where there is one, over every epoch and per epoch after the first)."""
    base = baseline_of(results)
    target, budget = base.epochs[-1]["test_acc"], base.epochs[-1]["train_seconds"]
    rows = []
    for r in results:
        last, later = r.epochs[-1], r.epochs[1:] or r.epochs
        remote = any(e["endpoint_gets"] for e in r.epochs)
        nbytes = "endpoint_bytes" if remote else "bytes_fetched"
        gets = "endpoint_gets" if remote else "requests"
        reach = time_to_target(r.series("train_seconds"), r.series("test_acc"), target)
        wall = sum(e["epoch_seconds"] for e in r.epochs)
        rows.append(
            {
                "method": r.method,
                "baseline": r is base,
                "acc_equal_steps": last["test_acc"],
                "loss_equal_steps": last["test_loss"],
                "time_to_uniform_acc_ratio": reach / budget if math.isfinite(reach) else math.nan,
                "acc_at_uniform_time": value_at_time(
                    r.series("train_seconds"), r.series("test_acc"), budget
                ),
                "train_seconds": last["train_seconds"],
                "epoch_seconds": float(np.mean([e["epoch_seconds"] for e in later])),
                "mb_total": sum(e.get(nbytes, 0.0) for e in r.epochs) / 1e6,
                "mb_per_epoch": float(np.mean([e.get(nbytes, 0.0) for e in later])) / 1e6,
                "gets_per_epoch": float(np.mean([e.get(gets, 0.0) for e in later])),
                "data_wait_share": sum(e["data_wait_seconds"] for e in r.epochs) / wall,
                "cache_hit_rate": float(np.mean([e.get("cache_hit_rate", 0.0) for e in later])),
                "max_plan_staleness": max(e.get("max_plan_staleness", 0) for e in r.epochs),
                "max_weight": max(e.get("max_weight", 1.0) for e in r.epochs),
                "pruned_share": last.get("pruned_share", 0.0),
            }
        )
    return rows


_COLUMNS = {
    "method": ("method", "{}"),
    "acc_equal_steps": ("acc @ steps", "{:.4f}"),
    "time_to_uniform_acc_ratio": ("time to uniform acc", "{:.2f}x"),
    "acc_at_uniform_time": ("acc @ uniform time", "{:.4f}"),
    "train_seconds": ("train s", "{:.1f}"),
    "epoch_seconds": ("s / epoch", "{:.2f}"),
    "mb_total": ("MB total", "{:.0f}"),
    "mb_per_epoch": ("MB / epoch", "{:.1f}"),
    "gets_per_epoch": ("GETs / epoch", "{:.0f}"),
    "data_wait_share": ("data wait", "{:.0%}"),
    "cache_hit_rate": ("cache hits", "{:.0%}"),
    "max_plan_staleness": ("staleness", "{}"),
    "max_weight": ("max w", "{:.1f}"),
    "pruned_share": ("pruned", "{:.0%}"),
}


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "not reached"
    return fmt.format(value)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """The methods' summary rows as one rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption="* the baseline: the faster uniform run")
    for key, (header, _) in _COLUMNS.items():
        wide = key == "method"
        table.add_column(header, justify="left" if wide else "right", no_wrap=wide)
    for row in rows:
        cells = [_cell(row[key], fmt) for key, (_, fmt) in _COLUMNS.items()]
        if row.get("baseline"):
            cells[0] += " *"
        table.add_row(*cells)
    Console(width=200).print(table)


def plot(results: list[RunResult], directory: Path, title: str) -> list[Path]:
    """Accuracy against wall time, importance histograms, active-set size per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot(r.series("train_seconds"), r.series("test_acc"), marker="o", label=r.method)
    ax.set(xlabel="training wall time (s)", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(directory / "accuracy_vs_time.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    source = next((r for r in results if r.method == "ours_is_prune"), results[-1])
    if source.histograms:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        epochs = sorted(source.histograms)
        for epoch in epochs[:: max(1, len(epochs) // 3)]:
            counts, edges = source.histograms[epoch]
            centers = np.sqrt(np.array(edges[:-1]) * np.array(edges[1:]))  # log-spaced bins
            ax.plot(centers, counts, drawstyle="steps-mid", label=f"after epoch {epoch}")
        ax.set(xlabel="importance q (active samples)", ylabel="samples", xscale="log", yscale="log")
        ax.set_title(f"importance histogram ({source.method})")
        ax.legend()
        paths.append(directory / "importance_histogram.png")
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if "active" in r.epochs[0]:
            ax.plot(r.series("epoch"), r.series("active"), marker="o", label=r.method)
    ax.set(xlabel="epoch", ylabel="active samples", title="active set size")
    ax.legend()
    paths.append(directory / "active_set.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
