"""``ShardCatalog``: where every sample lives, so a sampled subset can be read alone.

``isloader index URI`` lists the shards under ``URI`` in a stable (sorted) order and
writes the index beside them: ``_isloader_index.json`` (the format and the shard list:
path, size, etag or mtime, rows) and ``_isloader_index.npz`` (columnar arrays). Global
indices run over the shards in catalog order, rows in file order.

The arrays are what a reader needs and nothing per sample that Python must hold:
``unit_bounds`` (int64, units + 1) and ``unit_shard`` (int32) for every format, where a
unit is what a streaming pass reads as one piece, plus what the format keeps
(``isloader.data.formats``: Parquet row group numbers; tar sample spans, 12 bytes a
sample). They pickle out-of-band, so Ray shares them zero-copy with every worker on a
node. The catalog never asks which format it holds: it calls the format's protocol.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np

from isloader.data.formats import ShardFormat, ShardIndex, get_format, guess_format
from isloader.errors import IndexOutOfRangeError, InvalidArgumentError
from isloader.layout import UnitLayout

__all__ = ["ShardCatalog", "ShardEntry", "INDEX_NAME", "ARRAYS_NAME", "shard_fingerprint"]

INDEX_NAME = "_isloader_index.json"
ARRAYS_NAME = "_isloader_index.npz"
INDEX_VERSION = 2


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
        format: a registered format name (``"parquet"``, ``"webdataset"``).
        shards: one ``ShardEntry`` per shard, in global order.
        arrays: the columnar arrays described in the module docstring.
        storage_options: passed to fsspec for every access.

    Raises:
        InvalidArgumentError: an unknown format, a path that leaves the root, or arrays
            that do not describe the shards.
    """

    def __init__(
        self,
        root: str,
        format: str,
        shards: list[ShardEntry],
        arrays: dict[str, np.ndarray],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.codec: ShardFormat = get_format(format)
        self.root = root.rstrip("/")
        self.format = format
        for entry in shards:
            _check_relative(entry.path)
        self.shards = list(shards)
        self.storage_options = dict(storage_options or {})
        self.arrays = {name: np.asarray(arrays[name]) for name in self.codec.array_names}
        self.unit_bounds = self.arrays["unit_bounds"].astype(np.int64, copy=False)
        self.unit_shard = self.arrays["unit_shard"].astype(np.int32, copy=False)
        rows = np.array([s.num_rows for s in self.shards], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.notes: list[str] = []  # what indexing noticed (e.g. Parquet without page index)
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
        self.codec.check(self)

    def __len__(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def num_samples(self) -> int:
        """N, the rows over every shard (``len(catalog)``)."""
        return len(self)

    @property
    def num_units(self) -> int:
        """How many read units (Parquet row groups, runs of tar samples) the shards hold."""
        return len(self.unit_bounds) - 1

    @property
    def unit_local(self) -> np.ndarray:
        """Each unit's place in its shard (a Parquet row group number; tars: none)."""
        return self.arrays.get("unit_local", np.zeros(0, np.int32))

    @property
    def layout(self) -> UnitLayout:
        """The units as the store knows them (for locality-aware draws and the cache)."""
        return UnitLayout(self.unit_bounds)

    @property
    def unit_rows(self) -> np.ndarray:
        """Rows in each unit."""
        return np.diff(self.unit_bounds)

    @property
    def identity(self) -> str:
        """A digest of what was indexed: root, format and every shard's fingerprint."""
        text = json.dumps([self.root, self.format, [asdict(s) for s in self.shards]])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def nbytes(self) -> int:
        """Bytes of the catalog's arrays (its memory, apart from the shard list)."""
        return sum(a.nbytes for a in self.arrays.values())

    def uri(self, shard: int) -> str:
        """The full URI of shard number ``shard``."""
        return f"{self.root}/{self.shards[shard].path}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the dataset root, with the catalog's storage options."""
        return fsspec.core.url_to_fs(self.root, **self.storage_options)[0]

    def units_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each global index its unit and its row within the unit.

        Raises:
            IndexOutOfRangeError: an index outside ``[0, len(self))``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise IndexOutOfRangeError(f"index {bad} outside the catalog's [0, {len(self)})")
        unit = np.searchsorted(self.unit_bounds, idx, side="right") - 1
        return unit, idx - self.unit_bounds[unit]

    def unit_bytes(self) -> np.ndarray:
        """Approximate stored bytes of each unit (for sizing caches and windows)."""
        return self.codec.unit_bytes(self)

    # -- building ------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        uri: str,
        *,
        format: str | None = None,
        storage_options: dict[str, Any] | None = None,
        workers: int = 8,
        **unit_options: Any,
    ) -> ShardCatalog:
        """List and index the shards under ``uri`` (format guessed from the suffixes).

        Shards are indexed concurrently (``workers`` threads: the work is reading
        footers and tar headers). ``unit_options`` go to the format (tars:
        ``unit_bytes``, ``unit_samples``).

        Raises:
            InvalidArgumentError: no shards of a known format, or an unknown format.
            CorruptShardError: a shard that is not a readable file of its format.
        """
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        root = root.rstrip("/")
        files = sorted(
            (info for info in fs.find(root, detail=True).values() if info["type"] == "file"),
            key=lambda info: info["name"],
        )
        format = format or guess_format([f["name"] for f in files])
        if format is None:
            raise InvalidArgumentError(f"no shards of a known format under {uri}")
        codec = get_format(format)
        files = [f for f in files if f["name"].endswith(codec.suffixes)]
        if not files:
            raise InvalidArgumentError(f"no {format} shards under {uri}")
        base = uri.rstrip("/")

        def index(info: dict[str, Any]) -> tuple[ShardEntry, ShardIndex]:
            rel = info["name"][len(root) :].lstrip("/")
            found = codec.index_shard(fs, info["name"], f"{base}/{rel}")
            entry = ShardEntry(rel, int(info["size"]), shard_fingerprint(info), found.rows)
            return entry, found

        with ThreadPoolExecutor(max(1, min(workers, len(files)))) as pool:
            indexed = list(pool.map(index, files))
        arrays = codec.catalog_arrays([found for _, found in indexed], **unit_options)
        catalog = cls(uri, format, [entry for entry, _ in indexed], arrays, storage_options)
        catalog.notes = sorted({note for _, found in indexed for note in found.notes})
        return catalog

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
        return dict(self.arrays)

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
        """Version 1 indexes kept the Parquet row group sizes in the JSON; tar ones lack the
        sample spans and must be rebuilt."""
        entries = document["shards"]
        if not all("row_groups" in s for s in entries):
            raise InvalidArgumentError(
                f"{target} is a version 1 index without the arrays this version needs: "
                f"run `isloader index {uri}` to rebuild it"
            )
        shards = [
            ShardEntry(s["path"], s["size"], s["fingerprint"], s["num_rows"]) for s in entries
        ]
        codec = get_format(document.get("format", ""))
        found = [ShardIndex(s["num_rows"], {"rows": np.asarray(s["row_groups"], np.int64)})
                 for s in entries]  # fmt: skip
        return cls(uri, codec.name, shards, codec.catalog_arrays(found), options)

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
