"""A smoke test of ``isloader demo`` on a tiny configuration (the real pipeline)."""

import json

import pytest

from isloader.cli import main


@pytest.mark.usefixtures("ray_session")
def test_demo_produces_the_table_and_the_plots(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(
        ["demo", "--train-size", "600", "--test-size", "200", "--epochs", "3",
         "--batch-size", "50", "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "ours_is_prune" in printed and "acc @ equal time" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == [
        "uniform", "loss_is", "ours_is", "ours_is_prune", "random_prune"
    ]  # fmt: skip
    for row in rows:
        assert 0.0 <= row["acc_equal_steps"] <= 1.0
        assert row["samples"] > 0
    prune, random = rows[3], rows[4]
    assert prune["pruned_share"] > 0
    assert random["pruned_share"] == pytest.approx(prune["pruned_share"])  # matched sizes
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
             "--batch-size", "40", "--methods", "uniform,ours_is_prune", "--output",
             str(tmp_path / "out")]
        )  # fmt: skip
        assert code == 0
        assert server.shard.stats().seen == 400  # ours_is_prune trained against it
        assert server.shard.stats().epoch == 3
    finally:
        server.stop(grace=0)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["uniform", "ours_is_prune"]
