"""Soak: concurrent clients against two real shard processes that are restarted and
killed under them, plus a battery of malformed requests. Bounded to about 90 s.

- 4 client threads, each with its own ``StoreClient``, update disjoint stripes of the
  indices (every update spans both shards), last write wins (alpha 0);
- shard 0 is stopped every ~8 s, alternately with SIGKILL and SIGTERM, and started
  again on the same port (write-ahead log and snapshots kept); shard 1 runs through;
- afterwards every acknowledged value must be in the store (``acked_lost``), no failed
  update may be applied on one shard and not the other (``partial_updates``), and calls
  that failed while a shard restarted are counted (goal: 0, the restarts are shorter
  than the clients' retry budget);
- memory: the clients' process and the shard that was never restarted, after warm-up
  and at the end (``rss_growth_mb``);
- bad inputs: each must be rejected with state unchanged.

Run: ``python benchmarks/bench_soak.py [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ShardProcess, rss_mb

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.store.client import StoreClient

N, CLIENTS, WIDTH = 4000, 4, 20


def writer(c: int, addresses: list[str], stop: threading.Event, results: dict) -> None:
    client = StoreClient(addresses, retry_budget=15)
    mine = np.arange(c, N, CLIENTS)
    acked = np.full(N, np.nan)
    failed: list[tuple[np.ndarray, np.ndarray]] = []
    step = 0
    while not stop.is_set():
        idx = mine[(np.arange(WIDTH) * 97 + step * WIDTH) % len(mine)]  # spans both shards
        vals = np.full(WIDTH, float(step + 1))
        try:
            client.update(idx, vals)
            acked[idx] = vals
        except Exception as exc:
            failed.append((idx, vals))
            results.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}"[:200])
        step += 1
    client.close()
    results[c] = (acked, failed, step)


BAD = [
    (
        "nan value",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(), values=np.array([np.nan], "<f8").tobytes()
        ),
    ),
    (
        "negative value",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(), values=np.array([-1.0], "<f8").tobytes()
        ),
    ),
    (
        "huge value",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(), values=np.array([1e308], "<f8").tobytes()
        ),
    ),
    (
        "index out of range",
        "Update",
        pb.UpdateRequest(
            indices=np.array([N], "<i8").tobytes(), values=np.array([1.0], "<f8").tobytes()
        ),
    ),
    (
        "length mismatch",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1, 2], "<i8").tobytes(), values=np.array([1.0], "<f8").tobytes()
        ),
    ),
    ("ragged bytes", "Update", pb.UpdateRequest(indices=b"\x01\x02\x03", values=b"")),
    (
        "seq 2**64-1",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(),
            values=np.array([1.0], "<f8").tobytes(),
            client_id="bad",
            seq=2**64 - 1,
        ),
    ),
    (
        "64 KiB client id",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(),
            values=np.array([1.0], "<f8").tobytes(),
            client_id="x" * 65536,
            seq=1,
        ),
    ),
    ("2**32-1 draws", "Sample", pb.SampleRequest(count=2**32 - 1, seed=1)),
    (
        "unknown layout",
        "Sample",
        pb.SampleRequest(count=10, seed=1, layout="nope", units_per_window=2),
    ),
    ("epoch 2**63-1", "EndEpoch", pb.EndEpochRequest(epoch=2**63 - 1, eps=0.1)),
    ("eps 1e308", "EndEpoch", pb.EndEpochRequest(epoch=1, eps=1e308)),
    ("nan eps", "EndEpoch", pb.EndEpochRequest(epoch=1, eps=float("nan"))),
    ("negative threshold", "Prune", pb.PruneRequest(threshold=-1.0, epoch=1)),
    ("readmit fraction 2", "Readmit", pb.ReadmitRequest(fraction=2.0, seed=1, epoch=1)),
    (
        "bad unit bounds",
        "SetLayout",
        pb.SetLayoutRequest(layout="L", bounds=np.array([0, 5, 5], "<i8").tobytes()),
    ),
    ("oversize message", "Update", pb.UpdateRequest(indices=b"\0" * (65 << 20), values=b"")),
]


def bad_inputs(address: str) -> tuple[int, int]:
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 128 << 20)])
    stub = store_pb2_grpc.ImportanceStoreStub(channel)
    rejected = 0
    for _, method, request in BAD:
        before = stub.Stats(pb.StatsRequest())
        try:
            getattr(stub, method)(request, timeout=10)
        except grpc.RpcError as exc:
            after = stub.Stats(pb.StatsRequest())
            unchanged = (before.shard.total_mass, before.shard.version) == (
                after.shard.total_mass,
                after.shard.version,
            )
            rejected += exc.code() != grpc.StatusCode.UNKNOWN and unchanged
    channel.close()
    return len(BAD), rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="isloader-soak-")
    shards = [
        ShardProcess(
            ["--num-samples", str(N), "--shard", str(s), "--num-shards", "2", "--alpha", "0",
             "--wal-dir", f"{root}/wal-{s}", "--snapshot-uri", f"{root}/snap-{s}",
             "--snapshot-interval", "5"]
        )
        for s in (0, 1)
    ]  # fmt: skip
    addresses = [s.address for s in shards]
    stop = threading.Event()
    results: dict = {}
    threads = [
        threading.Thread(target=writer, args=(c, addresses, stop, results)) for c in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    time.sleep(3)  # warm-up
    rss_start = (rss_mb(os.getpid()), rss_mb(shards[1].proc.pid))
    restarts, down = 0, []
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline - 8:
        time.sleep(6)
        sig = signal.SIGKILL if restarts % 2 == 0 else signal.SIGTERM
        started = time.monotonic()
        shards[0].stop(sig)
        shards[0].start()
        down.append(time.monotonic() - started)
        restarts += 1
    time.sleep(max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(60)
    rss_end = (rss_mb(os.getpid()), rss_mb(shards[1].proc.pid))
    with StoreClient(addresses) as client:
        stored = client.lookup(np.arange(N))
    acked = np.nanmax(np.stack([results[c][0] for c in range(CLIENTS)]), axis=0)
    known = ~np.isnan(acked)
    lost = int((stored[known] != acked[known]).sum())
    failed = [f for c in range(CLIENTS) for f in results[c][1]]
    boundary = N // 2
    partial = 0
    for idx, vals in failed:  # applied on one shard but not the other?
        hit = stored[idx] == vals
        partial += bool(hit[idx < boundary].any() != hit[idx >= boundary].any())
    tried, rejected = bad_inputs(addresses[1])
    for shard in shards:
        shard.stop(signal.SIGTERM)
    updates = sum(results[c][2] for c in range(CLIENTS))
    for error in results.get("errors", []):
        print("failed:", error)
    print(
        f"{updates} updates from {CLIENTS} clients, {restarts} restarts "
        f"(down {np.mean(down):.2f} s each), {len(failed)} failed calls, {lost} values lost"
    )
    print(
        json.dumps(
            {
                "seconds": args.seconds,
                "updates": updates,
                "restarts": restarts,
                "restart_seconds": float(np.mean(down)) if down else 0.0,
                "acked_lost": lost,
                "partial_updates": partial,
                "failed_calls_during_restarts": len(failed),
                "rss_growth_mb": max(rss_end[0] - rss_start[0], rss_end[1] - rss_start[1]),
                "bad_inputs_tried": tried,
                "bad_inputs_rejected": rejected,
            }
        )
    )


if __name__ == "__main__":
    main()
