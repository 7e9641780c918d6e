"""Caches of rows, kept by importance per byte (docs/architecture.md, "The row cache").

In the random row order the method needs, a unit's mass is an average of hundreds of
independent q's, so caching units by mass is barely better than a uniform cache; caching
*rows* by ``q / bytes`` covers most of the mass with a fraction of the bytes (lognormal
q, sigma 1: 0.84 of the mass at half the rows). A row is drawn with probability
``p_i = q_i / Q``, so the hit rate of a cache is the mass share of what it holds, and
keeping the rows of highest ``p_i / bytes_i`` maximises it for a byte budget.

- ``RowCodec``: a row's values (of the requested columns) as one ``bytes``: a header of
  ``u32`` lengths, then the values (binary as is, fixed-width numbers and lists of them
  as their little-endian buffers, anything else as a one-row Arrow IPC batch); rows
  decode back to an Arrow table in one pass per column.
- ``DiskRows``: a node's tier, one SQLite file per dataset and column set (1 KiB pages:
  a 4 KB row takes about 4.2 KB; LMDB would round it to 8 KB), shared by every process of
  the node (SQLite's locking), bounded by the bytes its used pages take. ``rank`` updates
  every density from the store once per epoch per node (pruned rows leave); ``offer``
  admits rows whose density beats what they would evict. Both are best effort: a writer
  that cannot get the file's lock within ``timeout`` (another process holds it) skips,
  and the rows it was offering are still returned to the trainer (counted in
  ``skipped``). A cache never fails a read.
- ``MemoryRows``: one process's tier, the same rule in a dict and a heap.

Both tiers answer ``get`` (found rows by index) and ``offer``; ``admit`` is the one rule.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

__all__ = ["RowCodec", "DiskRows", "MemoryRows", "admit"]


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLite's "database is locked" / "busy": another process held the file too long."""
    return "locked" in str(exc) or "busy" in str(exc)


_NULL = 0xFFFFFFFF
_PAGE = 1024
_SQL_VARIABLES = 30_000


# -- encoding --------------------------------------------------------------------------


def _kind(t: pa.DataType) -> str:
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or (pa.types.is_large_string(t))
    ):
        return "bytes"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "fixed"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)
    ):
        return "list"
    return "ipc"


