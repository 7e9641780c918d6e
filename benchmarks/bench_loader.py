"""Rows per second delivered as torch tensors: ImportanceLoader vs a plain DataLoader,
on equal footing, two ways.

Both read the same local Parquet shards, written by ``isloader convert`` (small pages
with a page index, as the README tells users to write them), with 2 workers; the loader
runs in importance mode with the embedded LocalStore (after its initialization epoch,
whose rate, Ray's cold start included, is reported too, as is a warm streaming pass).
No model: this measures the data path only. The pairs:

- **both decoding** (``ratio_same_source``): the loader with no memory tier, so every
  sampled row is read from its pages and decoded each epoch, against a ``DataLoader``
  over an IterableDataset that reads and decodes row groups with pyarrow, shuffled;
- **both from memory** (``ratio_from_memory``): the loader with a memory tier that holds
  the dataset (so it is resident), against a ``DataLoader`` over the same rows decoded
  once into numpy arrays and drawn in a random order;
- ``ratio`` (the earlier headline): the loader from memory against the decoding
  ``DataLoader``: memory against decode, not a like-for-like figure.
Run: ``python benchmarks/bench_loader.py [--rows 200000] [--batch 256]``.
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from isloader import ImportanceLoader, LocalStore
from isloader.data.convert import convert_parquet
from isloader.pipeline.loader import DEFAULT_PREFETCH, DEFAULT_WINDOW
from isloader.pipeline.runtime import start_ray


class RowGroupBatches(torch.utils.data.IterableDataset):
    """The plain way: each worker reads its share of row groups with pyarrow."""

    def __init__(self, files: list[str], batch: int, seed: int = 0) -> None:
        self.units = [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
        self.batch = batch
        self.seed = seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, wid])
        units = [self.units[i] for i in rng.permutation(len(self.units))][wid::workers]
        pending = []
        for path, group in units:
            table = pq.ParquetFile(path).read_row_group(group)
            x = table.column("x").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
            y = table.column("y").to_numpy()
            order = rng.permutation(table.num_rows)
            pending.append((x[order], y[order]))
            rows = sum(len(p[1]) for p in pending)
            if rows >= self.batch:
                xs = np.concatenate([p[0] for p in pending])
                ys = np.concatenate([p[1] for p in pending])
                for i in range(0, rows - self.batch + 1, self.batch):
                    yield (
                        torch.from_numpy(xs[i : i + self.batch]),
                        torch.from_numpy(ys[i : i + self.batch]),
                    )
                keep = rows - rows % self.batch
                pending = [(xs[keep:], ys[keep:])]


class InMemoryBatches(torch.utils.data.Dataset):
    """The plain way from memory: every row decoded once into numpy, a batch per item."""

    def __init__(self, files: list[str], batch: int, seed: int = 0) -> None:
        table = pq.read_table(files)
        self.x = table.column("x").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        self.y = table.column("y").to_numpy()
        self.batch = batch
        self.order = np.random.default_rng(seed).permutation(table.num_rows)

    def __len__(self) -> int:
        return len(self.y) // self.batch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.order[i * self.batch : (i + 1) * self.batch]
        return torch.from_numpy(self.x[rows]), torch.from_numpy(self.y[rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="batches per window")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="steps ahead")
    args = parser.parse_args()
    import ray

    start_ray()

    tmp = tempfile.mkdtemp(prefix="isloader-bench-")
    rng = np.random.default_rng(0)
    Path(f"{tmp}/raw").mkdir()
    for s in range(8):
        n = args.rows // 8
        x = rng.normal(size=(n, args.features)).astype(np.float32)
        table = pa.table(
            {"x": pa.array(list(x), pa.list_(pa.float32())), "y": rng.integers(0, 10, n)}
        )
        pq.write_table(table, f"{tmp}/raw/part-{s}.parquet", row_group_size=1024)
    catalog = convert_parquet(f"{tmp}/raw", f"{tmp}/converted")
    files = sorted(str(p) for p in Path(f"{tmp}/converted").glob("*.parquet"))
    resident = 4 * pq.read_table(files).nbytes  # resident below half of the memory tier

    def rate(batches) -> float:
        start, rows = time.perf_counter(), 0
        for batch in batches:
            rows += len(batch["y"] if isinstance(batch, dict) else batch[1])
        return rows / (time.perf_counter() - start)

    baseline = torch.utils.data.DataLoader(
        RowGroupBatches(files, args.batch), batch_size=None, num_workers=2, persistent_workers=True
    )
    rate(baseline)  # warm-up: worker start
    dataloader_rps = float(np.median([rate(baseline) for _ in range(3)]))
    in_memory = torch.utils.data.DataLoader(
        InMemoryBatches(files, args.batch), batch_size=None, shuffle=True, num_workers=2,
        persistent_workers=True,
    )  # fmt: skip
    rate(in_memory)
    memory_rps = float(np.median([rate(in_memory) for _ in range(3)]))

    store = LocalStore(len(catalog))
    loader = ImportanceLoader(
        catalog, store=store, batch_size=args.batch, columns=["x", "y"], window=args.window,
        prefetch=args.prefetch, memory_bytes=resident,
    )  # fmt: skip
    init_rps = rate(loader.epoch(0))  # streaming pass; reports below set q
    q = rng.gamma(0.5, 1.0, len(catalog))
    store.update(np.arange(len(catalog)), q)
    loader_rps = float(np.median([rate(loader.epoch(e)) for e in (1, 2, 3)]))
    decoding = ImportanceLoader(
        catalog, store=store, batch_size=args.batch, columns=["x", "y"], window=args.window,
        prefetch=args.prefetch, memory_bytes=0,
    )  # fmt: skip
    decoding.load_state_dict({"epoch": 1, "batches": 0, "seed": 0})  # q is already measured
    decoding_rps = float(np.median([rate(decoding.epoch(e)) for e in (1, 2, 3)]))
    streaming = ImportanceLoader(
        catalog, store=store, batch_size=args.batch, columns=["x", "y"], window=args.window,
        prefetch=args.prefetch, sampling="uniform", memory_bytes=resident,
    )  # fmt: skip
    stream_rps = float(np.median([rate(streaming.epoch(e)) for e in (1, 2, 3)]))
    rows = [
        {"path": "DataLoader, decoding (uniform, 2 workers)", "rows_per_s": dataloader_rps},
        {"path": "DataLoader, from memory (uniform, 2 workers)", "rows_per_s": memory_rps},
        {"path": "ImportanceLoader init epoch (cold)", "rows_per_s": init_rps},
        {"path": "ImportanceLoader streaming (warm)", "rows_per_s": stream_rps},
        {"path": "ImportanceLoader importance, resident", "rows_per_s": loader_rps},
        {"path": "ImportanceLoader importance, decoding", "rows_per_s": decoding_rps},
    ]
    report(
        rows,
        {
            "rows": len(catalog),
            "batch": args.batch,
            "window": args.window,
            "prefetch": args.prefetch,
            "max_plan_staleness": max(h.max_plan_staleness for h in loader.history),
            "staleness_bound": loader.staleness_bound,
            "loader_rows_per_s": loader_rps,
            "init_epoch_rows_per_s": init_rps,
            "streaming_rows_per_s": stream_rps,
            "dataloader_rows_per_s": dataloader_rps,
            "dataloader_from_memory_rows_per_s": memory_rps,
            "loader_decoding_rows_per_s": decoding_rps,
            "ratio": loader_rps / dataloader_rps,
            "ratio_same_source": decoding_rps / dataloader_rps,
            "ratio_from_memory": loader_rps / memory_rps,
        },
    )
    store.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
