from isloader.data.cache import ByteLRU


def test_byte_budget_is_kept_and_recent_entries_stay() -> None:
    cache = ByteLRU(100)
    for i in range(20):
        cache.put(i, f"v{i}", 10)
        assert cache.nbytes <= 100
    assert cache.get(19) == "v19"
    assert cache.get(0) is None
    cache.put("huge", "x", 101)  # larger than the whole budget: not cached
    assert cache.get("huge") is None


def test_a_stream_of_one_off_reads_does_not_evict_the_hot_set() -> None:
    cache = ByteLRU(100, protected_share=0.6)
    for key in ("hot1", "hot2", "hot3"):
        cache.put(key, key, 10)
        assert cache.get(key) == key  # second touch: protected
    for i in range(100):  # cold reads, each seen once
        cache.put(("cold", i), i, 10)
    assert [cache.get(k) for k in ("hot1", "hot2", "hot3")] == ["hot1", "hot2", "hot3"]
    assert cache.nbytes <= 100


def test_replacing_a_key_keeps_the_byte_count_exact() -> None:
    cache = ByteLRU(100)
    cache.put("a", 1, 30)
    cache.get("a")
    cache.put("a", 2, 50)
    assert cache.get("a") == 2
    assert cache.nbytes == 50


# -- the node's disk tier --------------------------------------------------------------

import json  # noqa: E402
import multiprocessing  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402

from isloader.data.cache import UnitCache  # noqa: E402
from isloader.data.catalog import INDEX_NAME, ShardCatalog  # noqa: E402
from isloader.data.reader import ReaderSettings, ShardReader  # noqa: E402
from isloader.errors import InvalidArgumentError  # noqa: E402
from isloader.store.records import UnitStats  # noqa: E402
from tests.data.shards import write_parquet_shards, write_webdataset_shards  # noqa: E402


def _table(rows: int, width: int = 100) -> pa.Table:
    return pa.table({"payload": [b"x" * width] * rows, "__row": np.arange(rows, dtype=np.int32)})


def _unit_cache(tmp_path, limit: int, mass: np.ndarray) -> UnitCache:
    return UnitCache(tmp_path / "c", limit, key_for=lambda u: "k", default_mass=mass)


def test_unit_cache_keeps_the_units_of_highest_mass_per_byte(tmp_path) -> None:
    mass = np.array([1.0, 5.0, 2.0, 9.0, 0.5])
    cache = _unit_cache(tmp_path, limit=10**9, mass=mass)
    cache.put(0, _table(10))
    size = cache.nbytes
    cache = _unit_cache(tmp_path / "b", limit=3 * size, mass=mass)
    for unit in range(5):
        cache.put(unit, _table(10))
    held = sorted(e.unit for e in cache._entries())
    assert held == [1, 2, 3]  # the three heaviest; 0 and 4 rejected or evicted
    assert cache.nbytes <= 3 * size
    assert cache.covered_mass_share() == pytest.approx((5 + 2 + 9) / mass.sum())
    cache.set_mass(np.array([1.0, 5.0, 0.1, 9.0, 8.0]))  # an epoch later: unit 4 matters
    assert cache.put(4, _table(10)) and not cache.put(0, _table(10))
    assert sorted(e.unit for e in cache._entries()) == [1, 3, 4]


def test_rewriting_a_unit_replaces_it_and_the_size_counts_it_once(tmp_path) -> None:
    cache = _unit_cache(tmp_path, limit=10**9, mass=np.ones(3))
    cache.put(1, _table(10))
    first = cache.nbytes
    cache.put(1, _table(10))
    assert cache.nbytes == first
    assert cache.get(1).num_rows == 10 and cache.get(2) is None
    assert (cache.counters.hits, cache.counters.misses) == (1, 1)


def _hammer(directory: str, limit: int, seed: int, errors) -> None:
    rng = np.random.default_rng(seed)
    cache = UnitCache(directory, limit, key_for=lambda u: "k", default_mass=rng.random(40))
    try:
        for _ in range(300):
            unit = int(rng.integers(0, 40))
            if rng.random() < 0.5:
                cache.put(unit, _table(int(rng.integers(1, 50))))
            else:
                table = cache.get(unit)
                if table is not None:
                    assert table.column("__row").to_pylist() == list(range(table.num_rows))
    except Exception as exc:  # reported to the parent
        errors.put(repr(exc))


