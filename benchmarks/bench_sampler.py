"""ImportanceTable vs the naive algorithm: one step = sample B + update B.

Naive: ``rng.choice(N, B, p=q/q.sum())`` (an O(N) renormalisation and CDF per step)
plus a numpy EMA update. Table: SumTree sampling and a batched update.
Run: ``python benchmarks/bench_sampler.py [--sizes 1e5,1e6,1e7] [--batch 1024]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, time_calls

from isloader.store import ImportanceTable, TableConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1e5,1e6,1e7")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    b = args.batch
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        q = rng.gamma(0.5, 1.0, n)
        table = ImportanceTable(TableConfig(0, n, alpha=0.2))
        table.update(np.arange(n), q)
        values = rng.random(b)

        def table_step(table=table, rng=rng, values=values) -> None:
            plan = table.sample(b, rng)
            table.update(plan.indices, values)

        def naive_step(q=q, rng=rng, values=values, n=n) -> None:
            idx = rng.choice(n, b, p=q / q.sum())
            q[idx] = 0.2 * q[idx] + 0.8 * values

        t_table = np.median(time_calls(table_step, args.repeats)) * 1e3
        naive_repeats = max(5, min(args.repeats, int(2e8 // n)))
        t_naive = np.median(time_calls(naive_step, naive_repeats, warmup=1)) * 1e3
        rows.append(
            {
                "n": n,
                "batch": b,
                "table_ms": float(t_table),
                "naive_ms": float(t_naive),
                "speedup": float(t_naive / t_table),
                "bytes_per_sample": table.nbytes / n,
            }
        )
    report(rows, rows[-1])


if __name__ == "__main__":
    main()
