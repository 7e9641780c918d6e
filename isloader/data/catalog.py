"""``ShardCatalog``: where every sample lives, so a sampled subset can be read alone.

``isloader index URI`` lists the shards under ``URI`` in a stable (sorted) order and
writes the index beside them: ``_isloader_index.json`` (the shard list: path, size,
etag or mtime, rows) and ``_isloader_index.npz`` (the columnar arrays). Global
indices run over the shards in catalog order, rows in file order.

The arrays are what a reader needs and nothing per sample that Python must hold:

- **units**, contiguous index ranges read as one piece: a Parquet row group, or a
  run of consecutive samples of one tar (up to ``unit_bytes`` / ``unit_samples``).
  ``unit_bounds`` (int64, units + 1), ``unit_shard`` (int32), ``unit_local`` (int32:
  the row group number, Parquet only);
- for tars, each sample's byte span ``sample_offset`` (int64) and ``sample_length``
  (uint32): from its first member's header to the end of its last member's padded
  data. A sample's members are contiguous (the webdataset convention), so a span is
  one range request and the member layout comes from the headers inside it.

That is 12 bytes per tar sample and a few bytes per row group; the arrays pickle
out-of-band, so Ray shares them zero-copy with every worker on a node.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np

from isloader.errors import CorruptShardError, IndexOutOfRangeError, InvalidArgumentError
from isloader.store.records import UnitLayout

__all__ = ["ShardCatalog", "ShardEntry", "INDEX_NAME", "ARRAYS_NAME", "shard_fingerprint"]

INDEX_NAME = "_isloader_index.json"
ARRAYS_NAME = "_isloader_index.npz"
INDEX_VERSION = 2
_SUFFIXES = {"parquet": (".parquet", ".pq"), "webdataset": (".tar",)}
_BLOCK = 512


@dataclass(frozen=True)
class ShardEntry:
    """One shard file as indexed."""

    path: str  # relative to the catalog root
    size: int
    fingerprint: str  # etag, or mtime where the storage has no etag
    num_rows: int


def shard_fingerprint(info: dict[str, Any]) -> str:
    """An identity of a file's contents as storage reports it: etag, else mtime."""
    for key in ("ETag", "etag", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _check_relative(path: str) -> str:
    """A shard path must stay under the dataset root: no ``..``, no absolute path."""
    norm = posixpath.normpath(path)
    if not path or path.startswith("/") or norm == ".." or norm.startswith("../"):
        raise InvalidArgumentError(f"catalog path {path!r} leaves the dataset root")
    return path


class ShardCatalog:
    """The index of a dataset's shards; maps global indices to units and bytes.

    Args:
        root: the dataset URI (any fsspec URI).
        format: ``"parquet"`` or ``"webdataset"``.
        shards: one ``ShardEntry`` per shard, in global order.
        arrays: the columnar arrays described in the module docstring.
        storage_options: passed to fsspec for every access.
    """

    def __init__(
        self,
        root: str,
        format: str,
        shards: list[ShardEntry],
        arrays: dict[str, np.ndarray],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if format not in _SUFFIXES:
            raise InvalidArgumentError(f"unknown shard format {format!r}")
        self.root = root.rstrip("/")
        self.format = format
        for entry in shards:
            _check_relative(entry.path)
        self.shards = list(shards)
        self.storage_options = dict(storage_options or {})
        self.unit_bounds = np.asarray(arrays["unit_bounds"], dtype=np.int64)
        self.unit_shard = np.asarray(arrays["unit_shard"], dtype=np.int32)
        self.unit_local = np.asarray(arrays.get("unit_local", np.zeros(0)), dtype=np.int32)
        self.sample_offset = np.asarray(arrays.get("sample_offset", np.zeros(0)), dtype=np.int64)
        self.sample_length = np.asarray(arrays.get("sample_length", np.zeros(0)), dtype=np.uint32)
        rows = np.array([s.num_rows for s in self.shards], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._check()

    def _check(self) -> None:
        b = self.unit_bounds
        units = len(b) - 1
        if units < 0 or b[0] != 0 or (np.diff(b) <= 0).any() or b[-1] != self.shard_starts[-1]:
            raise InvalidArgumentError(f"{self.root}: unit bounds do not tile the shards' rows")
        if len(self.unit_shard) != units or (
            units and (self.unit_shard.min() < 0 or self.unit_shard.max() >= len(self.shards))
        ):
            raise InvalidArgumentError(f"{self.root}: unit shard numbers are inconsistent")
        if self.format == "webdataset" and len(self.sample_offset) != len(self):
            raise InvalidArgumentError(f"{self.root}: sample spans do not cover every sample")

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def num_samples(self) -> int:
        return len(self)

    @property
    def num_units(self) -> int:
        return len(self.unit_bounds) - 1

    @property
    def layout(self) -> UnitLayout:
        """The units as the store knows them (for locality-aware draws and the cache)."""
        return UnitLayout(self.unit_bounds)

    @property
    def unit_rows(self) -> np.ndarray:
        return np.diff(self.unit_bounds)

    @property
    def identity(self) -> str:
        """A digest of what was indexed: root, format and every shard's fingerprint."""
        text = json.dumps([self.root, self.format, [asdict(s) for s in self.shards]])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def nbytes(self) -> int:
        """Bytes of the catalog's arrays (its memory, apart from the shard list)."""
        return sum(
            a.nbytes
            for a in (
                self.unit_bounds,
                self.unit_shard,
                self.unit_local,
                self.sample_offset,
                self.sample_length,
            )
        )

    def uri(self, shard: int) -> str:
        return f"{self.root}/{self.shards[shard].path}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.root, **self.storage_options)[0]

    def units_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each global index its unit and its row within the unit."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexOutOfRangeError(f"index {bad} outside the catalog's [0, {len(self)})")
        unit = np.searchsorted(self.unit_bounds, idx, side="right") - 1
        return unit, idx - self.unit_bounds[unit]

    def unit_span(self, unit: int) -> tuple[int, int]:
        """``[start, end)`` bytes of a tar unit in its shard."""
        first, last = self.unit_bounds[unit], self.unit_bounds[unit + 1] - 1
        end = int(self.sample_offset[last]) + int(self.sample_length[last])
        return int(self.sample_offset[first]), end

    def unit_bytes(self) -> np.ndarray:
        """Approximate stored bytes of each unit (for sizing caches and windows)."""
        if self.format == "webdataset":
            first, last = self.unit_bounds[:-1], self.unit_bounds[1:] - 1
            return self.sample_offset[last] + self.sample_length[last] - self.sample_offset[first]
        sizes = np.array([s.size for s in self.shards], dtype=np.float64)
        rows = np.maximum(np.array([s.num_rows for s in self.shards], dtype=np.float64), 1)
        return (sizes / rows)[self.unit_shard] * self.unit_rows

    # -- building ------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        uri: str,
        *,
        format: str | None = None,
        storage_options: dict[str, Any] | None = None,
        unit_bytes: int = 1 << 20,
        unit_samples: int = 256,
        workers: int = 8,
    ) -> ShardCatalog:
        """List and index the shards under ``uri`` (format guessed from the suffixes).

        Shards are indexed concurrently (``workers`` threads: the work is reading
        footers and tar headers); a tar is walked header by header, never held whole.
        """
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
        if format not in _SUFFIXES:
            raise InvalidArgumentError(f"unknown shard format {format!r}")
        files = [f for f in files if f["name"].endswith(_SUFFIXES[format])]
        if not files:
            raise InvalidArgumentError(f"no {format} shards under {uri}")
        base = uri.rstrip("/")

        def index(info: dict[str, Any]) -> tuple[ShardEntry, dict[str, np.ndarray]]:
            rel = info["name"][len(root) :].lstrip("/")
            full = f"{base}/{rel}"
            if format == "parquet":
                arrays = _index_parquet(fs, info["name"], full)
                rows = int(arrays["rows"].sum())
            else:
                arrays = _index_tar(fs, info["name"], full)
                rows = len(arrays["offset"])
            return ShardEntry(rel, int(info["size"]), shard_fingerprint(info), rows), arrays

        with ThreadPoolExecutor(max(1, min(workers, len(files)))) as pool:
            indexed = list(pool.map(index, files))
        shards = [entry for entry, _ in indexed]
        if format == "parquet":
            arrays = _parquet_units([a["rows"] for _, a in indexed])
        else:
            arrays = _tar_units(
                [a["offset"] for _, a in indexed],
                [a["length"] for _, a in indexed],
                unit_bytes,
                unit_samples,
            )
        return cls(uri, format, shards, arrays, storage_options)

    # -- persistence -----------------------------------------------------------------

    def save(self, output: str | None = None) -> str:
        """Write the index (default beside the shards); returns the JSON's path.

        The arrays go first; the JSON, written last, names their digest, so a reader
        never pairs a new shard list with old arrays.
        """
        target = output or f"{self.root}/{INDEX_NAME}"
        arrays_target = _arrays_path(target)
        buffer = io.BytesIO()
        np.savez(buffer, **self._arrays())
        data = buffer.getvalue()
        with fsspec.open(arrays_target, "wb", **self.storage_options) as f:
            f.write(data)
        document = {
            "version": INDEX_VERSION,
            "format": self.format,
            "arrays": posixpath.basename(arrays_target),
            "arrays_sha256": hashlib.sha256(data).hexdigest(),
            "shards": [asdict(s) for s in self.shards],
        }
        with fsspec.open(target, "w", **self.storage_options) as f:
            json.dump(document, f, separators=(",", ":"))
        return target

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"unit_bounds": self.unit_bounds, "unit_shard": self.unit_shard}
        if self.format == "parquet":
            arrays["unit_local"] = self.unit_local
        else:
            arrays["sample_offset"] = self.sample_offset
            arrays["sample_length"] = self.sample_length
        return arrays

    @classmethod
    def load(
        cls,
        uri: str,
        *,
        index: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardCatalog:
        """Load the index of the dataset at ``uri`` (from ``index`` when it lives elsewhere).

        Version 1 indexes (one JSON document) of Parquet datasets are converted as they
        load; those of tar datasets lack the sample spans and must be rebuilt.
        """
        options = storage_options or {}
        target = index or f"{uri.rstrip('/')}/{INDEX_NAME}"
        try:
            with fsspec.open(target, "r", **options) as f:
                document = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no index at {target}: run `isloader index {uri}` first"
            ) from None
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"{target}: not a readable index ({exc})") from None
        version = document.get("version")
        if version == 1:
            return cls._from_v1(uri, target, document, options)
        if version != INDEX_VERSION:
            raise InvalidArgumentError(
                f"{target}: index version {version} (this isloader reads 1 and 2); "
                f"run `isloader index {uri}` again"
            )
        arrays_target = posixpath.join(posixpath.dirname(target), document["arrays"])
        with fsspec.open(arrays_target, "rb", **options) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != document.get("arrays_sha256"):
            raise InvalidArgumentError(
                f"{arrays_target} does not match {target}: run `isloader index {uri}` again"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        shards = [ShardEntry(**s) for s in document["shards"]]
        return cls(uri, document["format"], shards, arrays, options)

    @classmethod
    def _from_v1(
        cls, uri: str, target: str, document: dict[str, Any], options: dict[str, Any]
    ) -> ShardCatalog:
        if document.get("format") != "parquet":
            raise InvalidArgumentError(
                f"{target} is a version 1 tar index, without sample spans: "
                f"run `isloader index {uri}` to rebuild it"
            )
        entries = document["shards"]
        shards = [
            ShardEntry(s["path"], s["size"], s["fingerprint"], s["num_rows"]) for s in entries
        ]
        arrays = _parquet_units([np.asarray(s["row_groups"], np.int64) for s in entries])
        return cls(uri, "parquet", shards, arrays, options)

    @classmethod
    def open(cls, uri: str, storage_options: dict[str, Any] | None = None) -> ShardCatalog:
        """Load the index beside the shards, building and saving it when there is none."""
        try:
            return cls.load(uri, storage_options=storage_options)
        except FileNotFoundError:
            catalog = cls.build(uri, storage_options=storage_options)
            catalog.save()
            return catalog


def _arrays_path(index_path: str) -> str:
    if index_path.endswith(".json"):
        return index_path[: -len(".json")] + ".npz"
    return index_path + ".npz"


def _parquet_units(rows_per_group: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Units are row groups; empty ones hold nothing and are left out."""
    kept = [np.flatnonzero(r > 0).astype(np.int32) for r in rows_per_group]
    per_unit = np.concatenate([r[r > 0] for r in rows_per_group] or [np.zeros(0, np.int64)]).astype(
        np.int64
    )
    return {
        "unit_bounds": np.concatenate([[0], np.cumsum(per_unit)]).astype(np.int64),
        "unit_shard": np.repeat(np.arange(len(kept), dtype=np.int32), [len(k) for k in kept]),
        "unit_local": np.concatenate(kept or [np.zeros(0, np.int32)]),
    }


def _tar_units(
    offsets: list[np.ndarray], lengths: list[np.ndarray], unit_bytes: int, unit_samples: int
) -> dict[str, np.ndarray]:
    """Runs of consecutive samples of one tar, each at most ``unit_bytes`` (or a single
    larger sample) and ``unit_samples`` samples."""
    bounds, shard_of = [0], []
    position = 0
    for shard, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        start = 0
        while start < len(offset):
            limit = offset[start] + unit_bytes
            ends = offset + length
            stop = int(np.searchsorted(ends, limit, side="right"))
            stop = min(max(stop, start + 1), start + unit_samples, len(offset))
            bounds.append(position + stop)
            shard_of.append(shard)
            start = stop
        position += len(offset)
    return {
        "unit_bounds": np.array(bounds, dtype=np.int64),
        "unit_shard": np.array(shard_of, dtype=np.int32),
        "sample_offset": np.concatenate(offsets or [np.zeros(0, np.int64)]).astype(np.int64),
        "sample_length": np.concatenate(lengths or [np.zeros(0, np.uint32)]).astype(np.uint32),
    }


def _index_parquet(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
    except Exception as exc:
        raise CorruptShardError(uri, f"not a readable Parquet file ({exc})") from exc
    rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    return {"rows": np.array(rows, dtype=np.int64)}


def webdataset_split(name: str) -> tuple[str, str] | None:
    """``dir/000123.seg.png`` -> (``dir/000123``, ``seg.png``); None for names without one."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:
        return None
    return name[:dot], name[dot + 1 :]


def _tar_members(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[tarfile.TarInfo]:
    """The file members of a tar, one header at a time (none kept)."""
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        while (member := tar.next()) is not None:
            tar.members.clear()  # tarfile keeps every header otherwise
            if member.isfile():
                yield member


def _index_tar(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> dict[str, np.ndarray]:
    offsets: list[int] = []
    ends: list[int] = []
    key = None
    keys: set[str] = set()
    try:
        for member in _tar_members(fs, path):
            split = webdataset_split(member.name)
            if split is None:
                continue
            end = member.offset_data + -(-member.size // _BLOCK) * _BLOCK
            if split[0] != key:
                key = split[0]
                if key in keys:
                    raise CorruptShardError(uri, f"the members of sample {key!r} are apart")
                keys.add(key)
                offsets.append(member.offset)
                ends.append(end)
            else:
                ends[-1] = end
    except tarfile.TarError as exc:
        raise CorruptShardError(uri, f"not a readable uncompressed tar ({exc})") from exc
    offset = np.array(offsets, dtype=np.int64)
    length = np.array(ends, dtype=np.int64) - offset
    if length.size and length.max() >= 2**32:
        raise CorruptShardError(uri, "a sample spans 4 GiB or more")
    return {"offset": offset, "length": length.astype(np.uint32)}
