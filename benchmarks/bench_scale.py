"""Scale: a catalog of 10^8 Parquet rows and one of 10^7 tar samples, and a store of
10^8 samples in 4 shard processes, measured on this machine.

- Catalogs are synthetic metadata (the arrays a real index would hold: 256-row groups
  in shards of 65536 rows; tar samples of ~4 KiB in runs of up to 256), saved and
  loaded through ``ShardCatalog``; small real shards check the format reads back.
  Opening is timed in a fresh process, whose memory growth is what a worker pays.
- The store: 4 ``isloader store serve`` processes of 2.5e7 samples each, with a WAL
  and snapshots. Sample latency (B = 1024, through the sharded client), update
  latency, snapshot and restore time, WAL replay time after ``kill -9`` (a WAL of
  updates since the last snapshot), memory per shard; update throughput from 4
  concurrent clients against 1 shard and against 2 (of 5e7 samples each).

Run: ``python benchmarks/bench_scale.py [--samples 100000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ShardProcess

from isloader.data.catalog import ShardCatalog, ShardEntry
from isloader.store.client import StoreClient

ROWS_PER_SHARD, ROWS_PER_GROUP = 65536, 256


def parquet_catalog(root: Path, rows: int) -> ShardCatalog:
    shards = -(-rows // ROWS_PER_SHARD)
    per_shard = np.full(shards, ROWS_PER_SHARD)
    per_shard[-1] = rows - ROWS_PER_SHARD * (shards - 1)
    groups = [np.full(-(-n // ROWS_PER_GROUP), ROWS_PER_GROUP) for n in per_shard]
    for g, n in zip(groups, per_shard, strict=True):
        g[-1] = n - ROWS_PER_GROUP * (len(g) - 1)
    units = np.concatenate(groups)
    arrays = {
        "unit_bounds": np.concatenate([[0], np.cumsum(units)]).astype(np.int64),
        "unit_shard": np.repeat(np.arange(shards, dtype=np.int32), [len(g) for g in groups]),
        "unit_local": np.concatenate([np.arange(len(g), dtype=np.int32) for g in groups]),
    }
    entries = [
        ShardEntry(f"part-{s:06d}.parquet", int(n) * 1024, f"etag-{s}", int(n))
        for s, n in enumerate(per_shard)
    ]
    return ShardCatalog(str(root), "parquet", entries, arrays)


def tar_catalog(root: Path, samples: int) -> ShardCatalog:
    per_tar = 10_000
    tars = -(-samples // per_tar)
    lengths = np.full(samples, 4608, dtype=np.uint32)  # 3 headers + ~3 KiB of members
    offsets = (np.arange(samples) % per_tar).astype(np.int64) * 4608
    local = np.arange(samples) % per_tar
    first = np.flatnonzero(local % 256 == 0)
    arrays = {
        "unit_bounds": np.concatenate([first, [samples]]).astype(np.int64),
        "unit_shard": (first // per_tar).astype(np.int32),
        "sample_offset": offsets,
        "sample_length": lengths,
    }
    entries = [
        ShardEntry(
            f"shard-{t:06d}.tar",
            per_tar * 4608 + 1024,
            f"etag-{t}",
            min(per_tar, samples - t * per_tar),
        )
        for t in range(tars)
    ]
    return ShardCatalog(str(root), "webdataset", entries, arrays)


_OPEN = """
import os, sys, time, json
def rss():
    lines = open('/proc/self/status').read().splitlines()
    return int(next(x for x in lines if x.startswith('VmRSS')).split()[1]) / 1024
from isloader.data.catalog import ShardCatalog
import numpy as np
base = rss()
start = time.perf_counter()
catalog = ShardCatalog.load(sys.argv[1])
catalog.units_of(np.random.default_rng(0).integers(0, len(catalog), 1024))  # a read's lookups
print(json.dumps({"open_s": time.perf_counter() - start, "rss_mb": rss() - base,
                  "samples": len(catalog), "bytes": catalog.nbytes}))
