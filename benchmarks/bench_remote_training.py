"""The headline comparison: training from object storage, on equal terms, against the
loaders a user would run instead, in the same run.

Data: MNIST-1D (30k train rows) stored as ~4 KB blobs that the read workers decode (as
they would images), on **one emulated endpoint** (``isloader.demo.endpoint``: a latency
before every response, one bandwidth budget shared by every connection, a cap on
concurrent requests; bytes and GETs counted at the endpoint). Same model, same loop,
same seeds (paired), every loading and selection cost in the wall time. Arms:

- ``uniform_stream``: isloader's shuffled streaming pass, no cache (what WebDataset and
  Ray Data do by default);
- ``uniform_cached``: the same through isloader's cache, with the budget;
- ``mosaic``, ``litdata``, ``webdataset``: the peers (``peers.py``), uniform shuffles,
  the same worker count, Mosaic and LitData with the same cache budget;
- ``ours_is``, ``ours_is_prune``: importance sampling (+ pruning), the same budget.

Every caching arm gets ``--cache-fraction`` of the rows' bytes, counted in what its cache
stores (isloader's memory tier included). Both isloader formats run (Parquet, WebDataset
tars); the peers read their own formats of the same rows and appear in both tables. The
headline ratio is against the better (faster) uniform arm of all, peers included.
``--step-ms`` adds emulated accelerator time per step; a second, shorter run at another
endpoint point (``--second-point``) follows. Writes ``results/remote.json``,
``remote.md`` and ``remote_mnist1d_{parquet,webdataset}.png``; ends with one JSON line.
Run: ``python benchmarks/bench_remote_training.py [--seeds 5] [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finite_or_none, methods_markdown, plot_curves
from peers import PEERS, PeerLoader, peer_versions, write_peer_data

from isloader.data.catalog import ShardCatalog
from isloader.demo.data import DEMO_FORMATS, decode_raw, make_mnist1d, publish
from isloader.demo.endpoint import EmulatedObjectStore, EndpointModel, measure_ceiling
from isloader.demo.methods import CACHELESS
from isloader.demo.train import RunResult, train_loop, train_method
from isloader.pipeline.runtime import start_ray
from isloader.results import compare_methods

OUT = Path(__file__).resolve().parent / "results"
OURS = ["uniform_stream", "uniform_cached", "ours_is", "ours_is_prune"]
FORMATS = {"parquet": "Parquet", "webdataset": "WebDataset tars"}
BATCH, WORKERS, ROW_BYTES, TEST = 128, 2, 4096, 10000


def prepare(data: Path, train: int, peers: list[str]) -> dict[str, Path]:
    """Every format of the same rows, written once (cached by its settings)."""
    import pyarrow.parquet as pq

    paths = {}
    for fmt in FORMATS:
        local, _ = make_mnist1d(data / fmt, train, TEST, row_bytes=ROW_BYTES, fmt=fmt)
        paths[fmt] = Path(local)
    table = pq.read_table(paths["parquet"], columns=["raw", "y"])
    raw, y = table.column("raw").to_pylist(), table.column("y").to_numpy()
    for peer in peers:
        if peer == "webdataset":  # the same tars isloader's webdataset arms read
            paths[peer] = paths["webdataset"]
            continue
        out = data / f"peer-{peer}"
        stamp = out / ".stamp"
        key = json.dumps({"rows": len(raw), "shards": 20, "version": peer_versions()[peer]})
        if not (stamp.exists() and stamp.read_text() == key):
            write_peer_data(peer, out, raw, y, shards=20)
            stamp.write_text(key)
        paths[peer] = out
    return paths


def link_into(s3: EmulatedObjectStore, local: Path, uri: str) -> str:
    """Hard-link a local dataset into the endpoint's folder (no upload, no charge)."""
    target = s3.local_path(uri)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(local.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            dest = target / path.relative_to(local)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)
    return uri


