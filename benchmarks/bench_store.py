"""The store's Update RPC against a bare gRPC echo of the same payload and the in-process table.

One client, B indices + B values (raw little-endian bytes) per call. The echo server
takes the same request message and answers the same response type with no work in
between, so ``ratio = update_rps / echo_rps`` says what the store logic costs on
top of gRPC itself. The deployed store always has its write-ahead log, so the shard
runs twice: as deployed, every update logged and fsynced before it is acknowledged
(``ratio_wal``), and without the log (``ratio``: the store logic alone). The
in-process row is the table alone, on fresh random indices. Each server runs in a
child process of its own, one at a time.
Run: ``python benchmarks/bench_store.py [--batch 1024] [--calls 3000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, time_calls

from isloader._proto import store_pb2 as pb
from isloader._proto import store_pb2_grpc
from isloader.config import StoreSettings
from isloader.store import ImportanceTable, TableConfig
from isloader.store.server import StoreServer

N = 1_000_000


def _serve_echo(port_out: mp.Queue, stop: mp.Event) -> None:
    """The same message types in and out as Update, and no work in between."""
    echo = grpc.unary_unary_rpc_method_handler(
        lambda request, context: pb.UpdateResponse(),
        request_deserializer=pb.UpdateRequest.FromString,
        response_serializer=pb.UpdateResponse.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo})
    server = grpc.server(ThreadPoolExecutor(16), handlers=[handler])
    port_out.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    stop.wait()
    server.stop(0)


def _serve_store(port_out: mp.Queue, stop: mp.Event, wal_dir: str | None = None) -> None:
    settings = StoreSettings(num_samples=N, port=0, alpha=0.2, wal_dir=wal_dir)
    server = StoreServer(settings).start()
    port_out.put(server.port)
    stop.wait()
    server.stop(0)


def _in_child(target, *args) -> tuple[mp.Process, mp.Event, str]:
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=target, args=(queue, stop, *args), daemon=True)
    proc.start()
    return proc, stop, f"127.0.0.1:{queue.get(timeout=60)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    indices = rng.integers(0, N, args.batch)
    values = rng.random(args.batch)
    request = pb.UpdateRequest(
        indices=indices.astype("<i8").tobytes(),
        values=values.astype("<f8").tobytes(),
        client_id="bench",
    )
    payload = request.SerializeToString()
    rows, results = [], {}

    proc, stop, address = _in_child(_serve_echo)
    channel = grpc.insecure_channel(address)
    echo = channel.unary_unary(
        "/bench.Echo/Echo", response_deserializer=pb.UpdateResponse.FromString
    )
    results["echo"] = time_calls(lambda: echo(payload), args.calls, warmup=50)
    channel.close()
    stop.set()
    proc.join()

    seq = iter(range(1, 10**9))
    fresh = [
        pb.UpdateRequest(
            indices=rng.integers(0, N, args.batch).astype("<i8").tobytes(),
            values=request.values,
            client_id="bench",
        )
        for _ in range(64)
    ]
    with tempfile.TemporaryDirectory(prefix="isloader-bench-wal-") as wal:
        for name, wal_dir in (("update", None), ("update_wal", wal)):
            proc, stop, address = _in_child(_serve_store, wal_dir)
            channel = grpc.insecure_channel(address)
            stub = store_pb2_grpc.ImportanceStoreStub(channel)

            def update(stub=stub) -> None:
                step = next(seq)
                message = fresh[step % len(fresh)]
                message.seq = step
                stub.Update(message)

            results[name] = time_calls(update, args.calls, warmup=50)
            if wal_dir is None:
                results["sample"] = time_calls(
                    lambda stub=stub: stub.Sample(pb.SampleRequest(count=args.batch,
                                                                   seed=next(seq))),
                    args.calls // 2,
                )  # fmt: skip
            channel.close()
            stop.set()
            proc.join()

    table = ImportanceTable(TableConfig(0, N, alpha=0.2))
    batches = iter(rng.integers(0, N, (args.calls + 10, args.batch)))
    results["in_process"] = time_calls(lambda: table.update(next(batches), values), args.calls)

    for name, seconds in results.items():
        rows.append(
            {
                "path": name,
                "calls_per_s": float(1 / seconds.mean()),
                "p50_ms": float(np.percentile(seconds, 50) * 1e3),
                "p99_ms": float(np.percentile(seconds, 99) * 1e3),
            }
        )
    by_name = {row["path"]: row for row in rows}
    echo_rps = by_name["echo"]["calls_per_s"]
    report(
        rows,
        {
            "batch": args.batch,
            "update_rps": by_name["update"]["calls_per_s"],
            "update_wal_rps": by_name["update_wal"]["calls_per_s"],
            "echo_rps": echo_rps,
            "ratio": by_name["update"]["calls_per_s"] / echo_rps,
            "ratio_wal": by_name["update_wal"]["calls_per_s"] / echo_rps,
            "p99_ms": by_name["update"]["p99_ms"],
            "p99_wal_ms": by_name["update_wal"]["p99_ms"],
            "sample_rps": by_name["sample"]["calls_per_s"],
            "in_process_rps": by_name["in_process"]["calls_per_s"],
        },
    )


if __name__ == "__main__":
    main()
