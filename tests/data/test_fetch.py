"""What the fetcher measures of its storage, and what each read is charged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from isloader.data.catalog import ShardCatalog
from isloader.data.fetch import FetchTiming
from isloader.data.reader import ShardReader
from tests.data.shards import write_webdataset_shards


def test_latency_is_never_read_from_a_queued_transfer() -> None:
    """A 1 MB transfer that took 0.5 s behind a saturated link says nothing about the
    latency; taking it for latency made merge gaps grow with the load (tar units were
    read whole at 14x the sampled bytes)."""
    timing = FetchTiming()
    for _ in range(20):
        timing.add(1, 1 << 20, 0.5)
    assert timing.latency is None  # nothing small to time yet
    for seconds in np.linspace(0.03, 0.06, 20):
        timing.add(1, 4096, float(seconds))
    assert timing.latency == pytest.approx(0.033, abs=0.002)  # small single requests
    for _ in range(50):
        timing.add_first_byte(0.02)
    assert timing.latency == pytest.approx(0.02)  # the client's times to the first byte
    assert timing.bandwidth == pytest.approx((1 << 20) / 0.48)
    local = FetchTiming(local=True)  # a local file: no link to queue behind
    local.add(1, 1 << 20, 0.001)
    assert local.latency == pytest.approx(0.001)


def test_each_thread_is_charged_its_own_reads(tmp_path) -> None:
    """Two tasks of one threaded read actor share a reader; each task's costs are what
    its own thread fetched, and together they make the reader's totals."""
    write_webdataset_shards(str(tmp_path / "tars"), 400, shards=2)
    catalog = ShardCatalog.build(str(tmp_path / "tars"))
    reader = ShardReader(catalog, memory_bytes=0, merge_gap=0)
    spans = catalog.arrays["sample_length"].astype(int)
    rows = {0: np.arange(0, 400, 4), 1: np.arange(2, 400, 8)}  # never adjacent: 1 GET each
    tallies: dict[int, dict[str, float]] = {}
    start = threading.Barrier(2)

    def task(k: int) -> None:
        start.wait()
        with reader.counters.tally() as spent:
            for chunk in np.array_split(rows[k], 5):
                reader.read(chunk, ["bin"])
        tallies[k] = spent

    threads = [threading.Thread(target=task, args=(k,)) for k in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, indices in rows.items():
        assert tallies[k]["requests"] == len(indices)
        assert tallies[k]["bytes_fetched"] == spans[indices].sum()
        assert tallies[k]["cache_misses"] == len(indices)
    total = reader.counters.snapshot()
    assert total["requests"] == sum(t["requests"] for t in tallies.values())
    assert total["bytes_fetched"] == sum(t["bytes_fetched"] for t in tallies.values())
