"""The README's plain-PyTorch example, run as written under torchrun: two ranks,
DataLoader workers, a real store server process, local Parquet shards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from isloader.store.client import StoreClient
from tests.helpers import start_shards

ROOT = Path(__file__).resolve().parents[2]
N = 1024


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- torchrun-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "the README lost its torchrun example"
    return block.group(1)


def test_the_readme_torchrun_example_trains_two_ranks(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, N)
    x = (rng.normal(size=(N, 40)) + y[:, None] * 0.1).astype(np.float32)
    data = tmp_path / "data"
    data.mkdir()
    table = pa.table({"x": pa.array(list(x), pa.list_(pa.float32())), "y": y})
    pq.write_table(table, data / "part-0.parquet", row_group_size=64)
    script = tmp_path / "train_ddp.py"
    script.write_text(readme_example())
    (shard,) = start_shards(N, 1)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node=2", str(script), str(data), shard.address],
            capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        with StoreClient([shard.address]) as client:
            stats = client.stats()
        assert stats.seen == N and stats.epoch == 3  # both ranks measured; 3 epoch ends
    finally:
        shard.stop()
