"""``isloader convert``: rewrite Parquet data into shards laid out for sampled reads.

A sampled row costs the data pages that hold it (docs/architecture.md, "Reading at
streaming speed"), so the layout decides the read amplification:

- **small data pages** (``page_bytes``, default 1 KiB, cut after every value): a wide
  value (an image, a blob) is a page of its own; narrow columns (labels) get pages of
  many rows, and readers fetch their chunks whole and keep them;
- **the page index** (``write_page_index``): where every page starts and which row it
  begins with, so a reader finds a row's page without reading the chunk;
- **no dictionary and no statistics on wide columns**: a dictionary page would be the
  whole chunk, and min/max statistics would copy wide values into the page headers and
  the footer;
- row groups of ``rows_per_group`` rows are the units a streaming pass reads whole.

``shuffle_rows`` also puts the rows in a uniformly random order, once: data sorted by
class or by source makes every row group a biased slice, which locality-aware draws
cannot use safely. It is a two-pass shuffle with bounded memory: rows go to random
buckets of about ``rows_per_shard`` rows (temporary files beside the output), then each
bucket is permuted in memory and written as one shard.
"""

from __future__ import annotations

import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from isloader.data.catalog import ShardCatalog
from isloader.data.formats.parquet import writer_options
from isloader.errors import InvalidArgumentError

__all__ = ["convert_parquet", "writer_options"]


def convert_parquet(
    src: str,
    dst: str,
    *,
    rows_per_group: int = 1024,
    rows_per_shard: int = 65536,
    shuffle_rows: bool = False,
    seed: int = 0,
    page_bytes: int = 1024,
    storage_options: dict[str, Any] | None = None,
) -> ShardCatalog:
    """Rewrite ``src`` into ``dst/part-00000.parquet, ...`` and index the result.

    Raises:
        InvalidArgumentError: group, shard or page sizes that do not fit together.
    """
    if rows_per_group < 1 or rows_per_shard < rows_per_group:
        raise InvalidArgumentError("need 1 <= --rows-per-group <= --rows-per-shard")
    if page_bytes < 64:
        raise InvalidArgumentError(f"--page-bytes must be >= 64, got {page_bytes}")
    options = storage_options or {}
    src_fs, src_path = fsspec.core.url_to_fs(src, **options)
    dst_fs, dst_path = fsspec.core.url_to_fs(dst, **options)
    dst_fs.makedirs(dst_path, exist_ok=True)
    dataset = ds.dataset(src_path, filesystem=src_fs, format="parquet")
    options = writer_options(dataset.head(min(1024, dataset.count_rows())), page_bytes)
    if shuffle_rows:
        _shuffled(
            dataset, dst_fs, dst_path.rstrip("/"), rows_per_group, rows_per_shard, seed, options
        )
    else:
        _resharded(dataset, dst_fs, dst_path.rstrip("/"), rows_per_group, rows_per_shard, options)
    catalog = ShardCatalog.build(dst, format="parquet", storage_options=storage_options)
    catalog.save()
    return catalog


def _resharded(
    dataset: ds.Dataset,
    fs: Any,
    root: str,
    rows_per_group: int,
    rows_per_shard: int,
    options: dict[str, Any],
) -> None:
    shard, rows_in_shard = 0, 0
    writer: pq.ParquetWriter | None = None
    sink: Any = None

    def close() -> None:
        if writer is not None:
            writer.close()
            sink.close()

    try:
        for batch in dataset.to_batches(batch_size=rows_per_group):
            offset = 0
            while offset < batch.num_rows:
                if writer is None:
                    sink = fs.open(f"{root}/part-{shard:05d}.parquet", "wb")
                    writer = pq.ParquetWriter(sink, batch.schema, **options)
                take = min(batch.num_rows - offset, rows_per_shard - rows_in_shard)
                writer.write_batch(batch.slice(offset, take), row_group_size=rows_per_group)
                offset += take
                rows_in_shard += take
                if rows_in_shard == rows_per_shard:
                    close()
                    writer, rows_in_shard, shard = None, 0, shard + 1
    finally:
        close()


def _shuffled(
    dataset: ds.Dataset,
    fs: Any,
    root: str,
    rows_per_group: int,
    rows_per_shard: int,
    seed: int,
    options: dict[str, Any],
) -> None:
    rng = np.random.default_rng(seed)
    buckets = max(1, -(-dataset.count_rows() // rows_per_shard))
    scratch = f"{root}/.shuffle-{uuid.uuid4().hex[:8]}"
    fs.makedirs(scratch, exist_ok=True)
    sinks = [fs.open(f"{scratch}/{b:05d}.parquet", "wb") for b in range(buckets)]
    writers: list[pq.ParquetWriter | None] = [None] * buckets
    try:
        for batch in dataset.to_batches(batch_size=65536):
            dest = rng.integers(0, buckets, batch.num_rows)
            for b in np.unique(dest):
                if writers[b] is None:
                    writers[b] = pq.ParquetWriter(sinks[b], batch.schema)
                writers[b].write_batch(batch.filter(pa.array(dest == b)))
        for writer, sink in zip(writers, sinks, strict=True):
            if writer is not None:
                writer.close()
            sink.close()
        shard = 0
        for b, writer in enumerate(writers):
            if writer is None:
                continue
            with fs.open(f"{scratch}/{b:05d}.parquet", "rb") as f:
                table = pq.read_table(f)
            table = table.take(pa.array(rng.permutation(table.num_rows)))
            with fs.open(f"{root}/part-{shard:05d}.parquet", "wb") as out:
                pq.write_table(table, out, row_group_size=rows_per_group, **options)
            shard += 1
    finally:
        fs.rm(scratch, recursive=True)