"""


def open_in_fresh_process(root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def update_throughput(addresses: list[str], n: int, seconds: float = 8.0) -> float:
    """Update RPCs per second (B = 1024 indices each) from 4 concurrent clients."""
    stop, counts = threading.Event(), []

    def run(c: int) -> None:
        rng = np.random.default_rng(c)
        done = 0
        with StoreClient(addresses) as client:
            while not stop.is_set():
                client.update(rng.integers(0, n, 1024), rng.random(1024))
                done += 1
        counts.append(done)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100_000_000)
    parser.add_argument("--wds-samples", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="isloader-scale-"))
    n = args.samples

    pq_root, wds_root = tmp / "parquet", tmp / "tars"
    pq_root.mkdir()
    wds_root.mkdir()
    pq_catalog = parquet_catalog(pq_root, n)
    pq_catalog.save()
    wds_catalog = tar_catalog(wds_root, args.wds_samples)
    wds_catalog.save()
    pq_open = open_in_fresh_process(pq_root)
    wds_open = open_in_fresh_process(wds_root)
    print(
        f"catalog 1e8 Parquet rows: open {pq_open['open_s']:.3f} s, +{pq_open['rss_mb']:.0f} MB;"
        f" 1e7 tar samples: open {wds_open['open_s']:.3f} s, "
        f"{wds_catalog.nbytes / len(wds_catalog):.1f} B/sample",
        flush=True,
    )

    # the store: S shards of N / S samples, a WAL and snapshots each
    shards = [
        ShardProcess(
            [
                "--num-samples",
                str(n),
                "--shard",
                str(s),
                "--num-shards",
                str(args.shards),
                "--wal-dir",
                str(tmp / f"wal-{s}"),
                "--snapshot-uri",
                str(tmp / f"snap-{s}"),
                "--snapshot-interval",
                "100000",  # snapshots when asked, so they are timed alone
            ]
        )
        for s in range(args.shards)
    ]
    addresses = [s.address for s in shards]
    rss = [s.rss_mb() for s in shards]
    client = StoreClient(addresses, timeout=120)
    rng = np.random.default_rng(0)
    for _ in range(20):  # measured importance on part of the samples
        client.update(rng.integers(0, n, 100_000), rng.random(100_000))
    latencies = []
    for i in range(300):
        start = time.perf_counter()
        client.sample(1024, seed=i)
        latencies.append(time.perf_counter() - start)
    update_lat = []
    for _ in range(300):
        idx, vals = rng.integers(0, n, 1024), rng.random(1024)
        start = time.perf_counter()
        client.update(idx, vals)
        update_lat.append(time.perf_counter() - start)
    start = time.perf_counter()
    client.snapshot()
    snapshot_s = time.perf_counter() - start
    for _ in range(200):  # a WAL of updates since that snapshot
        client.update(rng.integers(0, n, 1024), rng.random(1024))
    client.close()
    shards[0].stop(signal.SIGKILL)
    replay_s = shards[0].start()  # restore the snapshot, then replay the log
    for shard in shards[1:]:
        shard.stop(signal.SIGKILL)
    restore = []
    for shard in shards[1:]:
        restore.append(shard.start())
    restore_s = max([replay_s, *restore])
    for shard in shards:
        shard.stop()

    # scale-out: the same N over 1 and over 2 shards, 4 concurrent clients
    half = n // 2
    one = ShardProcess(["--num-samples", str(half)])
    one_rate = update_throughput([one.address], half)
    one.stop()
    two = [
        ShardProcess(["--num-samples", str(n), "--shard", str(s), "--num-shards", "2"])
        for s in range(2)
    ]
    two_rate = update_throughput([s.address for s in two], n)
    for s in two:
        s.stop()
    print(
        json.dumps(
            {
                "samples": n,
                "shards": args.shards,
                "catalog_open_s_1e8": pq_open["open_s"],
                "catalog_worker_rss_mb_1e8": pq_open["rss_mb"],
                "catalog_bytes_per_row_1e8": pq_catalog.nbytes / n,
                "wds_catalog_bytes_per_sample": wds_catalog.nbytes / len(wds_catalog),
                "wds_catalog_open_s_1e7": wds_open["open_s"],
                "wds_catalog_worker_rss_mb_1e7": wds_open["rss_mb"],
                "store_sample_p50_ms_1e8": 1e3 * float(np.percentile(latencies, 50)),
                "store_sample_p99_ms_1e8": 1e3 * float(np.percentile(latencies, 99)),
                "store_update_p99_ms_1e8": 1e3 * float(np.percentile(update_lat, 99)),
                "store_snapshot_s_1e8": snapshot_s,
                "store_restore_s_1e8": restore_s,
                "wal_replay_s": replay_s,
                "store_rss_mb_per_shard": float(np.mean(rss)),
                "store_bytes_per_sample": float(np.sum(rss)) * 2**20 / n,
                "update_rpcs_per_s_1_shard": one_rate,
                "update_rpcs_per_s_2_shards": two_rate,
                "update_scaleout_2_vs_1": two_rate / one_rate,
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
