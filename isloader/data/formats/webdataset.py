"""WebDataset tar shards: a sample is its members, contiguous in the tar (the
webdataset convention), so a sampled row is one byte range.

Indexing walks each tar header by header (never holding it whole) and keeps, per
sample, its span ``sample_offset`` / ``sample_length``: from its first member's header
to the end of its last member's padded data, 12 bytes a sample. Units for streaming
are runs of consecutive samples of one tar (at most ``unit_bytes`` / ``unit_samples``).

A span's bytes are a tar of their own (without the end marker). Plain ustar members
(what webdataset's ``TarWriter`` writes with integer mtimes) are read straight from
their 512-byte headers, checksum checked (``tarfile`` costs about 0.1 ms of a read
worker's CPU a sample, as much as the sample's request). Anything else (PAX or GNU long
names, base-256 sizes) goes to ``tarfile``, which reads every tar the standard allows.

Members keep webdataset's conventions: the key is the name up to the first dot of the
file name, the rest names the field; ``cls`` and ``idx`` become integers, ``txt`` and
``json`` text, everything else stays bytes for the user's transform to decode (images,
audio, tensors).
"""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from isloader.data.formats.base import ReadAmplification, ShardIndex
from isloader.errors import CorruptShardError, InvalidArgumentError

__all__ = ["WebDatasetFormat", "webdataset_split", "samples_to_table", "TAR_MTIME"]

_BLOCK = 512
TAR_MTIME = 1_700_000_000  # an integer mtime, as a user's tars have: no PAX headers
_INT_EXTS = {"cls", "cls2", "idx", "index"}
_TEXT_EXTS = {"txt", "text", "json"}


