"""``isloader export``: the kept set as a dataset of its own.

Online pruning decides, for every sample, whether it still teaches the model; the store
holds that decision (``q = 0`` for pruned samples). ``export_kept`` writes the kept rows
as new shards in the source's format, so the next run, another team or a plain
``DataLoader`` reads the smaller set instead of the full one:

- which rows: the store's active set, or the rows holding the top ``top_mass`` share of
  the mass (highest ``q`` first); ``min_per_label`` then keeps at least that many rows
  of every label (adding, where pruning left fewer, that label's rows of highest ``q``,
  then random ones);
- how: rows in a random order (seeded), with their ``q`` and their index in the source
  as extra columns ``q`` and ``source_index`` (tars: members ``q.txt`` and
  ``source_index.txt``, keyed by the source index), each shard written by its format
  (``ShardFormat.write_shard``: Parquet in the layout ``isloader convert`` writes, in row
  groups of ``rows_per_group``; tars with integer mtimes, as webdataset writes them);
- a manifest (``_isloader_export.json``) records the source catalog's identity, the
  store's epoch and counts, the prune threshold those imply, and the rule used;
  ``verify_export`` checks it against the source as it is now.

The output is indexed (``ShardCatalog``) and reads as is with isloader, pyarrow, Ray
Data's ``read_parquet`` and webdataset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from isloader.data.catalog import ShardCatalog, shard_fingerprint
from isloader.data.reader import ShardReader
from isloader.errors import InvalidArgumentError
from isloader.store.api import ImportanceStore
from isloader.store.table import prune_threshold

__all__ = [
    "ExportManifest",
    "export_kept",
    "verify_export",
    "kept_indices",
    "store_q",
    "label_column_of",
    "column_names",
    "MANIFEST_NAME",
    "LABEL_NAMES",
]

MANIFEST_NAME = "_isloader_export.json"
LABEL_NAMES = ("y", "label", "labels", "cls", "class", "target")
_LOOKUP_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportManifest:
    """What an export holds and where it came from."""

    source: str
    source_identity: str
    source_rows: int
    format: str
    rows: int
    store_epoch: int  # epochs the store had completed (TableStats.epoch)
    store_active: int
    store_total_mass: float
    prune_k: float
    prune_threshold: float
    rule: str  # "active", or "top_mass=<f>"; "+min_per_label=<k>"
    kept_mass: float  # the share of the store's mass the exported rows hold
    seed: int
    shards: list[str]


def store_q(store: ImportanceStore) -> np.ndarray:
    """Every sample's current ``q`` (0 for pruned ones), looked up in chunks."""
    n = store.num_samples
    return np.concatenate(
        [store.lookup(np.arange(a, min(a + _LOOKUP_CHUNK, n))) for a in range(0, n, _LOOKUP_CHUNK)]
        or [np.zeros(0)]
    )


