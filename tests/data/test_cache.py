"""The row caches: one admission rule by importance per byte, a node's disk tier shared
by processes and bounded by the bytes it stores, the initialization epoch's fill, and a
hit rate that is the mass the cache covers."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from isloader.data.catalog import ShardCatalog
from isloader.data.convert import convert_parquet
from isloader.data.lru import ByteLRU
from isloader.data.reader import ShardReader
from isloader.data.rowcache import DiskRows, MemoryRows, RowCodec, admit


def test_byte_lru_keeps_its_budget_and_the_hot_set() -> None:
    cache = ByteLRU(100, protected_share=0.6)
    cache.put("hot", "h", 30)
    assert cache.get("hot") == "h"  # a second touch protects it
    for i in range(20):  # a stream of one-off entries
        cache.put(i, i, 20)
    assert cache.get("hot") == "h" and cache.nbytes <= 100
    cache.put("hot", "H", 40)
    assert cache.get("hot") == "H" and cache.nbytes <= 100


def test_the_codec_round_trips_every_kind_of_column() -> None:
    table = pa.table(
        {
            "blob": pa.array([b"a" * 10, None, b""], pa.binary()),
            "big": pa.array([b"x", b"yy", None], pa.large_binary()),
            "text": ["é", None, "c"],
            "i8": pa.array([1, -2, None], pa.int8()),
            "u64": pa.array([1, 2, 2**63], pa.uint64()),
            "f32": pa.array([0.5, None, -1.0], pa.float32()),
            "vec": pa.array([[1.0, 2.0], None, []], pa.list_(pa.float32())),
            "ids": pa.array([[1], [2, 3], None], pa.list_(pa.int64())),
            "flag": [True, False, None],
            "pair": pa.array([{"a": 1}, None, {"a": 3}]),
            "when": pa.array([1, 2, None], pa.timestamp("ms", tz="UTC")),
        }
    )
    codec = RowCodec(table.schema)
    rows = codec.encode(table)
    assert len(rows) == 3
    assert codec.decode(rows).equals(table)
    assert codec.decode([rows[2], rows[0]]).equals(table.take([2, 0]))


def test_admit_takes_the_densest_offers_and_evicts_only_less_dense_rows() -> None:
    cached = iter([(10, 0.1, 50), (11, 0.5, 50), (12, 0.9, 50)])  # lowest density first
    admitted, evicted = admit([(1, 0.7, 40), (2, 0.3, 60), (3, 0.05, 10)], free=20, victims=cached)
    assert admitted == [1] and evicted == [10]  # 0.3 would have to evict 0.5: refused
    admitted, evicted = admit([(4, 1.0, 10)], free=10, victims=iter([]))
    assert admitted == [4] and evicted == []


@pytest.mark.parametrize("tier", ["memory", "disk"])
def test_a_tier_keeps_the_rows_of_highest_density_within_its_budget(tmp_path, tier) -> None:
    rng = np.random.default_rng(0)
    limit = 60_000
    rows = [rng.bytes(900) for _ in range(400)]
    density = rng.lognormal(0, 1, 400)
    cache = MemoryRows(limit) if tier == "memory" else DiskRows(str(tmp_path / "r.rows"), limit)
    for start in range(0, 400, 50):  # offered in rounds, as windows are read
        chunk = slice(start, start + 50)
        cache.offer(list(range(400))[chunk], rows[chunk], density[chunk])
    held = set(cache.indices().tolist())
    assert 0 < cache.nbytes <= limit
    top = set(np.argsort(-density)[: len(held)].tolist())
    assert len(held & top) >= 0.9 * len(held)  # the densest (a few ties at the edge)
    got = cache.get(np.array(sorted(held)[:5]))
    assert all(got[i] == rows[i] for i in got)
    pruned = np.array(sorted(held)[::2])
    gone = np.zeros(400)
    gone[list(held)] = 1.0
    gone[pruned] = 0.0  # density 0: pruned
    if tier == "memory":
        cache.rank(lambda idx: gone[idx])
    else:
        assert cache.rank(1, lambda idx: gone[idx])
        assert not cache.rank(1, lambda idx: gone[idx])  # once per epoch for the node
    assert not set(pruned.tolist()) & set(cache.indices().tolist())


def _offer_from_another_process(path: str, limit: int, start: int) -> None:
    cache = DiskRows(path, limit)
    cache.remember_schema(pa.schema([("raw", pa.binary())]))  # as every reader does
    rng = np.random.default_rng(start)
    for k in range(10):
        base = start + 20 * k
        cache.offer(list(range(base, base + 20)), [rng.bytes(500) for _ in range(20)],
                    rng.random(20) + 0.1)  # fmt: skip
    cache.close()


def test_processes_share_one_disk_tier_and_its_budget(tmp_path) -> None:
    path, limit = str(tmp_path / "shared.rows"), 40_000
    cache = DiskRows(path, limit)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_offer_from_another_process, args=(path, limit, s))
             for s in (0, 10_000)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert 0 < cache.nbytes <= limit and len(cache) > 0
    held = cache.indices()
    assert set(held.tolist()) <= set(range(200)) | set(range(10_000, 10_200))
    assert DiskRows(path, limit).schema() == pa.schema([("raw", pa.binary())])  # any process
    payload = cache._db.execute("SELECT total(length(data)) FROM rows").fetchone()[0]
    kept = cache._db.execute("SELECT value FROM meta WHERE key = 'payload'").fetchone()[0]
    assert kept == payload  # the running total every process keeps, through evictions


def test_the_payload_total_survives_ranking_trimming_and_an_older_file(tmp_path) -> None:
    path = str(tmp_path / "rows.rows")
    cache = DiskRows(path, 30_000)
    rng = np.random.default_rng(3)
    for k in range(6):
        cache.offer(list(range(40 * k, 40 * k + 40)), [rng.bytes(int(n)) for n in
                    rng.integers(100, 900, 40)], rng.random(40) + 0.1)  # fmt: skip
    cache.rank(1, lambda idx: np.where(idx % 3 == 0, 0.0, 1.0))  # a third pruned: they leave

    def totals(db) -> tuple[float, float]:
        real = db.execute("SELECT total(length(data)) FROM rows").fetchone()[0]
        return real, db.execute("SELECT value FROM meta WHERE key = 'payload'").fetchone()[0]

    real, kept = totals(cache._db)
    assert real > 0 and kept == real and cache.nbytes <= 30_000
    cache._db.execute("DELETE FROM meta WHERE key = 'payload'")  # a file from before the total
    cache._db.execute("DROP TRIGGER payload_in")
    cache.close()
    again = DiskRows(path, 30_000)
    assert totals(again._db) == (real, real)
    again.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[ShardCatalog, np.ndarray]:
    """6,000 rows of 2 KB; q lognormal (sigma 1) in random row order."""
    root = tmp_path_factory.mktemp("rows")
    rng = np.random.default_rng(0)
    n = 6000
    table = pa.table({"raw": [rng.bytes(2000) for _ in range(n)], "y": rng.integers(0, 10, n)})
    (root / "src").mkdir()
    pq.write_table(table, root / "src" / "t.parquet")
    catalog = convert_parquet(str(root / "src"), str(root / "conv"), rows_per_shard=2000)
    return catalog, rng.lognormal(0, 1, n)


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_the_init_epoch_fills_the_cache_with_the_highest_q_and_hits_follow_the_mass(
    dataset, tmp_path, share
) -> None:
    catalog, q = dataset
    n = len(catalog)
    p = q / q.sum()
    row = 2000 + 40  # stored bytes of a row, about
    reader = ShardReader(catalog, memory_bytes=0, cache_dir=str(tmp_path), cache_local=True,
                         cache_bytes=int(share * n * row))  # fmt: skip
    for unit in np.random.default_rng(1).permutation(catalog.num_units):  # a streaming pass
        reader.read_units(np.array([unit]), ["raw", "y"], pending=True)
        reader.settle(lambda idx: p[idx])  # measured by now: all but the last 3 tasks
    covered = reader.rank(1, lambda idx: p[idx])
    held = len(reader._tiers[("raw", "y")].disk)
    best = np.sort(p)[::-1][:held].sum()
    assert covered == pytest.approx(best, abs=0.02)  # the highest q it saw
    assert covered >= (0.8 if share == 0.5 else 0.6)  # lognormal sigma 1
    reader.counters.__init__()
    rng = np.random.default_rng(2)
    for _ in range(20):
        draws = rng.choice(n, 512, p=p)
        reader.read(draws, ["raw", "y"], probabilities=p[draws])
    assert abs(reader.counters.cache_hit_rate - covered) < 0.05
    assert reader.counters.read_amplification < 1.25


def _hold_the_lock(path: str, seconds: float, ready) -> None:
    """Another process in a long write transaction on the node's file."""
    import sqlite3
    import time

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('held', 1)")
    ready.set()
    time.sleep(seconds)
    db.execute("ROLLBACK")
    db.close()