def webdataset_split(name: str) -> tuple[str, str] | None:
    """``dir/000123.seg.png`` -> (``dir/000123``, ``seg.png``); None for names without one."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:
        return None
    return name[:dot], name[dot + 1 :]


def _members(fileobj: Any) -> Iterator[tarfile.TarInfo]:
    """The file members of a tar, one header at a time (none kept)."""
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        while (member := tar.next()) is not None:
            tar.members.clear()  # tarfile keeps every header otherwise
            if member.isfile():
                yield member


def _decode(ext: str, data: bytes) -> Any:
    if ext in _INT_EXTS:
        return int(data.decode().strip())
    if ext in _TEXT_EXTS:
        return data.decode()
    return data


# a ustar header's name, size, checksum, type flag, magic and name prefix
_USTAR = struct.Struct("100s24x12s12x8sc100x6s2x32x32x16x155s12x")
_PLAIN_TYPES = (b"0", b"\0", b"5")  # regular files and directories


def _ustar_members(data: bytes) -> list[tuple[str, int, int]] | None:
    """``(name, data offset, size)`` of every member of plain ustar bytes (regular files
    only), or None where a header needs ``tarfile`` (PAX, GNU long names, base-256
    sizes, GNU headers, or anything this reading does not vouch for: a checksum that
    does not add up is ``tarfile``'s to judge)."""
    members = []
    view = memoryview(data)
    at = 0
    while at + _BLOCK <= len(data):
        header = view[at : at + _BLOCK]
        if not any(header):
            break  # an end-of-archive block
        name, size, chksum, kind, magic, prefix = _USTAR.unpack(header)
        if kind not in _PLAIN_TYPES or magic != b"ustar\0" or size[0] & 0x80:
            return None
        try:
            wanted, size_ = int(chksum.strip(b"\0 ") or b"0", 8), int(size.strip(b"\0 ") or b"0", 8)
        except ValueError:
            return None
        if sum(header) - sum(header[148:156]) + 256 != wanted:
            return None
        if kind != b"5":
            path = name.split(b"\0", 1)[0].decode()
            stem = prefix.split(b"\0", 1)[0].decode()
            members.append((f"{stem}/{path}" if stem else path, at + _BLOCK, size_))
        at += _BLOCK + -(-size_ // _BLOCK) * _BLOCK
    if members and members[-1][1] + members[-1][2] > len(data):
        return None  # the bytes end inside a member
    return members


def _tarfile_members(data: bytes) -> list[tuple[str, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]


def _samples(data: bytes, columns: Sequence[str] | None) -> list[dict[str, bytes]]:
    """The samples in consecutive spans' bytes, in order: ``__key__`` plus the wanted
    members.

    Raises:
        tarfile.TarError: the bytes are not tar members (the caller names the shard).
    """
    members = _ustar_members(data)
    if members is None:
        members = _tarfile_members(data)
    samples: list[dict[str, bytes]] = []
    key = None
    for name, offset, size in members:
        split = webdataset_split(name)
        if split is None:
            continue
        if split[0] != key:
            key = split[0]
            samples.append({"__key__": key.encode()})
        if columns is None or split[1] in columns:
            samples[-1][split[1]] = data[offset : offset + size]
    return samples


def samples_to_table(samples: list[dict[str, bytes]], columns: Sequence[str] | None) -> pa.Table:
    """One row per sample; ``__key__`` plus one column per member extension."""
    names = list(columns) if columns else sorted({k for s in samples for k in s} - {"__key__"})
    data: dict[str, list[Any]] = {"__key__": [s["__key__"].decode() for s in samples]}
    for name in names:
        data[name] = [_decode(name, s[name]) if name in s else None for s in samples]
    return pa.table(data)


class WebDatasetReader:
    """Samples and runs of samples of one catalog's tars."""

    def __init__(self, catalog: Any, fetcher: Any) -> None:
        self.catalog = catalog
        self.fetcher = fetcher

    def row_bytes(self, indices: np.ndarray, columns: Sequence[str] | None) -> np.ndarray:
        """Each sample's span in its tar (all its members, headers included)."""
        return self.catalog.arrays["sample_length"][np.asarray(indices, np.int64)].astype(float)

    def _parse(
        self, blob: bytes, shard: int, expected: int, what: str, columns
    ) -> list[dict[str, bytes]]:
        uri = self.catalog.uri(int(shard))
        try:
            samples = _samples(blob, columns)
        except tarfile.TarError as exc:
            raise CorruptShardError(uri, f"{what} is not tar members ({exc})") from exc
        if len(samples) != expected:
            raise CorruptShardError(uri, f"{what} holds {len(samples)} samples, not {expected}")
        return samples

    def read_rows(self, indices: np.ndarray, columns: Sequence[str] | None) -> pa.Table:
        """Each sample's span, neighbours merged where the gap costs less than a request."""
        indices = np.asarray(indices, np.int64)
        offset = self.catalog.arrays["sample_offset"][indices]
        length = self.catalog.arrays["sample_length"][indices].astype(np.int64)
        units, _ = self.catalog.units_of(indices)
        shards = self.catalog.unit_shard[units]
        blobs = self.fetcher.fetch(shards, offset, offset + length, gap=self.fetcher.merge_gap)
        samples = [  # one table for them all: a table per sample costs more than its fetch
            sample
            for i, shard, blob in zip(indices, shards, blobs, strict=True)
            for sample in self._parse(blob, shard, 1, f"sample {i}", columns)
        ]
        return samples_to_table(samples, columns)

    def read_units(self, units: np.ndarray, columns: Sequence[str] | None) -> list[pa.Table]:
        """Each run of samples in one range."""
        units = np.asarray(units, np.int64)
        bounds = self.catalog.unit_bounds
        first, last = bounds[units], bounds[units + 1] - 1
        offset, length = self.catalog.arrays["sample_offset"], self.catalog.arrays["sample_length"]
        starts, ends = offset[first], offset[last] + length[last]
        shards = self.catalog.unit_shard[units]
        blobs = self.fetcher.fetch(shards, starts, ends)
        return [
            samples_to_table(
                self._parse(blob, shard, int(last[k] - first[k] + 1), f"unit {units[k]}", columns),
                columns,
            )
            for k, (shard, blob) in enumerate(zip(shards, blobs, strict=True))
        ]


class WebDatasetFormat:
    """WebDataset tars: see the module docstring.

    Args:
        unit_bytes, unit_samples: the most bytes and samples of one streaming unit.
    """

    name = "webdataset"
    suffixes = (".tar",)
    array_names = ("unit_bounds", "unit_shard", "sample_offset", "sample_length")

    def write_shard(self, fs: Any, path: str, table: pa.Table, rows_per_group: int) -> None:
        """One tar as webdataset writes it (integer mtimes), a sample per row keyed by
        ``__key__``: bytes columns as members of that name, numbers and text as text
        members (``<column>.txt`` unless the name is a webdataset extension already)."""
        import webdataset as wds

        columns = {c: table.column(c).to_pylist() for c in table.column_names}
        keys = columns.pop("__key__")
        with fs.open(path, "wb") as sink, wds.TarWriter(sink, mtime=TAR_MTIME) as tar:
            for k, key in enumerate(keys):
                sample: dict[str, Any] = {"__key__": key}
                for name, values in columns.items():
                    value = values[k]
                    if isinstance(value, bytes):
                        sample[name] = value
                    elif value is not None:
                        known = name.rsplit(".", 1)[-1] in _INT_EXTS | _TEXT_EXTS
                        sample[name if known else f"{name}.txt"] = str(value)
                tar.write(sample)

    def index_shard(self, fs: Any, path: str, uri: str) -> ShardIndex:
        """Every sample's (offset, length) span, its members grouped by webdataset's key rule."""
        offsets: list[int] = []
        ends: list[int] = []
        key = None
        keys: set[str] = set()
        try:
            with fs.open(path, "rb") as f:
                for member in _members(f):
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
        arrays = {"offset": offset, "length": length.astype(np.uint32)}
        return ShardIndex(len(offset), arrays)

    def catalog_arrays(
        self, shards: list[ShardIndex], *, unit_bytes: int = 1 << 20, unit_samples: int = 256
    ) -> dict[str, np.ndarray]:
        """Runs of consecutive samples of one tar, each at most ``unit_bytes`` (or a single
        larger sample) and ``unit_samples`` samples."""
        bounds, shard_of = [0], []
        position = 0
        for shard, index in enumerate(shards):
            offset, length = index.arrays["offset"], index.arrays["length"]
            ends = offset + length
            start = 0
            while start < len(offset):
                stop = int(np.searchsorted(ends, offset[start] + unit_bytes, side="right"))
                stop = min(max(stop, start + 1), start + unit_samples, len(offset))
                bounds.append(position + stop)
                shard_of.append(shard)
                start = stop
            position += len(offset)
        return {
            "unit_bounds": np.array(bounds, dtype=np.int64),
            "unit_shard": np.array(shard_of, dtype=np.int32),
            "sample_offset": np.concatenate(
                [s.arrays["offset"] for s in shards] or [np.zeros(0, np.int64)]
            ).astype(np.int64),
            "sample_length": np.concatenate(
                [s.arrays["length"] for s in shards] or [np.zeros(0, np.uint32)]
            ).astype(np.uint32),
        }

    def check(self, catalog: Any) -> None:
        """Raise ``InvalidArgumentError`` unless every sample has its span."""
        if len(catalog.arrays.get("sample_offset", ())) != len(catalog):
            raise InvalidArgumentError(f"{catalog.root}: sample spans do not cover every sample")

    def unit_bytes(self, catalog: Any) -> np.ndarray:
        """Each unit's bytes: from its first sample's offset to its last sample's end."""
        first, last = catalog.unit_bounds[:-1], catalog.unit_bounds[1:] - 1
        offset, length = catalog.arrays["sample_offset"], catalog.arrays["sample_length"]
        return offset[last] + length[last] - offset[first]

    def reader(self, catalog: Any, fetcher: Any) -> WebDatasetReader:
        """A ``WebDatasetReader``: sampled samples as byte ranges, units as one range each."""
        return WebDatasetReader(catalog, fetcher)

    def amplification(
        self, catalog: Any, fetcher: Any, columns: Sequence[str] | None
    ) -> ReadAmplification:
        """A sampled sample costs its span, members not asked for included."""
        mean = float(np.mean(catalog.arrays["sample_length"])) if len(catalog) else 0.0
        return ReadAmplification(mean, mean, "row")
