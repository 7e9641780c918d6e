"""The headline result: training from object storage, end to end, against streaming.

MNIST-1D with rows stored as ~4 KB blobs (the read task decodes them, as it would
images) on moto's S3 server behind a proxy adding 20 ms to every request and capping
each connection at 100 Mbit/s (both stated in the JSON line). Methods, same model,
same steps, every loading and selection cost in the wall time:

- ``uniform``: a shuffled streaming pass over the endpoint every epoch, no cache
  across epochs (what WebDataset or Ray Data ``read_parquet`` do);
- ``ours_is``, ``ours_is_prune``: importance sampling (+ pruning), locality-aware
  windows, the importance-aware disk cache (half the dataset's bytes) and a memory
  tier smaller than the dataset;
- ``random_prune``: uniform over a random active set of ``ours_is_prune``'s size.

Seeds are paired (same initialisation, methods interleaved); intervals are paired 95%.
Also runs one configuration on WebDataset tars. Writes ``results/remote.json``,
``remote.md`` and ``remote_mnist1d.png``.
Run: ``python benchmarks/bench_remote_training.py [--seeds 5] [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import methods_markdown, plot_curves

from isloader.demo import DemoSettings, RunResult, open_comparison, train_method
from isloader.pipeline.runtime import start_ray
from isloader.results import compare_methods

OUT = Path(__file__).resolve().parent / "results"
METHODS = ["uniform", "ours_is", "ours_is_prune", "random_prune"]


def run(settings: DemoSettings, seeds: int, label: str) -> dict:
    from tqdm import tqdm

    runs: dict[str, list[RunResult]] = {m: [] for m in METHODS}
    with ExitStack() as stack:
        comparison = open_comparison(settings, stack)
        warm = comparison.options("uniform")
        train_method("uniform", comparison.dataset, comparison.test_set, epochs=1,
                     batch_size=settings.batch_size, seed=0, **warm)  # fmt: skip
        with tqdm(total=seeds * len(METHODS), desc=label, unit="run") as bar:
            for seed in range(seeds):
                target_active = None
                for method in METHODS:
                    result = train_method(
                        method, comparison.dataset, comparison.test_set,
                        epochs=settings.epochs, batch_size=settings.batch_size, seed=seed,
                        target_active=target_active,
                        **comparison.options(method, run=str(seed)),
                    )  # fmt: skip
                    if method == "ours_is_prune":
                        target_active = result.series("active")
                    runs[method].append(result)
                    bar.update(1)
        where = comparison.where
    return {"label": label, "where": where, "seeds": seeds, "methods": compare_methods(runs)}


def markdown(summaries: list[dict]) -> str:
    columns = [
        ("MB / epoch", lambda m: f"{m['bytes_per_epoch'] / 1e6:.1f}"),
        ("GETs / epoch", lambda m: f"{m['requests_per_epoch']:.0f}"),
        ("cache hits", lambda m: f"{m['cache_hit_rate']:.0%}"),
        ("pruned", lambda m: f"{m['pruned_share']:.0%}"),
    ]
    lines = []
    for s in summaries:
        heading = f"### {s['label']}: {s['where']} ({s['seeds']} seeds, paired 95% intervals)"
        lines += methods_markdown(heading, s["methods"], columns)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--wds-seeds", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=100.0)
    parser.add_argument("--data", default=str(OUT / "data" / "remote"))
    args = parser.parse_args()
    import ray

    start_ray()
    OUT.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "train_size": args.train_size, "latency_ms": args.latency_ms,
              "bandwidth_mbps": args.bandwidth_mbps}  # fmt: skip
    parquet = run(DemoSettings(output=args.data, **common), args.seeds, "Parquet")
    summaries = [parquet]
    if args.wds_seeds:
        tars = DemoSettings(output=args.data + "-wds", format="webdataset", **common)
        summaries.append(run(tars, args.wds_seeds, "WebDataset"))
    (OUT / "remote.json").write_text(json.dumps(summaries, indent=1))
    (OUT / "remote.md").write_text(markdown(summaries))
    plot_curves(
        parquet["methods"], f"MNIST-1D from {parquet['where']}", OUT / "remote_mnist1d.png",
        xlabel="training wall time, loading included (s)",
    )  # fmt: skip
    print(markdown(summaries))
    m = parquet["methods"]
    prune, uniform = m["ours_is_prune"], m["uniform"]
    ratio = prune["time_to_baseline_acc_ratio"]
    final = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "emulated_latency_ms": args.latency_ms,
        "emulated_bandwidth_mbps": args.bandwidth_mbps,
        "uniform_acc": uniform["acc_equal_steps"],
        "is_acc": m["ours_is"]["acc_equal_steps"],
        "is_prune_acc": prune["acc_equal_steps"],
        "time_to_uniform_acc_ratio": ratio[0],
        "ratio_ci_low": ratio[1],
        "ratio_ci_high": ratio[2],
        "reached": prune["reached_baseline_acc"],
        "acc_at_uniform_time": prune["acc_at_baseline_time"],
        "bytes_per_epoch_pruned_vs_uniform": prune["bytes_per_epoch"] / uniform["bytes_per_epoch"],
        "requests_per_epoch_pruned_vs_uniform": (
            prune["requests_per_epoch"] / uniform["requests_per_epoch"]
        ),
        "cache_hit_rate": prune["cache_hit_rate"],
        "max_plan_staleness": prune["max_plan_staleness"],
    }
    if len(summaries) > 1:
        w = summaries[1]["methods"]
        final["wds_time_to_uniform_acc_ratio"] = w["ours_is_prune"]["time_to_baseline_acc_ratio"][0]
        final["wds_bytes_per_epoch_pruned_vs_uniform"] = (
            w["ours_is_prune"]["bytes_per_epoch"] / w["uniform"]["bytes_per_epoch"]
        )
    print(json.dumps(final))
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
