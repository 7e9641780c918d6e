"""``ShardCatalog``: where every sample lives, so a sampled subset can be read alone.

``isloader index URI`` lists the shards under ``URI`` in a stable (sorted) order and
writes ``_isloader_index.json`` beside them. Per shard it records the path, size and
etag or mtime (to detect a shard that changed after indexing) and the row count;
for Parquet each row group's row count; for WebDataset tars each sample's key and
the byte offset and length of each of its members (``000123.jpg`` and
``000123.cls`` form sample ``000123``, the webdataset convention).

Global indices run over the shards in catalog order, rows in file order.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import numpy as np

from isloader.errors import CorruptShardError, IndexOutOfRangeError, InvalidArgumentError

__all__ = ["ShardCatalog", "ShardEntry", "INDEX_NAME", "shard_fingerprint"]

INDEX_NAME = "_isloader_index.json"
INDEX_VERSION = 1
_SUFFIXES = {"parquet": (".parquet", ".pq"), "webdataset": (".tar",)}


@dataclass
class ShardEntry:
    """One shard file as indexed."""

    path: str  # relative to the catalog root
    size: int
    fingerprint: str  # etag, or mtime where the storage has no etag
    num_rows: int
    row_groups: list[int] = field(default_factory=list)  # parquet: rows per row group
    # webdataset: per sample [key, [[ext, offset, length], ...]]
    samples: list[list[Any]] = field(default_factory=list)


def shard_fingerprint(info: dict[str, Any]) -> str:
    """An identity of a file's contents as storage reports it: etag, else mtime."""
    for key in ("ETag", "etag", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _webdataset_split(name: str) -> tuple[str, str] | None:
    """``dir/000123.seg.png`` -> (``dir/000123``, ``seg.png``); None for names without one."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:
        return None
    return name[:dot], name[dot + 1 :]


class ShardCatalog:
    """The index of a dataset's shards; maps global indices to shard locations."""

    def __init__(
        self,
        root: str,
        format: str,
        shards: list[ShardEntry],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if format not in _SUFFIXES:
            raise InvalidArgumentError(f"unknown shard format {format!r}")
        self.root = root.rstrip("/")
        self.format = format
        self.shards = shards
        self.storage_options = dict(storage_options or {})
        rows = np.array([s.num_rows for s in shards], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(rows)])
        # Units are what a reader fetches as a whole: row groups, or tar samples.
        if format == "parquet":
            per_unit = [n for s in shards for n in s.row_groups]
            self.unit_shard = np.repeat(np.arange(len(shards)), [len(s.row_groups) for s in shards])
            local = [i for s in shards for i in range(len(s.row_groups))]
            self.unit_local = np.array(local, dtype=np.int64)
            self.unit_starts = np.concatenate([[0], np.cumsum(per_unit)]).astype(np.int64)
        else:
            self.unit_shard = np.repeat(np.arange(len(shards)), rows)
            self.unit_local = np.concatenate(
                [np.arange(n) for n in rows] or [np.zeros(0, np.int64)]
            ).astype(np.int64)
            self.unit_starts = np.arange(len(self.unit_shard) + 1, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def num_samples(self) -> int:
        return len(self)

    def uri(self, shard: int) -> str:
        return f"{self.root}/{self.shards[shard].path}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.root, **self.storage_options)[0]

    def units_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each global index its unit (row group / tar sample) and row within it."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexOutOfRangeError(f"index {bad} outside the catalog's [0, {len(self)})")
        unit = np.searchsorted(self.unit_starts, idx, side="right") - 1
        return unit, idx - self.unit_starts[unit]

    # -- building and persistence --------------------------------------------------

    @classmethod
    def build(
        cls,
        uri: str,
        *,
        format: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardCatalog:
        """List and index the shards under ``uri`` (format guessed from the suffixes)."""
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        root = root.rstrip("/")
        files = sorted(
            (info for info in fs.find(root, detail=True).values() if info["type"] == "file"),
            key=lambda info: info["name"],
        )
        if format is None:
            for name, suffixes in _SUFFIXES.items():
                if any(f["name"].endswith(suffixes) for f in files):
                    format = name
                    break
            else:
                raise InvalidArgumentError(f"no .parquet or .tar shards under {uri}")
        suffixes = _SUFFIXES[format]
        shards = []
        for info in files:
            if not info["name"].endswith(suffixes):
                continue
            rel = info["name"][len(root) :].lstrip("/")
            entry = ShardEntry(rel, int(info["size"]), shard_fingerprint(info), 0)
            full = f"{uri.rstrip('/')}/{rel}"
            if format == "parquet":
                _index_parquet(fs, info["name"], entry, full)
            else:
                _index_tar(fs, info["name"], entry, full)
            shards.append(entry)
        if not shards:
            raise InvalidArgumentError(f"no {format} shards under {uri}")
        return cls(uri, format, shards, storage_options)

    def save(self, output: str | None = None) -> str:
        """Write the index (default ``<root>/_isloader_index.json``); returns where."""
        target = output or f"{self.root}/{INDEX_NAME}"
        document = {
            "version": INDEX_VERSION,
            "format": self.format,
            "shards": [asdict(s) for s in self.shards],
        }
        with fsspec.open(target, "w", **self.storage_options) as f:
            json.dump(document, f, separators=(",", ":"))
        return target

    @classmethod
    def load(
        cls,
        uri: str,
        *,
        index: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardCatalog:
        """Load the index of the dataset at ``uri`` (from ``index`` when it lives elsewhere)."""
        target = index or f"{uri.rstrip('/')}/{INDEX_NAME}"
        try:
            with fsspec.open(target, "r", **(storage_options or {})) as f:
                document = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no index at {target}: run `isloader index {uri}` first"
            ) from None
        if document.get("version") != INDEX_VERSION:
            raise InvalidArgumentError(f"{target}: index version {document.get('version')}")
        shards = [ShardEntry(**s) for s in document["shards"]]
        return cls(uri, document["format"], shards, storage_options)

    @classmethod
    def open(cls, uri: str, storage_options: dict[str, Any] | None = None) -> ShardCatalog:
        """Load the index beside the shards, building and saving it when there is none."""
        try:
            return cls.load(uri, storage_options=storage_options)
        except FileNotFoundError:
            catalog = cls.build(uri, storage_options=storage_options)
            catalog.save()
            return catalog


def _index_parquet(fs: fsspec.AbstractFileSystem, path: str, entry: ShardEntry, uri: str) -> None:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
    except Exception as exc:
        raise CorruptShardError(uri, f"not a readable Parquet file ({exc})") from exc
    entry.row_groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    entry.num_rows = int(sum(entry.row_groups))


def _index_tar(fs: fsspec.AbstractFileSystem, path: str, entry: ShardEntry, uri: str) -> None:
    samples: dict[str, list[list[Any]]] = {}
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                split = _webdataset_split(member.name)
                if split is None:
                    continue
                key, ext = split
                samples.setdefault(key, []).append([ext, member.offset_data, member.size])
    except tarfile.TarError as exc:
        raise CorruptShardError(uri, f"not a readable uncompressed tar ({exc})") from exc
    entry.samples = [[key, members] for key, members in samples.items()]
    entry.num_rows = len(entry.samples)
