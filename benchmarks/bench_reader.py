"""Sampled reads from S3 with 20 ms per request: ShardReader vs sequential read_parquet.

One synthetic dataset (200k rows of ~1 KB, 20 Parquet shards, 16-row groups) on
moto S3 behind a proxy that adds 20 ms to every request. Compared in one run:

- sequential: a full pass with Ray Data ``read_parquet`` (the anchor);
- sampled: ``ShardReader.read`` of importance-sampled indices (skewed q: 20% of the
  samples, in whole row groups, hold 80% of the mass), in windows of 64 batches
  of 256 rows, with a memory cache of a quarter of the dataset (it does not fit);
- pruned: the same after the lower-q half of the samples is pruned.

Run: ``python benchmarks/bench_reader.py [--rows 200000] [--windows 4]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report
from _latency_proxy import LatencyProxy

from isloader import ImportanceTable, ShardCatalog, ShardReader, TableConfig
from isloader.pipeline.runtime import start_ray

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
GROUP = 16


def _wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto did not start on {host}:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--merge-gap-kib", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    import ray
    import s3fs
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    # moto in its own process, so its request handling does not share our GIL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(host, port)
    direct = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    fs = s3fs.S3FileSystem(**direct)
    fs.mkdir("bench")
    rng = np.random.default_rng(0)
    per_shard = args.rows // args.shards
    for s in range(args.shards):
        payload = pa.array([rng.bytes(1000) for _ in range(per_shard)], pa.binary())
        table = pa.table({"payload": payload, "label": rng.integers(0, 10, per_shard)})
        with fs.open(f"bench/data/part-{s:03d}.parquet", "wb") as f:
            pq.write_table(table, f, row_group_size=GROUP, compression="none")
    n = per_shard * args.shards

    with LatencyProxy(f"http://{host}:{port}", args.delay_ms / 1000) as proxy_url:
        options = {"client_kwargs": {"endpoint_url": proxy_url}}
        catalog = ShardCatalog.build("s3://bench/data", storage_options=options)

        start_ray()
        pyfs = PyFileSystem(FSSpecHandler(s3fs.S3FileSystem(**options)))
        ray.data.range(4).materialize()  # workers up before the clock starts
        start = time.perf_counter()
        rows = sum(
            b.num_rows
            for b in ray.data.read_parquet("bench/data", filesystem=pyfs).iter_batches(
                batch_format="pyarrow", batch_size=4096
            )
        )
        sequential_rps = rows / (time.perf_counter() - start)
        ray.shutdown()

        # Skewed importance: 20% of the row groups hold 80% of the mass.
        unit, _ = catalog.units_of(np.arange(n))
        groups = int(unit.max()) + 1
        hot = rng.permutation(groups) < groups // 5
        group_q = np.where(hot, 16.0, 1.0) * rng.uniform(0.9, 1.1, groups)
        q = group_q[unit]
        table = ImportanceTable(TableConfig(0, n))
        table.update(np.arange(n), q)

        def sampled(label: str) -> dict:
            reader = ShardReader(
                catalog, cache_bytes=n * 1000 // 4, merge_gap=args.merge_gap_kib << 10
            )
            reader.read(np.array([0]))  # footers of the first shard, out of the timing
            base = reader.counters.bytes_fetched
            start, rows = time.perf_counter(), 0
            for w in range(args.windows):
                plan = table.sample(64 * 256, np.random.default_rng(w))
                rows += reader.read(plan.indices).num_rows
            seconds = time.perf_counter() - start
            return {
                "run": label,
                "rows_per_s": rows / seconds,
                "bytes_fetched": float(reader.counters.bytes_fetched - base),
                "requests": reader.counters.requests,
                "cache_hit_rate": reader.counters.cache_hit_rate,
            }

        full = sampled("sampled")
        pruned_count = table.prune(float(np.median(q)))
        pruned = sampled(f"sampled, {pruned_count / n:.0%} pruned")
    moto.terminate()
    moto.wait(10)
    rows_out = [{"run": "sequential read_parquet", "rows_per_s": sequential_rps,
                 "bytes_fetched": float("nan"), "requests": 0, "cache_hit_rate": 0.0},
                full, pruned]  # fmt: skip
    report(
        rows_out,
        {
            "rows": n,
            "delay_ms": args.delay_ms,
            "sampled_rows_per_s": full["rows_per_s"],
            "sequential_rows_per_s": sequential_rps,
            "ratio": full["rows_per_s"] / sequential_rps,
            "bytes_fetched_pruned_vs_full": pruned["bytes_fetched"] / full["bytes_fetched"],
            "pruned_share": pruned_count / n,
            "merge_gap_kib": args.merge_gap_kib,
            "cache_hit_rate": full["cache_hit_rate"],
        },
    )


if __name__ == "__main__":
    main()
