"""One comparison of the demo: the data (local, or on the emulated object store), the
methods trained on it, and the table and plots (``run_demo``)."""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isloader.demo.data import decode_npy, decode_raw, make_mnist1d, publish
from isloader.demo.report import plot, print_table, summarize
from isloader.demo.settings import DemoSettings
from isloader.demo.train import RunResult, train_method


@dataclass
class Comparison:
    """What every method of a comparison shares: the dataset (a catalog on the emulated
    endpoint, or a local URI), the test set, and the loader options of each method."""

    settings: DemoSettings
    dataset: Any
    test_set: Any
    remote: dict[str, Any] = field(default_factory=dict)  # options when data is remote
    scratch: Path = Path(".")

    def options(self, method: str, run: str = "") -> dict[str, Any]:
        """Uniform streams with no cache across epochs (a streaming loader); the other
        methods get a fresh importance-aware disk cache of ``cache_fraction`` of the
        dataset, and a memory tier smaller than the dataset."""
        if not self.remote:
            return {}
        if method == "uniform":
            return {**self.remote, "cache_dir": "", "memory_bytes": 0}
        limit = int(self.settings.cache_fraction * self.dataset.unit_bytes().sum())
        cache = self.scratch / f"cache-{method}-{run}"
        return {**self.remote, "cache_dir": str(cache), "cache_bytes": limit,
                "memory_bytes": self.settings.memory_mb << 20}  # fmt: skip

    @property
    def where(self) -> str:
        s = self.settings
        if self.settings.dataset:
            return self.settings.dataset
        if not self.remote:
            return "local Parquet"
        return (
            f"S3 emulated: {s.latency_ms:g} ms/request, {s.bandwidth_mbps:g} Mbit/s per "
            f"connection, {s.row_bytes} B rows"
        )


def open_comparison(settings: DemoSettings, stack: ExitStack) -> Comparison:
    """Make the data (and start the emulated endpoint, closed with ``stack``)."""
    from isloader.data.catalog import ShardCatalog
    from isloader.data.reader import ShardReader
    from isloader.pipeline.tasks import table_to_numpy

    out = Path(settings.output)
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="isloader-demo-")))
    if settings.dataset:
        catalog = ShardCatalog.open(settings.dataset)
        held = list(range(0, len(catalog), max(1, len(catalog) // 2000)))  # evaluation rows
        columns = table_to_numpy(ShardReader(catalog).read(held, ["x", "y"]))
        test_set = (columns["x"], columns["y"].astype("int64"))
        return Comparison(settings, settings.dataset, test_set, scratch=scratch)
    remote = not settings.local
    local, test_set = make_mnist1d(
        out / "data", settings.train_size, settings.test_size, settings.seed,
        row_bytes=settings.row_bytes if remote else 0, fmt=settings.format,
    )  # fmt: skip
    if not remote:
        return Comparison(settings, local, test_set, scratch=scratch)
    from isloader.demo.endpoint import EmulatedObjectStore

    s3 = stack.enter_context(
        EmulatedObjectStore(latency_ms=settings.latency_ms, bandwidth_mbps=settings.bandwidth_mbps)
    )
    uri = publish(local, f"{s3.bucket('isloader-demo')}/mnist1d", s3.direct_options)
    tar = settings.format == "webdataset"
    options = {"storage_options": s3.storage_options,
               "transform": decode_npy if tar else decode_raw,
               "columns": ["npy", "cls"] if tar else ["raw", "y"]}  # fmt: skip
    catalog = ShardCatalog.load(uri, storage_options=s3.storage_options)
    return Comparison(settings, catalog, test_set, options, scratch)


def run_demo(settings: DemoSettings) -> list[dict[str, Any]]:
    """The ``isloader demo`` command: data, the methods, the table and the PNGs."""
    from tqdm import tqdm

    from isloader.pipeline.runtime import start_ray

    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    methods = settings.method_list()
    start_ray()
    with ExitStack() as stack:
        comparison = open_comparison(settings, stack)
        deployed = None
        if settings.store:
            from isloader.config import read_token_file
            from isloader.store.client import StoreClient

            token = read_token_file(settings.token_file) if settings.token_file else None
            deployed = stack.enter_context(StoreClient(settings.store, token=token))
        # Warm-up: Ray starts its read actors and they import the data plane, so the
        # first method timed does not pay for it.
        train_method(
            "uniform",
            comparison.dataset,
            comparison.test_set,
            epochs=1,
            batch_size=settings.batch_size,
            seed=0,
            **comparison.options("uniform"),
        )
        results: list[RunResult] = []
        target_active = None
        with tqdm(total=len(methods) * settings.epochs, unit="epoch") as bar:
            for method in methods:
                bar.set_description(method)
                store = deployed if method != "uniform" else None
                if store is not None:
                    store.reset()
                result = train_method(
                    method, comparison.dataset, comparison.test_set, epochs=settings.epochs,
                    batch_size=settings.batch_size, seed=settings.seed, store=store,
                    target_active=target_active,
                    on_epoch=lambda e, bar=bar: (bar.update(1), bar.set_postfix(acc=e["test_acc"])),
                    **comparison.options(method),
                )  # fmt: skip
                if method == "ours_is_prune":
                    target_active = result.series("active")
                results.append(result)
        where = comparison.where
    rows = summarize(results)
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
