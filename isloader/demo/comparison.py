"""One comparison of the demo: the data (local, or on the emulated object store), the
methods trained on it on equal terms, and the table and plots (``run_demo``).

Equal terms: every method reads from the same endpoint (one latency, one bandwidth
budget shared by all connections, one cap on concurrent requests), and every method
that caches gets the same budget, ``cache_fraction`` of the rows' bytes, counted in
what its cache stores (memory tiers included). Bytes and GETs are counted at the
endpoint.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isloader.demo.data import DEMO_FORMATS, make_mnist1d, publish
from isloader.demo.methods import CACHELESS
from isloader.demo.report import plot, print_table, summarize
from isloader.demo.settings import DemoSettings
from isloader.demo.train import RunResult, train_method

__all__ = ["Comparison", "open_comparison", "run_demo"]


@dataclass
class Comparison:
    """What every method of a comparison shares: the dataset (a catalog on the emulated
    endpoint, or a local URI), the test set, the endpoint and the loader options."""

    settings: DemoSettings
    dataset: Any
    test_set: Any
    remote: dict[str, Any] = field(default_factory=dict)  # options when data is remote
    scratch: Path = Path(".")
    endpoint: Any = None  # the EmulatedObjectStore, when the data is remote
    rows: int = 0

    @property
    def cache_budget(self) -> int:
        """Bytes every caching method may keep: ``cache_fraction`` of the rows' bytes."""
        return int(self.settings.cache_fraction * self.rows * self.settings.row_bytes)

    def options(self, method: str, run: str = "") -> dict[str, Any]:
        """``uniform_stream`` reads with no cache across epochs (a streaming loader); every
        other method gets a fresh cache of ``cache_budget`` bytes, memory tier included."""
        if not self.remote:
            return {}
        if method in CACHELESS:
            return {**self.remote, "cache_dir": "", "memory_bytes": 0}
        cache = self.scratch / f"cache-{method}-{run}"
        return {**self.remote, "cache_dir": str(cache), "cache_bytes": self.cache_budget,
                "memory_bytes": 0}  # fmt: skip

    @property
    def where(self) -> str:
        """Where the data comes from, in words, for the table's title."""
        s = self.settings
        if s.dataset:
            return s.dataset
        if not self.remote:
            return "local Parquet"
        fmt = DEMO_FORMATS[s.format].label
        return f"{fmt} on emulated S3 ({self.endpoint.model.describe()}), {s.row_bytes} B rows"


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
    from isloader.demo.endpoint import EmulatedObjectStore, EndpointModel

    model = EndpointModel(settings.latency_ms, settings.bandwidth_mb_s, settings.concurrency)
    s3 = stack.enter_context(EmulatedObjectStore(model))
    uri = publish(local, f"{s3.bucket('isloader-demo')}/mnist1d", s3.direct_options)
    spec = DEMO_FORMATS[settings.format]
    options = {"storage_options": s3.storage_options, "transform": spec.decode,
               "columns": list(spec.columns)}  # fmt: skip
    catalog = ShardCatalog.load(uri, storage_options=s3.storage_options)
    return Comparison(settings, catalog, test_set, options, scratch, s3, len(catalog))


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
        common = {"batch_size": settings.batch_size, "step_ms": settings.step_ms,
                  "endpoint": comparison.endpoint}  # fmt: skip
        # Warm-up: Ray starts its read actors and they import the data plane, so the
        # first method timed does not pay for it.
        train_method(
            methods[0], comparison.dataset, comparison.test_set, epochs=1, seed=0,
            **common, **comparison.options(methods[0], run="warm-up"),
        )  # fmt: skip
        results: list[RunResult] = []
        target_active = None
        with tqdm(total=len(methods) * settings.epochs, unit="epoch") as bar:
            for method in methods:
                bar.set_description(method)
                store = deployed if not method.startswith("uniform") else None
                if store is not None:
                    store.reset()
                result = train_method(
                    method, comparison.dataset, comparison.test_set, epochs=settings.epochs,
                    seed=settings.seed, store=store, target_active=target_active,
                    on_epoch=lambda e, bar=bar: (bar.update(1), bar.set_postfix(acc=e["test_acc"])),
                    **common, **comparison.options(method),
                )  # fmt: skip
                if method == "ours_is_prune":
                    target_active = result.series("active")
                results.append(result)
        where = comparison.where
        budget = comparison.cache_budget
    rows = summarize(results)
    title = f"isloader demo: MNIST-1D from {where} (equal steps for every method"
    title += f"; cache budget {budget / 1e6:.0f} MB)" if budget else ")"
    print_table(rows, title)
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": settings.model_dump(),
                "where": where,
                "cache_budget_bytes": budget,
                "rows": rows,
                "runs": [asdict(r) for r in results],
            },
            indent=1,
        )
    )
    for path in plot(results, out, f"MNIST-1D from {where}"):
        print(f"wrote {path}")
    return rows
