"""Row-granular reads through the formats: a sampled Parquet row costs its pages, a tar
sample its span; files without a page index fall back to column chunks and say so."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isloader.cli import main
from isloader.data.catalog import ShardCatalog
from isloader.data.convert import convert_parquet
from isloader.data.formats import FORMATS, get_format
from isloader.data.formats.webdataset import (
    TAR_MTIME,
    _samples,
    _tarfile_members,
    _ustar_members,
)
from isloader.data.reader import ShardReader
from isloader.errors import CorruptShardError, InvalidArgumentError
from tests.data.shards import write_webdataset_shards

N, GROUP = 600, 100


def wide_rows(n: int, seed: int = 0) -> pa.Table:
    """Rows of several KB (a blob), a label, a short vector, a caption and a struct."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "raw": pa.array([rng.bytes(int(rng.integers(2000, 4000))) for _ in range(n)]),
            "y": rng.integers(0, 10, n),
            "vec": pa.array(
                [rng.random(200).astype(np.float32) for _ in range(n)], pa.list_(pa.float32())
            ),
            "text": [f"caption {i} " * 20 for i in range(n)],
            "pair": pa.array([{"a": i, "b": float(i)} for i in range(n)]),
        }
    )


@pytest.fixture
def converted(tmp_path) -> tuple[ShardCatalog, pa.Table]:
    table = wide_rows(N)
    (tmp_path / "src").mkdir()
    pq.write_table(table, tmp_path / "src" / "rows.parquet")
    catalog = convert_parquet(
        str(tmp_path / "src"), str(tmp_path / "conv"), rows_per_group=GROUP, rows_per_shard=300
    )
    return catalog, table


def test_every_format_implements_the_protocol_and_unknown_ones_are_named() -> None:
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.suffixes and "unit_bounds" in fmt.array_names
        for method in ("index_shard", "catalog_arrays", "check", "unit_bytes", "reader"):
            assert callable(getattr(fmt, method))
    with pytest.raises(InvalidArgumentError, match="unknown shard format 'csv'"):
        get_format("csv")