def test_two_processes_share_one_directory_without_breaking_each_other(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    limit = 20_000
    procs = [
        ctx.Process(target=_hammer, args=(str(tmp_path / "c"), limit, s, errors)) for s in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert errors.empty(), errors.get()
    files = list((tmp_path / "c").glob("*.arrow"))
    assert sum(f.stat().st_size for f in files) <= limit
    assert not list((tmp_path / "c").glob(".tmp-*"))  # no half-written unit left


def _s3_reader(uri: str, options: dict, tmp_path, **settings) -> ShardReader:
    catalog = ShardCatalog.build(uri, storage_options=options)
    return ShardReader(catalog, cache_dir=str(tmp_path / "cache"), memory_bytes=0, **settings)


def test_a_unit_fetched_in_a_merged_read_hits_when_read_alone(s3_bucket, tmp_path) -> None:
    uri, options = s3_bucket
    write_parquet_shards(f"{uri}/d", 200, shards=1, rows_per_group=20, options=options)
    first = _s3_reader(f"{uri}/d", options, tmp_path)
    first.read(np.array([0, 25, 45]))  # units 0, 1, 2: adjacent, one merged request
    second = _s3_reader(f"{uri}/d", options, tmp_path)
    second.read(np.array([27]))  # unit 1 alone
    assert second.counters.bytes_fetched == 0 and second.counters.cache_hits == 1


def test_pruned_rows_are_dropped_from_cached_units(s3_bucket, tmp_path) -> None:
    uri, options = s3_bucket
    full = write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=50, options=options)
    reader = _s3_reader(f"{uri}/d", options, tmp_path)
    pruned = np.zeros(100, bool)
    pruned[::2] = True  # every even row
    layout = reader.catalog.layout
    reader.set_importance(UnitStats(0, np.ones(len(layout)), np.full(len(layout), 25), pruned))
    got = reader.read(np.array([1, 3, 51]))
    assert got.column("x").to_pylist() == full.column("x").take([1, 3, 51]).to_pylist()
    cached = [e for e in reader._disk_cache(None)._entries()]
    tables = [pa.ipc.open_file(pa.memory_map(str(e.path))).read_all() for e in cached]
    assert sorted(t.num_rows for t in tables) == [25, 25]
    again = _s3_reader(f"{uri}/d", options, tmp_path)
    again.read(np.array([5, 7]))  # active rows: served from the disk tier
    assert again.counters.bytes_fetched == 0
    again.read(np.array([4]))  # a pruned (then readmitted) row: fetched
    assert again.counters.requests >= 1
    assert again.read(np.array([4])).column("x").to_pylist() == [2.0]


def test_a_rewritten_shard_invalidates_its_cached_units(s3_bucket, tmp_path) -> None:
    uri, options = s3_bucket
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=10, options=options)
    _s3_reader(f"{uri}/d", options, tmp_path).read(np.arange(0, 100, 10))
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=20, options=options)
    fresh = _s3_reader(f"{uri}/d", options, tmp_path)  # re-indexed: new etag
    fresh.read(np.array([3]))
    assert fresh.counters.cache_hits == 0 and fresh.counters.bytes_fetched > 0


def test_a_long_lived_reader_notices_a_same_size_rewrite(s3_bucket, tmp_path) -> None:
    import s3fs

    from isloader.errors import ShardChangedError

    uri, options = s3_bucket
    write_parquet_shards(f"{uri}/d", 100, shards=1, rows_per_group=10, options=options)
    reader = _s3_reader(f"{uri}/d", options, tmp_path, verify_every=0.0)
    reader.read(np.array([1]))
    fs = s3fs.S3FileSystem(**options)
    data = bytearray(fs.cat_file(f"{uri}/d/part-000.parquet"))
    data[4:8] = b"\0\0\0\0"  # same size, other bytes: another etag
    fs.pipe_file(f"{uri}/d/part-000.parquet", bytes(data))
    with pytest.raises(ShardChangedError):
        reader.read(np.array([95]))


def test_readers_pickle_with_every_setting(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, 50, shards=1, rows_per_group=10)
    settings = ReaderSettings(
        columns=("x",), memory_bytes=123, cache_dir=str(tmp_path / "c"), cache_bytes=456,
        cache_local=True, merge_gap=7, verify=False, verify_every=3.0,
    )  # fmt: skip
    copy = pickle.loads(pickle.dumps(ShardReader(ShardCatalog.build(uri), settings)))
    assert copy.settings == settings
    assert copy._fetcher.verify is False and copy._memory.capacity == 123


def test_webdataset_units_are_runs_of_samples_read_in_one_request(tmp_path) -> None:
    uri = str(tmp_path / "w")
    written = write_webdataset_shards(uri, 60, shards=2)
    catalog = ShardCatalog.build(uri, unit_samples=8)
    assert catalog.num_units == 8  # 30 samples per tar: 8 + 8 + 8 + 6, twice
    assert catalog.unit_rows.tolist() == [8, 8, 8, 6] * 2
    reader = ShardReader(catalog)
    rows = reader.read(np.array([9, 10, 11])).to_pylist()
    assert [r["bin"] for r in rows] == [written[i]["bin"] for i in (9, 10, 11)]
    assert reader.counters.requests == 1  # one unit, one range
    assert catalog.nbytes / len(catalog) <= 16


def test_catalog_paths_cannot_leave_the_dataset_root(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, 20, shards=1, rows_per_group=10)
    ShardCatalog.build(uri).save()
    index = tmp_path / "d" / INDEX_NAME
    document = json.loads(index.read_text())
    document["shards"][0]["path"] = "../../etc/passwd"
    index.write_text(json.dumps(document))
    with pytest.raises(InvalidArgumentError, match="leaves the dataset root"):
        ShardCatalog.load(uri)


def test_version_1_indexes_still_load_or_say_to_reindex(tmp_path) -> None:
    uri = str(tmp_path / "d")
    full = write_parquet_shards(uri, 40, shards=2, rows_per_group=10)
    v1 = {
        "version": 1,
        "format": "parquet",
        "shards": [
            {"path": f"part-00{s}.parquet", "size": (tmp_path / "d" / f"part-00{s}.parquet")
             .stat().st_size, "fingerprint": "", "num_rows": 20, "row_groups": [10, 10],
             "samples": []}
            for s in (0, 1)
        ],
    }  # fmt: skip
    (tmp_path / "d" / INDEX_NAME).write_text(json.dumps(v1))
    catalog = ShardCatalog.load(uri)
    got = ShardReader(catalog).read(np.array([0, 39]))
    assert got.column("x").to_pylist() == full.column("x").take([0, 39]).to_pylist()
    v1["format"] = "webdataset"
    (tmp_path / "d" / INDEX_NAME).write_text(json.dumps(v1))
    with pytest.raises(InvalidArgumentError, match="isloader index"):
        ShardCatalog.load(uri)
