"""Is the kept set worth keeping? Uniform training on the set ``isloader export`` wrote,
against the full set and against a random subset of the same size, at equal steps.

Protocol, per seed (paired): MNIST-1D from local Parquet; a pruning run
(``ours_is_prune``: importance sampling, Alg. 2 with K = 2 every 2 epochs) fills a
store; ``export_kept`` writes its active rows; a random subset of the same number of
rows is written the same way (a store that keeps exactly those rows); then the same
model trains with uniform sampling (a full permutation per epoch) on the full set, the
kept set and the random subset, for the same number of steps (the smaller sets run
more epochs). Test accuracy at the end; paired 95% intervals of kept - random and
kept - full over the seeds.
Run: ``python benchmarks/bench_export.py [--seeds 5] [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isloader.data.catalog import ShardCatalog
from isloader.demo import train_method
from isloader.demo.data import make_mnist1d
from isloader.export import export_kept
from isloader.pipeline.runtime import start_ray
from isloader.results import paired_ci
from isloader.store.local import LocalStore

OUT = Path(__file__).resolve().parent / "results"


def _random_subset(dataset: str, rows: int, seed: int, out: str) -> None:
    """``rows`` random rows of ``dataset`` written by ``export_kept`` (a store that
    keeps exactly those: q = 1 on them, tiny elsewhere, Alg. 2 at K = 1)."""
    n = len(ShardCatalog.open(dataset))
    chosen = np.random.default_rng(1000 + seed).choice(n, rows, replace=False)
    q = np.full(n, 1e-6)
    q[chosen] = 1.0
    with LocalStore(n, alpha=0.0) as store:
        store.update(np.arange(n), q)
        store.prune(1.0, epoch=0)
        assert store.stats().active == rows
        export_kept(dataset, store, out, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8, help="of the pruning run and of full")
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    start_ray()
    scratch = Path(tempfile.mkdtemp(prefix="isloader-export-"))
    dataset, test_set = make_mnist1d(scratch / "data", args.train_size, 2000, 0)
    n = len(ShardCatalog.open(dataset))
    common = {"batch_size": args.batch, "uniform_order": "permutation"}
    runs: list[dict[str, float]] = []
    for seed in tqdm(range(args.seeds), unit="seed", desc="export"):
        with LocalStore(n) as store:
            train_method("ours_is_prune", dataset, test_set, epochs=args.epochs, seed=seed,
                         store=store, batch_size=args.batch)  # fmt: skip
            kept_dir = str(scratch / f"kept-{seed}")
            manifest = export_kept(dataset, store, kept_dir, seed=seed)
        random_dir = str(scratch / f"random-{seed}")
        _random_subset(dataset, manifest.rows, seed, random_dir)
        acc = {}
        for name, data in (("full", dataset), ("kept", kept_dir), ("random", random_dir)):
            rows = len(ShardCatalog.open(data))
            epochs = max(1, round(args.epochs * n / rows))  # equal steps
            result = train_method("uniform", data, test_set, epochs=epochs, seed=seed, **common)
            acc[name] = result.epochs[-1]["test_acc"]
        runs.append({"seed": seed, "kept_fraction": manifest.rows / n,
                     "kept_mass": manifest.kept_mass, **acc})  # fmt: skip
    kept_vs_random = paired_ci([r["kept"] - r["random"] for r in runs])
    kept_vs_full = paired_ci([r["kept"] - r["full"] for r in runs])
    final = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "train_size": n,
        "kept_fraction": float(np.mean([r["kept_fraction"] for r in runs])),
        "acc_full_uniform": float(np.mean([r["full"] for r in runs])),
        "acc_kept_uniform": float(np.mean([r["kept"] for r in runs])),
        "acc_random_subset": float(np.mean([r["random"] for r in runs])),
        "kept_minus_random": list(kept_vs_random),
        "kept_minus_full": list(kept_vs_full),
        "runs": runs,
    }
    print(f"{'seed':>4} {'kept':>6} {'full':>7} {'kept':>7} {'random':>7}")
    for r in runs:
        print(f"{r['seed']:>4} {r['kept_fraction']:>6.1%} {r['full']:>7.4f} {r['kept']:>7.4f} "
              f"{r['random']:>7.4f}")  # fmt: skip
    mean, low, high = kept_vs_random
    print(f"kept - random: {mean:+.4f} [{low:+.4f}, {high:+.4f}] (paired 95%, equal steps)")
    OUT.mkdir(exist_ok=True)
    (OUT / "export.json").write_text(json.dumps(final, indent=1))
    print(json.dumps({k: v for k, v in final.items() if k != "runs"}))


if __name__ == "__main__":
    main()
