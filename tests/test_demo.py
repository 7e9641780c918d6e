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
