"""``isloader export``: the kept rows as a dataset of their own, read back by pyarrow and
webdataset, against the store's active set."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from isloader.cli import main
from isloader.data.catalog import ShardCatalog
from isloader.data.convert import convert_parquet
from isloader.errors import InvalidArgumentError
from isloader.export import export_kept, kept_indices, verify_export
from isloader.store.local import LocalStore
from tests.data.shards import write_parquet_shards, write_webdataset_shards

N = 600


def _pruned_store(n: int, **options) -> tuple[LocalStore, np.ndarray]:
    """A store after a pruning run: lognormal q, Alg. 2 at K = 1.5."""
    store = LocalStore(n, **options)
    q = np.random.default_rng(3).lognormal(0, 1, n)
    store.update(np.arange(n), q)
    store.end_epoch(1, 1e-3)
    store.prune(1.5, epoch=1)
    return store, store.lookup(np.arange(n))


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory) -> tuple[ShardCatalog, object]:
    root = tmp_path_factory.mktemp("export")
    table = write_parquet_shards(str(root / "raw"), N, shards=3, rows_per_group=50)
    return convert_parquet(str(root / "raw"), str(root / "src"), rows_per_group=50), table


def test_parquet_export_holds_exactly_the_active_rows(parquet_dataset, tmp_path) -> None:
    catalog, source = parquet_dataset
    store, q = _pruned_store(N)
    active = np.flatnonzero(q > 0)
    assert 0 < len(active) < N  # pruning pruned some, not all
    manifest = export_kept(catalog, store, str(tmp_path / "kept"), rows_per_group=64)
    table = pq.read_table(str(tmp_path / "kept"))  # pyarrow reads it as is
    got = table.column("source_index").to_numpy()
    assert manifest.rows == len(active) == table.num_rows
    np.testing.assert_array_equal(np.sort(got), active)
    assert not np.array_equal(got, np.sort(got))  # in a random order
    np.testing.assert_allclose(table.column("q").to_numpy(), q[got])
    for name in ("x", "label", "name"):
        assert table.column(name).to_pylist() == source.column(name).take(got).to_pylist()
    assert manifest.store_active == len(active) and manifest.kept_mass == pytest.approx(1.0)
    assert verify_export(str(tmp_path / "kept")).source_identity == catalog.identity
    assert len(ShardCatalog.open(str(tmp_path / "kept"))) == len(active)  # isloader reads it
    with pytest.raises(InvalidArgumentError, match="not empty"):
        export_kept(catalog, store, str(tmp_path / "kept"))
    with pytest.raises(InvalidArgumentError, match="samples"):
        export_kept(catalog, LocalStore(N + 1), str(tmp_path / "other"))
    store.close()


def test_webdataset_export_reads_back_with_webdataset(tmp_path) -> None:
    import webdataset as wds

    samples = write_webdataset_shards(str(tmp_path / "tars"), 300, shards=2)
    catalog = ShardCatalog.build(str(tmp_path / "tars"))
    store, q = _pruned_store(300)
    export_kept(catalog, store, str(tmp_path / "kept"))
    urls = sorted(str(p) for p in (tmp_path / "kept").glob("*.tar"))
    read = list(wds.WebDataset(urls, shardshuffle=False).decode())
    sources = [int(s["source_index.txt"]) for s in read]
    np.testing.assert_array_equal(np.sort(sources), np.flatnonzero(q > 0))
    for sample, i in zip(read, sources, strict=True):
        assert sample["bin"] == samples[i]["bin"] and sample["cls"] == samples[i]["cls"]
        assert sample["txt"] == samples[i]["txt"]
        assert float(sample["q.txt"]) == pytest.approx(q[i])
    with open(urls[0], "rb") as f:  # integer mtimes: no PAX header per member
        assert b"PaxHeader" not in f.read()
    store.close()


def test_top_mass_and_a_class_floor_choose_rows_as_documented() -> None:
    q = np.array([5.0, 0.0, 3.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(kept_indices(q), [0, 2, 3, 4])
    np.testing.assert_array_equal(kept_indices(q, top_mass=0.5), [0])  # 5 of 10
    np.testing.assert_array_equal(kept_indices(q, top_mass=0.75), [0, 2])
    labels = np.array([0, 1, 0, 0, 0, 1])
    floor = kept_indices(q, top_mass=0.5, labels=labels, min_per_label=2)
    np.testing.assert_array_equal(floor, [0, 1, 2, 5])  # label 1 had none: its two added
    with pytest.raises(InvalidArgumentError, match="top_mass"):
        kept_indices(q, top_mass=1.5)
    with pytest.raises(InvalidArgumentError, match="label"):
        kept_indices(q, min_per_label=1)


def test_the_command_exports_from_a_snapshot_and_verify_sees_a_changed_source(
    tmp_path, capsys
) -> None:
    write_parquet_shards(str(tmp_path / "raw"), N, shards=3, rows_per_group=50)
    catalog = convert_parquet(str(tmp_path / "raw"), str(tmp_path / "src"), rows_per_group=50)
    store, _ = _pruned_store(N, snapshot_uri=str(tmp_path / "snap"))
    store.snapshot()
    store.close()
    out = str(tmp_path / "kept")
    args = ["export", catalog.root, out, "--snapshot-uri", str(tmp_path / "snap")]
    assert main([*args, "--top-mass", "0.5", "--min-per-label", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kept = pq.read_table(out)
    assert summary["rows"] == kept.num_rows and summary["rule"] == "top_mass=0.5+min_per_label=5"
    assert summary["kept_mass"] >= 0.5 and summary["store_epoch"] == 2  # one past epoch 1
    assert min(np.bincount(kept.column("label").to_numpy(), minlength=7)) >= 5
    assert verify_export(out).rows == kept.num_rows
    assert main(["inspect", catalog.root, "--snapshot-uri", str(tmp_path / "snap"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] == N and report["pruned"] == N - summary["store_active"]
    shard = tmp_path / "src" / catalog.shards[0].path
    rows = pq.read_table(shard)
    pq.write_table(rows.slice(1), shard)  # a source shard rewritten after the export
    with pytest.raises(InvalidArgumentError, match="changed since it was exported"):
        verify_export(out)


def test_inspect_reports_pruned_shares_by_shard_and_label_and_draws_the_extremes(
    tmp_path, capsys
) -> None:
    """One shard's rows made easy (low q) so pruning takes them: the report must say so
    per shard and per label, list the extremes by q, and draw them."""
    from isloader.pruning_report import inspect_pruning

    write_parquet_shards(str(tmp_path / "raw"), N, shards=3, rows_per_group=50)
    catalog = ShardCatalog.build(str(tmp_path / "raw"))
    store = LocalStore(N)
    rng = np.random.default_rng(5)
    q = rng.lognormal(0, 0.3, N)
    q[:200] *= 0.01  # shard 0 (rows 0-199) is easy
    store.update(np.arange(N), q)
    store.end_epoch(1, 1e-6)
    store.prune(2.0, epoch=1)
    now = store.lookup(np.arange(N))
    grid = str(tmp_path / "grid.png")
    report = inspect_pruning(catalog, store, thumbnails=grid, image_column="feat", top=6)
    by_shard = {g.name: g for g in report.shards}
    assert by_shard["part-000.parquet"].pruned_share == pytest.approx((now[:200] == 0).mean())
    assert by_shard["part-000.parquet"].pruned_share > 0.9
    assert by_shard["part-001.parquet"].pruned_share < 0.1
    assert report.label_column == "label" and len(report.labels) == 7
    labels = np.arange(N) % 7
    for g in report.labels:
        assert g.pruned_share == pytest.approx((now[labels == int(g.name)] == 0).mean())
    assert sum(g.mass_share for g in report.labels) == pytest.approx(1.0)
    assert [h["index"] for h in report.hardest] == list(np.argsort(-now)[:6])
    assert report.pruned == int((now == 0).sum()) and sum(report.histogram) == N - report.pruned
    assert report.thumbnails == grid and (tmp_path / "grid.png").stat().st_size > 1000
    scalar = inspect_pruning(catalog, store, thumbnails=str(tmp_path / "none.png"))  # "x"
    assert scalar.thumbnails is None and "neither images nor signals" in scalar.notes[0]
    store.close()
    with pytest.raises(InvalidArgumentError, match="no column"):
        inspect_pruning(catalog, LocalStore(N), label_column="nope")
