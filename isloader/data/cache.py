"""Caches of decoded units: importance sampling keeps revisiting the hot samples.

Two tiers (docs/architecture.md, "The importance-aware cache"):

- ``ByteLRU``: decoded units in one process's memory up to a byte budget, segmented
  so that one-off reads cannot flush the hot set.
- ``UnitCache``: decoded units as Arrow IPC files on a node's local disk, memory-
  mapped on read and shared by every process of the node; kept by **importance
  mass**, not recency. Locality-aware draws fetch a unit with probability
  ``mass_u / Q``, so the hit rate is the share of the mass the cached units cover,
  and keeping the units of highest mass per byte maximises it.

``UnitCache`` concurrency: a writer writes a temporary file and publishes it with
``os.replace`` (readers see a whole unit or none); admission and eviction take an
exclusive ``flock`` on the directory's lock file; a reader that mapped a file keeps
its pages after another process unlinks it, and a file unlinked before it was
opened is a miss.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

__all__ = ["ByteLRU", "UnitCache", "CacheCounters"]

_IPC_OVERHEAD = 1024  # an Arrow IPC file's framing and schema, about


class ByteLRU:
    """A thread-safe segmented LRU bounded by the summed ``nbytes`` of its values.

    New entries go to a probation segment; a second hit promotes an entry to the
    protected segment (``protected_share`` of the budget). Importance sampling hits
    the hot samples again and again while the cold ones come one at a time, so the
    stream of one-off cold reads evicts other cold reads, not the hot set.
    """

    def __init__(self, capacity_bytes: int, protected_share: float = 0.8) -> None:
        self.capacity = capacity_bytes
        self._protected_cap = int(capacity_bytes * protected_share)
        self._probation: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._protected: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._probation_bytes = 0
        self._protected_bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._probation_bytes + self._protected_bytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._protected.get(key)
            if item is not None:
                self._protected.move_to_end(key)
                return item[0]
            item = self._probation.pop(key, None)
            if item is None:
                return None
            self._probation_bytes -= item[1]
            self._protected[key] = item
            self._protected_bytes += item[1]
            while self._protected_bytes > self._protected_cap:  # demote, not drop
                old_key, old = self._protected.popitem(last=False)
                self._protected_bytes -= old[1]
                self._probation[old_key] = old
                self._probation_bytes += old[1]
            self._evict()
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.capacity:
            return
        with self._lock:
            self._drop(key)
            self._probation[key] = (value, nbytes)
            self._probation_bytes += nbytes
            self._evict()

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        old = self._probation.pop(key, None)
        if old is not None:
            self._probation_bytes -= old[1]
        old = self._protected.pop(key, None)
        if old is not None:
            self._protected_bytes -= old[1]

    def _evict(self) -> None:
        while self.nbytes > self.capacity and self._probation:
            _, (_, size) = self._probation.popitem(last=False)
            self._probation_bytes -= size
        while self.nbytes > self.capacity and self._protected:
            _, (_, size) = self._protected.popitem(last=False)
            self._protected_bytes -= size


@dataclass
class CacheCounters:
    """What one process's ``UnitCache`` did."""

    hits: int = 0
    misses: int = 0
    admitted: int = 0
    rejected: int = 0
    evicted: int = 0


class _Entry(NamedTuple):
    path: str
    unit: int
    key: str
    size: int


