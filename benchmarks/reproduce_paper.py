"""The paper's claim, measured: importance sampling + pruning against uniform sampling.

Protocol: MNIST-1D (60k/10k) and scikit-learn's digits; the same initialisation per
seed; a constant learning rate (so a prefix of a run stands for a smaller budget);
training-only wall time with every selection cost included; methods interleaved per
seed. Reported with paired 95% intervals over seeds: accuracy at equal steps, time
to reach uniform's final accuracy (as a ratio of uniform's time), accuracy at equal
time. Writes ``benchmarks/results/paper.json``, ``paper.md`` and PNGs; every figure
in the README comes from these files.
Run: ``python benchmarks/reproduce_paper.py [--seeds 5] [--epochs 6]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from isloader.demo import RunResult, make_mnist1d, train_method
from isloader.pipeline.runtime import start_ray
from isloader.results import paired_ci, ratio_ci, time_to_target, value_at_time

METHODS = ["uniform", "loss_is", "ours_is", "ours_is_prune", "random_prune"]
OUT = Path(__file__).resolve().parent / "results"


def make_digits(directory: Path) -> tuple[str, tuple[np.ndarray, np.ndarray]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    from isloader import ShardCatalog

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1437], order[1437:]
    out = directory / "train"
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": pa.array(list(x[train]), pa.list_(pa.float32())), "y": y[train]})
    pq.write_table(table, out / "part-000.parquet", row_group_size=128)
    ShardCatalog.build(str(out)).save()
    return str(out), (x[test], y[test].astype(np.int64))


def run_dataset(name: str, dataset: str, test_set, seeds: int, epochs: int, batch: int) -> dict:
    from tqdm import tqdm

    train_method("uniform", dataset, test_set, epochs=1, batch_size=batch, seed=0)  # warm-up
    runs: dict[str, list[RunResult]] = {m: [] for m in METHODS}
    with tqdm(total=seeds * len(METHODS), desc=name, unit="run") as bar:
        for seed in range(seeds):
            target_active = None
            for method in METHODS:  # interleaved: every seed runs every method in turn
                result = train_method(
                    method, dataset, test_set, epochs=epochs, batch_size=batch, seed=seed,
                    target_active=target_active,
                )  # fmt: skip
                if method == "ours_is_prune":
                    target_active = result.series("active")
                runs[method].append(result)
                bar.update(1)
    return summarize(name, runs)


def summarize(name: str, runs: dict[str, list[RunResult]]) -> dict:
    uniform = runs["uniform"]
    summary: dict = {"dataset": name, "seeds": len(uniform), "methods": {}}
    for method, results in runs.items():
        final_acc = [r.epochs[-1]["test_acc"] for r in results]
        deltas = [a - u.epochs[-1]["test_acc"] for a, u in zip(final_acc, uniform, strict=True)]
        ratios, reached = [], 0
        for r, u in zip(results, uniform, strict=True):
            t = time_to_target(
                r.series("train_seconds"), r.series("test_acc"), u.epochs[-1]["test_acc"]
            )
            reached += math.isfinite(t)
            ratios.append(t / u.epochs[-1]["train_seconds"])
        finite = [x for x in ratios if math.isfinite(x)]
        ratio = ratio_ci(finite, [1.0] * len(finite)) if finite else (math.nan,) * 3
        equal_time = [
            value_at_time(
                r.series("train_seconds"), r.series("test_acc"), u.epochs[-1]["train_seconds"]
            )
            for r, u in zip(results, uniform, strict=True)
        ]
        summary["methods"][method] = {
            "acc_equal_steps": float(np.mean(final_acc)),
            "acc_delta_vs_uniform": paired_ci(deltas),
            "time_to_uniform_acc_ratio": ratio,
            "reached_uniform_acc": f"{reached}/{len(results)}",
            "acc_at_uniform_time": float(np.nanmean(equal_time))
            if any(math.isfinite(x) for x in equal_time)
            else math.nan,
            "train_seconds": float(np.mean([r.epochs[-1]["train_seconds"] for r in results])),
            "pruned_share": float(np.mean([r.epochs[-1]["pruned_share"] for r in results])),
            "curves": [
                {"seconds": r.series("train_seconds"), "acc": r.series("test_acc")} for r in results
            ],
        }
    return summary


def markdown(summaries: list[dict]) -> str:
    lines = []
    for s in summaries:
        lines += [
            f"### {s['dataset']} ({s['seeds']} seeds, mean and paired 95% interval)",
            "",
            "| method | acc @ equal steps | Δ acc vs uniform | time to uniform's acc / its time "
            "| reached | acc @ uniform's time | train s | pruned |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method, m in s["methods"].items():
            d, r = m["acc_delta_vs_uniform"], m["time_to_uniform_acc_ratio"]
            lines.append(
                f"| {method} | {m['acc_equal_steps']:.4f} | {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] "
                f"| {r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] | {m['reached_uniform_acc']} "
                f"| {m['acc_at_uniform_time']:.4f} | {m['train_seconds']:.1f} "
                f"| {m['pruned_share']:.0%} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(summaries: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for s in summaries:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, m in s["methods"].items():
            seconds = np.mean([c["seconds"] for c in m["curves"]], axis=0)
            acc = np.array([c["acc"] for c in m["curves"]])
            ax.plot(seconds, acc.mean(0), marker="o", label=method)
            ax.fill_between(seconds, acc.min(0), acc.max(0), alpha=0.15)
        ax.set(xlabel="training wall time (s)", ylabel="test accuracy")
        ax.set_title(f"{s['dataset']}: mean over {s['seeds']} seeds (band: min-max)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(OUT / f"paper_{s['dataset']}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--digits-epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--data", default=str(OUT / "data"))
    args = parser.parse_args()
    import ray

    start_ray()
    OUT.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    mnist, mnist_test = make_mnist1d(data / "mnist1d", 60000, 10000)
    digits, digits_test = make_digits(data / "digits")
    summaries = [
        run_dataset("mnist1d", mnist, mnist_test, args.seeds, args.epochs, args.batch),
        run_dataset("digits", digits, digits_test, args.seeds, args.digits_epochs, 32),
    ]
    (OUT / "paper.json").write_text(json.dumps(summaries, indent=1))
    (OUT / "paper.md").write_text(markdown(summaries))
    plot(summaries)
    print(markdown(summaries))
    m = summaries[0]["methods"]
    ratio = m["ours_is_prune"]["time_to_uniform_acc_ratio"]
    print(
        json.dumps(
            {
                "dataset": "mnist1d",
                "seeds": args.seeds,
                "uniform_acc": m["uniform"]["acc_equal_steps"],
                "is_acc": m["ours_is"]["acc_equal_steps"],
                "is_prune_acc": m["ours_is_prune"]["acc_equal_steps"],
                "time_to_uniform_acc_ratio": ratio[0],
                "ratio_ci_low": ratio[1],
                "ratio_ci_high": ratio[2],
                "reached": m["ours_is_prune"]["reached_uniform_acc"],
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
