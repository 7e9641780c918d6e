"""Reading single Parquet row groups from exactly the bytes they occupy.

pyarrow reads a row group through a file object; ``SparseFile`` is one that holds
only the footer and the fetched column chunks, so a sampled read costs one range
request per row group (its requested columns' chunks, merged) instead of a whole
file. The footer is fetched once per shard and reused.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from isloader.data.fetch import RangeFetcher
from isloader.errors import CorruptShardError

__all__ = ["SparseFile", "ParquetFooters", "column_chunk_range"]

_TAIL = 64 * 1024


class SparseFile(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only some ranges are present.

    A read outside them falls back to ``fetch_more`` (counted like any other fetch),
    so an unexpected access pattern costs a request, never a wrong answer.
    """

    def __init__(self, size: int, ranges: dict[int, bytes], fetch_more=None) -> None:
        self._size = size
        self._ranges = sorted(ranges.items())
        self._fetch_more = fetch_more
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        start, end = self._pos, self._pos + want
        for offset, data in self._ranges:
            if offset <= start and end <= offset + len(data):
                buffer[:want] = data[start - offset : end - offset]
                self._pos = end
                return want
        if self._fetch_more is None:
            raise OSError(f"bytes [{start}, {end}) were not fetched")
        data = self._fetch_more(start, end)
        self._ranges.append((start, data))
        buffer[:want] = data
        self._pos = end
        return want


def column_chunk_range(meta: pq.FileMetaData, rg: int, columns: list[int]) -> tuple[int, int]:
    """``[start, end)`` spanning the chunks of ``columns`` in row group ``rg``."""
    group = meta.row_group(rg)
    starts, ends = [], []
    for c in columns:
        col = group.column(c)
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset is not None:
            start = min(start, col.dictionary_page_offset)
        starts.append(start)
        ends.append(start + col.total_compressed_size)
    return min(starts), max(ends)


class ParquetFooters:
    """Footer metadata of each shard, fetched with one tail read and kept."""

    def __init__(self, fetcher: RangeFetcher) -> None:
        self._fetcher = fetcher
        self._footers: dict[int, tuple[pq.FileMetaData, int, bytes]] = {}

    def prefetch(self, shards: np.ndarray) -> None:
        """Fetch the tails of the shards not seen yet, all in one concurrent round."""
        todo = [int(s) for s in np.unique(shards) if int(s) not in self._footers]
        if len(todo) < 2:
            return
        sizes = [self._fetcher.catalog.shards[s].size for s in todo]
        starts = [max(0, size - _TAIL) for size in sizes]
        tails = self._fetcher.fetch(np.array(todo), np.array(starts), np.array(sizes))
        for shard, start, tail in zip(todo, starts, tails, strict=True):
            self._parse(shard, start, tail)

    def get(self, shard: int) -> tuple[pq.FileMetaData, int, bytes]:
        """``(metadata, tail offset, tail bytes)`` of the shard."""
        if shard not in self._footers:
            size = self._fetcher.catalog.shards[shard].size
            offset = max(0, size - _TAIL)
            self._parse(shard, offset, self._fetch(shard, offset, size))
        return self._footers[shard]

    def _parse(self, shard: int, offset: int, tail: bytes) -> None:
        size = self._fetcher.catalog.shards[shard].size
        uri = self._fetcher.catalog.uri(shard)
        footer_len = int.from_bytes(tail[-8:-4], "little") if len(tail) >= 8 else -1
        if tail[-4:] != b"PAR1" or footer_len < 0:
            raise CorruptShardError(uri, "no Parquet footer")
        if footer_len + 8 > len(tail):
            offset = max(0, size - footer_len - 8)
            tail = self._fetch(shard, offset, size)
        try:
            meta = pq.ParquetFile(SparseFile(size, {offset: tail})).metadata
        except (pa.ArrowException, OSError) as exc:
            raise CorruptShardError(uri, f"unreadable footer ({exc})") from exc
        self._footers[shard] = (meta, offset, tail)

    def _fetch(self, shard: int, start: int, end: int) -> bytes:
        return self._fetcher.fetch(np.array([shard]), np.array([start]), np.array([end]))[0]

    def decode(
        self, shard: int, rg: int, columns: list[str] | None, chunk_start: int, chunk: bytes
    ) -> pa.Table:
        """Decode row group ``rg`` of ``shard`` from its fetched column-chunk bytes."""
        meta, tail_offset, tail = self.get(shard)
        size = self._fetcher.catalog.shards[shard].size

        def more(start: int, end: int) -> bytes:
            return self._fetch(shard, start, end)

        source = SparseFile(size, {tail_offset: tail, chunk_start: chunk}, more)
        try:
            return pq.ParquetFile(source, metadata=meta).read_row_group(rg, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            uri = self._fetcher.catalog.uri(shard)
            raise CorruptShardError(uri, f"row group {rg} cannot be decoded ({exc})") from exc
