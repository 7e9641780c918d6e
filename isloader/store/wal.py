"""Write-ahead log: an update is durable before it is acknowledged.

Records are framed as ``[u32 length][u32 crc32][u8 kind][payload]`` in numbered
segment files ``wal-<n>.log``. A crash mid-append leaves a torn last record whose
CRC fails; replay stops there, and that record was never acknowledged because its
fsync had not returned.

Group commit: writers append under the caller's lock (so log order is apply order)
and then wait in ``sync(offset)`` outside it; one waiter fsyncs for everyone whose
record is already in the file.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WriteAheadLog"]

_HEADER = struct.Struct("<IIB")


class WriteAheadLog:
    """Append-only segments under ``directory``; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        # Always a fresh segment: an old one may end in a torn record, and replay
        # reads each segment only up to its first bad record.
        segments = self.segments()
        self._segment = segments[-1] + 1 if segments else 0
        self._file = open(self._path(self._segment), "ab")  # noqa: SIM115 - held open
        self._written = 0  # records appended since start (monotone across segments)
        self._synced = 0
        self._syncing = False
        self._cond = threading.Condition()

    @property
    def segment(self) -> int:
        return self._segment

    def segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self._dir.glob("wal-*.log"))

    def append(self, kind: int, payload: bytes) -> int:
        """Append one record (buffered); returns the ticket to pass to ``sync``."""
        self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload), kind) + payload)
        with self._cond:
            self._written += 1
            return self._written

    def sync(self, ticket: int) -> None:
        """Return once the record with ``ticket`` is on disk (fsync'd)."""
        with self._cond:
            while self._synced < ticket:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target = self._written
                self._cond.release()
                try:
                    self._file.flush()
                    os.fsync(self._file.fileno())
                finally:
                    self._cond.acquire()
                    self._syncing = False
                self._synced = max(self._synced, target)
                self._cond.notify_all()

    def roll(self) -> int:
        """Start a new segment (called under the caller's lock at snapshot time);
        returns its number: records before it are covered by the snapshot."""
        with self._cond:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._synced = self._written
            self._file.close()
            self._segment += 1
            self._file = open(self._path(self._segment), "ab")  # noqa: SIM115
            return self._segment

    def drop_before(self, segment: int) -> None:
        """Delete segments older than ``segment`` once a snapshot covers them."""
        for n in self.segments():
            if n < segment:
                self._path(n).unlink(missing_ok=True)

    def replay(self, from_segment: int = 0) -> Iterator[tuple[int, bytes]]:
        """Records ``(kind, payload)`` in order, from ``from_segment`` on; a torn tail ends it."""
        for n in self.segments():
            if n < from_segment:
                continue
            data = self._path(n).read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                length, crc, kind = _HEADER.unpack_from(data, pos)
                payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    break
                yield kind, payload
                pos += _HEADER.size + length

    def close(self) -> None:
        with self._cond:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def _path(self, n: int) -> Path:
        return self._dir / f"wal-{n:08d}.log"
