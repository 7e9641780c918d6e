"""Prometheus metrics of one store shard, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ShardMetrics"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


class ShardMetrics:
    """Counters, latency histograms and state gauges; gauges are set after each change."""

    def __init__(self) -> None:
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
        self.total_mass = Gauge("isloader_total_mass", "Sum of active q", registry=r)
        self.active = Gauge("isloader_active_samples", "Active (non-pruned) samples", registry=r)
        self.pruned = Gauge("isloader_pruned_samples", "Pruned samples", registry=r)
        self.ess = Gauge(
            "isloader_effective_sample_size", "(sum q)^2 / sum q^2 at the last stats", registry=r
        )
        self.epoch = Gauge("isloader_epoch", "Completed epochs", registry=r)
        self.snapshots = Counter("isloader_snapshots", "Snapshots written", registry=r)
