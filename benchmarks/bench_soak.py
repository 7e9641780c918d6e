"""Soak: real shard processes under concurrent clients, with faults combined, plus a
battery of malformed requests. Bounded to about two minutes.

1. **Kills during snapshots, restarts.** 4 client threads, each with its own
   ``StoreClient``, update disjoint stripes (every update spans both shards; last write
   wins, alpha 0). Shard 0 snapshots every 50 ms and is killed with SIGKILL while it is
   caught writing a snapshot (``kills_during_snapshot``), every third time stopped with
   SIGTERM instead, and started again on the same port (log and snapshots kept).
   Afterwards every acknowledged value must be in the store (``acked_lost``), no
   failed update may be applied on one shard and not the other (``partial_updates``),
   and no call may fail (``failed_calls_during_restarts``: the restarts are shorter than
   the clients' retry budget).
2. **A full disk under concurrent writers.** A shard whose write-ahead log lives on a
   64 KiB tmpfs (a user and mount namespace), 4 writers, snapshots every second (they
   free the log): the disk fills and frees several times (``disk_full_episodes``).
   An index whose update was refused is never written again, so after a SIGKILL and a
   restart on the same volume a refused update found in the store counts in
   ``failed_then_applied``, an acknowledged one missing in ``acked_lost``.
3. **Retried reports through the loader's path.** ``Reporter`` rounds with the EMA
   (alpha 0.5) while a shard is killed mid-round and comes back after the clients'
   retry budget: the failed update stays queued with its request id and is sent again;
   an index whose q is not the exact EMA of its rounds counts in ``doubled_updates``.
4. **Bad inputs**: each must be rejected (not UNKNOWN) with state unchanged.

Also reported: memory growth of the clients' process and of the shard that was never
restarted (``rss_growth_mb``). Run: ``python benchmarks/bench_soak.py [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ShardProcess, free_port, rss_mb

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.store.client import StoreClient
from isloader.store.limits import MAX_SAMPLE, REQUEST_WINDOW

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
    (
        "seq far beyond the client's window",
        "Update",
        pb.UpdateRequest(
            indices=np.array([1], "<i8").tobytes(),
            values=np.array([1.0], "<f8").tobytes(),
            client_id="ahead",
            seq=REQUEST_WINDOW + 1,
        ),
    ),
    ("2**32-1 draws", "Sample", pb.SampleRequest(count=2**32 - 1, seed=1)),
    ("draws whose reply exceeds the limit", "Sample", pb.SampleRequest(count=MAX_SAMPLE, seed=1)),
    ("epoch jump 2**40-1", "EndEpoch", pb.EndEpochRequest(epoch=2**40 - 1, eps=0.1)),
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


def restarts_and_kills_during_snapshots(seconds: float, root: str) -> dict:
    """Phase 1: writers across two shards; shard 0 killed while it writes a snapshot."""
    shards = [
        ShardProcess(
            ["--num-samples", str(N), "--shard", str(s), "--num-shards", "2", "--alpha", "0",
             "--wal-dir", f"{root}/wal-{s}", "--snapshot-uri", f"{root}/snap-{s}",
             "--snapshot-interval", "0.05" if s == 0 else "5"]
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
    restarts, during_snapshot, down = 0, 0, []
    snapshots = Path(root) / "snap-0"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline - 6:
        time.sleep(2)
        sig = signal.SIGTERM if restarts % 3 == 2 else signal.SIGKILL
        caught = False
        if sig == signal.SIGKILL:  # wait (up to 3 s) until it is caught writing a snapshot
            until = time.monotonic() + 3
            while not caught and time.monotonic() < until:
                caught = any(snapshots.glob("*.tmp-*"))
                if not caught:
                    time.sleep(0.0005)
        started = time.monotonic()
        shards[0].stop(sig)
        during_snapshot += caught
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
    for error in results.get("errors", []):
        print("failed:", error)
    return {
        "updates": sum(results[c][2] for c in range(CLIENTS)),
        "restarts": restarts,
        "kills_during_snapshot": during_snapshot,
        "restart_seconds": float(np.mean(down)) if down else 0.0,
        "acked_lost": lost,
        "partial_updates": partial,
        "failed_calls_during_restarts": len(failed),
        "rss_growth_mb": max(rss_end[0] - rss_start[0], rss_end[1] - rss_start[1]),
        "bad_inputs_tried": tried,
        "bad_inputs_rejected": rejected,
    }


class SmallVolumeShard:
    """One shard whose write-ahead log lives on a 64 KiB tmpfs of its own mount namespace;
    ``kill`` SIGKILLs the shard and the namespace's shell starts it again on the same
    volume and port."""

    def __init__(self, root: str, num_samples: int) -> None:
        self.port = free_port()
        wal = Path(root) / "wal-small"
        wal.mkdir()
        serve = f"{sys.executable} -m isloader.cli store serve " + " ".join(
            ["--num-samples", str(num_samples), "--port", str(self.port), "--alpha", "0",
             "--wal-dir", str(wal), "--snapshot-uri", f"{root}/snap-small",
             "--snapshot-interval", "1"]
        )  # fmt: skip
        self.shell = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             f"mount -t tmpfs -o size=64k tmpfs {wal} && while :; do {serve}; sleep 0.05; done"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_serving()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, seconds: float = 60) -> None:
        channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(channel).result(timeout=seconds)
        channel.close()

    def _shard_pid(self) -> int:
        children = Path(f"/proc/{self.shell.pid}/task/{self.shell.pid}/children")
        return int(children.read_text().split()[0])

    def kill(self) -> None:
        os.kill(self._shard_pid(), signal.SIGKILL)
        time.sleep(0.1)
        self.wait_serving()

    def close(self) -> None:
        pid = self._shard_pid()
        self.shell.kill()
        self.shell.wait(10)
        os.kill(pid, signal.SIGKILL)


def available_small_volume() -> bool:
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "mount -t tmpfs -o size=64k tmpfs /tmp"],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


def full_disk(seconds: float, root: str) -> dict:
    """Phase 2: concurrent writers fill a small log volume that snapshots free again."""
    size = 20000
    shard = SmallVolumeShard(root, size)
    lock = threading.Lock()
    acked = np.full(size, -1.0)  # the last acknowledged value of each index
    refused = np.full(size, -1.0)  # the value of the update refused there (index retired)
    unknown = np.zeros(size, bool)  # outcome not known to the caller: not counted
    timeline: list[bool] = []  # every answer in order: True acknowledged, False refused
    stop = threading.Event()

    def write(w: int) -> None:
        client = StoreClient([shard.address], retry_budget=0.5, timeout=2)
        mine = [i for i in range(w, size, CLIENTS)]
        k = 0
        while not stop.is_set() and mine:
            k += 1
            i = mine[k % len(mine)]
            try:
                client.update(np.array([i]), np.array([float(k)]))
                with lock:
                    acked[i] = k
                    timeline.append(True)
            except Exception as exc:
                definite = "write-ahead log" in str(exc) and "may or may not" not in str(exc)
                with lock:
                    if definite:
                        refused[i] = k
                        timeline.append(False)
                    else:
                        unknown[i] = True
                mine.remove(i)  # never written again: what it holds is decided now
        client.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    shard.kill()  # and back on the same volume: replay from the log and snapshot
    with StoreClient([shard.address]) as client:
        stored = client.lookup(np.arange(size))
    shard.close()
    episodes = sum(1 for a, b in itertools.pairwise(timeline) if a and not b)
    known = ~unknown
    was_acked = known & (acked >= 0)
    return {
        "disk_full_episodes": episodes,
        "disk_full_updates": int(np.sum(np.array(timeline))),
        "disk_full_refused": int((refused >= 0).sum()),
        "disk_full_unknown": int(unknown.sum()),
        "disk_full_acked_lost": int((stored[was_acked] < acked[was_acked]).sum()),
        "failed_then_applied": int(((refused >= 0) & known & (stored == refused)).sum()),
    }


def retried_reports(root: str, rounds: int = 6) -> dict:
    """Phase 3: the loader's report path (``Reporter``) with a shard killed mid-round."""
    import torch

    from isloader.errors import StoreUnavailableError
    from isloader.pipeline.reporter import Reporter

    alpha, n = 0.5, 2000
    shards = [
        ShardProcess(
            ["--num-samples", str(n), "--shard", str(s), "--num-shards", "2",
             "--alpha", str(alpha), "--wal-dir", f"{root}/wal-r{s}",
             "--snapshot-uri", f"{root}/snap-r{s}", "--snapshot-interval", "0.1"]
        )
        for s in (0, 1)
    ]  # fmt: skip
    client = StoreClient([s.address for s in shards], retry_budget=0.3, timeout=0.5)
    reporter = Reporter(client, lambda outputs, targets: targets.double())  # q = target
    rng = np.random.default_rng(0)
    expected = np.zeros(n)
    index = torch.arange(n)
    retried = 0
    for r in range(rounds):
        values = rng.uniform(1, 10, n)
        expected = values if r == 0 else alpha * expected + (1 - alpha) * values
        for k, part in enumerate(torch.split(index, 100)):
            if r % 2 == 1 and k == 5:
                shards[r % 2].stop(signal.SIGKILL)  # half of this round fails, then is retried
            reporter.report(part, torch.zeros(len(part), 2), torch.tensor(values[part]))
        if r % 2 == 1:
            time.sleep(1.0)  # past the retry budget: the update failed and stays queued
            shards[r % 2].start()
        deadline = time.monotonic() + 30
        while True:
            try:
                reporter.flush()
                break
            except StoreUnavailableError:
                retried += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    reporter.close()
    q = client.lookup(np.arange(n))
    client.close()
    for shard in shards:
        shard.stop(signal.SIGTERM)
    return {
        "report_rounds": rounds,
        "reports_retried": retried,
        "doubled_updates": int((~np.isclose(q, expected, rtol=1e-9, atol=0)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="phase 1")
    parser.add_argument("--disk-seconds", type=float, default=20.0, help="phase 2")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="isloader-soak-")
    out = {"seconds": args.seconds}
    out |= restarts_and_kills_during_snapshots(args.seconds, root)
    print(
        f"phase 1: {out['updates']} updates from {CLIENTS} clients, {out['restarts']} restarts "
        f"({out['kills_during_snapshot']} SIGKILLs during a snapshot, down "
        f"{out['restart_seconds']:.2f} s each), {out['failed_calls_during_restarts']} failed "
        f"calls, {out['acked_lost']} values lost"
    )
    if available_small_volume():
        disk = full_disk(args.disk_seconds, root)
        print(
            f"phase 2: {disk['disk_full_updates']} updates acknowledged, "
            f"{disk['disk_full_refused']} refused over {disk['disk_full_episodes']} full-disk "
            f"episodes, {disk['disk_full_acked_lost']} acknowledged lost, "
            f"{disk['failed_then_applied']} refused ones applied"
        )
        out |= disk
        out["acked_lost"] += disk["disk_full_acked_lost"]
    else:
        print("phase 2 skipped: cannot mount a tmpfs in a user namespace here")
        out |= {"disk_full_episodes": 0, "failed_then_applied": None}
    reports = retried_reports(root)
    print(
        f"phase 3: {reports['report_rounds']} report rounds, {reports['reports_retried']} "
        f"flushes retried, {reports['doubled_updates']} indices off their EMA"
    )
    out |= reports
    print(json.dumps(out))


if __name__ == "__main__":
    main()