def test_a_sampled_parquet_row_costs_its_pages(converted) -> None:
    catalog, table = converted
    assert catalog.notes == []  # `convert` writes the page index
    reader = ShardReader(catalog, memory_bytes=0, merge_gap=0)
    reader._format.layouts(range(len(catalog.shards)))  # footers and page indexes, once
    tails = reader.counters.snapshot()
    rows = np.sort(np.random.default_rng(1).choice(N, 40, replace=False))
    got = reader.read(rows, ["raw", "y"])
    assert got.column("raw").to_pylist() == table.column("raw").take(rows).to_pylist()
    assert got.column("y").to_pylist() == table.column("y").take(rows).to_pylist()
    fetched = reader.counters.bytes_fetched - tails["bytes_fetched"]
    wanted = sum(len(table.column("raw")[int(i)].as_py()) for i in rows)
    groups = len(np.unique(rows // GROUP))
    # each row's blob page (+ its header), and each touched group's label chunk whole
    assert wanted <= fetched <= 1.05 * wanted + groups * (GROUP * 8 + 512)
    assert reader.counters.requests - tails["requests"] <= len(rows) + groups
    before = reader.counters.snapshot()
    reader.read(rows, ["raw", "y"])  # labels are kept decoded: only the blobs again
    assert reader.counters.bytes_fetched - before["bytes_fetched"] <= 1.05 * wanted


def test_lists_strings_and_structs_read_at_random_equal_the_table(converted) -> None:
    catalog, table = converted
    reader = ShardReader(catalog, memory_bytes=0)
    rows = np.random.default_rng(2).integers(0, N, 150)  # repeats included
    got = reader.read(rows)
    assert got.column("index").to_pylist() == rows.tolist()
    assert got.drop_columns(["index"]).equals(table.take(rows))


def test_parquet_without_a_page_index_falls_back_and_the_index_says_so(tmp_path, capsys) -> None:
    table = wide_rows(200)
    (tmp_path / "plain").mkdir()
    pq.write_table(table, tmp_path / "plain" / "rows.parquet", row_group_size=100)
    assert main(["index", str(tmp_path / "plain"), "--columns", "raw,y"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["granularity"] == "unit" and summary["read_amplification"] > 20
    assert "no page index" in out.err and "isloader convert" in out.err
    catalog = ShardCatalog.load(str(tmp_path / "plain"))
    rows = np.array([3, 150, 151])
    got = ShardReader(catalog, memory_bytes=0).read(rows, ["raw", "pair"])
    assert got.column("pair").to_pylist() == table.column("pair").take(rows).to_pylist()
    assert main(["convert", str(tmp_path / "plain"), str(tmp_path / "conv")]) == 0
    assert main(["index", str(tmp_path / "conv"), "--columns", "raw,y"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["granularity"] == "page" and summary["read_amplification"] < 1.25


def test_a_tar_sample_costs_its_span_and_neighbours_merge(tmp_path) -> None:
    samples = write_webdataset_shards(str(tmp_path / "tars"), 120, shards=2)
    catalog = ShardCatalog.build(str(tmp_path / "tars"))
    spans = catalog.arrays["sample_length"]
    reader = ShardReader(catalog, memory_bytes=0, merge_gap=0)
    rows = np.array([3, 17, 18, 70])
    got = reader.read(rows, ["bin", "cls"])
    assert got.column("bin").to_pylist() == [samples[i]["bin"] for i in rows]
    assert got.column("cls").to_pylist() == [samples[i]["cls"] for i in rows]
    assert reader.counters.bytes_fetched == int(spans[rows].sum())  # exactly the spans
    assert reader.counters.requests == 3  # 17 and 18 are adjacent: one request
    merged = ShardReader(catalog, memory_bytes=0, merge_gap=1 << 20)
    merged.read(np.array([3, 40, 50]), ["bin"])
    assert merged.counters.requests == 1  # one shard, gaps smaller than a request costs


def _tar(members: list[tuple[str, bytes]], fmt: int, mtime: float) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_headers_read_directly_agree_with_tarfile_and_the_rest_falls_back(tmp_path) -> None:
    import webdataset as wds

    rng = np.random.default_rng(0)
    written = [{"__key__": f"d/{i:06d}", "bin": rng.bytes(int(rng.integers(1, 3000))),
                "cls": str(i)} for i in range(40)]  # fmt: skip
    buf = io.BytesIO()
    with wds.TarWriter(buf, mtime=TAR_MTIME) as tar:  # a user's tars: plain ustar
        for sample in written:
            tar.write(sample)
    data = buf.getvalue()
    assert _ustar_members(data) == _tarfile_members(data)
    samples = _samples(data, None)
    assert [s["__key__"].decode() for s in samples] == [w["__key__"] for w in written]
    assert [s["bin"] for s in samples] == [w["bin"] for w in written]
    assert _samples(data, ["cls"])[7] == {"__key__": b"d/000007", "cls": b"7"}
    members = [("a" * 150 + "/s1.bin", b"long"), ("d/s2.cls", b"7"), ("d/s2.txt", b"x" * 600)]
    for fmt, mtime in ((tarfile.PAX_FORMAT, 1.5), (tarfile.GNU_FORMAT, 1)):
        tar = _tar(members, fmt, mtime)
        assert _ustar_members(tar) is None  # PAX records, GNU long names: tarfile's
        got = _samples(tar, None)
        assert [s["__key__"] for s in got] == [b"a" * 150 + b"/s1", b"d/s2"]
        assert got[0]["bin"] == b"long" and got[1]["txt"] == b"x" * 600


def test_a_corrupt_tar_header_is_named_with_its_shard(tmp_path) -> None:
    write_webdataset_shards(str(tmp_path / "tars"), 30, shards=1)
    catalog = ShardCatalog.build(str(tmp_path / "tars"))
    path = next((tmp_path / "tars").glob("*.tar"))
    raw = bytearray(path.read_bytes())
    start = int(catalog.arrays["sample_offset"][5])
    raw[start + 130] = ord("9")  # a size digit that is not octal: the checksum fails
    path.write_bytes(bytes(raw))  # same size; the reader is told not to check mtimes
    reader = ShardReader(catalog, memory_bytes=0, verify=False)
    assert reader.read(np.array([4]))["__key__"].to_pylist() == ["000004"]  # its neighbour
    with pytest.raises(CorruptShardError, match=r"\.tar: sample 5 is not tar members"):
        reader.read(np.array([5]))


def test_a_unit_read_is_one_request_and_matches_the_rows(converted) -> None:
    catalog, table = converted
    reader = ShardReader(catalog, memory_bytes=0)
    got = reader.read_units(np.array([0, 1]), ["raw", "y", "vec"])
    b = catalog.unit_bounds
    assert got.column("raw").to_pylist() == table.column("raw").slice(0, b[2]).to_pylist()
    assert got.column("index").to_pylist() == list(range(b[2]))
    requests = reader.counters.requests
    reader.read_units(np.array([2]), ["raw", "y"])
    assert reader.counters.requests == requests + 1  # one range: its chunks, merged
