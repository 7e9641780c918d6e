"""Resharding: turn the snapshots of S shards into snapshots for S' shards.

Shard ranges are fixed for a running store, so changing the number of shards is an
offline step: stop the trainers, snapshot every shard (SIGTERM does it), run
``isloader store reshard``, start the new shards on the new snapshot directories.
The global state (q, seen, pruned, epoch) carries over exactly; the per-client
request log does not (no client survives the restart anyway).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from isloader.errors import SnapshotError, SnapshotMismatchError
from isloader.store.records import TableState
from isloader.store.snapshot import read_latest_snapshot, write_snapshot
from isloader.store.table import STATE_FORMAT, TableConfig

__all__ = ["reshard"]


def reshard(sources: list[str], num_shards: int, output: str) -> list[str]:
    """Read the old shards' latest snapshots, write ``output/shard-<i>`` for the new ones."""
    states = []
    for uri in sources:
        state = read_latest_snapshot(uri)
        if state is None:
            raise SnapshotError(f"{uri}: no complete snapshot to reshard")
        states.append(state)
    states.sort(key=lambda s: s.meta["config"]["start"])
    configs = [s.meta["config"] for s in states]
    position = 0
    for c in configs:
        if c["start"] != position:
            raise SnapshotMismatchError(f"old shards do not tile [0, N): gap at {position}")
        position = c["stop"]
        if (c["alpha"], c["initial_q"]) != (configs[0]["alpha"], configs[0]["initial_q"]):
            raise SnapshotMismatchError("old shards disagree on alpha / initial_q")
    n = position
    q = np.concatenate([s.q for s in states])
    seen = np.concatenate([s.seen for s in states])
    pruned = np.concatenate([s.pruned for s in states])
    epoch = max(int(s.meta["epoch"]) for s in states)
    written = []
    for i in range(num_shards):
        start, stop = i * n // num_shards, (i + 1) * n // num_shards
        config = TableConfig(start, stop, configs[0]["alpha"], configs[0]["initial_q"])
        meta = {
            "format": STATE_FORMAT,
            "config": asdict(config),
            "epoch": epoch,
            "last_prune_epoch": max(int(s.meta["last_prune_epoch"]) for s in states),
            "last_readmit_epoch": max(int(s.meta["last_readmit_epoch"]) for s in states),
            "version": max(int(s.meta["version"]) for s in states) + 1,
            "requests": {},
        }
        state = TableState(q[start:stop], seen[start:stop], pruned[start:stop], meta)
        written.append(write_snapshot(f"{output.rstrip('/')}/shard-{i}", state))
    return written
