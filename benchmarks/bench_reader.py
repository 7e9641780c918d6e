"""Sampled reads from object storage against a sequential pass of the same reader.

One dataset (60,000 rows of ~4 KB and a label; ``isloader convert``: small pages and a
page index) in 20 Parquet shards on the emulated endpoint (``isloader.demo.endpoint``:
20 ms a request, 25 MB/s for all connections, 64 at once; bytes and GETs counted at the
endpoint). Importance per row, lognormal (sigma 1), in random row order: the layout the
method needs. Every arm is the same ``ShardReader`` (the data plane, no Ray), windows
of 2,048 draws:

- ``sequential``: the reader streaming every unit in order, no cache (the anchor);
- ``independent, cold``: independent draws, an empty cache of half the rows' bytes;
- ``independent, steady`` at 50% and 25%: after a streaming pass filled the cache by
  measured q (the initialization epoch) and ranked it;
- ``locality``: locality-aware draws (``G = ceil(8 * 2048 / U)``) through the same
  steady 50% cache;
- ``pruned``: the lower half of q pruned, the 50% cache ranked again: bytes per window
  against the unpruned steady run;

plus the endpoint's own ceiling, the marginals of independent and locality-aware draws
against the exact ``p`` (chi-square over **all** draws of many windows; locality's
correlated draws are tested with their counts deflated by the design effect), and the
same on WebDataset tars (a sample's span; a cache of half the tars' bytes).
Run: ``python benchmarks/bench_reader.py [--rows 60000] [--windows 12]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from isloader import ImportanceTable, ShardCatalog, ShardReader, TableConfig, convert_parquet
from isloader.demo.endpoint import EmulatedObjectStore, EndpointModel, measure_ceiling
from isloader.pipeline.plan import units_per_window

WINDOW, ROW = 2048, 4096


def run_windows(reader: ShardReader, table: ImportanceTable, windows: int, g: int, seed: int,
                s3: EmulatedObjectStore) -> dict:  # fmt: skip
    """Rows/s, bytes and GETs (at the endpoint), cache figures of ``windows`` windows."""
    before = reader.counters.snapshot()
    rng = np.random.default_rng(seed)
    rows, seconds = 0, 0.0
    with s3.counting() as served:
        for _ in range(windows):
            plan = table.sample(WINDOW, rng, layout="units" if g else None, units=g)
            start = time.perf_counter()
            rows += reader.read(plan.indices, probabilities=plan.probabilities).num_rows
            seconds += time.perf_counter() - start
    after = reader.counters.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    lookups = delta["cache_hits"] + delta["cache_misses"]
    return {
        "rows_per_s": rows / seconds,
        "bytes": served[0].bytes_sent,
        "gets": served[0].gets,
        "gets_per_row": served[0].gets / rows,
        "cache_hit_rate": delta["cache_hits"] / lookups if lookups else 0.0,
        "read_amplification": served[0].bytes_sent / max(delta["miss_bytes"], 1),
    }


def fill(reader: ShardReader, catalog: ShardCatalog, p: np.ndarray) -> float:
    """The initialization epoch's streaming pass (q measured as it goes), then the rank:
    returns the mass share the cache holds."""
    for unit in np.random.default_rng(7).permutation(catalog.num_units):
        reader.read_units(np.array([unit]), pending=True)
        reader.settle(lambda idx: p[idx])
    return reader.rank(1, lambda idx: p[idx])


def chi2_all_draws(table: ImportanceTable, p: np.ndarray, g: int, windows: int, deff: float):
    """Chi-square of every draw of ``windows`` windows against ``p`` on the rows of
    ``p >= 0.01 / len`` pooled by rank; counts deflated by the design effect ``deff``."""
    rng = np.random.default_rng(99)
    draws = np.concatenate(
        [table.sample(256, rng, layout="units" if g else None, units=g).indices
         for _ in range(windows)]
    )  # fmt: skip
    counts = np.bincount(draws, minlength=len(p)).astype(float) / deff
    order = np.argsort(-p)
    expected = p[order] * counts.sum()
    cells = np.minimum(np.cumsum(expected) // 50, 199).astype(int)  # ~200 cells of ~50+
    _, cells = np.unique(cells, return_inverse=True)  # a row expected 50+ times skips one
    observed = np.bincount(cells, weights=counts[order])
    pooled = np.bincount(cells, weights=expected)
    return float(stats.chisquare(observed, pooled * observed.sum() / pooled.sum()).pvalue)


def write_dataset(s3: EmulatedObjectStore, bucket: str, rows: int, scratch: Path) -> ShardCatalog:
    rng = np.random.default_rng(0)
    table = pa.table({"raw": [rng.bytes(ROW) for _ in range(rows)],
                      "y": rng.integers(0, 10, rows)})  # fmt: skip
    (scratch / "src").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, scratch / "src" / "rows.parquet")
    convert_parquet(str(scratch / "src"), str(scratch / "conv"), rows_per_shard=rows // 20)
    target = s3.local_path(f"{bucket}/data")
    target.mkdir(parents=True)
    for path in (scratch / "conv").glob("*.parquet"):
        path.rename(target / path.name)
    catalog = ShardCatalog.build(f"{bucket}/data", storage_options=s3.direct_options)
    catalog.save()
    return ShardCatalog.load(f"{bucket}/data", storage_options=s3.storage_options)


def tars(s3: EmulatedObjectStore, bucket: str, scratch: Path, rows: int) -> dict:
    """The same check on WebDataset tars: a sample costs its span."""
    import webdataset as wds

    rng = np.random.default_rng(1)
    target = s3.local_path(f"{bucket}/tars")
    target.mkdir(parents=True)
    per = rows // 8
    for s in range(8):
        with wds.TarWriter(str(target / f"shard-{s:03d}.tar"), mtime=1_700_000_000) as sink:
            for i in range(s * per, (s + 1) * per):
                sink.write({"__key__": f"{i:07d}", "bin": rng.bytes(ROW), "cls": i % 10})
    ShardCatalog.build(f"{bucket}/tars", storage_options=s3.direct_options).save()
    catalog = ShardCatalog.load(f"{bucket}/tars", storage_options=s3.storage_options)
    n = len(catalog)
    q = np.random.default_rng(3).lognormal(0, 1, n)
    p = q / q.sum()
    table = ImportanceTable(TableConfig(0, n))
    table.update(np.arange(n), q)
    stored = float(np.sum(catalog.arrays["sample_length"]))
    reader = ShardReader(catalog, cache_dir=str(scratch / "tar-cache"), memory_bytes=0,
                         cache_bytes=int(stored / 2), columns=["bin", "cls"])  # fmt: skip
    covered = fill(reader, catalog, p)
    steady = run_windows(reader, table, 4, 0, 5, s3)
    return {
        "wds_bytes_total": stored,
        "wds_cache_mass_covered": covered,
        "wds_cache_hit_rate": steady["cache_hit_rate"],
        "wds_read_amplification": steady["read_amplification"],
        "wds_rows_per_s": steady["rows_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb-s", type=float, default=25.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="isloader-bench-reader-"))
    model = EndpointModel(args.latency_ms, args.bandwidth_mb_s)
    with EmulatedObjectStore(model) as s3:
        bucket = s3.bucket("bench")
        catalog = write_dataset(s3, bucket, args.rows, scratch)
        ceiling = measure_ceiling(s3, f"{bucket}/data/{catalog.shards[0].path}")
        n = len(catalog)
        q = np.random.default_rng(2).lognormal(0, 1, n)  # per row, random row order
        p = q / q.sum()
        table = ImportanceTable(TableConfig(0, n))
        table.update(np.arange(n), q)
        table.set_layout("units", catalog.unit_bounds)
        g = units_per_window(WINDOW, catalog.unit_rows.astype(float), np.ones(catalog.num_units))
        stored = float(catalog.unit_bytes().sum())

        def reader(name: str, share: float) -> ShardReader:
            return ShardReader(catalog, cache_dir=str(scratch / name), memory_bytes=0,
                               cache_bytes=int(share * stored))  # fmt: skip

        sequential = ShardReader(catalog, cache_dir="", memory_bytes=0)
        start = time.perf_counter()
        with s3.counting() as seq_served:
            for lo in range(0, catalog.num_units, 4):
                sequential.read_units(np.arange(lo, min(lo + 4, catalog.num_units)))
        seq_rps = n / (time.perf_counter() - start)

        cold = run_windows(reader("cold", 0.5), table, args.windows, 0, 1, s3)
        runs, covered = {}, {}
        for share in (0.5, 0.25):
            warm = reader(f"steady-{share}", share)
            covered[share] = fill(warm, catalog, p)
            runs[share] = run_windows(warm, table, args.windows, 0, 3, s3)
            if share == 0.5:
                locality = run_windows(warm, table, args.windows, g, 4, s3)
                pruned_q = np.where(q <= np.median(q), 0.0, q)
                table.prune(float(np.median(q)))
                warm.rank(2, lambda idx, kept=pruned_q: kept[idx] / kept.sum())
                pruned = run_windows(warm, table, args.windows, 0, 3, s3)
                table = ImportanceTable(TableConfig(0, n))  # back to the unpruned table
                table.update(np.arange(n), q)
                table.set_layout("units", catalog.unit_bounds)
        chi2 = chi2_all_draws(table, p, 0, 400, 1.0)
        deff = 1 + 2 * 256 / (g * catalog.unit_rows.mean())  # the window's variance factor
        chi2_locality = chi2_all_draws(table, p, g, 400, deff)
        wds = tars(s3, bucket, scratch, args.rows // 4)

    steady, quarter = runs[0.5], runs[0.25]
    rows = [
        {"run": "sequential (same reader)", "rows_per_s": seq_rps,
         "gets_per_row": seq_served[0].gets / n, "cache_hit_rate": 0.0},
        {"run": "independent, cold (50% cache)", **cold},
        {"run": "independent, steady, 50% cache", **steady},
        {"run": "independent, steady, 25% cache", **quarter},
        {"run": f"locality G={g}, steady 50%", **locality},
        {"run": "independent, 50% pruned", **pruned},
    ]  # fmt: skip
    report(
        [{k: r[k] for k in ("run", "rows_per_s", "gets_per_row", "cache_hit_rate")} for r in rows],
        {
            "rows": n,
            "endpoint": {
                "latency_ms": model.latency_ms,
                "bandwidth_mb_s": model.bandwidth_mb_s,
                "concurrency": model.concurrency,
            },
            "endpoint_gets_per_s": ceiling["gets_per_s"],
            "endpoint_cpu_ms_per_get": ceiling["server_cpu_ms_per_get"],
            "sequential_rows_per_s": seq_rps,
            "units_per_window": g,
            "ratio_independent": cold["rows_per_s"] / seq_rps,
            "ratio_cold": cold["rows_per_s"] / seq_rps,
            "ratio_steady": steady["rows_per_s"] / seq_rps,
            "ratio_steady_25": quarter["rows_per_s"] / seq_rps,
            "ratio_locality": locality["rows_per_s"] / seq_rps,
            "requests_per_row": {r["run"]: r["gets_per_row"] for r in rows},
            "cache_limit_vs_dataset": 0.5,
            "cache_mass_covered": covered[0.5],
            "cache_hit_rate": steady["cache_hit_rate"],
            "cache_mass_covered_25": covered[0.25],
            "cache_hit_rate_25": quarter["cache_hit_rate"],
            "read_amplification": steady["read_amplification"],
            "read_amplification_25": quarter["read_amplification"],
            "bytes_fetched_pruned_vs_full": pruned["bytes"] / max(steady["bytes"], 1),
            "marginal_chi2_p": chi2,
            "marginal_chi2_p_locality": chi2_locality,
            **wds,
        },
    )


if __name__ == "__main__":
    main()