class Arms:
    """How each arm trains, on one endpoint with one budget."""

    def __init__(self, s3: EmulatedObjectStore, uris: dict, test_set, args, scratch: Path):
        self.s3, self.uris, self.test_set, self.args, self.scratch = (
            s3,
            uris,
            test_set,
            args,
            scratch,
        )
        self.budget = int(args.cache_fraction * args.train_size * ROW_BYTES)
        self.catalogs = {
            fmt: ShardCatalog.load(uris[fmt], storage_options=s3.storage_options) for fmt in FORMATS
        }

    def ours(self, fmt: str, method: str, seed: int, epochs: int) -> RunResult:
        spec = DEMO_FORMATS[fmt]
        options = {"storage_options": self.s3.storage_options, "transform": spec.decode,
                   "columns": list(spec.columns)}  # fmt: skip
        if method in CACHELESS:
            options |= {"cache_dir": "", "memory_bytes": 0}
        else:
            cache = self.scratch / f"cache-{fmt}-{method}-{seed}"
            options |= {"cache_dir": str(cache), "cache_bytes": self.budget, "memory_bytes": 0}
        return train_method(
            method, self.catalogs[fmt], self.test_set, epochs=epochs, batch_size=BATCH,
            seed=seed, step_ms=self.args.step_ms, endpoint=self.s3, **options,
        )  # fmt: skip

    def peer(self, peer: str, seed: int, epochs: int) -> RunResult:
        loader = PeerLoader(
            peer, self.uris[peer], self.s3, batch_size=BATCH, workers=WORKERS, seed=seed,
            cache_dir=str(self.scratch / f"cache-{peer}-{seed}"), cache_bytes=self.budget,
            decode=decode_raw,
        )  # fmt: skip
        try:
            return train_loop(
                peer, seed, loader.epoch, self.test_set, epochs=epochs,
                step_ms=self.args.step_ms, endpoint=self.s3,
            )  # fmt: skip
        finally:
            loader.close()


def run(args, model: EndpointModel, seeds: int, label: str) -> dict:
    """Every arm for ``seeds`` paired seeds at one endpoint point."""
    from tqdm import tqdm

    paths = prepare(Path(args.data), args.train_size, args.peers)
    scratch = Path(tempfile.mkdtemp(prefix="isloader-bench-remote-"))
    runs: dict[str, dict[str, list[RunResult]]] = {fmt: {} for fmt in args.formats}
    peer_runs: dict[str, list[RunResult]] = {p: [] for p in args.peers}
    with EmulatedObjectStore(model) as s3:
        bucket = s3.bucket("bench")
        uris = {}
        for fmt in FORMATS:  # isloader's datasets, indexed on the endpoint
            uris[fmt] = publish(str(paths[fmt]), f"{bucket}/{fmt}", s3.direct_options)
        for peer in args.peers:
            uris[peer] = (
                uris["webdataset"]
                if peer == "webdataset"
                else link_into(s3, paths[peer], f"{bucket}/peer-{peer}")
            )
        ceiling = measure_ceiling(s3, f"{uris['parquet']}/part-000.parquet")
        test_set = make_mnist1d(Path(args.data) / "parquet", args.train_size, TEST,
                                row_bytes=ROW_BYTES)[1]  # fmt: skip
        arms = Arms(s3, uris, test_set, args, scratch)
        arms.ours(args.formats[0], "uniform_stream", 0, 1)  # warm-up: Ray's read actors
        cpu_before = s3.stats().cpu_seconds
        total = seeds * (len(args.formats) * len(args.methods) + len(args.peers))
        with tqdm(total=total, desc=label, unit="run") as bar:
            for seed in range(seeds):
                for peer in args.peers:
                    peer_runs[peer].append(arms.peer(peer, seed, args.epochs))
                    bar.update(1)
                for fmt in args.formats:
                    for method in args.methods:
                        runs[fmt].setdefault(method, []).append(
                            arms.ours(fmt, method, seed, args.epochs)
                        )
                        bar.update(1)
        endpoint_cpu = s3.stats().cpu_seconds - cpu_before
    summaries = {}
    for fmt in args.formats:
        every = {**runs[fmt], **peer_runs}
        uniform = [m for m in every if m.startswith("uniform") or m in PEERS] or list(every)
        best = min(
            uniform, key=lambda m: np.mean([r.epochs[-1]["train_seconds"] for r in every[m]])
        )
        summaries[fmt] = {"baseline": best, "methods": compare_methods(every, baseline=best)}
    return {
        "label": label,
        "endpoint": {
            "latency_ms": model.latency_ms,
            "bandwidth_mb_s": model.bandwidth_mb_s,
            "concurrency": model.concurrency,
        },
        "endpoint_ceiling": ceiling,
        "endpoint_cpu_seconds": endpoint_cpu,
        "cache_budget_bytes": arms.budget,
        "seeds": seeds,
        "epochs": args.epochs,
        "step_ms": args.step_ms,
        "formats": summaries,
    }


