"""Datasets the data tests write: real Parquet files and real WebDataset tars."""

from __future__ import annotations

import io
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def expected_rows(n: int) -> pa.Table:
    """The dataset's contents in global order: x, label and a fixed-size feature list."""
    idx = np.arange(n)
    return pa.table(
        {
            "x": idx.astype(np.float64) * 0.5,
            "label": (idx % 7).astype(np.int64),
            "feat": pa.array([np.full(3, i, np.float32) for i in idx], pa.list_(pa.float32())),
            "name": [f"s{i}" for i in idx],
        }
    )


def write_parquet_shards(
    uri: str, n: int, shards: int, rows_per_group: int, options: dict[str, Any] | None = None
) -> pa.Table:
    table = expected_rows(n)
    fs, root = fsspec.core.url_to_fs(uri, **(options or {}))
    fs.makedirs(root, exist_ok=True)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
        with fs.open(f"{root}/part-{s:03d}.parquet", "wb") as f:
            pq.write_table(part, f, row_group_size=rows_per_group)
    return table


def write_webdataset_shards(
    uri: str, n: int, shards: int, options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Tars written by webdataset's own TarWriter; returns each sample as written."""
    import webdataset as wds

    fs, root = fsspec.core.url_to_fs(uri, **(options or {}))
    fs.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    samples = []
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        buffer = io.BytesIO()
        with wds.TarWriter(buffer) as sink:
            for i in range(bounds[s], bounds[s + 1]):
                sample = {
                    "__key__": f"{i:06d}",
                    "bin": rng.bytes(int(rng.integers(10, 3000))),
                    "cls": i % 5,
                    "txt": f"caption {i}",
                }
                sink.write(sample)
                samples.append(sample)
        fs.pipe_file(f"{root}/shard-{s:03d}.tar", buffer.getvalue())
    return samples
