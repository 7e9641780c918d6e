"""What the pipeline tests share: a small indexed Parquet dataset."""

from __future__ import annotations

import pytest

from isloader.data.catalog import ShardCatalog
from tests.data.shards import write_parquet_shards

ROWS = 480  # the tests' N


@pytest.fixture()
def dataset(tmp_path) -> str:
    """480 rows in 3 Parquet shards of 20-row groups, indexed."""
    uri = str(tmp_path / "data")
    write_parquet_shards(uri, ROWS, shards=3, rows_per_group=20)
    ShardCatalog.build(uri).save()
    return uri
