"""Each Ray node's read workers share that node's disk cache; the loader's counters add
up the reads of every node (a two-node cluster started inside the test, S3 on moto)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from isloader.data.catalog import ShardCatalog
from isloader.data.rowcache import DiskRows
from tests.data.shards import write_parquet_shards

N = 480


def test_two_nodes_each_with_its_cache_and_counters_that_add_up(s3_bucket, tmp_path) -> None:
    bucket, options = s3_bucket
    write_parquet_shards(f"{bucket}/d", N, shards=2, rows_per_group=20, options=options)
    catalog = ShardCatalog.build(f"{bucket}/d", storage_options=options)
    catalog.save()
    endpoint = options["client_kwargs"]["endpoint_url"]
    run = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("two_nodes_main.py")), f"{bucket}/d",
         endpoint, str(tmp_path / "cache"), str(N)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    init, sampled = result["history"]
    assert init["cache_lookups"] >= N  # every row streamed once, on some node
    assert init["bytes_fetched"] > 0 and sampled["steps"] == N // 32
    per_node = {
        p.name: [len(DiskRows(str(f), 1 << 30)) for f in p.glob("*.rows")]
        for p in (tmp_path / "cache").iterdir()
    }
    assert sorted(per_node) == result["nodes"]  # one cache per node, named after it
    assert all(sum(rows) > 0 for rows in per_node.values())  # each node kept rows
    assert sampled["cache_hits"] > 0  # the sampled epoch reads what the nodes cached
