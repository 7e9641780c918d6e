"""Prometheus metrics of one store shard, in a registry of its own.

Counters and latency histograms (RPCs, the write-ahead log's fsync wait) are updated
per call; the state gauges (mass, active, pruned, epoch, the apply backlog) are read
from the shard when Prometheus scrapes, so they cost nothing on the request path. The
Grafana dashboard ``deploy/grafana/isloader.json`` charts every one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ShardMetrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)

StateReader = Callable[[], dict[str, float]]

_GAUGES = {
    "total_mass": "Sum of active q",
    "active_samples": "Active (non-pruned) samples",
    "pruned_samples": "Pruned samples",
    "epoch": "Completed epochs",
    "apply_backlog": "Logged updates not yet applied to the table",
}


class _StateCollector(Collector):
    def __init__(self, read: StateReader) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._read()
        for name, doc in _GAUGES.items():
            yield GaugeMetricFamily(f"isloader_{name}", doc, value=state[name])


class ShardMetrics:
    """Request counters and latencies, plus scrape-time state gauges from ``read_state``."""

    def __init__(self, read_state: StateReader) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.updates = Counter("isloader_updates", "Applied update requests", registry=r)
        self.updated_samples = Counter(
            "isloader_updated_samples", "Sample measurements applied", registry=r
        )
        self.duplicates = Counter(
            "isloader_duplicate_requests", "Retried requests applied before", registry=r
        )
        self.rejects = Counter(
            "isloader_rejects", "Rejected requests by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "isloader_rpc_seconds", "RPC latency", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ess = Gauge(
            "isloader_effective_sample_size", "(sum q)^2 / sum q^2 at the last stats", registry=r
        )
        self.wal_sync = Histogram(
            "isloader_wal_sync_seconds", "An update's wait for its log record to be fsynced",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.snapshots = Counter("isloader_snapshots", "Snapshots written", registry=r)
        self.auth_failures = Counter(
            "isloader_auth_failures", "Calls refused for a missing or wrong token", registry=r
        )
        r.register(_StateCollector(read_state))
