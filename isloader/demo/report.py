"""The demo's table and plots: each method against uniform, in the same run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from isloader.demo.train import RunResult
from isloader.results import time_to_target, value_at_time

__all__ = ["summarize", "print_table", "plot"]


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per method: at equal steps (the last epoch), against uniform's time and
    final accuracy, and what loading cost per epoch."""
    uniform = next((r for r in results if r.method == "uniform"), results[0])
    target, budget = uniform.epochs[-1]["test_acc"], uniform.epochs[-1]["train_seconds"]
    rows = []
    for r in results:
        last, sampled = r.epochs[-1], r.epochs[1:] or r.epochs
        reach = time_to_target(r.series("train_seconds"), r.series("test_acc"), target)
        rows.append(
            {
                "method": r.method,
                "acc_equal_steps": last["test_acc"],
                "loss_equal_steps": last["test_loss"],
                "time_to_uniform_acc_ratio": reach / budget if math.isfinite(reach) else math.nan,
                "acc_at_uniform_time": value_at_time(
                    r.series("train_seconds"), r.series("test_acc"), budget
                ),
                "train_seconds": last["train_seconds"],
                "epoch_seconds": float(np.mean([e["epoch_seconds"] for e in sampled])),
                "mb_per_epoch": float(np.mean([e["bytes_fetched"] for e in sampled])) / 1e6,
                "requests_per_epoch": float(np.mean([e["requests"] for e in sampled])),
                "cache_hit_rate": float(np.mean([e["cache_hit_rate"] for e in sampled])),
                "max_plan_staleness": max(e["max_plan_staleness"] for e in r.epochs),
                "max_weight": max(e["max_weight"] for e in r.epochs),
                "pruned_share": last["pruned_share"],
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
    "mb_per_epoch": ("MB / epoch", "{:.1f}"),
    "requests_per_epoch": ("GETs / epoch", "{:.0f}"),
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
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header, _ in _COLUMNS.values():
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(_cell(row[key], fmt) for key, (_, fmt) in _COLUMNS.items()))
    Console(width=170).print(table)


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
        ax.plot(r.series("epoch"), r.series("active"), marker="o", label=r.method)
    ax.set(xlabel="epoch", ylabel="active samples", title="active set size")
    ax.legend()
    paths.append(directory / "active_set.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths
