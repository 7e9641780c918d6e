"""``ImportanceDataset`` in a plain ``torch.utils.data.DataLoader`` (no Ray)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from isloader.pipeline.torch_dataset import ImportanceDataset
from isloader.store.local import LocalStore
from tests.data.shards import write_parquet_shards

N, B = 480, 32


def _loader(dataset: ImportanceDataset, workers: int = 2) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)


def test_dataloader_workers_serve_the_init_epoch_then_weights_follow_the_store(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, N, shards=3, rows_per_group=20)
    with LocalStore(N) as store:
        data = ImportanceDataset(
            uri, store=store, batch_size=B, columns=["feat", "label"], window=2, eps=0.0
        )
        model = torch.nn.Linear(3, 7)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        data.set_epoch(0)
        served = []
        for batch in _loader(data):
            out = model(batch["feat"])
            loss = (batch["weight"] * F.cross_entropy(out, batch["label"], reduction="none")).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            data.report(batch["index"], out.detach(), batch["label"])
            served.append(batch["index"].numpy())
            assert torch.all(batch["weight"] == 1)
        assert sorted(np.concatenate(served)) == list(range(N))  # Alg. 3: each sample once
        stats = data.end_epoch(0)
        assert stats.seen == N and stats.epoch == 1

        q = store.lookup(np.arange(N))
        frozen = ImportanceDataset(  # no reports in this pass: q stays, weights are exact
            uri, store=store, batch_size=B, columns=["feat", "label"], window=2, prefetch=10**6
        )
        frozen.set_epoch(1)
        batches = list(_loader(frozen))
        assert len(batches) == N // B  # equal steps, split over the workers
        for batch in batches:
            idx, w = batch["index"].numpy(), batch["weight"].numpy()
            np.testing.assert_allclose(w, q.sum() / (N * q[idx]), rtol=1e-5)
            np.testing.assert_array_equal(batch["feat"].numpy()[:, 0], idx.astype(np.float32))
        frozen.close()
        data.close()


def test_plans_wait_for_the_trainer_in_dataloader_workers(tmp_path) -> None:
    uri = str(tmp_path / "d")
    write_parquet_shards(uri, N, shards=2, rows_per_group=20)
    with LocalStore(N) as store:
        data = ImportanceDataset(uri, store=store, batch_size=B, columns=["label"], window=1,
                                 prefetch=2)  # fmt: skip
        model = torch.nn.Linear(1, 7)
        data.set_epoch(0)
        for batch in _loader(data, workers=0):
            data.report(batch["index"], model(batch["label"][:, None].float()), batch["label"])
        data.end_epoch(0)
        sent_at_draw = []
        real = store._shard.sample

        def spy(count, seed, **kwargs):
            sent_at_draw.append(data._reports)
            return real(count, seed, **kwargs)

        store._shard.sample = spy
        data.set_epoch(1)
        for step, batch in enumerate(_loader(data, workers=0)):
            data.report(batch["index"], model(batch["label"][:, None].float()), batch["label"])
            assert step - sent_at_draw[step] <= 1 * 1 + 2  # window * workers + prefetch
        data.close()