class RowCodec:
    """Rows of ``schema`` to and from single ``bytes`` values; see the module docstring."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.kinds = [_kind(f.type) for f in schema]
        self._header = struct.Struct(f"<{len(schema)}I")

    def encode(self, table: pa.Table) -> list[bytes]:
        """One ``bytes`` per row of ``table`` (its columns in the codec's schema order)."""
        n = table.num_rows
        columns = [self._values(table.column(f.name).combine_chunks(), k)
                   for f, k in zip(self.schema, self.kinds, strict=True)]  # fmt: skip
        out = []
        for i in range(n):
            values = [c[i] for c in columns]
            lengths = [_NULL if v is None else len(v) for v in values]
            out.append(self._header.pack(*lengths) + b"".join(v for v in values if v is not None))
        return out

    def _values(self, array: pa.Array, kind: str) -> list[bytes | None]:
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        if kind == "bytes":
            values = array.to_pylist()
            return [v.encode() if isinstance(v, str) else v for v in values]
        if kind == "fixed":
            width = array.type.byte_width
            raw = np.frombuffer(array.buffers()[1], np.uint8)[
                array.offset * width : (array.offset + len(array)) * width
            ]
            rows = raw.reshape(len(array), width)
            return [rows[i].tobytes() if valid[i] else None for i in range(len(array))]
        if kind == "list":
            offsets = array.offsets.to_numpy()
            width = array.type.value_type.byte_width
            values = np.asarray(array.values.to_numpy(zero_copy_only=False)).view(np.uint8)
            return [
                values[offsets[i] * width : offsets[i + 1] * width].tobytes() if valid[i] else None
                for i in range(len(array))
            ]
        out: list[bytes | None] = []
        for i in range(len(array)):
            batch = pa.record_batch([array.slice(i, 1)], names=["v"])
            out.append(batch.serialize().to_pybytes())
        return out

    def decode(self, rows: Sequence[bytes]) -> pa.Table:
        """The table of ``rows`` (each made by ``encode`` with this schema)."""
        k = len(self.schema)
        head = self._header.size
        lengths = np.array([self._header.unpack_from(r) for r in rows], np.int64).reshape(-1, k)
        nulls = lengths == _NULL
        sizes = np.where(nulls, 0, lengths)
        starts = head + np.concatenate([np.zeros((len(rows), 1), np.int64),
                                        np.cumsum(sizes, axis=1)[:, :-1]], axis=1)  # fmt: skip
        arrays = []
        for c, (f, kind) in enumerate(zip(self.schema, self.kinds, strict=True)):
            values = [r[s : s + n] for r, s, n in zip(rows, starts[:, c], sizes[:, c], strict=True)]
            arrays.append(self._array(f.type, kind, values, nulls[:, c]))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _array(self, t: pa.DataType, kind: str, values: list[bytes], null: np.ndarray) -> pa.Array:
        mask = null if null.any() else None
        if kind == "bytes":
            return pa.array([None if z else v for v, z in zip(values, null, strict=True)], t)
        if kind == "fixed":
            width = t.byte_width
            flat = b"".join(v if not z else bytes(width) for v, z in zip(values, null, strict=True))
            return pa.array(np.frombuffer(flat, t.to_pandas_dtype()), t, mask=mask)
        if kind == "list":
            width = t.value_type.byte_width
            counts = np.array([len(v) // width for v in values], np.int64)
            offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
            flat = np.frombuffer(b"".join(values), t.value_type.to_pandas_dtype())
            valid = pa.array(mask) if mask is not None else None
            array = pa.ListArray.from_arrays(offsets, pa.array(flat, t.value_type), mask=valid)
            return array.cast(t)
        pieces = [
            pa.ipc.read_record_batch(pa.py_buffer(v), pa.schema([pa.field("v", t)])).column(0)
            if not z
            else pa.nulls(1, t)
            for v, z in zip(values, null, strict=True)
        ]
        return pa.concat_arrays(pieces) if pieces else pa.array([], t)


# -- the rule ----------------------------------------------------------------------------


def admit(
    offered: list[tuple[int, float, int]],
    free: float,
    victims: Iterator[tuple[int, float, int]],
) -> tuple[list[int], list[int]]:
    """Which offered rows go in and which cached rows make room, by density.

    ``offered``: ``(index, density, bytes)``; ``free``: bytes free now; ``victims``: the
    cached rows ``(index, density, bytes)`` lowest density first. A row goes in when it
    fits, or when the rows it would evict are all less dense than it; offers are taken
    densest first, and the first one turned away ends the round (the rest are less
    dense still). Returns ``(admitted indices, evicted indices)``.
    """
    admitted, evicted = [], []
    pending: tuple[int, float, int] | None = None
    for index, density, size in sorted(offered, key=lambda o: -o[1]):
        while free < size:
            if pending is None:
                pending = next(victims, None)
            if pending is None or pending[1] >= density:
                return admitted, evicted
            evicted.append(pending[0])
            free += pending[2]
            pending = None
        admitted.append(index)
        free -= size
    return admitted, evicted


# -- the tiers ---------------------------------------------------------------------------


class MemoryRows:
    """One process's rows, kept by density within ``limit_bytes`` (``admit``)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = int(limit_bytes)
        self._rows: dict[int, tuple[bytes, float]] = {}
        self._heap: list[tuple[float, int]] = []  # (density, index), stale entries skipped
        self._used = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Payload bytes held."""
        return self._used

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, indices: np.ndarray) -> dict[int, bytes]:
        """The held rows among ``indices``."""
        with self._lock:
            return {int(i): self._rows[int(i)][0] for i in indices if int(i) in self._rows}

    def _victims(self) -> Iterator[tuple[int, float, int]]:
        while self._heap:
            density, index = heapq.heappop(self._heap)
            row = self._rows.get(index)
            if row is not None and row[1] == density:
                yield index, density, len(row[0])

    def offer(self, indices: Sequence[int], rows: Sequence[bytes], density: np.ndarray) -> int:
        """Offer rows with their densities; returns how many went in."""
        if self.limit <= 0:
            return 0
        with self._lock:
            offered = [(int(i), float(d), len(r))
                       for i, r, d in zip(indices, rows, density, strict=True)
                       if int(i) not in self._rows and d > 0]  # fmt: skip
            data = {int(i): r for i, r in zip(indices, rows, strict=True)}
            admitted, evicted = admit(offered, self.limit - self._used, self._victims())
            for index in evicted:
                self._used -= len(self._rows.pop(index)[0])
            dens = {i: d for i, d, _ in offered}
            for index in admitted:
                self._rows[index] = (data[index], dens[index])
                heapq.heappush(self._heap, (dens[index], index))
                self._used += len(data[index])
            return len(admitted)

    def rank(self, density: Callable[[np.ndarray], np.ndarray]) -> None:
        """New densities for every held row (0 drops it: pruned)."""
        with self._lock:
            held = np.fromiter(self._rows, np.int64, len(self._rows))
            values = density(held) if len(held) else np.zeros(0)
            self._heap = []
            for index, d in zip(held.tolist(), values.tolist(), strict=True):
                data = self._rows[index][0]
                if d <= 0:
                    del self._rows[index]
                    self._used -= len(data)
                else:
                    self._rows[index] = (data, d)
                    self._heap.append((d, index))
            heapq.heapify(self._heap)

    def indices(self) -> np.ndarray:
        """Every held index."""
        with self._lock:
            return np.fromiter(self._rows, np.int64, len(self._rows))


class DiskRows:
    """A node's rows in one SQLite file, kept by density within ``limit_bytes`` of used
    pages; safe for several processes (SQLite locks the file). See the module docstring.

    Args:
        path: the file (its directory is created).
        limit_bytes: most bytes its used pages may take.
        timeout: seconds a write waits for another process's lock before it skips.
    """

    def __init__(self, path: str, limit_bytes: int, *, timeout: float = 10.0) -> None:
        self.path = path
        self.limit = int(limit_bytes)
        self.timeout = timeout
        self.skipped = 0  # rows offered while another process held the lock too long
        self._schema: bytes | None = None
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._db.execute(f"PRAGMA page_size={_PAGE}")
            self._db.execute("PRAGMA synchronous=OFF")  # a cache: a crash may lose it whole
            self._db.execute("PRAGMA journal_mode=DELETE")
            with self._write():
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, "
                    "density REAL NOT NULL, data BLOB NOT NULL)"
                )
                self._db.execute("CREATE INDEX IF NOT EXISTS by_density ON rows(density)")
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
                # the payload bytes, kept by the file itself for every process that writes
                # it (a scan per offer was most of a sampled read's CPU)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) "
                    "SELECT 'payload', total(length(data)) FROM rows"
                )
                self._db.execute(
                    "CREATE TRIGGER IF NOT EXISTS payload_in AFTER INSERT ON rows BEGIN "
                    "UPDATE meta SET value = value + length(NEW.data) WHERE key = 'payload'; END"
                )
                self._db.execute(
                    "CREATE TRIGGER IF NOT EXISTS payload_out AFTER DELETE ON rows BEGIN "
                    "UPDATE meta SET value = value - length(OLD.data) WHERE key = 'payload'; END"
                )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction (taken at once: writers queue on SQLite's lock); a
        failed one, its COMMIT included, is rolled back."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @property
    def nbytes(self) -> int:
        """Bytes the file's used pages take: what the cache holds."""
        with self._lock:
            return self._used()

    def _used(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * _PAGE

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM rows").fetchone()[0]

    def get(self, indices: np.ndarray) -> dict[int, bytes]:
        """The cached rows among ``indices``."""
        out: dict[int, bytes] = {}
        wanted = np.unique(np.asarray(indices, np.int64)).tolist()
        with self._lock:
            for k in range(0, len(wanted), _SQL_VARIABLES):
                chunk = wanted[k : k + _SQL_VARIABLES]
                marks = ",".join("?" * len(chunk))
                for index, data in self._db.execute(
                    f"SELECT idx, data FROM rows WHERE idx IN ({marks})", chunk
                ):
                    out[index] = data
        return out

    def _overhead(self) -> float:
        """Used bytes per payload byte, as measured (page slack, the density index)."""
        payload = self._db.execute("SELECT value FROM meta WHERE key = 'payload'").fetchone()[0]
        if not payload:
            return 1.1
        return max(1.0, self._used() / payload)

    def offer(self, indices: Sequence[int], rows: Sequence[bytes], density: np.ndarray) -> int:
        """Offer rows with their densities; returns how many went in (``admit``), 0 where
        the file stayed locked by another process for ``timeout`` (``skipped``)."""
        if self.limit <= 0 or not len(rows):
            return 0
        try:
            return self._offer(indices, rows, density)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            with self._lock:
                self.skipped += len(rows)
            return 0

    def _offer(self, indices: Sequence[int], rows: Sequence[bytes], density: np.ndarray) -> int:
        with self._lock, self._write():
            if self._schema is not None:  # every row lands beside its schema
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (self._schema,)
                )
            present = self.get_present(indices)
            factor = self._overhead()
            offered = [(int(i), float(d), int(len(r) * factor) + 1)
                       for i, r, d in zip(indices, rows, density, strict=True)
                       if int(i) not in present and d > 0]  # fmt: skip
            victims = (
                (index, d, int(size * factor) + 1)
                for index, d, size in self._db.execute(
                    "SELECT idx, density, length(data) FROM rows ORDER BY density"
                )
            )
            admitted, evicted = admit(offered, self.limit - self._used(), victims)
            self._db.executemany("DELETE FROM rows WHERE idx = ?", [(i,) for i in evicted])
            data = {int(i): r for i, r in zip(indices, rows, strict=True)}
            dens = {i: d for i, d, _ in offered}
            self._db.executemany(
                "INSERT INTO rows (idx, density, data) VALUES (?, ?, ?)",
                [(i, dens[i], data[i]) for i in admitted],
            )
            self._trim()
        return len(admitted)

    def get_present(self, indices: Sequence[int]) -> set[int]:
        """Which of ``indices`` the file holds (call inside a write transaction)."""
        wanted = [int(i) for i in indices]
        found: set[int] = set()
        for k in range(0, len(wanted), _SQL_VARIABLES):
            chunk = wanted[k : k + _SQL_VARIABLES]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._db.execute(
                f"SELECT idx FROM rows WHERE idx IN ({marks})", chunk))  # fmt: skip
        return found

    def _trim(self) -> None:
        """Evict the least dense rows while the used pages exceed the limit (the measured
        overhead is an estimate)."""
        while self._used() > self.limit:
            gone = self._db.execute(
                "DELETE FROM rows WHERE idx IN (SELECT idx FROM rows ORDER BY density LIMIT 16)"
            ).rowcount
            if not gone:
                return

    def rank(self, epoch: int, density: Callable[[np.ndarray], np.ndarray]) -> bool:
        """New densities for every cached row from the store, once per ``epoch`` for the
        whole node (the first process to ask does it); rows whose density is 0 (pruned)
        leave. Returns whether this call did it. The densities are asked for (a store
        lookup) before the write lock is taken, so other processes' reads and offers
        never wait on the store; rows offered meanwhile keep the densities they came with.
        A lock held by another process past ``timeout`` skips this epoch's ranking here."""
        if self._ranked(epoch):
            return False
        held = self.indices()
        values = np.asarray(density(held), float) if len(held) else np.zeros(0)
        try:
            return self._rank(epoch, held, values)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            return False

    def _ranked(self, epoch: int) -> bool:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'ranked'").fetchone()
        return row is not None and row[0] >= epoch

    def _rank(self, epoch: int, held: np.ndarray, values: np.ndarray) -> bool:
        with self._lock, self._write():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'ranked'").fetchone()
            if row is not None and row[0] >= epoch:
                return False  # another process ranked while the densities were asked for
            gone = held[values <= 0].tolist()
            self._db.executemany("DELETE FROM rows WHERE idx = ?", [(i,) for i in gone])
            keep = values > 0
            self._db.executemany(
                "UPDATE rows SET density = ? WHERE idx = ?",
                list(zip(values[keep].tolist(), held[keep].tolist(), strict=True)),
            )
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ranked', ?)",
                             (epoch,))  # fmt: skip
        return True

    def indices(self) -> np.ndarray:
        """Every index the file holds (any process's rows)."""
        with self._lock:
            return np.array([r[0] for r in self._db.execute("SELECT idx FROM rows")], np.int64)

    def remember_schema(self, schema: pa.Schema) -> None:
        """Keep the rows' Arrow schema beside them, so any process can decode them (it
        is written with the first rows this process offers)."""
        self._schema = schema.serialize().to_pybytes()

    def schema(self) -> pa.Schema:
        """The Arrow schema rows were stored with (empty before any row)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        return pa.ipc.read_schema(pa.py_buffer(row[0])) if row else pa.schema([])

    def close(self) -> None:
        """Close this process's connection to the file."""
        with self._lock:
            self._db.close()

    def __reduce__(self) -> tuple:
        return DiskRows, (self.path, self.limit)
