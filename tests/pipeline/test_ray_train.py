"""The loader inside Ray Train workers: rank and world from the process group Ray Train
sets up, the store reached through a picklable ``StoreConnection``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isloader import ImportanceLoader, LocalStore, ShardCatalog
from tests.data.shards import write_parquet_shards

N = 480


def train_loop(config: dict) -> None:
    client = config["store"].connect()
    loader = ImportanceLoader(
        config["data"], store=client, batch_size=16, columns=["feat", "label"], window=2
    )
    model = torch.nn.Linear(3, 7)
    for epoch in range(2):
        for batch in loader.epoch(epoch):
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
    assert loader.world_size == 2
    assert loader.history[0].steps == loader.history[1].steps == N // (16 * 2)
    client.close()


@pytest.mark.usefixtures("ray_session")
def test_two_ray_train_workers_share_one_store(tmp_path) -> None:
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    data = str(tmp_path / "data")
    write_parquet_shards(data, N, shards=3, rows_per_group=20)
    ShardCatalog.build(data).save()
    with LocalStore(N) as store:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"store": store.connection, "data": data},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        )
        trainer.fit()
        stats = store.stats()
        assert stats.seen == N  # the two workers' initialization passes covered everyone
        assert stats.epoch == 2  # epoch-end steps applied once per epoch, not per worker
        assert np.all(store.lookup(np.arange(N)) > 0)


def elastic_loop(config: dict) -> None:
    """Phase 1 (2 workers): epoch 0, then ``stop`` batches of epoch 1, and a checkpoint
    holding rank 0's loader state. Phase 2 (another number of workers): resume from it
    and finish epoch 1. Each rank writes how many batches of epoch 1 it read."""
    import json
    import tempfile
    from pathlib import Path

    import ray.train

    client = config["store"].connect()
    loader = ImportanceLoader(
        config["data"], store=client, batch_size=16, columns=["feat", "label"], window=2
    )
    model = torch.nn.Linear(3, 7)
    rank = ray.train.get_context().get_world_rank()
    checkpoint = ray.train.get_checkpoint() or config.get("resume")
    if checkpoint is None:
        for batch in loader.epoch(0):
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
        epoch_one = loader.epoch(1)
        for _ in range(config["stop"]):
            batch = next(epoch_one)
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
        loader.protocol.reporter.flush()  # the checkpoint covers every report sent
        with tempfile.TemporaryDirectory() as saved:
            (Path(saved) / "loader.json").write_text(json.dumps(loader.state_dict()))
            ray.train.report({"batches": config["stop"]},
                             checkpoint=ray.train.Checkpoint.from_directory(saved))  # fmt: skip
        read = config["stop"]
    else:
        with checkpoint.as_directory() as saved:
            loader.load_state_dict(json.loads((Path(saved) / "loader.json").read_text()))
        read = 0
        for batch in loader.epoch(1):
            loader.report(batch["index"], model(batch["feat"]).detach(), batch["label"])
            read += 1
    out = Path(config["out"]) / f"{config['phase']}-rank{rank}.json"
    out.write_text(json.dumps({"world": loader.world_size, "batches": read}))
    loader.close()
    client.close()


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("after", [3])  # 3 -> 1 and more: tests/pipeline/test_elastic.py
def test_ray_train_resumes_a_checkpoint_on_another_number_of_workers(tmp_path, after) -> None:
    import json

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    data = str(tmp_path / "data")
    write_parquet_shards(data, N, shards=3, rows_per_group=20)
    ShardCatalog.build(data).save()
    stop, steps = 4, N // (16 * 2)  # each of 2 ranks: 15 batches of epoch 1, 4 read
    with LocalStore(N) as store:
        config = {"store": store.connection, "data": data, "stop": stop, "out": str(tmp_path)}

        def trainer(workers: int, phase: str, checkpoint=None) -> TorchTrainer:
            # Ray Train 2: a new run gets the checkpoint to resume from in its config
            return TorchTrainer(
                elastic_loop, train_loop_config={**config, "phase": phase, "resume": checkpoint},
                scaling_config=ScalingConfig(num_workers=workers,
                                             resources_per_worker={"CPU": 0.5}),
                run_config=RunConfig(storage_path=str(tmp_path / "runs"), name=phase),
            )  # fmt: skip

        first = trainer(2, "first").fit()
        assert first.checkpoint is not None
        trainer(after, "second", first.checkpoint).fit()
    second = [json.loads((tmp_path / f"second-rank{r}.json").read_text()) for r in range(after)]
    assert {s["world"] for s in second} == {after}
    assert len({s["batches"] for s in second}) == 1  # the ranks step together
    left = 2 * (steps - stop)  # batches the two ranks had left
    assert second[0]["batches"] == left // after  # shared out, at most after - 1 left out
