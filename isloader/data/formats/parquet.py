"""Parquet shards: units are row groups; a sampled row costs its pages, not its group.

Reading a row (docs/architecture.md, "Reading at streaming speed"):

- each shard's tail is fetched once per reader: the footer and, just before it, the
  **page index** (``write_page_index=True``; ``isloader convert`` writes it, with small
  data pages and no dictionary on wide columns). The offset index gives every data
  page's byte range and first row;
- a sampled row of a field costs the data page that holds it (plus the dictionary page
  where there is one); **narrow** fields (a few bytes a row, e.g. labels) are fetched a
  whole column chunk at a time and kept decoded in memory (``narrow_bytes``), since their
  pages hold many rows for the cost of a request;
- the fetched pages are decoded by pyarrow: a minimal Parquet file is assembled from
  them (the footer pruned to the field, one row group per source row group, offsets
  rewritten, page indexes and statistics dropped), which is the technique of Apache
  Paimon's Python reader;
- files without a page index, and fields of several leaf columns (structs, maps), are
  read a whole column chunk at a time; ``amplification`` says what that costs and
  ``isloader convert`` fixes it.

A streaming pass reads whole row groups (every requested column chunk of a group in one
range) and decodes them the same way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from isloader.data.formats import thrift
from isloader.data.formats.base import ReadAmplification, ShardIndex
from isloader.data.lru import ByteLRU
from isloader.errors import CorruptShardError, InvalidArgumentError

__all__ = ["ParquetFormat", "ParquetReader", "NARROW_BYTES"]

_TAIL = 64 * 1024
NARROW_BYTES = 64  # a field storing at most this many bytes a row is read whole per chunk
_DROP_CHUNK_META = (10, 12, 13, 14, 15, 16, 17)  # index page, statistics, bloom, sizes
_DROP_CHUNK = (4, 5, 6, 7)  # offset and column index locations


@dataclass(frozen=True)
class _Leaf:
    """One column chunk of a row group, as the footer and offset index place it."""

    start: int  # first byte (the dictionary page where there is one)
    end: int
    data_start: int  # first data page
    num_values: int
    meta: thrift.Struct  # its ColumnMetaData
    index: tuple[int, int] | None  # (offset, length) of its offset index


class _ShardLayout:
    """One shard's footer and page index, parsed once per reader."""

    def __init__(self, uri: str, size: int, tail_start: int, tail: bytes) -> None:
        self.uri = uri
        self.size = size
        self.tail_start, self.tail = tail_start, tail
        footer_len = int.from_bytes(tail[-8:-4], "little")
        footer = tail[len(tail) - 8 - footer_len : len(tail) - 8]
        try:
            self.meta, _ = thrift.read_struct(footer)
            self.arrow = pq.ParquetFile(pa.BufferReader(b"PAR1" + footer + tail[-8:])).schema_arrow
        except (ValueError, IndexError, pa.ArrowException) as exc:
            raise CorruptShardError(uri, f"unreadable footer ({exc})") from exc
        self.schema = self.meta[2][1][1]
        self.fields = _top_level_fields(self.schema)  # name -> (element span, leaf ordinals)
        self.row_groups = self.meta[4][1][1]
        self._pages: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._lock = threading.Lock()

    def schema_key(self, field: str) -> bytes:
        """What must match for two shards' pages of ``field`` to decode in one file."""
        (lo, hi), _ = self.fields[field]
        elements = thrift.write_struct({1: (thrift.LIST, (thrift.STRUCT, self.schema[lo:hi]))})
        return elements + bytes(self.meta.get(6, (0, b""))[1])

    @functools.cached_property
    def index_start(self) -> int:
        """Where the page indexes begin (they sit before the footer), or the footer."""
        starts = [
            leaf.index[0]
            for rg in range(len(self.row_groups))
            for leaf in (self.leaf(rg, i) for i in range(self.num_leaves))
            if leaf.index is not None
        ]
        return min(starts, default=self.size - 8)

    @property
    def num_leaves(self) -> int:
        return len(self.row_groups[0][1][1][1]) if self.row_groups else 0

    def rows(self, rg: int) -> int:
        return self.row_groups[rg][3][1]

    @functools.cache  # noqa: B019 - one layout per shard, kept by the reader
    def leaf(self, rg: int, leaf: int) -> _Leaf:
        chunk = self.row_groups[rg][1][1][1][leaf]
        meta = chunk[3][1]
        data_start = meta[9][1]
        start = meta[11][1] if 11 in meta and meta[11][1] > 0 else data_start
        index = (chunk[4][1], chunk[5][1]) if 4 in chunk and 5 in chunk else None
        end = start + meta[7][1]
        return _Leaf(start, end, data_start, meta[5][1], meta, index)

    def has_page_index(self) -> bool:
        return all(
            self.leaf(rg, i).index is not None
            for rg in range(len(self.row_groups))
            for i in range(self.num_leaves)
        )

    def pages(self, rg: int, leaf: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(offset, size, first_row)`` of every data page of a column chunk."""
        key = (rg, leaf)
        with self._lock:
            if key in self._pages:
                return self._pages[key]
        where = self.leaf(rg, leaf).index
        assert where is not None
        at = where[0] - self.tail_start
        try:
            index, _ = thrift.read_struct(self.tail, at)
        except (ValueError, IndexError) as exc:
            raise CorruptShardError(self.uri, f"unreadable offset index ({exc})") from exc
        locations = index[1][1][1]
        table = (
            np.array([p[1][1] for p in locations], np.int64),
            np.array([p[2][1] for p in locations], np.int64),
            np.array([p[3][1] for p in locations], np.int64),
        )
        with self._lock:
            self._pages[key] = table
        return table


def _top_level_fields(schema: list[thrift.Struct]) -> dict[str, tuple[tuple[int, int], list[int]]]:
    """Each top-level field's span of schema elements and its leaf column ordinals."""
    out: dict[str, tuple[tuple[int, int], list[int]]] = {}
    leaf = 0

    def walk(pos: int) -> tuple[int, int]:  # returns (end position, leaves)
        nonlocal leaf
        children = schema[pos][5][1] if 5 in schema[pos] else 0
        pos += 1
        if not children:
            leaf += 1
            return pos, 1
        count = 0
        for _ in range(children):
            pos, n = walk(pos)
            count += n
        return pos, count

    pos = 1
    for _ in range(schema[0][5][1]):
        first = leaf
        end, _n = walk(pos)
        name = schema[pos][4][1].decode()
        out[name] = ((pos, end), list(range(first, leaf)))
        pos = end
    return out


@dataclass
class _Part:
    """What one leaf contributes to one row group of an assembled file."""

    blobs: list[bytes]  # dictionary page first where there is one, then data pages
    has_dictionary: bool
    num_values: int
    uncompressed: int


def _page_values(blob: bytes, uri: str) -> tuple[int, int]:
    """``(num_values, uncompressed bytes with the header)`` of one data page."""
    try:
        header, end = thrift.read_struct(blob)
    except (ValueError, IndexError) as exc:
        raise CorruptShardError(uri, f"unreadable page header ({exc})") from exc
    body = header[5][1] if 5 in header else header.get(8, (0, {1: (0, 0)}))[1]
    return body[1][1], end + header[2][1]


class ParquetReader:
    """Rows and row groups of one catalog's Parquet shards; see the module docstring."""

    def __init__(self, catalog: Any, fetcher: Any, *, narrow_memory: int = 8 << 20) -> None:
        self.catalog = catalog
        self.fetcher = fetcher
        self._layouts: dict[int, _ShardLayout] = {}
        self._lock = threading.Lock()
        self._columns = ByteLRU(narrow_memory)  # (shard, rg, field) -> decoded array

    # -- metadata ----------------------------------------------------------------------

    def layouts(self, shards: Sequence[int]) -> None:
        """Fetch the tails of the shards not seen yet, in one concurrent round (and the
        page indexes that did not fit, in a second)."""
        todo = sorted({int(s) for s in shards} - set(self._layouts))
        if not todo:
            return
        sizes = [self.catalog.shards[s].size for s in todo]
        starts = [max(0, size - _TAIL) for size in sizes]
        tails = self.fetcher.fetch(np.array(todo), np.array(starts), np.array(sizes))
        layouts = {}
        for shard, size, start, tail in zip(todo, sizes, starts, tails, strict=True):
            uri = self.catalog.uri(shard)
            if len(tail) < 12 or tail[-4:] != b"PAR1":
                raise CorruptShardError(uri, "no Parquet footer")
            footer_len = int.from_bytes(tail[-8:-4], "little")
            if footer_len + 8 > len(tail):
                start = max(0, size - footer_len - 8)
                tail = self.fetcher.fetch(np.array([shard]), np.array([start]), np.array([size]))[0]
            layouts[shard] = _ShardLayout(uri, size, start, tail)
        missing = [s for s, lay in layouts.items() if lay.index_start < lay.tail_start]
        if missing:  # page indexes larger than the first tail read
            starts = [layouts[s].index_start for s in missing]
            ends = [layouts[s].tail_start for s in missing]
            for shard, blob in zip(
                missing, self.fetcher.fetch(np.array(missing), np.array(starts), np.array(ends)),
                strict=True,
            ):  # fmt: skip
                lay = layouts[shard]
                lay.tail, lay.tail_start = blob + lay.tail, lay.index_start
        with self._lock:
            self._layouts.update(layouts)

    def layout(self, shard: int) -> _ShardLayout:
        """The shard's footer, page indexes and leaf columns, read on first use (cached)."""
        self.layouts([shard])
        return self._layouts[shard]

    def _fields(self, layout: _ShardLayout, columns: Sequence[str] | None) -> list[str]:
        names = list(layout.fields)
        if columns is None:
            return names
        unknown = [c for c in columns if c not in layout.fields]
        if unknown:
            raise InvalidArgumentError(f"unknown columns {sorted(unknown)}; have {names}")
        return list(columns)

    def _is_narrow(self, layout: _ShardLayout, rg: int, field: str) -> bool:
        leaves = layout.fields[field][1]
        stored = sum(layout.leaf(rg, i).end - layout.leaf(rg, i).start for i in leaves)
        return stored <= NARROW_BYTES * max(layout.rows(rg), 1)

    def row_bytes(self, indices: np.ndarray, columns: Sequence[str] | None) -> np.ndarray:
        """Stored bytes of each row: its row group's requested chunks over its rows."""
        units, _ = self.catalog.units_of(indices)
        out = np.empty(len(indices), np.float64)
        shards = self.catalog.unit_shard[units]
        self.layouts(np.unique(shards))
        sizes: dict[int, float] = {}
        for k, unit in enumerate(units):
            u = int(unit)
            if u not in sizes:
                layout = self._layouts[int(shards[k])]
                rg = int(self.catalog.unit_local[u])
                leaves = [i for f in self._fields(layout, columns) for i in layout.fields[f][1]]
                stored = sum(layout.leaf(rg, i).end - layout.leaf(rg, i).start for i in leaves)
                sizes[u] = stored / max(layout.rows(rg), 1)
            out[k] = sizes[u]
        return out

    # -- reads -------------------------------------------------------------------------

    def read_units(self, units: np.ndarray, columns: Sequence[str] | None) -> list[pa.Table]:
        """Whole row groups: one range per group (its requested chunks), decoded together
        per shard; narrow fields are kept for later row reads."""
        units = np.asarray(units, np.int64)
        shards = self.catalog.unit_shard[units]
        groups = self.catalog.unit_local[units]
        self.layouts(np.unique(shards))
        ranges, keys = [], []
        for shard, rg in zip(shards, groups, strict=True):
            layout = self._layouts[int(shard)]
            leaves = [i for f in self._fields(layout, columns) for i in layout.fields[f][1]]
            start = min(layout.leaf(int(rg), i).start for i in leaves)
            end = max(layout.leaf(int(rg), i).end for i in leaves)
            ranges.append((int(shard), start, end))
            keys.append(leaves)
        blobs = self.fetcher.fetch(
            np.array([r[0] for r in ranges]), np.array([r[1] for r in ranges]),
            np.array([r[2] for r in ranges]),
        )  # fmt: skip
        out = []
        for (shard, start, _), leaves, blob, rg in zip(ranges, keys, blobs, groups, strict=True):
            layout = self._layouts[shard]
            fields = self._fields(layout, columns)
            parts = {}
            for i in leaves:
                leaf = layout.leaf(int(rg), i)
                chunk = blob[leaf.start - start : leaf.end - start]
                parts[i] = _Part([chunk], leaf.start < leaf.data_start, leaf.num_values,
                                 leaf.meta[6][1])  # fmt: skip
            table = _decode(layout, fields, [(layout, int(rg), layout.rows(int(rg)), parts)])
            for f in fields:
                if self._narrow_field(layout, int(rg), f):
                    column = table.column(f).combine_chunks()
                    self._columns.put((shard, int(rg), f), column, column.nbytes)
            out.append(table)
        return out

    def _narrow_field(self, layout: _ShardLayout, rg: int, field: str) -> bool:
        return len(layout.fields[field][1]) == 1 and self._is_narrow(layout, rg, field)

    def read_rows(self, indices: np.ndarray, columns: Sequence[str] | None) -> pa.Table:
        """The rows at sorted, distinct ``indices``: their pages only (see the module)."""
        indices = np.asarray(indices, np.int64)
        if not len(indices):
            layout = self.layout(0)
            fields = self._fields(layout, columns)
            return pa.schema([layout.arrow.field(f) for f in fields]).empty_table()
        units, local = self.catalog.units_of(indices)
        shards = self.catalog.unit_shard[units]
        self.layouts(np.unique(shards))
        fields = self._fields(self._layouts[int(shards[0])], columns)
        runs = np.split(np.arange(len(indices)), np.flatnonzero(np.diff(units)) + 1)
        reads: list[tuple[int, str, list[_Selection]]] = []
        for shard in np.unique(shards):
            layout = self._layouts[int(shard)]
            mine = [run for run in runs if shards[run[0]] == shard]
            for name in fields:
                picks = []
                for run in mine:
                    rg = int(self.catalog.unit_local[units[run[0]]])
                    picks.append(self._select(layout, int(shard), rg, name, local[run]))
                reads.append((int(shard), name, picks))
        spans = [(shard, a, b) for shard, _, picks in reads for p in picks for a, b in p.spans()]
        blobs = iter(
            self.fetcher.fetch(
                np.array([r[0] for r in spans], np.int64),
                np.array([r[1] for r in spans], np.int64),
                np.array([r[2] for r in spans], np.int64),
                gap=self.fetcher.merge_gap,
            )
        )
        parts = [(self._layouts[shard], name, picks) for shard, name, picks in reads]
        decoded = _decode_fields(parts, blobs)
        schema = pa.schema([self._layouts[int(shards[0])].arrow.field(f) for f in fields])
        arrays = [pa.concat_arrays(decoded[f]).cast(schema.field(f).type) for f in fields]
        return pa.Table.from_arrays(arrays, schema=schema)

    def _select(
        self, layout: _ShardLayout, shard: int, rg: int, field: str, rows: np.ndarray
    ) -> _Selection:
        """What reading ``rows`` of ``field`` in row group ``rg`` takes: a narrow field
        kept decoded, its pages, or its whole chunks (narrow fields, several leaves, no
        page index)."""
        narrow = self._narrow_field(layout, rg, field)
        if narrow:
            cached = self._columns.get((shard, rg, field))
            if cached is not None:
                return _Selection(rg, rows, cached=cached)
        leaves = layout.fields[field][1]
        whole = narrow or len(leaves) > 1 or layout.leaf(rg, leaves[0]).index is None
        pick = _Selection(rg, rows, keep=(shard, field) if narrow else None)
        for i in leaves:
            leaf = layout.leaf(rg, i)
            if whole:
                pick.leaves[i] = _LeafRead(leaf, None, None)
                continue
            offset, size, first_row = layout.pages(rg, i)
            pages = np.unique(np.searchsorted(first_row, rows, side="right") - 1)
            pick.leaves[i] = _LeafRead(leaf, pages, (offset, size, first_row))
        if narrow:
            pick.on_decoded = lambda column, key=(shard, rg, field): self._columns.put(
                key, column, column.nbytes
            )
        return pick


@dataclass
class _LeafRead:
    """One leaf column of a selection: whole (``pages`` None) or some data pages."""

    leaf: _Leaf
    pages: np.ndarray | None
    table: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # offset, size, first_row

    def spans(self) -> list[tuple[int, int]]:
        if self.pages is None:
            return [(self.leaf.start, self.leaf.end)]
        offset, size, _ = self.table
        head = [(self.leaf.start, self.leaf.data_start)] if self.has_dictionary else []
        return head + [(int(offset[p]), int(offset[p] + size[p])) for p in self.pages]

    @property
    def has_dictionary(self) -> bool:
        return self.leaf.start < self.leaf.data_start

    def part(self, blobs: list[bytes], uri: str) -> _Part:
        """The fetched ``blobs`` (as ``spans`` asked) as one row group's column chunk."""
        if self.pages is None:
            return _Part(blobs, self.has_dictionary, self.leaf.num_values, self.leaf.meta[6][1])
        values = uncompressed = 0
        for k, blob in enumerate(blobs):
            n, u = _page_values(blob, uri)
            uncompressed += u
            if not (k == 0 and self.has_dictionary):
                values += n
        return _Part(blobs, self.has_dictionary, values, uncompressed)

    def positions(self, rows: np.ndarray, rows_in_group: int) -> tuple[np.ndarray, int]:
        """Where each of ``rows`` lands among the decoded rows, and how many decode."""
        if self.pages is None:
            return rows, rows_in_group
        _, _, first_row = self.table
        ends = np.append(first_row[1:], rows_in_group)
        counts = ends[self.pages] - first_row[self.pages]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        page = np.searchsorted(first_row, rows, side="right") - 1
        return starts[np.searchsorted(self.pages, page)] + rows - first_row[page], int(counts.sum())


@dataclass
class _Selection:
    """Rows of one field in one row group, and how they are read."""

    rg: int
    rows: np.ndarray  # row numbers inside the group, ascending
    cached: pa.Array | None = None  # a narrow field's decoded column
    keep: tuple[int, str] | None = None
    leaves: dict[int, _LeafRead] = field(default_factory=dict)
    on_decoded: Any = None

    def spans(self) -> list[tuple[int, int]]:
        return [span for read in self.leaves.values() for span in read.spans()]


def _decode_fields(
    reads: list[tuple[_ShardLayout, str, list[_Selection]]], blobs: Any
) -> dict[str, list[pa.Array]]:
    """Each field's values at the picked rows, shard by shard in row order, from the
    fetched ``blobs`` (consumed in ``spans`` order). A field's pages from every shard
    that shares one schema decode as one assembled file: one pyarrow call per field,
    not one per shard."""
    plans: list[tuple[_ShardLayout, str, list]] = []
    for layout, name, picks in reads:
        groups, where, offset = [], [], 0
        for pick in picks:
            if pick.cached is not None:
                where.append((pick, None, 0, 0))
                continue
            parts, positions, count = {}, None, 0
            for i, read in pick.leaves.items():
                parts[i] = read.part([next(blobs) for _ in read.spans()], layout.uri)
                positions, count = read.positions(pick.rows, layout.rows(pick.rg))
            groups.append((layout, pick.rg, count, parts))
            where.append((pick, positions, offset, count))
            offset += count
        plans.append((layout, name, [groups, where]))
    out: dict[str, list[pa.Array]] = {}
    by_field: dict[tuple[str, bytes], list[int]] = {}
    for k, (layout, name, (groups, _)) in enumerate(plans):
        if groups:
            by_field.setdefault((name, layout.schema_key(name)), []).append(k)
    decoded: dict[int, tuple[pa.Array, int]] = {}
    for (name, _), members in by_field.items():
        groups = [g for k in members for g in plans[k][2][0]]
        column = _decode(plans[members[0]][0], [name], groups).column(name).combine_chunks()
        start = 0
        for k in members:
            decoded[k] = (column, start)
            start += sum(g[2] for g in plans[k][2][0])
    for k, (_, name, (_, where)) in enumerate(plans):
        column, base = decoded.get(k, (None, 0))
        pieces = []
        for pick, positions, offset, count in where:
            if positions is None:
                pieces.append(pick.cached.take(pa.array(pick.rows)))
                continue
            if pick.on_decoded is not None:
                pick.on_decoded(column.slice(base + offset, count))
            pieces.append(column.take(pa.array(positions + offset + base)))
        out.setdefault(name, []).append(pa.concat_arrays(pieces))
    return out


def _decode(layout: _ShardLayout, fields: list[str], groups: list[tuple]) -> pa.Table:
    """Decode ``groups`` (``(layout, rg, rows, {leaf: _Part})``: row groups of shards that
    share ``layout``'s schema) of ``fields`` through a minimal Parquet file assembled from
    their bytes."""
    meta = layout.meta
    spans = [layout.fields[f] for f in fields]
    schema = [dict(meta[2][1][1][0])]
    schema[0][5] = (thrift.I32, len(fields))
    for (lo, hi), _ in spans:
        schema += meta[2][1][1][lo:hi]
    leaves = [i for _, ls in spans for i in ls]
    out = bytearray(b"PAR1")
    row_groups = []
    total_rows = 0
    for ordinal, (source, rg, rows, parts) in enumerate(groups):
        chunks, group_start, uncompressed = [], len(out), 0
        for i in leaves:
            part = parts[i]
            start = len(out)
            for blob in part.blobs:
                out += blob
            first_data = start + (len(part.blobs[0]) if part.has_dictionary else 0)
            cm = {k: v for k, v in source.leaf(rg, i).meta.items() if k not in _DROP_CHUNK_META}
            cm[5] = (thrift.I64, part.num_values)
            cm[6] = (thrift.I64, part.uncompressed)
            cm[7] = (thrift.I64, len(out) - start)
            cm[9] = (thrift.I64, first_data)
            if part.has_dictionary:
                cm[11] = (thrift.I64, start)
            else:
                cm.pop(11, None)
            chunk = source.row_groups[rg][1][1][1][i]
            cc = {k: v for k, v in chunk.items() if k not in _DROP_CHUNK}
            cc[2] = (thrift.I64, start)
            cc[3] = (thrift.STRUCT, cm)
            chunks.append(cc)
            uncompressed += part.uncompressed
        group = {
            1: (thrift.LIST, (thrift.STRUCT, chunks)),
            2: (thrift.I64, uncompressed),
            3: (thrift.I64, rows),
            5: (thrift.I64, group_start),
            6: (thrift.I64, len(out) - group_start),
            7: (thrift.I16, ordinal),
        }
        row_groups.append(group)
        total_rows += rows
    footer = {k: v for k, v in meta.items() if k in (1, 6)}
    footer[2] = (thrift.LIST, (thrift.STRUCT, schema))
    footer[3] = (thrift.I64, total_rows)
    footer[4] = (thrift.LIST, (thrift.STRUCT, row_groups))
    if 7 in meta:  # column orders: one per leaf
        orders = meta[7][1][1]
        footer[7] = (thrift.LIST, (thrift.STRUCT, [orders[i] for i in leaves]))
    encoded = thrift.write_struct(footer)
    out += encoded + len(encoded).to_bytes(4, "little") + b"PAR1"
    try:
        table = pq.read_table(pa.BufferReader(bytes(out)), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptShardError(layout.uri, f"pages cannot be decoded ({exc})") from exc
    target = pa.schema([layout.arrow.field(f) for f in fields])
    return table.cast(target) if table.schema != target else table


def writer_options(sample: pa.Table, page_bytes: int = 1024) -> dict[str, Any]:
    """pyarrow writer options for ``sample``'s columns (see the module docstring): wide
    columns (more than ``NARROW_BYTES`` a row) get neither dictionary nor statistics."""
    rows = max(sample.num_rows, 1)
    narrow = [c for c in sample.column_names if sample.column(c).nbytes / rows <= NARROW_BYTES]
    return {
        "write_page_index": True,
        "data_page_size": page_bytes,
        "write_batch_size": 1,
        "use_dictionary": narrow,
        "write_statistics": narrow,
    }


class ParquetFormat:
    """Parquet: see the module docstring."""

    name = "parquet"
    suffixes = (".parquet", ".pq")
    array_names = ("unit_bounds", "unit_shard", "unit_local")

    def write_shard(self, fs: Any, path: str, table: pa.Table, rows_per_group: int) -> None:
        """One shard in the layout ``isloader convert`` writes (small pages, page index)."""
        with fs.open(path, "wb") as sink:
            pq.write_table(table, sink, row_group_size=rows_per_group, **writer_options(table))

    def index_shard(self, fs: Any, path: str, uri: str) -> ShardIndex:
        """Rows and row-group bounds from the footer; notes a shard without a page index."""
        try:
            with fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
        except Exception as exc:
            raise CorruptShardError(uri, f"not a readable Parquet file ({exc})") from exc
        rows = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        indexed = all(
            meta.row_group(g).column(c).has_offset_index
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
        notes = [] if indexed else ["no page index: sampled rows cost whole column chunks"]
        return ShardIndex(int(rows.sum()), {"rows": rows.astype(np.int64)}, notes)

    def catalog_arrays(self, shards: list[ShardIndex], **options: Any) -> dict[str, np.ndarray]:
        """Units are row groups; empty ones hold nothing and are left out."""
        per_group = [s.arrays["rows"] for s in shards]
        kept = [np.flatnonzero(r > 0).astype(np.int32) for r in per_group]
        rows = np.concatenate([r[r > 0] for r in per_group] or [np.zeros(0, np.int64)])
        return {
            "unit_bounds": np.concatenate([[0], np.cumsum(rows)]).astype(np.int64),
            "unit_shard": np.repeat(np.arange(len(kept), dtype=np.int32), [len(k) for k in kept]),
            "unit_local": np.concatenate(kept or [np.zeros(0, np.int32)]),
        }

    def check(self, catalog: Any) -> None:
        """Raise ``InvalidArgumentError`` unless every unit has its row group number."""
        if len(catalog.arrays.get("unit_local", ())) != catalog.num_units:
            raise InvalidArgumentError(f"{catalog.root}: row group numbers are inconsistent")

    def unit_bytes(self, catalog: Any) -> np.ndarray:
        """Each row group's approximate bytes: its shard's bytes per row times its rows."""
        sizes = np.array([s.size for s in catalog.shards], dtype=np.float64)
        rows = np.maximum(np.array([s.num_rows for s in catalog.shards], dtype=np.float64), 1)
        return (sizes / rows)[catalog.unit_shard] * catalog.unit_rows

    def reader(self, catalog: Any, fetcher: Any) -> ParquetReader:
        """A ``ParquetReader`` (page reads where the shard has a page index)."""
        return ParquetReader(catalog, fetcher)

    def amplification(
        self, catalog: Any, fetcher: Any, columns: Sequence[str] | None
    ) -> ReadAmplification:
        """From the first shard's layout: bytes a sampled row costs against its own."""
        reader = ParquetReader(catalog, fetcher)
        layout = reader.layout(0)
        fields = reader._fields(layout, columns)
        row = fetched = 0.0
        granularity = "page"
        for rg in range(len(layout.row_groups)):
            rows = max(layout.rows(rg), 1)
            for f in fields:
                for i in layout.fields[f][1]:
                    leaf = layout.leaf(rg, i)
                    row += (leaf.end - leaf.start) / rows
                    if reader._narrow_field(layout, rg, f):
                        fetched += (leaf.end - leaf.start) / rows  # kept in memory
                    elif leaf.index is None or len(layout.fields[f][1]) > 1:
                        fetched += leaf.end - leaf.start
                        granularity = "unit"
                    else:
                        _, size, _ = layout.pages(rg, i)
                        fetched += float(size.mean()) + (leaf.data_start - leaf.start)
        groups = max(len(layout.row_groups), 1)
        advice = (
            ""
            if granularity == "page"
            else "rewrite it with `isloader convert SRC DST` (small pages and a page index): "
            "a sampled row then costs its pages"
        )
        return ReadAmplification(row / groups, fetched / groups, granularity, advice)
