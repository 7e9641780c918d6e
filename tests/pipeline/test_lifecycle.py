"""Whatever a loader or dataset starts, its ``close`` ends: twenty of each in a row in one
Ray session leave no actor, no thread and no reader memory behind."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from isloader.pipeline import ImportanceLoader
from isloader.pipeline.torch_dataset import ImportanceDataset
from isloader.store.local import LocalStore

N, B, ROUNDS = 480, 32, 20

pytestmark = pytest.mark.usefixtures("ray_session")


def _our_actors() -> list[str]:
    """isloader's live actors in this Ray session (read workers, clock actors)."""
    import ray

    return [
        a["ActorClassName"]
        for a in ray._private.state.actors().values()
        if a["State"] == "ALIVE" and a["ActorClassName"] in ("_ReadWorker", "_Clocks")
    ]


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS")) << 10


def _live_actors() -> int:
    import ray

    return sum(a["State"] == "ALIVE" for a in ray._private.state.actors().values())


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.is_alive()}


def _settle(check, seconds: float = 20.0) -> None:
    """Killed actors leave within moments; wait for it rather than race it."""
    import time

    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)


def _one_loader(dataset: str, seed: int, *, sampled: bool, ray_data: bool) -> bool:
    """Train a loader through the init epoch (and a sampled one, and the Ray Data path
    with its clock actor); returns whether it had actors of its own while open."""
    with LocalStore(N) as store:
        loader = ImportanceLoader(dataset, store=store, batch_size=B, columns=["label"],
                                  seed=seed, memory_bytes=8 << 20)  # fmt: skip
        for epoch in range(2 if sampled else 1):
            for batch in loader.epoch(epoch):
                loader.report(batch["index"], torch.zeros(len(batch["index"]), 7), batch["label"])
        if ray_data:
            epoch = len(loader.history)
            for _ in loader.dataset(epoch).iter_batches(batch_size=B):
                pass
            loader.end_epoch(epoch)
        had = bool(_our_actors())
        loader.close()
    return had


def test_twenty_loaders_in_a_row_leave_nothing_running(dataset) -> None:
    _one_loader(dataset, 99, sampled=False, ray_data=True)  # Ray Data's own actors, once
    _settle(lambda: not _our_actors())
    threads, actors = _threads(), _live_actors()
    for k in range(ROUNDS):
        had = _one_loader(dataset, k, sampled=k == 0, ray_data=k == 1)
        assert had, "a loader reads through actors it owns"
    _settle(lambda: not _our_actors() and _live_actors() == actors)
    assert _our_actors() == []  # every read and clock actor, with its readers, is gone
    assert _live_actors() == actors
    _settle(lambda: _threads() <= threads)
    assert _threads() - threads == set()


def test_twenty_dataset_iterations_with_workers_leave_nothing_running(dataset) -> None:
    threads = _threads()
    rss_before = _rss()
    for k in range(ROUNDS):
        with LocalStore(N) as store:
            data = ImportanceDataset(dataset, store=store, batch_size=B, columns=["label"],
                                     seed=k)  # fmt: skip
            for batch in torch.utils.data.DataLoader(data, batch_size=None, num_workers=2):
                data.report(batch["index"], torch.zeros(len(batch["index"]), 7), batch["label"])
            data.end_epoch(0)
            data.close()
    _settle(lambda: _threads() <= threads)
    assert _threads() - threads == set()
    assert _rss() - rss_before < 50 << 20