def kept_indices(
    q: np.ndarray,
    *,
    top_mass: float | None = None,
    labels: np.ndarray | None = None,
    min_per_label: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Sorted indices of the rows to keep (see the module docstring); ``q`` is the
    store's, 0 for pruned rows."""
    q = np.asarray(q, float)
    if top_mass is None:
        keep = q > 0
    else:
        if not 0 < top_mass <= 1:
            raise InvalidArgumentError(f"top_mass must be in (0, 1], got {top_mass}")
        order = np.argsort(-q, kind="stable")
        mass = np.cumsum(q[order])
        count = int(np.searchsorted(mass, top_mass * mass[-1] * (1 - 1e-12))) + 1 if len(q) else 0
        keep = np.zeros(len(q), bool)
        keep[order[: min(count, int((q > 0).sum()))]] = True
    if min_per_label:
        if labels is None:
            raise InvalidArgumentError("min_per_label needs a label column")
        rng = np.random.default_rng(seed)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            short = min_per_label - int(keep[rows].sum())
            if short <= 0:
                continue
            left = rows[~keep[rows]]
            jitter = rng.random(len(left))  # ties (pruned rows, q = 0) in random order
            add = left[np.lexsort((jitter, -q[left]))[:short]]
            keep[add] = True
    return np.flatnonzero(keep)


def export_kept(
    dataset: str | ShardCatalog,
    store: ImportanceStore,
    output: str,
    *,
    top_mass: float | None = None,
    min_per_label: int = 0,
    label_column: str | None = None,
    rows_per_group: int = 1024,
    rows_per_shard: int = 65536,
    prune_k: float = 2.0,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> ExportManifest:
    """Write the kept rows of ``dataset`` to ``output`` (see the module docstring) and
    return its manifest.

    Raises:
        InvalidArgumentError: sizes out of range, a store of another size, a missing
            label column, or an output that already holds shards.
    """
    catalog = (
        dataset
        if isinstance(dataset, ShardCatalog)
        else ShardCatalog.open(dataset, storage_options)
    )
    if store.num_samples != len(catalog):
        raise InvalidArgumentError(
            f"the store holds {store.num_samples} samples, the dataset {len(catalog)}"
        )
    if rows_per_group < 1 or rows_per_shard < rows_per_group:
        raise InvalidArgumentError("need 1 <= rows_per_group <= rows_per_shard")
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    if fs.exists(root) and fs.ls(root):
        raise InvalidArgumentError(f"{output} is not empty: export writes into a new folder")
    stats = store.stats()
    q = store_q(store)
    reader = ShardReader(catalog, memory_bytes=0, cache_dir="")
    labels = None
    if min_per_label:
        column = label_column or label_column_of(column_names(catalog))
        if column is None:
            raise InvalidArgumentError("no label column among the rows: name it (label_column)")
        every_unit = np.arange(catalog.num_units)  # a streaming pass, in row order
        labels = reader.read_units(every_unit, [column]).column(column).to_numpy()
    keep = kept_indices(q, top_mass=top_mass, labels=labels, min_per_label=min_per_label,
                        seed=seed)  # fmt: skip
    order = keep[np.random.default_rng(seed).permutation(len(keep))]
    fs.makedirs(root, exist_ok=True)
    shards = []
    try:
        for number, start in enumerate(range(0, len(order), rows_per_shard)):
            rows = order[start : start + rows_per_shard]
            table = reader.read(rows)  # the rows in this (random) order, plus ``index``
            table = table.rename_columns([*table.column_names[:-1], "source_index"])
            table = table.append_column("q", pa.array(q[rows], pa.float64()))
            if "__key__" in table.column_names:  # tars: the source index keys the sample
                keys = pa.array([f"{i:010d}" for i in rows])
                table = table.set_column(table.column_names.index("__key__"), "__key__", keys)
            shards.append(f"part-{number:05d}{catalog.codec.suffixes[0]}")
            catalog.codec.write_shard(fs, f"{root}/{shards[-1]}", table, rows_per_group)
    finally:
        reader.close()
    rule = "active" if top_mass is None else f"top_mass={top_mass:g}"
    if min_per_label:
        rule += f"+min_per_label={min_per_label}"
    manifest = ExportManifest(
        source=catalog.root, source_identity=catalog.identity, source_rows=len(catalog),
        format=catalog.format, rows=len(order), store_epoch=stats.epoch,
        store_active=stats.active, store_total_mass=stats.total_mass, prune_k=prune_k,
        prune_threshold=prune_threshold(stats.total_mass, max(stats.active, 1), prune_k),
        rule=rule, kept_mass=float(q[keep].sum() / max(q.sum(), 1e-300)), seed=seed,
        shards=shards,
    )  # fmt: skip
    with fs.open(f"{root}/{MANIFEST_NAME}", "w") as f:
        json.dump(asdict(manifest), f, indent=1)
    ShardCatalog.build(output, format=catalog.format, storage_options=storage_options).save()
    return manifest


def verify_export(output: str, storage_options: dict[str, Any] | None = None) -> ExportManifest:
    """The export's manifest, checked against its source and its own shards.

    Raises:
        InvalidArgumentError: the source changed since the export (another catalog, or a
            shard whose size or etag/mtime differs from what was indexed) or the export's
            shards hold another number of rows than the manifest says.
    """
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    with fs.open(f"{root}/{MANIFEST_NAME}") as f:
        manifest = ExportManifest(**json.load(f))
    source = ShardCatalog.open(manifest.source, storage_options)
    if source.identity != manifest.source_identity or len(source) != manifest.source_rows:
        raise InvalidArgumentError(
            f"{manifest.source} changed since it was exported (its identity differs)"
        )
    source_fs = source.filesystem()
    for k, entry in enumerate(source.shards):
        info = source_fs.info(source_fs._strip_protocol(source.uri(k)))
        if int(info["size"]) != entry.size or shard_fingerprint(info) != entry.fingerprint:
            raise InvalidArgumentError(f"{source.uri(k)} changed since it was exported")
    exported = ShardCatalog.open(output, storage_options)
    if len(exported) != manifest.rows:
        raise InvalidArgumentError(f"{output} holds {len(exported)} rows, not {manifest.rows}")
    return manifest


def label_column_of(names: list[str]) -> str | None:
    """The first of ``names`` that is named like a label (``LABEL_NAMES``), else None."""
    return next((c for c in LABEL_NAMES if c in names), None)


def column_names(catalog: ShardCatalog) -> list[str]:
    """The names of the columns a read of ``catalog`` returns (read from its first row)."""
    reader = ShardReader(catalog, memory_bytes=0, cache_dir="")
    try:
        return reader.read(np.array([0])).column_names
    finally:
        reader.close()
