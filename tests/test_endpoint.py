"""The emulated object store every remote benchmark reads from: S3 as fsspec, boto3 and
plain HTTP clients see it, counters kept at the endpoint, and what a request costs."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from isloader.demo.endpoint import EmulatedObjectStore, EndpointModel, measure_ceiling


@pytest.fixture(scope="module")
def s3():
    with EmulatedObjectStore(EndpointModel(latency_ms=0, bandwidth_mb_s=0)) as store:
        store.bucket("data")
        yield store


def test_s3_semantics_through_s3fs(s3) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options)
    blob = np.random.default_rng(0).bytes(300_000)
    fs.pipe_file("data/a/x.bin", blob)
    fs.pipe_file("data/a/b/y.bin", b"y")
    fs.pipe_file("data/top.bin", b"top")
    assert fs.find("data") == ["data/a/b/y.bin", "data/a/x.bin", "data/top.bin"]
    assert sorted(fs.ls("data", detail=False)) == ["data/a", "data/top.bin"]
    info = fs.info("data/a/x.bin")
    assert info["size"] == len(blob) and info["ETag"]
    assert fs.info("data/a")["type"] == "directory"
    starts = [0, 1000, 299_000]
    got = fs.cat_ranges(["data/a/x.bin"] * 3, starts, [s + 1000 for s in starts])
    assert got == [blob[s : s + 1000] for s in starts]
    fs.pipe_file("data/a/x.bin", b"rewritten")
    fs.invalidate_cache()
    assert fs.info("data/a/x.bin")["ETag"] != info["ETag"]  # a rewrite changes the etag
    fs.rm(["data/top.bin", "data/a/b/y.bin"])
    fs.invalidate_cache()
    assert fs.find("data") == ["data/a/x.bin"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file("data/missing.bin")


def test_listing_pages_and_plain_http(s3) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options)
    for i in range(1005):  # more than one page of ListObjectsV2
        (s3.local_path(f"s3://data/many/{i:05d}")).parent.mkdir(parents=True, exist_ok=True)
        s3.local_path(f"s3://data/many/{i:05d}").write_bytes(b"x")
    fs.invalidate_cache()
    assert len(fs.find("data/many")) == 1005
    with urllib.request.urlopen(s3.http_url("s3://data/many/00007")) as reply:
        assert reply.read() == b"x"


def test_boto3_download_and_counters_at_the_endpoint(s3, tmp_path, monkeypatch) -> None:
    import boto3

    blob = np.random.default_rng(1).bytes(200_000)
    s3.local_path("s3://data/obj.bin").write_bytes(blob)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    with s3.counting() as served:
        boto3.client("s3").download_file("data", "obj.bin", str(tmp_path / "obj.bin"))
    assert (tmp_path / "obj.bin").read_bytes() == blob
    assert served[0].gets == 1 and served[0].bytes_sent == len(blob)
    s3.reset()
    assert s3.stats().gets == 0


def test_the_direct_listener_is_neither_charged_nor_counted(s3) -> None:
    import s3fs

    s3.local_path("s3://data/free.bin").write_bytes(b"free")
    with s3.counting() as served:
        fs = s3fs.S3FileSystem(**s3.direct_options)
        assert fs.cat_file("data/free.bin") == b"free"
    assert served[0].gets == 0 and served[0].bytes_sent == 0


def test_paths_cannot_leave_the_store(s3) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{s3.endpoint}/data/..%2F..%2Fetc%2Fpasswd")
    assert caught.value.code in (403, 404)


def test_requests_cost_the_latency_and_share_one_bandwidth_budget(tmp_path) -> None:
    """Lower bounds only: a request never comes back before its latency, and transfers
    running at once never beat the endpoint's total bandwidth together."""
    import s3fs

    model = EndpointModel(latency_ms=100, bandwidth_mb_s=10, concurrency=64)
    with EmulatedObjectStore(model) as s3:
        s3.bucket("data")
        blob = np.random.default_rng(2).bytes(1_000_000)
        for i in range(4):
            s3.local_path(f"s3://data/{i}.bin").write_bytes(blob)
        fs = s3fs.S3FileSystem(**s3.storage_options)
        fs.cat_file("data/0.bin", start=0, end=10)  # connect once
        start = time.perf_counter()
        fs.cat_file("data/0.bin", start=0, end=10)
        assert time.perf_counter() - start >= 0.1
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:  # 4 MB at 10 MB/s shared: at least 0.4 s
            got = list(pool.map(lambda i: fs.cat_file(f"data/{i}.bin"), range(4)))
        assert time.perf_counter() - start >= 0.4
        assert got == [blob] * 4


def test_the_endpoint_is_not_the_bottleneck_it_emulates(s3) -> None:
    s3.local_path("s3://data/ceiling.bin").write_bytes(bytes(1 << 20))
    ceiling = measure_ceiling(s3, "s3://data/ceiling.bin", seconds=1.0, clients=32)
    assert ceiling["gets_per_s"] > 0 and ceiling["server_cpu_ms_per_get"] > 0


def test_bad_models_are_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        EndpointModel(concurrency=0)
    with pytest.raises(ValueError, match=">= 0"):
        EndpointModel(latency_ms=-1)
