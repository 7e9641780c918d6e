"""Write-ahead log: an update is durable before it is acknowledged.

Records are framed as ``[u32 length][u32 crc32][u8 kind][payload]`` in numbered
segment files ``wal-<n>.log``. A crash mid-append leaves a torn last record whose CRC
fails; replay stops there, and that record was never acknowledged because its fsync
had not returned.

Group commit: writers append under the caller's lock (so log order is apply order)
and then wait in ``sync(ticket)`` outside it; one waiter fsyncs for everyone whose
record is already in the file. ``synced`` is the highest ticket known durable.

A failed write or fsync breaks the log. Every record not yet durable has failed, and
its writer is told so only once that is true on disk: the segment is truncated back to
its last durable byte and the truncation fsynced, so a record answered as failed can
never reappear after a restart (after a failed fsync the kernel may or may not have
written its pages; the truncation decides). Appends then fail until ``recover`` opens
a fresh segment. Writes are unbuffered (``FileOps``): nothing waits in a Python buffer
to reach the file later.
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
from isloader.store.files import LOCAL_FILES, FileOps

__all__ = ["WriteAheadLog"]

_HEADER = struct.Struct("<IIB")


class WriteAheadLog:
    """Append-only segments under ``directory``; see the module docstring.

    Args:
        directory: where the segments live (created).
        files: the filesystem calls (recorded by the crash-consistency checker).
    """

    def __init__(self, directory: str | os.PathLike[str], files: FileOps = LOCAL_FILES) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._files = files
        # Always a fresh segment: an old one may end in a torn record, and replay
        # reads each segment only up to its first bad record.
        segments = self.segments()
        self._segment = segments[-1] + 1 if segments else 0
        self._fd = files.create(str(self._path(self._segment)))
        self._offset = 0  # bytes appended to the current segment
        self._synced_offset = 0  # of which durable
        self._written = 0  # tickets: records appended since start (monotone)
        self._synced = 0
        self._failed: list[tuple[int, int]] = []  # ticket ranges that never became durable
        self._unknown: list[tuple[int, int]] = []  # failed, but could not be taken back
        self._syncing = False
        self._broken: BaseException | None = None
        self._cond = threading.Condition()

    @property
    def segment(self) -> int:
        """The number of the segment records are appended to now."""
        return self._segment

    @property
    def written(self) -> int:
        """The ticket of the last record appended."""
        return self._written

    @property
    def synced(self) -> int:
        """The highest ticket known to be on disk."""
        return self._synced

    @property
    def broken(self) -> bool:
        """Whether a write or fsync failed and the log refuses records until reopened."""
        return self._broken is not None

    def segments(self) -> list[int]:
        """This log's segment numbers on disk, oldest first."""
        return self.existing_segments(self._dir)

    @staticmethod
    def existing_segments(directory: str | os.PathLike[str]) -> list[int]:
        """Segment numbers present under ``directory`` (none when it does not exist)."""
        return sorted(int(p.stem.split("-")[1]) for p in Path(directory).glob("wal-*.log"))

    def failed(self, ticket: int) -> bool:
        """Whether the record with ``ticket`` was lost to a failed write or fsync."""
        return any(lo <= ticket <= hi for lo, hi in self._failed)

    def durable(self, ticket: int) -> bool:
        """Whether the record with ``ticket`` is on disk (synced and not lost to a failure)."""
        return ticket <= self._synced and not self.failed(ticket)

    def append(self, kind: int, payload: bytes) -> int:
        """Append one record; returns the ticket to pass to ``sync``.

        Raises:
            StoreNotWritableError: the log is broken, or the write failed (it breaks it).
        """
        record = _HEADER.pack(len(payload), zlib.crc32(payload), kind) + payload
        with self._cond:
            self._raise_broken()
            try:
                self._files.write(self._fd, record)
            except OSError as exc:
                self._break(exc)
            self._offset += len(record)
            self._written += 1
            return self._written

    def sync(self, ticket: int) -> None:
        """Return once the record with ``ticket`` is on disk (fsync'd).

        Raises:
            StoreNotWritableError: the record was not made durable (and never will be).
        """
        with self._cond:
            while True:
                if any(lo <= ticket <= hi for lo, hi in self._unknown):
                    raise StoreNotWritableError(
                        f"write-ahead log in {self._dir}: record {ticket} may or may not "
                        "survive a restart (the failed segment could not be truncated): "
                        "retry it with the same request id"
                    )
                if self.failed(ticket):
                    raise StoreNotWritableError(
                        f"write-ahead log in {self._dir}: record {ticket} was not written "
                        f"durably ({self._broken or 'the log failed'})"
                    )
                if self._synced >= ticket:
                    return
                self._raise_broken()
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, offset, segment = self._written, self._offset, self._segment
                self._cond.release()
                failure = None
                try:
                    self._files.fsync(self._fd)
                except OSError as exc:
                    failure = exc
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if failure is not None:
                    self._break(failure)
                if segment != self._segment or self._broken is not None:
                    continue  # the log broke meanwhile: this fsync vouches for nothing
                self._synced = max(self._synced, target)
                self._synced_offset = max(self._synced_offset, offset)

    def sync_all(self) -> None:
        """Make every record appended so far durable (those lost to a failure stay lost).

        Raises:
            StoreNotWritableError: the log is broken, or the fsync failed (which breaks it).
        """
        with self._cond:
            self._raise_broken()
            while self._syncing:
                self._cond.wait()
                self._raise_broken()
            if self._synced >= self._written:
                return
            try:
                self._files.fsync(self._fd)
            except OSError as exc:
                self._break(exc)
            self._synced, self._synced_offset = self._written, self._offset

    def recover(self) -> None:
        """Continue in a fresh segment after a failure (the broken one, truncated to what
        was durable, stays for replay).

        Raises:
            StoreNotWritableError: the new segment cannot be created either.
        """
        with self._cond:
            if self._broken is None:
                return
            try:
                fresh = self._files.create(str(self._path(self._segment + 1)))
            except OSError as exc:
                raise StoreNotWritableError(f"write-ahead log in {self._dir}: {exc}") from exc
            self._close_quietly()
            self._segment += 1
            self._fd, self._offset, self._synced_offset = fresh, 0, 0
            self._broken = None

    def roll(self) -> int:
        """Make everything appended durable and start a new segment (called under the
        caller's lock at snapshot time); returns its number: records before it are
        covered by the snapshot.

        Raises:
            StoreNotWritableError: the log is broken, or syncing it failed (which breaks
                it); a new segment that cannot be opened leaves the current one in use.
        """
        with self._cond:
            self._raise_broken()
            while self._syncing:
                self._cond.wait()
            try:
                self._files.fsync(self._fd)
            except OSError as exc:
                self._break(exc)
            self._synced, self._synced_offset = self._written, self._offset
            try:
                fresh = self._files.create(str(self._path(self._segment + 1)))
            except OSError as exc:
                raise StoreNotWritableError(f"cannot start a new log segment: {exc}") from exc
            self._close_quietly()
            self._segment += 1
            self._fd, self._offset, self._synced_offset = fresh, 0, 0
            return self._segment

    def _break(self, exc: OSError) -> None:
        """Mark the log broken (under ``_cond``): every record not yet durable has failed;
        the segment goes back to its durable length before anyone is told. Raises the
        named error."""
        lost = (self._synced + 1, self._written)
        if self._written > self._synced:
            self._failed.append(lost)
        self._broken = exc
        try:
            self._files.truncate(self._fd, self._synced_offset)
            self._files.fsync(self._fd)
            self._offset = self._synced_offset
        except OSError as again:
            self._broken = again
            if self._written > self._synced:
                self._unknown.append(lost)
        self._cond.notify_all()
        raise StoreNotWritableError(f"write-ahead log in {self._dir}: {exc}") from exc

    def _raise_broken(self) -> None:
        if self._broken is not None:
            raise StoreNotWritableError(
                f"write-ahead log in {self._dir} failed ({self._broken}); not writable"
            )

    def _close_quietly(self) -> None:
        with contextlib.suppress(OSError):  # nothing unsynced in it was acknowledged
            self._files.close(self._fd)

    def drop_before(self, segment: int) -> None:
        """Delete segments older than ``segment`` once a snapshot covers them."""
        for n in self.segments():
            if n < segment:
                self._files.unlink(str(self._path(n)))

    def replay(
        self, from_segment: int = 0, kinds: frozenset[int] = frozenset(range(1, 256))
    ) -> Iterator[tuple[int, bytes]]:
        """Records ``(kind, payload)`` in order, from ``from_segment`` on; a torn tail (a
        bad CRC, a kind not in ``kinds``) ends a segment."""
        for n in self.segments():
            if n < from_segment:
                continue
            data = self._path(n).read_bytes()
            pos = 0
            while pos + _HEADER.size <= len(data):
                length, crc, kind = _HEADER.unpack_from(data, pos)
                payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
                if len(payload) != length or zlib.crc32(payload) != crc or kind not in kinds:
                    break
                yield kind, payload
                pos += _HEADER.size + length

    def close(self) -> None:
        """Fsync what was written (unless the log is broken) and close the segment."""
        with self._cond:
            if self._broken is None:
                with contextlib.suppress(OSError):  # nothing unsynced was acknowledged
                    self._files.fsync(self._fd)
            self._close_quietly()

    def _path(self, n: int) -> Path:
        return self._dir / f"wal-{n:08d}.log"
