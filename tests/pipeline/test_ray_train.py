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
