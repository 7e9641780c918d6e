"""``StoreShard``: one table made thread-safe and durable.

It adds to ``ImportanceTable`` what a service needs and the pure state machine must
not have: a lock, the write-ahead log (every change is logged, in apply order,
before it is acknowledged), snapshots (restore on start, then replay the log
written since), and metrics. The gRPC servicer and ``LocalStore`` both wrap it.

An update is validated, deduplicated by ``(client_id, seq)`` and logged; it is
acknowledged once its record is durable, and applied (the EMA) by a background
thread in log order, so the arithmetic is off the request's critical path. Only
durable records are applied and only applied requests count as seen: a retry of a
request whose write failed is applied, and a failed write changes nothing, in memory
or after a restart. Every read and every epoch-level change first applies whatever
durable update is still queued, so a client always sees its own acknowledged updates.

A shard whose log cannot be written refuses writes (``StoreNotWritableError``) and
reports itself not writable to its watchers (the server's health status) until a
write finds the log usable again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from isloader.errors import RequestInProgressError, SnapshotError, StoreNotWritableError
from isloader.store.files import LOCAL_FILES, FileOps
from isloader.store.logrecords import (
    END_EPOCH,
    PRUNE,
    READMIT,
    RESET,
    UPDATE,
    decode_update,
    encode_update,
)
from isloader.store.metrics import ShardMetrics
from isloader.store.records import Plan, ShardView, TableStats, UnitStats
from isloader.store.snapshot import SNAPSHOTS_KEPT, read_latest_snapshot, write_snapshot
from isloader.store.table import ImportanceTable, TableConfig
from isloader.store.wal import WriteAheadLog

__all__ = ["StoreShard", "Durability"]

log = logging.getLogger(__name__)

_METHODS = {END_EPOCH: "end_epoch", PRUNE: "prune", READMIT: "readmit", RESET: "reset"}
_KINDS = (UPDATE, *_METHODS)


class _Pending(NamedTuple):
    """A logged update waiting to be applied (once its ticket is durable)."""

    local: np.ndarray
    values: np.ndarray
    request: tuple[str, int] | None
    ticket: int | None


@dataclass(frozen=True)
class Durability:
    """Where a shard keeps its state: snapshots (any fsspec URI) and the WAL (local dir);
    ``files``: the filesystem calls for local files (recorded by the crash checker)."""

    snapshot_uri: str | None = None
    wal_dir: str | None = None
    storage_options: dict[str, Any] | None = None
    files: FileOps = LOCAL_FILES


class StoreShard:
    """A thread-safe, optionally durable ``ImportanceTable``."""

    def __init__(
        self,
        config: TableConfig,
        durability: Durability | None = None,
        *,
        replay: bool = True,
        apply_inline: bool = False,
    ) -> None:
        self.config = config
        self.durability = durability or Durability()
        self.metrics = ShardMetrics(self._state_gauges)
        self._table = ImportanceTable(config)
        self._lock = threading.Lock()
        self._backlog: list[_Pending] = []
        self._in_flight: set[tuple[str, int]] = set()  # logged, not yet applied
        self._writable = True
        self._watchers: list[Callable[[bool], None]] = []
        self._wake = threading.Event()
        self._closed = False
        self._snapshot_lock = threading.Lock()
        self._snapshot_version = -1
        self._wal: WriteAheadLog | None = None
        d = self.durability
        first_segment = 0
        existing = WriteAheadLog.existing_segments(d.wal_dir) if d.wal_dir else []
        if d.snapshot_uri:
            covered = existing[0] if existing else None
            state = read_latest_snapshot(d.snapshot_uri, d.storage_options, wal_from=covered)
            if state is not None:
                self._table.load_state(state)
                self._snapshot_version = self._table.version
                first_segment = int(state.meta.get("wal_segment", 0))
                log.info(
                    "restored snapshot version %d from %s", self._table.version, d.snapshot_uri
                )
        self._kept_segments = [first_segment]
        if existing and existing[0] > first_segment:
            raise SnapshotError(
                f"{d.wal_dir}: the write-ahead log starts at segment {existing[0]} but the "
                f"state restored needs segment {first_segment} on: updates in between would "
                "be lost (a newer snapshot was removed or is incomplete); restore it, or move "
                "the log aside to start from what remains"
            )
        if d.wal_dir:
            self._wal = WriteAheadLog(d.wal_dir, files=d.files)
            if replay:
                records = self._wal.replay(first_segment, frozenset(_KINDS))
                replayed = sum(1 for _ in map(self._replay, records))
                log.info("replayed %d write-ahead log records", replayed)
        self._inline = apply_inline  # the caller is a background thread already
        self._applier_thread: threading.Thread | None = None
        if not apply_inline:
            self._applier_thread = threading.Thread(
                target=self._applier, daemon=True, name="isloader-apply"
            )
            self._applier_thread.start()

    # -- reads -----------------------------------------------------------------

    def view(self, *, settled: bool = True) -> ShardView:
        """Total mass and active count; ``settled=False`` is as of the last refresh,
        without queued updates (cheap: what an update's reply carries)."""
        if not settled:
            with self._lock:
                return self._table.view(fresh=False)
        with self._settled():
            return self._table.view()

    @property
    def version(self) -> int:
        """The table's state version (it changes with every applied change)."""
        return self._table.version

    @property
    def epoch(self) -> int:
        """The next epoch number ``end_epoch`` applies."""
        return self._table.epoch

    def sample(
        self, count: int, seed: int, *, layout: str | None = None, units: int = 0
    ) -> tuple[Plan, ShardView]:
        """A plan and the shard view it was drawn under (taken under one lock)."""
        with self._timed("sample"), self._settled():
            rng = np.random.default_rng(seed)
            plan = self._table.sample(count, rng, layout=layout, units=units)
            return plan, self._table.view()

    def set_layout(self, layout: str, bounds: np.ndarray) -> int:
        """Register a unit layout (not durable state: clients register it again)."""
        with self._lock:
            return self._table.set_layout(layout, bounds)

    def unit_stats(self, layout: str) -> UnitStats:
        """Per-unit mass and active rows of a registered layout, updates settled first."""
        with self._timed("units"), self._settled():
            return self._table.unit_stats(layout)

    def importance(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` of ``indices`` (queued updates applied first)."""
        with self._settled():
            return self._table.importance(indices)

    def stats(self) -> TableStats:
        """The table's totals (queued updates applied first); also sets the ESS gauge."""
        with self._settled():
            stats = self._table.stats()
        self.metrics.ess.set(stats.effective_sample_size)
        return stats

    # -- changes: validate + apply + log under the lock, fsync outside it -------

    def update(
        self, indices: np.ndarray, values: np.ndarray, client_id: str = "", seq: int = 0
    ) -> bool:
        """Validate, deduplicate and log; acknowledge once durable; apply in log order
        (in the background, or at once with ``apply_inline``). False: a retry.

        Raises:
            InvalidArgumentError, IndexOutOfRangeError: bad input (nothing changes).
            StoreNotWritableError: the log cannot be written (nothing is applied).
            RequestInProgressError: the same request is still being logged.
        """
        request = (client_id, seq) if client_id else None
        with self._timed("update"):
            with self._lock:
                local, vals = self._table.validate_update(indices, values)
                if request is not None:
                    self._table.check_request(request)
                    if self._table.applied(request) or (
                        request in self._in_flight and self._durable_request(request)
                    ):
                        self.metrics.duplicates.inc()
                        return False
                    if request in self._in_flight:
                        raise RequestInProgressError(f"request {seq} of {client_id} in progress")
                ticket = None
                if self._wal is not None:  # encode only when there is a log to write
                    ticket = self._append(UPDATE, encode_update(indices, values, client_id, seq))
                self._backlog.append(_Pending(local, vals, request, ticket))
                if request is not None:
                    self._in_flight.add(request)
            self._sync(ticket)
        if self._inline:
            with self._lock:
                self._apply_backlog()
        else:
            self._wake.set()
        self.metrics.updates.inc()
        self.metrics.updated_samples.inc(len(local))
        return True

    @property
    def writable(self) -> bool:
        """False while the write-ahead log cannot be written (health: NOT_SERVING)."""
        return self._writable

    def watch_writable(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(writable)`` now and whenever the shard's writability changes."""
        self._watchers.append(callback)
        callback(self._writable)

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """``q += eps`` once per epoch number, logged before it is applied; returns whether
        it applied. Raises ``InvalidArgumentError`` (bounds) or ``StoreNotWritableError``."""
        return self._change(END_EPOCH, "end_epoch", epoch=epoch, eps=eps)

    def prune(self, threshold: float, epoch: int | None = None) -> int:
        """Alg. 2 at ``threshold`` (once per ``epoch`` when given), logged first; returns how
        many were pruned. Raises ``InvalidArgumentError`` or ``StoreNotWritableError``."""
        return self._change(PRUNE, "prune", threshold=threshold, epoch=epoch)

    def readmit(self, fraction: float, seed: int, epoch: int | None = None) -> int:
        """Readmit a random ``fraction`` of pruned samples, logged first; returns how many.
        Raises ``InvalidArgumentError`` or ``StoreNotWritableError``.
        """
        return self._change(READMIT, "readmit", fraction=fraction, seed=seed, epoch=epoch)

    def reset(self) -> None:
        """Forget every measurement (logged first). Raises ``StoreNotWritableError``."""
        self._change(RESET, "reset")

    def snapshot(self, *, force: bool = False) -> str | None:
        """Write a snapshot if anything changed since the last one (or ``force``: a shard
        whose log volume is full frees it by snapshotting and dropping old segments);
        returns its path.

        A barrier first: under the lock, every logged record is made durable and
        applied, then the state is copied and the log rolled, so the records before the
        new segment are exactly those in the snapshot (an update logged but not yet
        synced would otherwise land in the old segment, behind the snapshot's replay
        point, and in neither).

        Raises:
            StoreNotWritableError: the log could not be made durable (no snapshot).
            SnapshotError: the snapshot could not be written (the log keeps everything).
        """
        d = self.durability
        if not d.snapshot_uri:
            return None
        with self._snapshot_lock:
            with self._lock:
                if self._wal is not None:
                    if self._wal.broken:
                        self._wal.recover()  # a fresh segment: nothing unsynced is pending
                    self._sync_locked()
                self._apply_backlog()
                if self._table.version == self._snapshot_version and not force:
                    return None
                state = self._table.export_state()
                if self._wal is not None:
                    state.meta["wal_segment"] = self._wal.roll()
            try:
                path = write_snapshot(d.snapshot_uri, state, d.storage_options, files=d.files)
            except OSError as exc:  # the log rolled, but keeps every segment: nothing lost
                raise SnapshotError(f"{d.snapshot_uri}: snapshot not written ({exc})") from exc
            self._snapshot_version = int(state.meta["version"])
            if self._wal is not None:
                # keep the log back to the oldest snapshot kept, so a damaged newest one
                # can fall back on it without losing what came between
                self._kept_segments = [*self._kept_segments, int(state.meta["wal_segment"])]
                self._kept_segments = self._kept_segments[-SNAPSHOTS_KEPT:]
                self._wal.drop_before(self._kept_segments[0])
            self.metrics.snapshots.inc()
            return path

    def close(self) -> None:
        """Stop the applier (applying what is logged) and join it, then close the
        write-ahead log."""
        self._closed = True
        self._wake.set()
        with self._settled():
            pass
        if self._applier_thread is not None:
            self._applier_thread.join()
            self._applier_thread = None
        if self._wal is not None:
            self._wal.close()

    # -- internals -------------------------------------------------------------

    @contextmanager
    def _settled(self) -> Iterator[None]:
        """Hold the lock with every queued update applied."""
        with self._lock:
            self._apply_backlog()
            yield

    def _apply_backlog(self) -> None:
        """Apply the durable prefix of the backlog, in log order (under the lock)."""
        done = 0
        for entry in self._backlog:
            if entry.ticket is not None and not self._wal.durable(entry.ticket):
                break  # not durable yet: it and everything after it wait
            self._table.apply_update(entry.local, entry.values)
            if entry.request is not None:
                self._table.claim(entry.request)
                self._in_flight.discard(entry.request)
            done += 1
        if done:
            del self._backlog[:done]

    def _durable_request(self, request: tuple[str, int]) -> bool:
        return any(
            e.request == request and (e.ticket is None or self._wal.durable(e.ticket))
            for e in self._backlog
        )

    def _append(self, kind: int, payload: bytes) -> int:
        """Log a record (under the lock), first recovering a broken log if it can.

        Raises:
            StoreNotWritableError: the log cannot be written.
        """
        assert self._wal is not None
        try:
            if self._wal.broken:
                self._wal.recover()
            ticket = self._wal.append(kind, payload)
        except StoreNotWritableError:
            self._drop_unlogged()
            raise
        self._set_writable(True)
        return ticket

    def _drop_unlogged(self) -> None:
        """After a log failure (under the lock): forget the records the log lost (their
        writers are told they failed; the log has taken them back). Only those: a writer
        told late may come here after the log recovered, when newer records are merely
        waiting for their fsync and must stay."""
        kept = []
        for entry in self._backlog:
            if entry.ticket is not None and self._wal.failed(entry.ticket):
                if entry.request is not None:
                    self._in_flight.discard(entry.request)
            else:
                kept.append(entry)
        self._backlog = kept
        if self._wal.broken:
            self._set_writable(False)

    def _set_writable(self, writable: bool) -> None:
        if writable != self._writable:
            self._writable = writable
            if not writable:
                log.error("the write-ahead log cannot be written: refusing writes")
            for callback in self._watchers:
                callback(writable)

    def _applier(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                self._apply_backlog()

    def _change(self, kind: int, method: str, **kwargs: Any) -> Any:
        """An epoch-level change: validated, logged and made durable, then applied, all
        under the lock (rare calls; a change that cannot be logged is not applied)."""
        with self._timed(method), self._lock:
            if self._wal is not None:
                self._sync_locked()  # what is queued becomes durable, then applies
            self._apply_backlog()
            self._check_change(method, kwargs)
            if self._wal is not None:
                self._append(kind, json.dumps(kwargs).encode())
                self._sync_locked()
            return self._apply(method, kwargs)

    def _sync_locked(self) -> None:
        """Make everything logged durable, under the lock (snapshots, epoch-level
        changes)."""
        assert self._wal is not None
        try:
            self._wal.sync_all()
        except StoreNotWritableError:
            self._drop_unlogged()
            raise

    def _check_change(self, method: str, kwargs: dict[str, Any]) -> None:
        """Validate a change before it is logged: on a copy-free dry run of its checks."""
        checks = {
            "end_epoch": lambda: self._table.check_end_epoch(kwargs["epoch"], kwargs["eps"]),
            "prune": lambda: self._table.check_prune(kwargs["threshold"], kwargs["epoch"]),
            "readmit": lambda: self._table.check_readmit(kwargs["fraction"], kwargs["epoch"]),
        }
        if method in checks:
            checks[method]()

    def _apply(self, method: str, kwargs: dict[str, Any]) -> Any:
        if method == "readmit":
            kwargs = dict(kwargs)
            rng = np.random.default_rng(kwargs.pop("seed"))
            return self._table.readmit(kwargs["fraction"], rng, epoch=kwargs["epoch"])
        return getattr(self._table, method)(**kwargs)

    def _replay(self, record: tuple[int, bytes]) -> None:
        kind, payload = record
        if kind == UPDATE:
            indices, values, client_id, seq = decode_update(payload)
            self._table.update(indices, values, request=(client_id, seq) if client_id else None)
        else:
            self._apply(_METHODS[kind], json.loads(payload))

    def _sync(self, ticket: int | None) -> None:
        """Wait (outside the lock) until ``ticket`` is durable.

        Raises:
            StoreNotWritableError: the log failed first; the update is dropped unapplied.
        """
        if ticket is None or self._wal is None:
            return
        try:
            with self.metrics.wal_sync.time():
                self._wal.sync(ticket)
        except StoreNotWritableError:
            with self._lock:
                self._drop_unlogged()
            raise

    @contextmanager
    def _timed(self, method: str):
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.metrics.rejects.labels(reason=type(exc).__name__).inc()
            raise
        finally:
            self.metrics.latency.labels(method=method).observe(time.perf_counter() - start)

    def _state_gauges(self) -> dict[str, float]:
        backlog = len(self._backlog)  # before settling, which applies it
        with self._settled():
            total, active = self._table.view()
            epoch = self._table.epoch
        return {
            "total_mass": total,
            "active_samples": active,
            "pruned_samples": self.config.size - active,
            "epoch": epoch,
            "apply_backlog": backlog,
        }
