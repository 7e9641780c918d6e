"""Importance-sampled reads from emulated S3 against a sequential Ray Data pass.

One synthetic dataset (200k rows of ~1 KB in random order, 20 Parquet shards of
256-row groups) on moto's S3 server behind a proxy adding 20 ms to every request and
capping each connection at 400 Mbit/s (S3's first-byte latency and per-connection
throughput, roughly). Skewed importance: 20% of the row groups hold 80% of the mass.
Compared in one run, on the same endpoint:

- ``sequential``: a full pass with Ray Data ``read_parquet`` (the anchor);
- ``independent``: ``ShardReader.read`` of windows of 2048 independent draws (today's
  scattered reads), empty caches;
- ``cold``: locality-aware windows (``G = ceil(8 * 2048 / 256) = 64`` units), an empty
  disk tier of half the dataset's bytes (no memory tier: the disk tier is the cache
  under test, and its hit rate is then what it covers);
- ``steady``: the same after a streaming pass filled the disk tier (at most half the
  dataset's bytes) and one epoch of windows ranked it by mass;
- ``pruned``: the cold run after the lower-q half of the samples is pruned;

plus the endpoint's own ceiling (ranged 4 KiB GETs per second, no added latency), the
marginal of locality-aware draws against the exact ``p`` (chi-square on one draw per
window), and a WebDataset check: an importance-sampled epoch right after the init
epoch, with the loader's default cache settings, fetches at most half the tars' bytes.

Run: ``python benchmarks/bench_reader.py [--rows 200000] [--windows 24]``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from isloader import ImportanceTable, ShardCatalog, ShardReader, TableConfig
from isloader.demo.endpoint import EmulatedObjectStore
from isloader.pipeline.plan import units_per_window
from isloader.pipeline.runtime import start_ray

GROUP, WINDOW = 256, 2048


def endpoint_ceiling(s3: EmulatedObjectStore, path: str, seconds: float = 3.0) -> float:
    """Ranged 4 KiB GETs per second straight to moto, 32 at a time."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3.direct_options)
    size = fs.info(path)["size"]
    rng = np.random.default_rng(0)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        starts = rng.integers(0, size - 4096, 32).tolist()
        fs.cat_ranges([path] * 32, starts, [s + 4096 for s in starts])
        done += 32
    return done / (time.perf_counter() - start)


def sequential_rows_per_s(s3: EmulatedObjectStore, root: str) -> float:
    import ray
    import s3fs
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    start_ray()
    pyfs = PyFileSystem(FSSpecHandler(s3fs.S3FileSystem(**s3.storage_options)))
    ray.data.range(4).materialize()  # workers up before the clock starts
    start = time.perf_counter()
    rows = sum(
        b.num_rows
        for b in ray.data.read_parquet(root, filesystem=pyfs).iter_batches(
            batch_format="pyarrow", batch_size=4096
        )
    )
    seconds = time.perf_counter() - start
    ray.shutdown()
    return rows / seconds


def run_windows(reader: ShardReader, table: ImportanceTable, windows: int, g: int, seed: int):
    """Rows/s, bytes, requests and cache figures of ``windows`` sampled windows."""
    before = reader.counters.snapshot()
    rng = np.random.default_rng(seed)
    start, rows = time.perf_counter(), 0
    for _ in range(windows):
        plan = table.sample(WINDOW, rng, layout="units" if g else None, units=g)
        rows += reader.read(plan.indices).num_rows
    seconds = time.perf_counter() - start
    after = reader.counters.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    lookups = delta["cache_hits"] + delta["cache_misses"]
    return {
        "rows_per_s": rows / seconds,
        "bytes_fetched": float(delta["bytes_fetched"]),
        "requests": delta["requests"],
        "requests_per_row": delta["requests"] / rows,
        "cache_hit_rate": delta["cache_hits"] / lookups if lookups else 0.0,
    }


def marginal_p_value(table: ImportanceTable, q: np.ndarray, g: int, windows: int) -> float:
    """Chi-square of one locality-aware draw per window against the exact ``p``, on the
    units holding the most mass (cells pooled so every expected count is >= 5)."""
    rng = np.random.default_rng(99)
    first = np.array(
        [table.sample(16, rng, layout="units", units=g).indices[0] for _ in range(windows)]
    )
    unit = first // GROUP
    p_unit = np.add.reduceat(q, np.arange(0, len(q), GROUP)) / q.sum()
    counts = np.bincount(unit, minlength=len(p_unit)).astype(float)
    order = np.argsort(-p_unit)
    expected = p_unit[order] * windows
    cells = np.cumsum(expected) // 5  # pool neighbouring cells to >= 5 expected each
    observed = np.bincount(cells.astype(int), weights=counts[order])
    pooled = np.bincount(cells.astype(int), weights=expected)
    keep = pooled > 0
    return float(
        stats.chisquare(observed[keep], pooled[keep] * observed.sum() / pooled.sum()).pvalue
    )