class UnitCache:
    """Decoded units on local disk, shared by a node's processes, ranked by mass per byte.

    Args:
        directory: the cache directory of one dataset (created if missing).
        limit_bytes: most bytes of unit files kept in it.
        key_for: what unit ``u`` must hold now (a digest of its shard's path and
            fingerprint, its place in the shard and the columns); a file with another
            key is stale (the shard changed, or the catalog) and goes first.
        default_mass: each unit's mass before any importance is known (its row count:
            uniform q), until ``set_mass``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        limit_bytes: int,
        *,
        key_for: Callable[[int], str],
        default_mass: np.ndarray,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.limit = int(limit_bytes)
        self._key_for = key_for
        self._mass = np.asarray(default_mass, dtype=np.float64)
        self.counters = CacheCounters()
        self._cutoff = -1.0  # densities at or below this were turned away by a full cache
        self._counter_lock = threading.Lock()
        self._thread_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------

    def get(self, unit: int) -> pa.Table | None:
        """The cached table of ``unit`` (memory-mapped), or None."""
        path = self._path(unit, self._key_for(unit))
        try:
            source = pa.memory_map(str(path))
        except FileNotFoundError:
            self._count(misses=1)
            return None
        table = pa.ipc.open_file(source).read_all()  # buffers keep the mapping alive
        self._count(hits=1)
        return table

    # -- writing ---------------------------------------------------------------------

    def put(self, unit: int, table: pa.Table) -> bool:
        """Offer ``table`` as the cached copy of ``unit``; True if it was kept.

        It is kept when it fits, or when the units it would displace have less mass
        per byte than it; otherwise the cache is left as it was. A unit below the last
        admission cutoff of a full cache is turned away without touching the disk.
        """
        key = self._key_for(unit)
        if self._mass[unit] / (table.nbytes + _IPC_OVERHEAD) <= self._cutoff:
            self._count(rejected=1)  # no denser than what a full cache turned away
            return False
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue()
        size = data.size
        if size > self.limit:
            self._count(rejected=1)
            return False
        density = self._mass[unit] / size
        with self._exclusive():
            entries = [e for e in self._entries() if (e.unit, e.key) != (unit, key)]
            used = sum(e.size for e in entries)
            victims = []
            if used + size > self.limit:
                ranked = sorted((self._density(e), e) for e in entries)
                for d, entry in ranked:
                    if used + size <= self.limit:
                        break
                    if d >= density:
                        self._cutoff = d  # the cache is full of denser units
                        self._count(rejected=1)
                        return False
                    victims.append(entry)
                    used -= entry.size
            tmp = self.directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                for entry in victims:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                os.replace(tmp, self._path(unit, key))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        self._count(admitted=1, evicted=len(victims))
        return True

    # -- importance ------------------------------------------------------------------

    def set_mass(self, mass: np.ndarray) -> None:
        """Each unit's current importance mass (refreshed at epoch ends)."""
        self._mass = np.asarray(mass, dtype=np.float64)
        self._cutoff = -1.0  # the ranking changed: look at the disk again

    def covered_mass_share(self) -> float:
        """Share of the total mass held by the units cached now (≈ the hit rate of
        locality-aware draws)."""
        total = float(self._mass.sum())
        if total <= 0:
            return 0.0
        held = {e.unit for e in self._entries() if e.key == self._key_for(e.unit)}
        return float(self._mass[list(held)].sum()) / total if held else 0.0

    @property
    def nbytes(self) -> int:
        return sum(e.size for e in self._entries())

    # -- internals -------------------------------------------------------------------

    def _path(self, unit: int, key: str) -> Path:
        return self.directory / f"{unit:010d}-{key}.arrow"

    def _entries(self) -> list[_Entry]:
        out = []
        with os.scandir(self.directory) as it:
            for item in it:
                name = item.name
                if not name.endswith(".arrow"):
                    continue
                unit, _, key = name[: -len(".arrow")].partition("-")
                try:
                    out.append(_Entry(item.path, int(unit), key, item.stat().st_size))
                except (FileNotFoundError, ValueError):
                    continue  # evicted meanwhile by another process, or not ours
        return out

    def _density(self, entry: _Entry) -> float:
        """Mass per byte of a cached file; stale files (-1) go first."""
        if entry.unit >= len(self._mass) or entry.key != self._key_for(entry.unit):
            return -1.0
        return self._mass[entry.unit] / max(entry.size, 1)

    @contextmanager
    def _exclusive(self):
        with self._thread_lock, open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _count(self, **deltas: int) -> None:
        with self._counter_lock:
            for name, delta in deltas.items():
                setattr(self.counters, name, getattr(self.counters, name) + delta)
