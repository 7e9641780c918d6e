"""End to end with real parts: 2 store shard processes, S3 (moto) holding Parquet
shards, Ray local, and 2 trainer processes training an MLP under DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from isloader.data.catalog import ShardCatalog
from tests.helpers import free_port, start_shards

ROOT = Path(__file__).resolve().parents[2]
N, CLASSES = 1536, 4


def write_dataset(uri: str, options: dict) -> None:
    """Rows sorted by class; classes 0 and 1 are far apart (easy), 2 and 3 overlap."""
    rng = np.random.default_rng(0)
    label = np.repeat(np.arange(CLASSES), N // CLASSES)
    centers = np.zeros((CLASSES, 8), np.float32)
    centers[0, 0], centers[1, 1], centers[2, 2], centers[3, 2] = 8.0, 8.0, 0.4, -0.4
    feat = (centers[label] + rng.normal(0, 1, (N, 8))).astype(np.float32)
    table = pa.table(
        {
            "feat": pa.array(list(feat), pa.list_(pa.float32())),
            "label": label.astype(np.int64),
        }
    )
    fs = s3fs.S3FileSystem(**options)
    for s in range(4):
        part = table.slice(s * N // 4, N // 4)
        with fs.open(f"{uri}/part-{s}.parquet", "wb") as f:
            pq.write_table(part, f, row_group_size=16)


@pytest.mark.usefixtures("ray_session")
def test_two_trainers_two_store_shards_on_s3(s3_bucket, tmp_path) -> None:
    import ray

    bucket, options = s3_bucket
    uri = f"{bucket}/train"
    write_dataset(uri, options)
    ShardCatalog.build(uri, storage_options=options).save()
    shards = start_shards(N, 2)
    try:
        config = {
            "dataset": uri,
            "storage_options": options,
            "store": [p.address for p in shards],
            "ray_address": ray.get_runtime_context().gcs_address,
            "batch_size": 32,
            "epochs": 4,
            "prune_k": 1.5,
            "out": str(tmp_path / "result.json"),
        }
        port = free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.pipeline.trainer_main", json.dumps(config)],
                cwd=ROOT,
                env={
                    **os.environ,
                    "RANK": str(rank),
                    "WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port),
                },
            )
            for rank in range(2)
        ]
        try:
            codes = [p.wait(timeout=400) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert codes == [0, 0]
        result = json.loads((tmp_path / "result.json").read_text())
    finally:
        for p in shards:
            p.stop()

    history = result["history"]
    keys = ("mode", "steps", "bytes_fetched", "active_after", "pruned_after")
    print(json.dumps([{k: h[k] for k in keys} for h in history] + [result["losses"]]))
    assert result["seen_after_init"] == N  # the initialization epoch measured everyone
    assert history[0]["mode"] == "stream" and history[1]["mode"] == "sample"
    assert history[1]["pruned_after"] == 0 < history[2]["pruned_after"]  # prune at epoch 2
    assert history[3]["active_after"] < N
    assert history[3]["steps"] == history[1]["steps"] == N // (32 * 2)  # equal steps
    assert history[3]["bytes_fetched"] < history[1]["bytes_fetched"]  # pruned rows never read
    assert result["losses"][-1] < result["losses"][0]
    q = np.array(result["final_q"])
    pruned = q == 0
    easy = np.arange(N) < N // 2
    assert pruned[easy].mean() > pruned[~easy].mean()  # it prunes what is learnt
