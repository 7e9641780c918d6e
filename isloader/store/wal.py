"""Write-ahead log: an update is durable before it is acknowledged.

Records are framed as ``[u32 length][u32 crc32][u8 kind][payload]`` in numbered
segment files ``wal-<n>.log``. A crash mid-append leaves a torn last record whose
CRC fails; replay stops there, and that record was never acknowledged because its
fsync had not returned.

Group commit: writers append under the caller's lock (so log order is apply order)
and then wait in ``sync(ticket)`` outside it; one waiter fsyncs for everyone whose
record is already in the file. ``synced`` is the highest ticket known durable.

A failed write or fsync breaks the log: every waiter whose record was not yet durable
gets ``StoreNotWritableError`` (after a failed fsync the kernel may have dropped the
pages, so no later fsync can vouch for them), and so does every append until
``recover`` opens a fresh segment. A failed roll keeps the current segment.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from isloader.errors import StoreNotWritableError

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
        self._broken: BaseException | None = None
        self._cond = threading.Condition()

    @property
    def segment(self) -> int:
        return self._segment

    @property
    def written(self) -> int:
        """The ticket of the last record appended."""
        return self._written

    def segments(self) -> list[int]:
        return self.existing_segments(self._dir)

    @staticmethod
    def existing_segments(directory: str | os.PathLike[str]) -> list[int]:
        """Segment numbers present under ``directory`` (none when it does not exist)."""
        return sorted(int(p.stem.split("-")[1]) for p in Path(directory).glob("wal-*.log"))

    @property
    def synced(self) -> int:
        """The highest ticket known to be on disk."""
        return self._synced

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def append(self, kind: int, payload: bytes) -> int:
        """Append one record (buffered); returns the ticket to pass to ``sync``.

        Raises:
            StoreNotWritableError: the log is broken, or the write failed (it breaks it).
        """
        with self._cond:
            self._raise_broken()
            try:
                self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload), kind) + payload)
            except OSError as exc:
                self._break(exc)
            self._written += 1
            return self._written

    def sync(self, ticket: int) -> None:
        """Return once the record with ``ticket`` is on disk (fsync'd).

        Raises:
            StoreNotWritableError: the log broke before the record was durable.
        """
        with self._cond:
            while self._synced < ticket:
                self._raise_broken()
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target = self._written
                self._cond.release()
                failure = None
                try:
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    failure = exc
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if failure is not None:
                    self._break(failure)
                self._synced = max(self._synced, target)

    def recover(self) -> None:
        """Continue in a fresh segment after a failure (the torn one stays for replay).

        Raises:
            StoreNotWritableError: the new segment cannot be created either.
        """
        with self._cond:
            if self._broken is None:
                return
            try:
                fresh = open(self._path(self._segment + 1), "ab")  # noqa: SIM115
            except OSError as exc:
                raise StoreNotWritableError(f"write-ahead log in {self._dir}: {exc}") from exc
            with contextlib.suppress(OSError):  # its unsynced bytes were never acknowledged
                self._file.close()
            self._segment += 1
            self._file = fresh
            self._synced = self._written  # nothing before this point waits any more
            self._broken = None

    def roll(self) -> int:
        """Start a new segment (called under the caller's lock at snapshot time);
        returns its number: records before it are covered by the snapshot.

        Raises:
            StoreNotWritableError: the log is broken, or syncing it failed (which breaks
                it); a new segment that cannot be opened leaves the current one in use.
        """
        with self._cond:
            self._raise_broken()
            try:
                fresh = open(self._path(self._segment + 1), "ab")  # noqa: SIM115
            except OSError as exc:
                raise StoreNotWritableError(f"cannot start a new log segment: {exc}") from exc
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                fresh.close()
                self._path(self._segment + 1).unlink(missing_ok=True)
                self._break(exc)
            self._synced = self._written
            self._file.close()
            self._segment += 1
            self._file = fresh
            return self._segment

    def _break(self, exc: OSError) -> None:
        """Mark the log broken (under ``_cond``) and raise the named error."""
        self._broken = exc
        self._cond.notify_all()
        raise StoreNotWritableError(f"write-ahead log in {self._dir}: {exc}") from exc

    def _raise_broken(self) -> None:
        if self._broken is not None:
            raise StoreNotWritableError(
                f"write-ahead log in {self._dir} failed ({self._broken}); not writable"
            )

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
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError:
                pass  # broken: nothing unsynced was acknowledged
            self._file.close()

    def _path(self, n: int) -> Path:
        return self._dir / f"wal-{n:08d}.log"
