"""The Grafana dashboard and the Prometheus config of the compose ``monitoring`` profile
against what a store shard really exports."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from isloader.errors import IndexOutOfRangeError
from isloader.store.shard import Durability, StoreShard
from isloader.store.table import TableConfig

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "isloader.json"


def _queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def _exported(tmp_path) -> tuple[set[str], set[str]]:
    """Sample names and family names a shard exports once it has served each call."""
    shard = StoreShard(TableConfig(0, 100), Durability(wal_dir=str(tmp_path / "wal")))
    try:
        shard.update(np.arange(10), np.ones(10))
        shard.sample(5, seed=1)
        with contextlib.suppress(IndexOutOfRangeError):  # a rejected call, counted
            shard.update(np.array([1000]), np.ones(1))
        shard.stats()
        text = generate_latest(shard.metrics.registry).decode()
    finally:
        shard.close()
    # (prometheus_client also writes each counter's creation time as a *_created family)
    families = [f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")]
    return {s.name for f in families for s in f.samples}, {f.name for f in families}


def test_every_dashboard_query_names_a_metric_the_shard_exports(tmp_path) -> None:
    samples, families = _exported(tmp_path)
    named = {m for q in _queries() for m in re.findall(r"\bisloader_[a-z_]+", q)}
    assert named, "the dashboard queries no isloader metric"
    assert named <= samples, f"queried but not exported: {sorted(named - samples)}"
    charted = {f for f in families if any(re.match(rf"{f}(_total|_bucket|_count|_sum)?$", m)
                                          for m in named)}  # fmt: skip
    assert charted == families, f"exported but not charted: {sorted(families - charted)}"


def test_prometheus_scrapes_the_job_the_dashboard_reads() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert any('job="isloader-store"' in q for q in _queries())
    targets = jobs["isloader-store"]["static_configs"][0]["targets"]
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    port = compose["x-store-env"]["ISLOADER_METRICS_PORT"]
    assert sorted(targets) == [f"store-0:{port}", f"store-1:{port}"]
    monitoring = compose["services"]["prometheus"]
    assert monitoring["profiles"] == ["monitoring"]
