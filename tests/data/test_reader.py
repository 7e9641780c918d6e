"""Random reads against full reads, on local files and on S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isloader.data.catalog import INDEX_NAME, ShardCatalog
from isloader.data.convert import convert_parquet
from isloader.data.reader import ShardReader
from isloader.errors import (
    CorruptShardError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    MissingShardError,
    ShardChangedError,
)
from tests.data.shards import write_parquet_shards, write_webdataset_shards

N = 600


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "data"), {}
    s3_bucket = request.getfixturevalue("s3_bucket")
    return f"{s3_bucket[0]}/data", s3_bucket[1]


def test_parquet_random_reads_equal_the_full_read(location) -> None:
    uri, options = location
    full = write_parquet_shards(uri, N, shards=4, rows_per_group=32, options=options)
    catalog = ShardCatalog.build(uri, storage_options=options)
    assert catalog.format == "parquet" and len(catalog) == N
    catalog.save()
    reader = ShardReader(ShardCatalog.load(uri, storage_options=options))
    idx = np.random.default_rng(0).integers(0, N, 300)
    idx[:3] = [599, 0, 599]  # repeats and both ends
    got = reader.read(idx)
    assert got.column("index").to_pylist() == idx.tolist()
    assert got.drop_columns(["index"]).equals(full.take(idx))
    only = reader.read(idx, columns=["label"])
    assert only.column_names == ["label", "index"]
    assert only.column("label").to_pylist() == full.column("label").take(idx).to_pylist()


def test_webdataset_random_reads_equal_what_was_written(location) -> None:
    uri, options = location
    written = write_webdataset_shards(uri, 120, shards=3, options=options)
    catalog = ShardCatalog.build(uri, storage_options=options)
    assert catalog.format == "webdataset" and len(catalog) == 120
    reader = ShardReader(catalog)
    idx = np.array([119, 0, 5, 5, 60, 61, 62])
    got = reader.read(idx).to_pylist()
    for row, i in zip(got, idx, strict=True):
        assert row["__key__"] == written[i]["__key__"]
        assert row["bin"] == written[i]["bin"]
        assert row["cls"] == written[i]["cls"]
        assert row["txt"] == written[i]["txt"]
        assert row["index"] == i
    assert reader.read(np.array([3]), columns=["cls"]).column_names == ["__key__", "cls", "index"]


def test_index_cli_writes_the_index_beside_the_shards(tmp_path) -> None:
    from isloader.cli import main

    uri = str(tmp_path / "d")
    write_webdataset_shards(uri, 20, shards=2)
    assert main(["index", uri, "--format", "webdataset"]) == 0
    assert (tmp_path / "d" / INDEX_NAME).exists()
    assert len(ShardCatalog.load(uri)) == 20


def test_convert_rewrites_into_small_row_groups(tmp_path) -> None:
    src = str(tmp_path / "src")
    full = write_parquet_shards(src, N, shards=1, rows_per_group=N)
    catalog = convert_parquet(src, str(tmp_path / "dst"), rows_per_group=40, rows_per_shard=200)
    assert len(catalog.shards) == 3
    assert catalog.unit_rows.max() <= 40
    idx = np.array([0, 599, 333])
    got = ShardReader(catalog).read(idx)
    assert got.drop_columns(["index"]).equals(full.take(idx))


def test_changed_truncated_missing_and_corrupt_shards_are_named(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, N, shards=3, rows_per_group=50)
    catalog = ShardCatalog.build(uri)
    reader = ShardReader(catalog)
    with pytest.raises(IndexOutOfRangeError):
        reader.read(np.array([N]))
    with pytest.raises(InvalidArgumentError, match="unknown columns"):
        reader.read(np.array([1]), columns=["nope"])

    part1 = tmp_path / "d" / "part-001.parquet"
    part1.write_bytes(part1.read_bytes()[:-100])  # truncated after indexing
    with pytest.raises(ShardChangedError, match=r"part-001\.parquet") as info:
        ShardReader(catalog).read(np.array([250]))
    assert info.value.uri.endswith("part-001.parquet")

    (tmp_path / "d" / "part-002.parquet").unlink()
    with pytest.raises(MissingShardError, match=r"part-002\.parquet"):
        ShardReader(catalog).read(np.array([599]))

    with pytest.raises(CorruptShardError, match=r"part-001\.parquet"):
        ShardCatalog.build(uri)  # re-indexing the truncated file names it too


def test_corrupt_data_page_is_a_named_error(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, 100, shards=1, rows_per_group=50)
    part0 = tmp_path / "d" / "part-000.parquet"
    start = pq.read_metadata(part0).row_group(0).column(0).data_page_offset
    data = bytearray(part0.read_bytes())
    data[start : start + 40] = b"\xff" * 40  # garbage in a data page, footer intact
    part0.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=r"part-000\.parquet"):
        ShardReader(ShardCatalog.build(uri)).read(np.array([0]))


def test_s3_shard_rewritten_after_indexing_is_detected(s3_bucket) -> None:
    uri, options = s3_bucket
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=10, options=options)
    catalog = ShardCatalog.build(f"{uri}/d", storage_options=options)
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=20, options=options)
    with pytest.raises(ShardChangedError, match=r"part-000\.parquet"):
        ShardReader(catalog).read(np.array([1]))


def test_a_reader_never_returns_rows_of_an_object_rewritten_while_it_reads(s3_bucket) -> None:
    """Every GET carries If-Match on the indexed ETag: the rewrite is refused at the next
    read, not after a re-check interval."""
    uri, options = s3_bucket
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=10, options=options)
    catalog = ShardCatalog.build(f"{uri}/d", storage_options=options)
    reader = ShardReader(catalog, memory_bytes=0, verify_every=3600)
    assert reader.read(np.array([1])).column("x").to_pylist() == [0.5]
    table = pq.read_table(fsspec.open(f"{uri}/d/part-000.parquet", **options).open())
    changed = table.set_column(0, "x", pa.array(np.arange(100) * 9.0))
    with fsspec.open(f"{uri}/d/part-000.parquet", "wb", **options) as f:
        pq.write_table(changed, f, row_group_size=10)  # same layout, other values
    with pytest.raises(ShardChangedError, match=r"part-000\.parquet"):
        reader.read(np.array([55]))


def test_disk_cache_serves_repeated_reads_without_fetching(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, N, shards=1, rows_per_group=50)
    catalog = ShardCatalog.build(uri)
    options = {"cache_dir": str(tmp_path / "cache"), "cache_local": True, "memory_bytes": 0}
    first = ShardReader(catalog, **options)
    first.read(np.array([10, 400]), probabilities=np.array([0.5, 0.5]))  # a plan's p
    second = ShardReader(catalog, **options)
    table = second.read(np.array([10, 400]))
    assert second.counters.bytes_fetched == 0
    assert table.column("x").to_pylist() == [5.0, 200.0]
    assert fsspec.filesystem("file").du(str(tmp_path / "cache")) > 0


def test_transient_storage_errors_are_retried_then_surface(tmp_path) -> None:
    uri = str(tmp_path / "d")
    full = write_parquet_shards(uri, 100, shards=1, rows_per_group=10)
    reader = ShardReader(ShardCatalog.build(uri))
    fs = reader.fetcher._backend.fs
    real = fs.cat_ranges
    failures = {"left": 2}

    def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("connection reset by peer")
        return real(*args, **kwargs)

    fs.cat_ranges = flaky
    try:
        got = reader.read(np.array([3, 42]))
        assert got.column("x").to_pylist() == full.column("x").take([3, 42]).to_pylist()
        failures["left"] = 100  # a storage that stays down
        with pytest.raises(ConnectionError):
            reader.read(np.array([77]))
    finally:
        fs.cat_ranges = real


def test_convert_can_shuffle_rows_into_a_random_order(tmp_path) -> None:
    from isloader.pipeline.plan import label_clustering

    src = str(tmp_path / "src")
    full = write_parquet_shards(src, N, shards=2, rows_per_group=N)
    sorted_by_label = full.sort_by("label")
    pq.write_table(sorted_by_label, tmp_path / "src" / "part-000.parquet")
    (tmp_path / "src" / "part-001.parquet").unlink()
    catalog = convert_parquet(
        src, str(tmp_path / "dst"), rows_per_group=50, rows_per_shard=250, shuffle_rows=True
    )
    got = ShardReader(catalog).read(np.arange(N))
    assert sorted(got.column("x").to_pylist()) == sorted(full.column("x").to_pylist())
    assert not list((tmp_path / "dst").glob(".shuffle-*"))

    def score(table) -> float:
        units = np.arange(table.num_rows) // 50
        counts = np.zeros((units.max() + 1, 7))
        np.add.at(counts, (units, table.column("label").to_numpy()), 1)
        return label_clustering(counts)

    assert score(sorted_by_label) > 5 and score(got) < 2.5


def test_only_connection_errors_are_retried(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, 100, shards=1, rows_per_group=10)
    reader = ShardReader(ShardCatalog.build(uri))
    fs = reader.fetcher._backend.fs
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        raise OSError(5, "input/output error")  # a disk error, not a dropped connection

    fs.cat_ranges, real = broken, fs.cat_ranges
    try:
        with pytest.raises(OSError, match="input/output"):
            reader.read(np.array([3]))
        assert calls["n"] == 1
    finally:
        fs.cat_ranges = real
