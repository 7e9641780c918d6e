import json

import fsspec
import numpy as np
import pytest

from isloader.errors import SnapshotError, SnapshotMismatchError
from isloader.store import ImportanceTable, TableConfig
from isloader.store.snapshot import list_snapshots, restore_table, save_table


def busy_table(config: TableConfig) -> ImportanceTable:
    table = ImportanceTable(config)
    rng = np.random.default_rng(0)
    table.update(np.arange(config.start, config.stop), rng.random(config.size))
    table.update(np.array([config.start]), np.array([5.0]), request=("client", 3))
    table.end_epoch(0, 0.01)
    table.prune(0.2, epoch=1)
    return table


def assert_same_state(a: ImportanceTable, b: ImportanceTable) -> None:
    sa, sb = a.export_state(), b.export_state()
    assert sa.meta == sb.meta
    for name in ("q", "seen", "pruned"):
        np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
    assert a.view() == pytest.approx(b.view())


def test_round_trip_on_a_local_path(tmp_path) -> None:
    config = TableConfig(10, 1010, alpha=0.1)
    table = busy_table(config)
    save_table(table, str(tmp_path / "snap"))
    restored = ImportanceTable(config)
    restore_table(restored, str(tmp_path / "snap"))
    assert_same_state(table, restored)
    # The request log travels too: the retried request stays applied once.
    assert not restored.update(np.array([10]), np.array([1.0]), request=("client", 3))


def test_round_trip_on_s3(s3_bucket) -> None:
    uri, options = s3_bucket
    config = TableConfig(0, 500)
    table = busy_table(config)
    save_table(table, f"{uri}/snap", options)
    table.update(np.array([1]), np.array([9.0]))
    save_table(table, f"{uri}/snap", options)
    assert len(list_snapshots(f"{uri}/snap", options)) == 2
    restored = ImportanceTable(config)
    restore_table(restored, f"{uri}/snap", options)
    assert_same_state(table, restored)


def test_restore_under_another_range_or_config_is_an_error(tmp_path) -> None:
    save_table(busy_table(TableConfig(0, 100, alpha=0.1)), str(tmp_path))
    for other in (TableConfig(0, 101, alpha=0.1), TableConfig(0, 100, alpha=0.2)):
        with pytest.raises(SnapshotMismatchError, match="snapshot was taken with"):
            restore_table(ImportanceTable(other), str(tmp_path))


def test_snapshot_without_marker_is_ignored_and_corrupt_one_is_named(tmp_path) -> None:
    config = TableConfig(0, 50)
    table = busy_table(config)
    with pytest.raises(SnapshotError, match="no complete snapshot"):
        restore_table(ImportanceTable(config), str(tmp_path))
    path = save_table(table, str(tmp_path))
    fs = fsspec.filesystem("file")
    # A data file whose marker was never written is not a snapshot.
    fs.pipe_file(str(tmp_path / "snapshot-9999999999999999.npz"), b"partial")
    restore_table(ImportanceTable(config), str(tmp_path))
    # A data file that no longer matches its marker is reported, not loaded.
    fs.pipe_file(path, fs.cat_file(path)[:-10])
    with pytest.raises(SnapshotError, match="do not match"):
        restore_table(ImportanceTable(config), str(tmp_path))
    marker = json.loads(fs.cat_file(path.replace(".npz", ".complete")))
    assert marker["version"] == table.version


def test_reshard_three_shards_into_two_keeps_the_global_state(tmp_path) -> None:
    from isloader.store.reshard import reshard

    rng = np.random.default_rng(0)
    bounds = [0, 30, 70, 100]
    q = rng.random(100)
    for i in range(3):
        table = ImportanceTable(TableConfig(bounds[i], bounds[i + 1], alpha=0.1))
        idx = np.arange(bounds[i], bounds[i + 1])
        table.update(idx, q[idx])
        table.end_epoch(0, 0.0)
        save_table(table, str(tmp_path / f"old-{i}"))
    reshard([str(tmp_path / f"old-{i}") for i in (2, 0, 1)], 2, str(tmp_path / "new"))
    for i, (start, stop) in enumerate([(0, 50), (50, 100)]):
        table = ImportanceTable(TableConfig(start, stop, alpha=0.1))
        restore_table(table, str(tmp_path / "new" / f"shard-{i}"))
        np.testing.assert_array_equal(table.importance(np.arange(start, stop)), q[start:stop])
        assert table.epoch == 1 and table.stats().seen == 50


def test_round_trip_on_fsspec_memory() -> None:
    config = TableConfig(0, 64)
    table = busy_table(config)
    save_table(table, "memory://isloader-test/snap")
    restored = ImportanceTable(config)
    restore_table(restored, "memory://isloader-test/snap")
    assert_same_state(table, restored)
