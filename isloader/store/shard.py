"""``StoreShard``: one table made thread-safe and durable.

It adds to ``ImportanceTable`` what a service needs and the pure state machine must
not have: a lock, the write-ahead log (every change is logged, in apply order,
before it is acknowledged), snapshots (restore on start, then replay the log
written since), and metrics. The gRPC servicer and ``LocalStore`` both wrap it.

An update is validated, deduplicated by ``(client_id, seq)`` and logged before it
is acknowledged, and applied (the EMA) by a background thread in arrival order, so
the arithmetic is off the request's critical path. Every read and every
epoch-level change first applies whatever is still queued, so a client always
sees its own acknowledged updates.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from isloader.store.metrics import ShardMetrics
from isloader.store.records import Plan, ShardView, TableStats, UnitStats
from isloader.store.snapshot import read_latest_snapshot, write_snapshot
from isloader.store.table import ImportanceTable, TableConfig
from isloader.store.wal import WriteAheadLog

__all__ = ["StoreShard", "Durability"]

log = logging.getLogger(__name__)

_UPDATE, _END_EPOCH, _PRUNE, _READMIT, _RESET = 1, 2, 3, 4, 5
_METHODS = {_END_EPOCH: "end_epoch", _PRUNE: "prune", _READMIT: "readmit", _RESET: "reset"}
_REQUEST = struct.Struct("<QH")  # seq, len(client_id)


@dataclass(frozen=True)
class Durability:
    """Where a shard keeps its state: snapshots (any fsspec URI) and the WAL (local dir)."""

    snapshot_uri: str | None = None
    wal_dir: str | None = None
    storage_options: dict[str, Any] | None = None


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
        self._backlog: list[tuple[np.ndarray, np.ndarray]] = []
        self._wake = threading.Event()
        self._closed = False
        self._snapshot_lock = threading.Lock()
        self._snapshot_version = -1
        self._wal: WriteAheadLog | None = None
        d = self.durability
        first_segment = 0
        if d.snapshot_uri:
            state = read_latest_snapshot(d.snapshot_uri, d.storage_options)
            if state is not None:
                self._table.load_state(state)
                self._snapshot_version = self._table.version
                first_segment = int(state.meta.get("wal_segment", 0))
                log.info(
                    "restored snapshot version %d from %s", self._table.version, d.snapshot_uri
                )
        if d.wal_dir:
            self._wal = WriteAheadLog(d.wal_dir)
            if replay:
                replayed = sum(1 for _ in map(self._replay, self._wal.replay(first_segment)))
                log.info("replayed %d write-ahead log records", replayed)
        self._inline = apply_inline  # the caller is a background thread already
        if not apply_inline:
            threading.Thread(target=self._applier, daemon=True, name="isloader-apply").start()

    # -- reads -----------------------------------------------------------------

    def view(self, *, settled: bool = True) -> ShardView:
        """Total mass and active count; ``settled=False`` skips queued updates (cheap)."""
        if not settled:
            with self._lock:
                return self._table.view()
        with self._settled():
            return self._table.view()

    @property
    def version(self) -> int:
        return self._table.version

    @property
    def epoch(self) -> int:
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
        with self._timed("units"), self._settled():
            return self._table.unit_stats(layout)

    def importance(self, indices: np.ndarray) -> np.ndarray:
        with self._settled():
            return self._table.importance(indices)

    def stats(self) -> TableStats:
        with self._settled():
            stats = self._table.stats()
        self.metrics.ess.set(stats.effective_sample_size)
        return stats

    # -- changes: validate + apply + log under the lock, fsync outside it -------

    def update(
        self, indices: np.ndarray, values: np.ndarray, client_id: str = "", seq: int = 0
    ) -> bool:
        """Validate, deduplicate and log now; apply in the background (or at once, with
        ``apply_inline``). False: a retry."""
        with self._timed("update"):
            with self._lock:
                local, vals = self._table.validate_update(indices, values)
                applied = not client_id or self._table.claim((client_id, seq))
                ticket = None
                if applied:
                    if self._wal is not None:  # encode only when there is a log to write
                        payload = _encode_update(indices, values, client_id, seq)
                        ticket = self._wal.append(_UPDATE, payload)
                    if self._inline:
                        self._table.apply_update(local, vals)
                    else:
                        self._backlog.append((local, vals))
            self._sync(ticket)
        if applied:
            if not self._inline:
                self._wake.set()
            self.metrics.updates.inc()
            self.metrics.updated_samples.inc(len(local))
        else:
            self.metrics.duplicates.inc()
        return applied

    def end_epoch(self, epoch: int, eps: float) -> bool:
        return self._change(_END_EPOCH, "end_epoch", epoch=epoch, eps=eps)

    def prune(self, threshold: float, epoch: int | None = None) -> int:
        return self._change(_PRUNE, "prune", threshold=threshold, epoch=epoch)

    def readmit(self, fraction: float, seed: int, epoch: int | None = None) -> int:
        return self._change(_READMIT, "readmit", fraction=fraction, seed=seed, epoch=epoch)

    def reset(self) -> None:
        self._change(_RESET, "reset")

    def snapshot(self) -> str | None:
        """Write a snapshot if anything changed since the last one; returns its path."""
        d = self.durability
        if not d.snapshot_uri:
            return None
        with self._snapshot_lock:
            with self._settled():
                if self._table.version == self._snapshot_version:
                    return None
                state = self._table.export_state()
                if self._wal is not None:
                    state.meta["wal_segment"] = self._wal.roll()
            path = write_snapshot(d.snapshot_uri, state, d.storage_options)
            self._snapshot_version = int(state.meta["version"])
            if self._wal is not None:
                self._wal.drop_before(int(state.meta["wal_segment"]))
            self.metrics.snapshots.inc()
            return path

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._settled():
            pass
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
        backlog, self._backlog = self._backlog, []
        for local, values in backlog:
            self._table.apply_update(local, values)

    def _applier(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                self._apply_backlog()

    def _change(self, kind: int, method: str, **kwargs: Any) -> Any:
        with self._timed(method):
            with self._settled():
                result = self._apply(method, kwargs)
                ticket = self._log(kind, json.dumps(kwargs).encode())
            self._sync(ticket)
        return result

    def _apply(self, method: str, kwargs: dict[str, Any]) -> Any:
        if method == "readmit":
            kwargs = dict(kwargs)
            rng = np.random.default_rng(kwargs.pop("seed"))
            return self._table.readmit(kwargs["fraction"], rng, epoch=kwargs["epoch"])
        return getattr(self._table, method)(**kwargs)

    def _replay(self, record: tuple[int, bytes]) -> None:
        kind, payload = record
        if kind == _UPDATE:
            indices, values, client_id, seq = _decode_update(payload)
            self._table.update(indices, values, request=(client_id, seq) if client_id else None)
        else:
            methods = {
                _END_EPOCH: "end_epoch",
                _PRUNE: "prune",
                _READMIT: "readmit",
                _RESET: "reset",
            }
            method = methods[kind]
            self._apply(method, json.loads(payload))

    def _log(self, kind: int, payload: bytes) -> int | None:
        return self._wal.append(kind, payload) if self._wal is not None else None

    def _sync(self, ticket: int | None) -> None:
        if ticket is not None and self._wal is not None:
            self._wal.sync(ticket)

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
        with self._settled():
            total, active = self._table.view()
            epoch = self._table.epoch
        return {
            "total_mass": total,
            "active_samples": active,
            "pruned_samples": self.config.size - active,
            "epoch": epoch,
        }


def _encode_update(indices: np.ndarray, values: np.ndarray, client_id: str, seq: int) -> bytes:
    cid = client_id.encode()
    idx = np.asarray(indices, dtype="<i8").tobytes()
    return (
        _REQUEST.pack(seq, len(cid))
        + cid
        + struct.pack("<Q", len(idx))
        + idx
        + np.asarray(values, dtype="<f8").tobytes()
    )


def _decode_update(payload: bytes) -> tuple[np.ndarray, np.ndarray, str, int]:
    seq, cid_len = _REQUEST.unpack_from(payload)
    pos = _REQUEST.size
    client_id = payload[pos : pos + cid_len].decode()
    pos += cid_len
    (idx_len,) = struct.unpack_from("<Q", payload, pos)
    pos += 8
    indices = np.frombuffer(payload, dtype="<i8", count=idx_len // 8, offset=pos)
    values = np.frombuffer(payload, dtype="<f8", offset=pos + idx_len)
    return indices, values, client_id, seq
