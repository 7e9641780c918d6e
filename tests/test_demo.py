"""``isloader demo`` on tiny configurations: the real pipeline, the emulated S3 endpoint."""

import json

import pytest

from isloader.cli import main


@pytest.mark.usefixtures("ray_session")
def test_demo_from_emulated_s3_produces_the_table_and_the_plots(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(
        ["demo", "--train-size", "1200", "--test-size", "200", "--epochs", "3",
         "--batch-size", "50", "--row-bytes", "1024", "--output", str(out), "--methods",
         "uniform_stream,uniform_cached,ours_is_prune,random_prune"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "ours_is_prune" in printed and "emulated S3 (20 ms/request, 25 MB/s" in printed
    assert "INFO" not in printed  # the screen is the user's: no library's log flood
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    methods = ["uniform_stream", "uniform_cached", "ours_is_prune", "random_prune"]
    assert [r["method"] for r in rows] == methods
    assert results["cache_budget_bytes"] == int(0.5 * 1200 * 1024)  # the same for every arm
    for row in rows:  # bytes and GETs counted at the endpoint, every epoch included
        assert 0.0 <= row["acc_equal_steps"] <= 1.0
        assert row["mb_total"] >= row["mb_per_epoch"] > 0 and row["gets_per_epoch"] > 0
        assert 0.0 < row["data_wait_share"] < 1.0
    stream, cached, prune, random = rows
    assert stream["cache_hit_rate"] == 0 and cached["cache_hit_rate"] > 0
    assert prune["cache_hit_rate"] > 0
    assert sum(r["baseline"] for r in rows) == 1  # the faster uniform arm
    assert next(r for r in rows if r["baseline"])["method"].startswith("uniform")
    assert prune["pruned_share"] > 0
    assert random["pruned_share"] == pytest.approx(prune["pruned_share"])  # matched sizes
    assert prune["max_plan_staleness"] <= 8 + 16  # window + prefetch
    for name in ("accuracy_vs_time.png", "importance_histogram.png", "active_set.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.usefixtures("ray_session")
def test_demo_on_your_own_shards_and_a_deployed_store(tmp_path, capsys) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from isloader.config import StoreSettings
    from isloader.data.catalog import ShardCatalog
    from isloader.store.server import StoreServer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = (rng.normal(size=(400, 5)) + y[:, None]).astype(np.float32)
    data = tmp_path / "shards"
    data.mkdir()
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32())), "y": y})
    pq.write_table(table, data / "part-0.parquet", row_group_size=50)
    ShardCatalog.build(str(data)).save()
    server = StoreServer(StoreSettings(num_samples=400, port=0)).start()
    try:
        code = main(
            ["demo", "--dataset", str(data), "--store", server.address, "--epochs", "3",
             "--batch-size", "40", "--methods", "uniform,ours_is,ours_is_prune", "--output",
             str(tmp_path / "out")]
        )  # fmt: skip
        assert code == 0
        stats = server.shard.stats()  # reset, then trained by ours_is_prune (the last)
        assert stats.seen == 400 and stats.epoch == 3 and stats.pruned > 0
    finally:
        server.stop(grace=0)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["uniform", "ours_is", "ours_is_prune"]
