"""The demo's datasets: MNIST-1D (made offline by the ``mnist1d`` package) and
scikit-learn's digits, as Parquet shards, optionally as WebDataset tars, optionally
with large rows.

Large rows make loading matter: ``row_bytes`` stores each sample's 40 features as a
``raw`` blob of about that many bytes (float32 features, each repeated with noise),
which the read task's ``decode_raw`` transform averages back to the 40 features, as
an image would be decoded. The model sees the same inputs either way.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEMO_FORMATS",
    "DemoFormat",
    "make_mnist1d",
    "make_digits",
    "decode_raw",
    "decode_npy",
    "publish",
    "write_split",
    "TestSet",
]

TestSet = tuple[np.ndarray, np.ndarray]
_FEATURES = 40


def _features(x: np.ndarray, row_bytes: int, rng: np.random.Generator) -> np.ndarray:
    """Each row's features repeated to about ``row_bytes`` bytes, with small noise."""
    repeat = max(1, row_bytes // (4 * x.shape[1]))
    raw = np.repeat(x, repeat, axis=1).astype(np.float32)
    raw += rng.normal(0, 0.01, raw.shape).astype(np.float32)
    return raw


def _to_features(raw: np.ndarray) -> np.ndarray:
    if raw.shape[1] == _FEATURES:
        return raw.astype(np.float32, copy=False)
    return raw.reshape(len(raw), _FEATURES, -1).mean(axis=2, dtype=np.float32)


def decode_raw(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The read task's transform for large rows: ``raw`` blobs back to the 40 features."""
    blobs = columns.pop("raw")
    raw = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
    columns["x"] = _to_features(raw)
    return columns


def _parquet_shard(path: Path, x: np.ndarray, y: np.ndarray, first: int, group: int) -> None:
    """One Parquet shard in the layout ``isloader convert`` writes (small pages, a page
    index): 40 features as a list column, larger rows as ``raw`` blobs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from isloader.data.convert import writer_options

    if x.shape[1] == _FEATURES:
        table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32())), "y": y})
    else:
        table = pa.table({"raw": pa.array([row.tobytes() for row in x], pa.binary()), "y": y})
    pq.write_table(
        table, path.with_suffix(".parquet"), row_group_size=group, compression="none",
        **writer_options(table),
    )  # fmt: skip


def _tar_shard(path: Path, x: np.ndarray, y: np.ndarray, first: int, group: int) -> None:
    _write_tar(path.with_suffix(".tar"), x, y, first)


@dataclass(frozen=True)
class DemoFormat:
    """How the demo writes, names, reads and decodes its rows in one shard format."""

    label: str
    prefix: str
    columns: tuple[str, ...]
    decode: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    write: Callable[[Path, np.ndarray, np.ndarray, int, int], None]


def _write_shards(
    out: Path, x: np.ndarray, y: np.ndarray, shards: int, rows_per_group: int, fmt: str
) -> None:
    from isloader.data.catalog import ShardCatalog

    spec = DEMO_FORMATS[fmt]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*"):
        old.unlink()
    bounds = np.linspace(0, len(y), shards + 1).astype(int)
    for s in range(shards):
        rows = slice(bounds[s], bounds[s + 1])
        spec.write(out / f"{spec.prefix}-{s:03d}", x[rows], y[rows], bounds[s], rows_per_group)
    ShardCatalog.build(str(out)).save()


def _write_tar(path: Path, x: np.ndarray, y: np.ndarray, first: int) -> None:
    import webdataset as wds

    from isloader.data.formats.webdataset import TAR_MTIME

    # an integer mtime, as a user's tars have: a float one makes tarfile add a PAX header
    # to every member (8 KiB per 4 KB sample)
    with open(path, "wb") as f, wds.TarWriter(f, mtime=TAR_MTIME) as sink:
        for i, (row, label) in enumerate(zip(x, y, strict=True)):
            buffer = io.BytesIO()
            np.save(buffer, row)
            sink.write({"__key__": f"{first + i:08d}", "npy": buffer.getvalue(), "cls": int(label)})


def decode_npy(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The read task's transform for the tar variant: ``.npy`` members to features."""
    raw = np.stack([np.load(io.BytesIO(b)) for b in columns.pop("npy")])
    columns.pop("__key__", None)
    columns["x"] = _to_features(raw)
    columns["y"] = columns.pop("cls").astype(np.int64)
    return columns


DEMO_FORMATS: dict[str, DemoFormat] = {}  # filled below, once the decoders exist


def make_mnist1d(
    directory: Path,
    train: int,
    test: int,
    seed: int = 0,
    *,
    row_bytes: int = 0,
    rows_per_group: int = 1024,
    fmt: str = "parquet",
    shards: int | None = None,
) -> tuple[str, TestSet]:
    """MNIST-1D as shards under ``directory/train`` (cached by its settings), and the
    test set. Large rows go in 20 shards (about 6 MB each at 30k rows of 4 KB: shards
    small enough that a cache of a quarter of the data holds several, as Mosaic
    Streaming requires), small ones in 8."""
    from mnist1d.data import get_dataset_args, make_dataset

    train_dir = directory / "train"
    test_file = directory / "test.npz"
    stamp = directory / "dataset.json"
    config = {
        "layout": 4,
        "train": train,
        "test": test,
        "seed": seed,
        "row_bytes": row_bytes,
        "rows_per_group": rows_per_group,
        "format": fmt,
        "shards": shards,
    }
    if not (stamp.exists() and json.loads(stamp.read_text()) == config):
        args = get_dataset_args()
        args.num_samples, args.train_split, args.seed = train + test, train / (train + test), seed
        data = make_dataset(args)  # generated locally; never the download path
        x = data["x"].astype(np.float32)
        if row_bytes:
            x = _features(x, row_bytes, np.random.default_rng(seed))
        count = shards or (20 if row_bytes else 8)
        _write_shards(train_dir, x, data["y"].astype(np.int64), count, rows_per_group, fmt)
        np.savez(test_file, x=data["x_test"].astype(np.float32), y=data["y_test"])
        stamp.write_text(json.dumps(config))
    test_set = np.load(test_file)
    return str(train_dir), (test_set["x"], test_set["y"].astype(np.int64))


def make_digits(directory: Path) -> tuple[str, TestSet]:
    """scikit-learn's digits (1437 train / 360 test), one shard of 128-row groups."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1437], order[1437:]
    out = directory / "train"
    import pyarrow as pa
    import pyarrow.parquet as pq

    from isloader.data.catalog import ShardCatalog

    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": pa.array(list(x[train]), pa.list_(pa.float32())), "y": y[train]})
    pq.write_table(table, out / "part-000.parquet", row_group_size=128)
    ShardCatalog.build(str(out)).save()
    return str(out), (x[test], y[test].astype(np.int64))


def publish(local: str, uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """Copy a local dataset's shards to ``uri`` (any fsspec URI) and index them there."""
    import fsspec

    from isloader.data.catalog import ShardCatalog

    options = storage_options or {}
    fs, root = fsspec.core.url_to_fs(uri, **options)
    fs.makedirs(root, exist_ok=True)
    for shard in sorted(Path(local).iterdir()):
        if shard.suffix in (".parquet", ".tar"):
            fs.put_file(str(shard), f"{root.rstrip('/')}/{shard.name}")
    ShardCatalog.build(uri, storage_options=options).save()
    return uri


def write_split(table: Any, cut: int, out: Path) -> tuple[str, TestSet]:
    """Rows ``[0, cut)`` of a ``x``/``y`` table as shards under ``out`` (indexed) and rows
    ``[cut, N)`` as a held-out set: a validation split carved from training rows."""
    import pyarrow.parquet as pq

    from isloader.data.catalog import ShardCatalog
    from isloader.data.convert import writer_options

    held = table.slice(cut)
    x = np.stack(held.column("x").to_numpy(zero_copy_only=False)).astype(np.float32)
    kept = table.select(["x", "y"]).slice(0, cut)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*"):
        old.unlink()
    pq.write_table(kept, out / "part-000.parquet", row_group_size=1024, **writer_options(kept))
    ShardCatalog.build(str(out)).save()
    return str(out), (x, held.column("y").to_numpy().astype(np.int64))


DEMO_FORMATS.update(
    parquet=DemoFormat("Parquet", "part", ("raw", "y"), decode_raw, _parquet_shard),
    webdataset=DemoFormat("WebDataset tars", "shard", ("npy", "cls"), decode_npy, _tar_shard),
)