def headline(point: dict) -> dict:
    """The JSON line's figures of one endpoint point, per format (None for an arm that
    did not run)."""
    out = {}
    for fmt, s in point["formats"].items():
        m = s["methods"]
        seconds = {name: m[name]["epoch_seconds"] for name in m}
        ratio = m.get("ours_is_prune", {}).get("time_to_baseline_acc_ratio", [math.nan] * 3)
        peers = {p: seconds[p] for p in PEERS if p in m}
        is_s = seconds.get("ours_is", math.nan)
        out[fmt] = {
            "baseline": s["baseline"],
            "uniform_stream_s": seconds.get("uniform_stream", math.nan),
            "uniform_cached_s": seconds.get("uniform_cached", math.nan),
            "peer_s": peers,
            "is_s": is_s,
            "is_prune_s": seconds.get("ours_is_prune", math.nan),
            "time_to_uniform_acc_ratio": ratio[0],
            "ratio_ci_low": ratio[1],
            "ratio_ci_high": ratio[2],
            "reached": m.get("ours_is_prune", {}).get("reached_baseline_acc"),
            "acc": {name: m[name]["acc_equal_steps"] for name in m},
            # rows per second in the epochs after the first: the same rows, so the ratio
            # of seconds per epoch, inverted
            "rows_per_s_vs_best_peer": min(peers.values()) / is_s if peers else math.nan,
            "bytes_total": {name: m[name]["bytes_total"] for name in m},
            "gets_total": {name: m[name]["gets_total"] for name in m},
            "bytes_per_epoch": {name: m[name]["bytes_per_epoch"] for name in m},
            "data_wait_share": {name: m[name]["data_wait_share"] for name in m},
            "cache_hit_rate": m.get("ours_is", {}).get("cache_hit_rate", math.nan),
        }
    return out


def markdown(point: dict) -> str:
    columns = [
        ("MB total", lambda m: f"{m['bytes_total'] / 1e6:.0f}"),
        ("MB / epoch", lambda m: f"{m['bytes_per_epoch'] / 1e6:.1f}"),
        ("GETs / epoch", lambda m: f"{m['requests_per_epoch']:.0f}"),
        ("data wait", lambda m: f"{m['data_wait_share']:.0%}"),
        ("cache hits", lambda m: f"{m['cache_hit_rate']:.0%}"),
        ("pruned", lambda m: f"{m['pruned_share']:.0%}"),
    ]
    e = point["endpoint"]
    lines = []
    for fmt, s in point["formats"].items():
        heading = (
            f"### {FORMATS[fmt]}: {e['latency_ms']:g} ms, {e['bandwidth_mb_s']:g} MB/s total, "
            f"{e['concurrency']} concurrent; cache {point['cache_budget_bytes'] / 1e6:.0f} MB "
            f"for every caching arm; step +{point['step_ms']:g} ms ({point['seeds']} seeds, "
            f"paired 95% intervals; baseline: {s['baseline']})"
        )
        lines += methods_markdown(heading, s["methods"], columns)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--formats", default="parquet,webdataset")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--methods", default=",".join(OURS), help="isloader's arms to run")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb-s", type=float, default=25.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--cache-fraction", type=float, default=0.5)
    parser.add_argument("--step-ms", type=float, default=0.0)
    parser.add_argument("--second-point", default="5,100", help="LATENCY_MS,MB_S ('' skips)")
    parser.add_argument("--second-point-seeds", type=int, default=2)
    parser.add_argument("--data", default=str(OUT / "data" / "remote"))
    parser.add_argument("--output", default="remote")
    args = parser.parse_args()
    args.formats = [f for f in args.formats.split(",") if f]
    args.peers = [p for p in args.peers.split(",") if p]
    args.methods = [m for m in args.methods.split(",") if m]
    import ray

    start_ray()
    OUT.mkdir(parents=True, exist_ok=True)
    model = EndpointModel(args.latency_ms, args.bandwidth_mb_s, args.concurrency)
    points = [run(args, model, args.seeds, "main point")]
    if args.second_point:
        latency, bandwidth = (float(v) for v in args.second_point.split(","))
        second = EndpointModel(latency, bandwidth, args.concurrency)
        points.append(run(args, second, args.second_point_seeds, "second point"))
    for point in points:
        point["rows"] = args.train_size
    (OUT / f"{args.output}.json").write_text(json.dumps(points, indent=1))
    text = "\n".join(markdown(p) for p in points)
    (OUT / f"{args.output}.md").write_text(text)
    first = points[0]
    for fmt, s in first["formats"].items():
        plot_curves(
            s["methods"], f"MNIST-1D, {FORMATS[fmt]}, emulated S3 (peers in the same run)",
            OUT / f"{args.output}_mnist1d_{fmt}.png",
            xlabel="training wall time, loading included (s)",
        )  # fmt: skip
    print(text)
    final = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "step_ms": args.step_ms,
        "endpoint": first["endpoint"],
        "endpoint_ceiling_gets_per_s": first["endpoint_ceiling"]["gets_per_s"],
        "endpoint_cpu_seconds": first["endpoint_cpu_seconds"],
        "cache_budget_bytes": first["cache_budget_bytes"],
        "peer_versions": peer_versions(),
        **headline(first),
    }
    if len(points) > 1:
        final["second_point"] = {"endpoint": points[1]["endpoint"], **headline(points[1])}
    print(json.dumps(finite_or_none(final)))
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