def webdataset_check(s3: EmulatedObjectStore, bucket: str, tmp: str) -> dict:
    """The loader on tars in S3 with default cache settings: bytes of the first
    importance-sampled epoch against the tars' bytes."""
    import s3fs
    import torch
    import webdataset as wds

    from isloader import ImportanceLoader, LocalStore

    fs = s3fs.S3FileSystem(**s3.direct_options)
    rng = np.random.default_rng(1)
    n, per = 1200, 300
    for s in range(n // per):
        buffer = io.BytesIO()
        with wds.TarWriter(buffer) as sink:
            for i in range(s * per, (s + 1) * per):
                row = rng.normal(size=1500).astype(np.float32)
                sink.write({"__key__": f"{i:06d}", "npy": row.tobytes(), "cls": int(i % 10)})
        fs.pipe_file(f"{bucket}/tars/shard-{s:03d}.tar", buffer.getvalue())
    uri = f"{bucket}/tars"
    ShardCatalog.build(uri, storage_options=s3.storage_options).save()
    catalog = ShardCatalog.load(uri, storage_options=s3.storage_options)
    total = sum(entry.size for entry in catalog.shards)
    start_ray()
    try:
        with LocalStore(n) as store:
            loader = ImportanceLoader(
                catalog,
                store=store,
                batch_size=50,
                columns=["npy", "cls"],
                storage_options=s3.storage_options,
                cache_dir=os.path.join(tmp, "wds-cache"),
                transform=_decode_tar,
            )
            model = torch.nn.Linear(1500, 10)
            for epoch in (0, 1):
                for batch in loader.epoch(epoch):
                    loader.report(batch["index"], model(batch["x"]).detach(), batch["y"])
            loader.close()
            first, sampled = loader.history[0], loader.history[1]
    finally:
        import ray

        ray.shutdown()
    return {
        "wds_bytes_total": total,
        "wds_init_epoch_bytes": first.bytes_fetched,
        "wds_sampled_epoch_bytes": sampled.bytes_fetched,
        "wds_sampled_vs_dataset": sampled.bytes_fetched / total,
    }


def _decode_tar(columns: dict) -> dict:
    blobs = columns.pop("npy")
    columns["x"] = np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), -1)
    columns["y"] = columns.pop("cls").astype(np.int64)
    columns.pop("__key__", None)
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=400.0)
    args = parser.parse_args()
    import s3fs

    tmp = tempfile.mkdtemp(prefix="isloader-bench-reader-")
    with EmulatedObjectStore(latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps) as s3:
        bucket = s3.bucket("bench")
        fs = s3fs.S3FileSystem(**s3.direct_options)
        rng = np.random.default_rng(0)
        per_shard = args.rows // args.shards

        def write(s: int) -> None:
            local = np.random.default_rng(s)
            payload = pa.array([local.bytes(1000) for _ in range(per_shard)], pa.binary())
            table = pa.table({"payload": payload, "label": local.integers(0, 10, per_shard)})
            with fs.open(f"{bucket}/data/part-{s:03d}.parquet", "wb") as f:
                pq.write_table(table, f, row_group_size=GROUP, compression="none")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(args.shards)))
        ceiling = endpoint_ceiling(s3, f"{bucket}/data/part-000.parquet")
        catalog = ShardCatalog.build(f"{bucket}/data", storage_options=s3.storage_options)
        n = len(catalog)
        dataset_bytes = float(catalog.unit_bytes().sum())
        sequential = sequential_rows_per_s(s3, f"{bucket}/data")

        units = catalog.num_units
        hot = rng.permutation(units) < units // 5  # 20% of the row groups: 80% of the mass
        q = (np.where(hot, 16.0, 1.0) * rng.uniform(0.9, 1.1, units))[np.arange(n) // GROUP]
        table = ImportanceTable(TableConfig(0, n))
        table.update(np.arange(n), q)
        table.set_layout("units", catalog.unit_bounds)
        g = units_per_window(WINDOW, catalog.unit_rows.astype(float), np.ones(units))

        def reader(name: str, *, disk: bool) -> ShardReader:
            return ShardReader(
                catalog,
                memory_bytes=0,
                cache_dir=os.path.join(tmp, name) if disk else "",
                cache_bytes=int(dataset_bytes / 2),
            )

        independent = run_windows(reader("independent", disk=False), table, args.windows, 0, 1)
        cold = run_windows(reader("cold", disk=True), table, args.windows, g, 1)
        warm = reader("steady", disk=True)
        warm.read_units(np.arange(units))  # the initialization epoch's streaming pass
        warm.set_importance(table.unit_stats("units"))
        run_windows(warm, table, 4 * args.windows, g, 2)  # the cache ranks by mass
        steady = run_windows(warm, table, args.windows, g, 3)
        covered = warm.covered_mass_share()
        p_value = marginal_p_value(table, q, g, 20_000)
        table.prune(float(np.median(q)))
        pruned = run_windows(reader("pruned", disk=True), table, args.windows, g, 1)
        wds_figures = webdataset_check(s3, bucket, tmp)

    rows = [
        {
            "run": "sequential read_parquet",
            "rows_per_s": sequential,
            "requests_per_row": 0.0,
            "bytes_fetched": float("nan"),
            "cache_hit_rate": 0.0,
        },
        {"run": "independent draws, cold", **independent},
        {"run": f"locality G={g}, cold", **cold},
        {"run": f"locality G={g}, steady", **steady},
        {"run": f"locality G={g}, 50% pruned", **pruned},
    ]
    report(
        [
            {k: r[k] for k in ("run", "rows_per_s", "requests_per_row", "cache_hit_rate")}
            for r in rows
        ],
        {
            "rows": n,
            "emulated_latency_ms": args.latency_ms,
            "emulated_bandwidth_mbps": args.bandwidth_mbps,
            "endpoint_gets_per_s": ceiling,
            "sequential_rows_per_s": sequential,
            "units_per_window": g,
            "ratio_independent": independent["rows_per_s"] / sequential,
            "ratio_cold": cold["rows_per_s"] / sequential,
            "ratio_steady": steady["rows_per_s"] / sequential,
            "requests_per_row": {r["run"]: r["requests_per_row"] for r in rows[1:]},
            "cache_limit_vs_dataset": 0.5,
            "cache_mass_covered": covered,
            "cache_hit_rate": steady["cache_hit_rate"],
            "bytes_fetched_pruned_vs_full": pruned["bytes_fetched"] / cold["bytes_fetched"],
            "marginal_chi2_p": p_value,
            **wds_figures,
        },
    )


if __name__ == "__main__":
    main()
