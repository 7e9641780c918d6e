"""``LocalStore``: the embedded store, one ``StoreShard`` in this process.

It is the default for a single machine: no service to run. When the Ray pipeline
needs plans drawn inside read tasks (other processes), ``endpoint()`` serves the
same shard over gRPC on 127.0.0.1 with a random token, so workers use the wire API
of a deployed store while the trainer keeps calling this object directly.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import numpy as np

from isloader.config import StoreSettings
from isloader.store.api import Seed, seed_sequence
from isloader.store.client import StoreConnection
from isloader.store.records import Plan, TableStats, UnitLayout, UnitStats
from isloader.store.shard import Durability, StoreShard
from isloader.store.table import TableConfig, prune_threshold

__all__ = ["LocalStore"]


class LocalStore:
    """An in-process importance store over ``num_samples`` samples.

    Args:
        num_samples: N; indices are ``0..N-1``.
        alpha: EMA memory of Eq. 8 (default 0.3; see ``TableConfig``).
        initial_q: q before the first measurement (default 1.0).
        snapshot_uri, wal_dir: optional durability, as for the server.
    """

    in_process = True  # loaders draw plans from it directly, not over its endpoint

    def __init__(
        self,
        num_samples: int,
        *,
        alpha: float = 0.3,
        initial_q: float = 1.0,
        snapshot_uri: str | None = None,
        wal_dir: str | None = None,
    ) -> None:
        self._shard = StoreShard(
            TableConfig(0, num_samples, alpha=alpha, initial_q=initial_q),
            Durability(snapshot_uri=snapshot_uri, wal_dir=wal_dir),
            apply_inline=True,  # its callers (the reporter) are off the training thread
        )
        self._layouts: set[str] = set()
        self._server = None
        self._token = ""
        self._token_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def num_samples(self) -> int:
        """N, the samples of the one in-process shard."""
        return self._shard.config.size

    def update(self, indices: np.ndarray, values: np.ndarray, *, wait: bool = True) -> None:
        """Apply Eq. 8 now, in this thread (``wait`` is accepted for the protocol: nothing
        is ever queued). See ``ImportanceStore.update`` for what it raises."""
        self._shard.update(np.asarray(indices), np.asarray(values))

    def flush(self) -> None:
        """Updates are applied synchronously; nothing is ever queued."""

    def sample(
        self, count: int, seed: Seed, *, layout: UnitLayout | None = None, units: int = 0
    ) -> Plan:
        """Draw a plan from the in-process shard; see ``ImportanceStore.sample``."""
        seed_int = int(seed_sequence(seed).generate_state(1)[0])
        if layout is None or not units:
            return self._shard.sample(count, seed_int)[0]
        self._register(layout)
        return self._shard.sample(count, seed_int, layout=layout.name, units=units)[0]

    def unit_stats(self, layout: UnitLayout) -> UnitStats:
        """Per-unit mass and active rows (the layout is registered on first use)."""
        self._register(layout)
        return self._shard.unit_stats(layout.name)

    def _register(self, layout: UnitLayout) -> None:
        if layout.name not in self._layouts:
            self._shard.set_layout(layout.name, layout.bounds)
            self._layouts.add(layout.name)

    def lookup(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` of ``indices``; see ``ImportanceStore.lookup``."""
        return self._shard.importance(np.asarray(indices))

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """``q += eps`` once per epoch number; see ``ImportanceStore.end_epoch``."""
        return self._shard.end_epoch(epoch, eps)

    def prune(self, k: float, *, epoch: int | None = None) -> int:
        """Alg. 2 on the one shard's totals; see ``ImportanceStore.prune``."""
        total, active = self._shard.view()
        return self._shard.prune(prune_threshold(total, active, k), epoch)

    def readmit(self, fraction: float, *, seed: Seed = 0, epoch: int | None = None) -> int:
        """Put a random share of pruned samples back; see ``ImportanceStore.readmit``."""
        return self._shard.readmit(fraction, int(seed_sequence(seed).generate_state(1)[0]), epoch)

    def reset(self) -> None:
        """Forget every measurement: all samples unseen and active, epoch 0."""
        self._shard.reset()

    def stats(self) -> TableStats:
        """The shard's totals and histogram (``TableStats``)."""
        return self._shard.stats()

    def snapshot(self) -> list[str]:
        """Write a snapshot where ``snapshot_uri`` is set; returns its path (an empty list
        without a snapshot location). Raises ``SnapshotError`` when it cannot be written."""
        path = self._shard.snapshot()
        return [path] if path else []

    def endpoint(self) -> tuple[str, str]:
        """``(address, token)`` of this store served on 127.0.0.1 (started on first call)."""
        if self._server is None:
            from isloader.store.server import StoreServer

            self._token = secrets.token_urlsafe(24)
            self._token_dir = tempfile.TemporaryDirectory(prefix="isloader-token-")
            token_file = Path(self._token_dir.name, "token")
            token_file.write_text(self._token)
            token_file.chmod(0o600)
            settings = StoreSettings(
                range=f"0:{self.num_samples}", port=0, token_file=str(token_file)
            )
            self._server = StoreServer(settings, shard=self._shard).start()
        return self._server.address, self._token

    @property
    def connection(self) -> StoreConnection:
        """This store served on 127.0.0.1 (single machine: Ray workers on this node)."""
        address, token = self.endpoint()
        return StoreConnection((address,), token)

    def close(self) -> None:
        """Stop the loopback server (if started), remove its token, close the shard."""
        if self._server is not None:
            self._server.stop(grace=0.5)
            self._server = None
        if self._token_dir is not None:
            self._token_dir.cleanup()
            self._token_dir = None
        self._shard.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