def test_a_write_lock_held_too_long_skips_offers_and_ranks_and_fails_no_read(tmp_path) -> None:
    path = str(tmp_path / "locked.rows")
    cache = DiskRows(path, 1 << 20, timeout=0.2)
    cache.remember_schema(pa.schema([("raw", pa.binary())]))
    assert cache.offer([0, 1], [b"a" * 100, b"b" * 100], np.array([1.0, 2.0])) == 2
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_the_lock, args=(path, 3.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        # offers from two threads at once, and a rank, while the other process holds it
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda k: cache.offer([10 + k], [b"c" * 100], np.array([5.0])),
                                range(4)))  # fmt: skip
        assert got == [0, 0, 0, 0] and cache.skipped == 4
        assert cache.rank(1, lambda idx: np.zeros(len(idx))) is False  # skipped, not raised
        assert sorted(cache.get(np.arange(20))) == [0, 1]  # reads still answer, state kept
    finally:
        holder.join(60)
    assert holder.exitcode == 0
    assert cache.offer([10], [b"c" * 100], np.array([5.0])) == 1  # the lock is back
    assert cache.rank(1, lambda idx: np.where(idx == 0, 0.0, 1.0)) is True
    assert sorted(cache.get(np.arange(20))) == [1, 10]  # row 0's density 0: it left
