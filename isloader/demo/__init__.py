"""``isloader demo``: the paper's comparison, end to end through the real pipeline.

By default the data lives in object storage: MNIST-1D with rows of several KB is
served by a local S3 endpoint (moto) behind a proxy that adds per-request latency
and caps each connection's bandwidth, started and stopped by the demo itself. The
uniform baseline streams it every epoch, as a streaming loader would; the
importance-sampling methods read locality-aware windows through the importance-
aware cache (at most ``cache_fraction`` of the dataset's bytes). ``--local`` runs the
same comparison on local Parquet files, where loading costs nothing.

Concerns live apart: ``data`` (datasets), ``endpoint`` (the emulated object store),
``methods`` (what is compared), ``train`` (the loop), ``report`` (table and plots).
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from isloader.demo.data import decode_raw, make_mnist1d, publish
from isloader.demo.methods import METHODS
from isloader.demo.report import plot, print_table, summarize
from isloader.demo.train import RunResult, build_model, evaluate, train_method

__all__ = ["DemoSettings", "run_demo", "train_method", "RunResult", "build_model", "evaluate"]


class DemoSettings(BaseModel):
    """What ``isloader demo`` runs (every field is a flag of the same name)."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field("demo-output", description="directory for the table and PNGs")
    dataset: str | None = Field(None, description="your own indexed Parquet shards (URI)")
    store: str | None = Field(None, description="host:port,... of a deployed store")
    token_file: str | None = Field(None, description="bearer token of the deployed store")
    local: bool = Field(False, description="local Parquet files instead of emulated S3")
    train_size: int = Field(30000, ge=100)
    test_size: int = Field(10000, ge=100)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    methods: str = Field("uniform,ours_is,ours_is_prune,random_prune")
    seed: int = 0
    row_bytes: int = Field(4096, ge=0, description="bytes per stored row (emulated S3)")
    latency_ms: float = Field(20.0, ge=0, description="added to every S3 request")
    bandwidth_mbps: float = Field(100.0, ge=0, description="per connection, 0: no cap")
    cache_fraction: float = Field(0.5, gt=0, le=1, description="disk cache / dataset bytes")
    memory_mb: int = Field(16, ge=0, description="memory tier per reader process")

    def method_list(self) -> list[str]:
        methods = [m for m in self.methods.split(",") if m]
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
        if "random_prune" in methods and "ours_is_prune" in methods:  # it follows ours' sizes
            methods = [m for m in methods if m != "random_prune"] + ["random_prune"]
        return methods


def _dataset(settings: DemoSettings, out: Path, stack: ExitStack) -> tuple[Any, Any, dict]:
    """The dataset URI, the test set and the loader options every method shares."""
    from isloader.data.catalog import ShardCatalog
    from isloader.data.reader import ShardReader
    from isloader.pipeline.tasks import table_to_numpy

    if settings.dataset:
        catalog = ShardCatalog.open(settings.dataset)
        held = list(range(0, len(catalog), max(1, len(catalog) // 2000)))  # evaluation rows
        columns = table_to_numpy(ShardReader(catalog).read(held, ["x", "y"]))
        return settings.dataset, (columns["x"], columns["y"].astype("int64")), {}
    remote = not settings.local
    row_bytes = settings.row_bytes if remote else 0
    local, test_set = make_mnist1d(
        out / "data", settings.train_size, settings.test_size, settings.seed, row_bytes=row_bytes
    )
    if not remote:
        return local, test_set, {}
    from isloader.demo.endpoint import EmulatedObjectStore

    s3 = stack.enter_context(
        EmulatedObjectStore(latency_ms=settings.latency_ms, bandwidth_mbps=settings.bandwidth_mbps)
    )
    uri = publish(local, f"{s3.bucket('isloader-demo')}/mnist1d", s3.direct_options)
    options = {
        "storage_options": s3.storage_options,
        "transform": decode_raw,
        "columns": ["raw", "y"],
        "memory_bytes": settings.memory_mb << 20,
    }
    return ShardCatalog.load(uri, storage_options=s3.storage_options), test_set, options


def _method_options(method: str, shared: dict, settings: DemoSettings, scratch: Path) -> dict:
    """Uniform streams with no cache across epochs (a streaming loader); the other methods
    get a fresh importance-aware disk cache of ``cache_fraction`` of the dataset."""
    if not shared:
        return {}
    if method == "uniform":  # a streaming loader keeps nothing across epochs
        return {**shared, "cache_dir": "", "memory_bytes": 0}
    catalog_bytes = shared.get("dataset_bytes", 0)
    return {
        **shared,
        "cache_dir": str(scratch / f"cache-{method}"),
        "cache_bytes": int(settings.cache_fraction * catalog_bytes),
    }


def run_demo(settings: DemoSettings) -> list[dict[str, Any]]:
    """The ``isloader demo`` command: data, the methods, the table and the PNGs."""
    from tqdm import tqdm

    from isloader.pipeline.runtime import start_ray

    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    methods = settings.method_list()
    start_ray()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="isloader-demo-")))
        dataset, test_set, shared = _dataset(settings, out, stack)
        if shared:
            shared["dataset_bytes"] = int(dataset.unit_bytes().sum())
        deployed = None
        if settings.store:
            from isloader.store.client import StoreClient

            token = Path(settings.token_file).read_text().strip() if settings.token_file else None
            deployed = stack.enter_context(StoreClient(settings.store, token=token))
        # Warm-up: Ray starts its read actors and they import the data plane, so the
        # first method timed does not pay for it.
        warm = {
            k: v
            for k, v in _method_options("uniform", shared, settings, scratch).items()
            if k != "dataset_bytes"
        }
        train_method(
            "uniform", dataset, test_set, epochs=1, batch_size=settings.batch_size, seed=0, **warm
        )
        results: list[RunResult] = []
        target_active = None
        with tqdm(total=len(methods) * settings.epochs, unit="epoch") as bar:
            for method in methods:
                bar.set_description(method)
                options = _method_options(method, shared, settings, scratch)
                options.pop("dataset_bytes", None)
                store = deployed if method != "uniform" else None
                if store is not None:
                    store.reset()
                result = train_method(
                    method,
                    dataset,
                    test_set,
                    epochs=settings.epochs,
                    batch_size=settings.batch_size,
                    seed=settings.seed,
                    store=store,
                    target_active=target_active,
                    on_epoch=lambda e, bar=bar: (bar.update(1), bar.set_postfix(acc=e["test_acc"])),
                    **options,
                )
                if method == "ours_is_prune":
                    target_active = result.series("active")
                results.append(result)
    rows = summarize(results)
    where = (
        "local Parquet"
        if settings.local or settings.dataset
        else (
            f"S3 emulated: {settings.latency_ms:g} ms/request, {settings.bandwidth_mbps:g} Mbit/s "
            f"per connection, {settings.row_bytes} B rows"
        )
    )
    print_table(rows, f"isloader demo: MNIST-1D from {where} (equal steps for every method)")
    (out / "results.json").write_text(
        json.dumps(
            {"settings": settings.model_dump(), "rows": rows, "runs": [asdict(r) for r in results]},
            indent=1,
        )
    )
    for path in plot(results, out, f"MNIST-1D from {where}"):
        print(f"wrote {path}")
    return rows
