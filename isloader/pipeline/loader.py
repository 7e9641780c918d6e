"""``ImportanceLoader``: the importance-sampled, pruned data loader a trainer iterates.

Each ``epoch(e)`` iterates ``read_importance(loader, e)`` (a Ray Data dataset on
``ImportanceDatasource``) in batches handed over as torch tensors. Epoch 0 is the
initialization epoch (Alg. 3), served as a streaming pass; after it every epoch
samples with replacement from the store, in windows of ``window`` batches whose
plans are drawn at most ``window + prefetch`` steps before use. At the end of an
epoch the loader flushes its reports and runs the epoch-end steps
(``EpochProtocol``).

After the initialization epoch the loader decides how windows read
(docs/architecture.md, "Reading at streaming speed"): locality-aware draws over
``G`` units (``units_per_window``, "auto" by default), unless the dataset's row
order is clustered, where it warns and keeps independent draws.

With the embedded ``LocalStore``, read tasks reach the store through the same gRPC
API as a deployed one, served by the trainer process on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from isloader.data.catalog import ShardCatalog
from isloader.pipeline.clock import ClockActor, RayStepClock
from isloader.pipeline.core import DEFAULT_PREFETCH, DEFAULT_WINDOW, LoaderCore
from isloader.pipeline.costs import DrawChoice, Endpoint, choose_draws, expected_coverage
from isloader.pipeline.executor import Block, ReadWorkerPool, WindowExecutor
from isloader.pipeline.plan import ReadTask, label_clustering, units_per_window
from isloader.pipeline.protocol import EpochProtocol
from isloader.pipeline.runtime import quiet_ray
from isloader.pipeline.tasks import CatalogRef, ReadStats, TaskContext
from isloader.store.api import ImportanceStore

__all__ = ["ImportanceLoader", "EpochCounters", "DEFAULT_WINDOW", "DEFAULT_PREFETCH"]

CLUSTERED = 3.0  # label_clustering above this: independent draws
_MAX_CLASSES = 4096


@dataclass
class EpochCounters:
    """What one epoch did, per rank."""

    epoch: int
    mode: str = ""
    steps: int = 0
    samples: int = 0
    distinct_samples: int = 0
    bytes_fetched: float = 0.0
    requests: float = 0.0
    cache_hits: float = 0.0
    cache_lookups: float = 0.0
    cache_mass_covered: float = 0.0
    cached_bytes: float = 0.0  # what the caches held at the epoch's end
    miss_bytes: float = 0.0  # stored bytes of the rows that missed every cache
    fetch_seconds: float = 0.0  # read workers' wall time waiting on fetches
    draw_mode: str = ""  # "independent" or "locality" (sampled epochs)
    predicted_fetch_s_per_step: float = 0.0
    measured_fetch_s_per_step: float = 0.0
    step_seconds: float = 0.0  # the trainer's time per step, loading excluded
    units_per_window: int = 0
    max_plan_staleness: int = 0  # trainer steps between a plan's draw and its use
    staleness_bound: int = 0  # window + prefetch
    max_weight: float = 0.0
    weight_ess: float = 0.0  # (sum w)^2 / (n sum w^2): 1 for equal weights
    steps_weight_over_10: float = 0.0  # share of steps holding a weight above 10
    reporter_max_depth: int = 0
    seconds: float = 0.0
    active_after: int = 0
    pruned_after: int = 0
    _w: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], repr=False)
    _latency: list[float | None] = field(default_factory=list, repr=False)
    _bandwidth: list[float | None] = field(default_factory=list, repr=False)
    _held: float = field(default=0.0, repr=False)  # the trainer's time holding batches

    def endpoint_measured(self) -> tuple[float | None, float | None]:
        """Median latency and bandwidth the read workers measured this epoch."""
        lat = [x for x in self._latency if x is not None]
        bw = [x for x in self._bandwidth if x is not None]
        return (float(np.median(lat)) if lat else None, float(np.median(bw)) if bw else None)

    @property
    def cache_hit_rate(self) -> float:
        """Share of the draws (repeats included) whose row a cache held."""
        return self.cache_hits / self.cache_lookups if self.cache_lookups else 0.0

    @property
    def read_amplification(self) -> float:
        """Bytes fetched over the stored bytes of the rows that missed the caches."""
        return self.bytes_fetched / self.miss_bytes if self.miss_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every counter and derived figure (hit rate, staleness, weights' tail) as a dict."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {
            **out,
            "cache_hit_rate": self.cache_hit_rate,
            "read_amplification": self.read_amplification,
        }

    def add_block(self, stats: ReadStats) -> None:
        """Count what one read task cost."""
        self.bytes_fetched += stats.bytes_fetched
        self.requests += stats.requests
        self.cache_hits += stats.cache_hits
        self.cache_lookups += stats.cache_lookups
        self.miss_bytes += stats.miss_bytes
        self.fetch_seconds += stats.fetch_seconds
        self.cached_bytes = stats.cached_bytes
        self.cache_mass_covered = max(self.cache_mass_covered, stats.cache_mass_covered)
        self._latency.append(stats.latency)
        self._bandwidth.append(stats.bandwidth)

    def add_batch(self, weights: np.ndarray, step: int, drawn_at: int) -> None:
        """Count one batch: its weights, and its staleness (``drawn_at``: the steps the
        trainer had finished when its plan was drawn; -1 for streamed batches)."""
        if drawn_at >= 0:
            self.max_plan_staleness = max(self.max_plan_staleness, step - drawn_at)
        top = float(weights.max()) if len(weights) else 0.0
        self.max_weight = max(self.max_weight, top)
        self.steps_weight_over_10 += top > 10
        self._w[0] += float(weights.sum())
        self._w[1] += float(np.dot(weights, weights))
        self._w[2] += len(weights)
        self.steps += 1
        self.samples += len(weights)

    def close(self) -> None:
        """At the epoch's end: the weights' effective sample size and tail share, the step
        time and the measured fetch time per step."""
        total, squares, n = self._w
        self.weight_ess = total * total / (n * squares) if squares else 0.0
        self.steps_weight_over_10 = self.steps_weight_over_10 / self.steps if self.steps else 0.0
        if self.steps:
            self.step_seconds = self._held / self.steps
            self.measured_fetch_s_per_step = self.fetch_seconds / self.steps


def _to_torch(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Numeric numpy columns as tensors (sharing memory where the array is writable: Ray
    hands out read-only views, which are copied once); others stay numpy."""
    out: dict[str, Any] = {}
    for name, array in columns.items():
        if array.dtype.kind in "biuf":
            writable = array.flags.writeable and array.flags.c_contiguous
            out[name] = torch.from_numpy(array if writable else np.array(array, order="C"))
        else:
            out[name] = array
    return out


def _rebatch(blocks: Iterator[Block], size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Blocks of any row count as batches of ``size`` rows (the last may be short), each
    with the oldest ``drawn_at`` of the blocks it came from."""
    pending: list[Block] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block.columns["index"])
        if held < size:
            continue
        merged = _merge(pending)
        drawn = min(b.drawn_at for b in pending)
        full = held - held % size
        for start in range(0, full, size):
            yield {k: v[start : start + size] for k, v in merged.items()}, drawn
        rest = {k: v[full:] for k, v in merged.items()}
        pending = [Block(rest, pending[-1].stats, pending[-1].drawn_at)] if full < held else []
        held -= full
    if held:
        yield _merge(pending), min(b.drawn_at for b in pending)


def _merge(blocks: list[Block]) -> dict[str, np.ndarray]:
    if len(blocks) == 1:
        return blocks[0].columns
    return {k: np.concatenate([b.columns[k] for b in blocks]) for k in blocks[0].columns}


def _counted(blocks: Iterator[Block], counters: EpochCounters) -> Iterator[Block]:
    for block in blocks:
        counters.add_block(block.stats)
        yield block


class ImportanceLoader(LoaderCore):
    """Batches of torch tensors with ``index`` and ``weight`` columns.

    Takes every argument of ``LoaderCore`` (the dataset, store, batch, window and
    method knobs, the readers' caches), and:

    Args:
        units_per_window: how sampled windows read: ``"auto"`` (default) lets a cost
            model choose after the initialization epoch (``pipeline.costs``: the
            paper's independent draws unless the measured endpoint cannot serve their
            misses within a step; then locality-aware draws over ``G`` units, exact
            marginals), ``None`` keeps independent draws, an int fixes ``G``.
        price_per_request: makes the cost model prefer fewer requests where they keep
            up (an endpoint that charges per request or limits their rate).
        read_on_all_nodes: read through actors on every node of the Ray cluster (each
            node's disk tier serving the reads placed there) instead of this trainer's
            node only (default False: the rows stay where the trainer is).
    """

    def __init__(
        self,
        dataset: str | ShardCatalog,
        *,
        store: ImportanceStore,
        batch_size: int,
        units_per_window: int | str | None = "auto",
        read_on_all_nodes: bool = False,
        price_per_request: float = 0.0,
        **options: Any,
    ) -> None:
        if not (units_per_window in ("auto", None) or isinstance(units_per_window, int)):
            raise ValueError(f"units_per_window: 'auto', None or an int, not {units_per_window!r}")
        super().__init__(dataset, store=store, batch_size=batch_size, **options)
        self.read_on_all_nodes = read_on_all_nodes
        self.units_setting = units_per_window
        self.units = units_per_window if isinstance(units_per_window, int) else 0
        self.price_per_request = price_per_request
        self.draw_choice: DrawChoice | None = None
        self.protocol = EpochProtocol(store, self.method, self.rank)
        quiet_ray()
        self.history: list[EpochCounters] = []
        self._pid = os.getpid()  # the process that owns the actors below
        self._catalog_ref: CatalogRef | None = None
        self._clock: RayStepClock | None = None
        self._clocks = ClockActor()  # owned: made on first use, killed by close()
        self._pool = ReadWorkerPool(spread=read_on_all_nodes)  # owned, likewise
        self._position = (0, 0)  # (epoch, batches consumed in it)
        self._phases: list[tuple[int, int]] = []  # (world, steps) of earlier runs of it
        self._finished = -1  # steps the trainer finished in the current epoch
        self._thresholds: list[int] = []
        self._labels: np.ndarray | None = None  # class counts per unit, epoch 0
        self.layout_clustering = 0.0

    @property
    def row_bytes(self) -> int:
        """Estimated bytes per row as read (for Ray's memory planning)."""
        return int(max(64, self.catalog.unit_bytes().sum() / max(len(self.catalog), 1)))

    @property
    def staleness_bound(self) -> int:
        """The most trainer steps a plan may be drawn before its last batch is used."""
        return self.window + self.prefetch

    # -- the epoch protocol -------------------------------------------------------

    def tasks(self, epoch: int) -> list[ReadTask]:
        """This rank's read tasks of ``epoch`` (after any resume position)."""
        if self._position[0] == epoch and self._phases:
            return self.resumed_tasks(epoch, self._phases)
        return self.epoch_tasks(epoch)

    def ray_task_context(self, epoch: int) -> TaskContext:
        """What the read tasks of ``epoch`` need on a Ray worker: the catalog once in the
        object store, the store's connection, the step clock."""
        import ray

        if self._catalog_ref is None:
            self._catalog_ref = CatalogRef(ray.put(self.catalog))
        connection = getattr(self.store, "connection", None)
        return self.task_context(
            epoch, catalog=self._catalog_ref, store=connection, clock=self._clock
        )

    def _in_process_draw(self) -> Callable[[ReadTask], Any] | None:
        """With an in-process store the executor draws plans here, at submission (no
        round trip from the read actor back into this process)."""
        if not getattr(self.store, "in_process", False):
            return None
        layout = self.catalog.layout if self.units else None

        def draw(task: ReadTask) -> Any:
            return self.store.sample(task.count, task.seed, layout=layout, units=self.units)

        return draw

    def dataset(self, epoch: int) -> Any:
        """Epoch ``epoch`` for this rank as a ``ray.data.Dataset`` (``read_importance``).

        Its read tasks wait on a step clock that ``report`` advances, so call ``report``
        once per batch, then ``end_epoch(epoch)`` after the last.
        """
        from isloader.pipeline.datasource import read_importance

        self._start_epoch(epoch, clock=True)
        return read_importance(self, epoch)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate one epoch's batches; the epoch-end steps run when it is exhausted."""
        counters = EpochCounters(
            epoch=epoch, mode=self.mode(epoch), units_per_window=self.units,
            staleness_bound=self.staleness_bound if self.mode(epoch) == "sample" else 0,
        )  # fmt: skip
        if self.mode(epoch) == "sample":
            counters.draw_mode = "locality" if self.units else "independent"
            if self.draw_choice is not None:
                counters.predicted_fetch_s_per_step = self.draw_choice.predicted_fetch_s_per_step
        start = time.perf_counter()
        seen = []
        self._start_epoch(epoch, clock=False)
        context = self.ray_task_context(epoch)
        executor = WindowExecutor(
            self.tasks(epoch), context, pool=self._pool, prefetch=self.prefetch,
            draw=self._in_process_draw(),
        )  # fmt: skip
        blocks = _counted(executor.run(lambda: self._finished), counters)
        for columns, drawn_at in _rebatch(blocks, self.batch_size):
            step = self._position[1]
            counters.add_batch(columns["weight"], step, drawn_at)
            seen.append(columns["index"])
            batch = _to_torch(columns)
            self._position = (epoch, step + 1)
            held = time.perf_counter()
            yield batch
            counters._held += time.perf_counter() - held  # the trainer's step
            self._advance(step + 1)
        self._finish_epoch(epoch, counters, seen, start)

    def report(self, index: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Send ``q_new`` for this batch (asynchronously; never blocks the step)."""
        if self.protocol.report(index, outputs, targets):
            self._advance(self._finished + 1)
            if self._position[0] == 0 and self.units_setting == "auto" and self._disk_tier:
                self._count_labels(index, targets)

    def end_epoch(self, epoch: int) -> None:
        """The epoch-end steps, for callers iterating ``dataset(epoch)`` themselves."""
        counters = EpochCounters(epoch=epoch, mode=self.mode(epoch))
        self._finish_epoch(epoch, counters, [], time.perf_counter())

    # -- internals ----------------------------------------------------------------------

    def _start_epoch(self, epoch: int, *, clock: bool) -> None:
        if self._position[0] != epoch:
            self._position = (epoch, 0)
            self._phases = []
        self._finished = self._position[1]
        self._thresholds = sorted(
            t.first_step - self.prefetch for t in self.tasks(epoch) if t.count
        )
        if self._clock is not None:
            self._clock.forget()
            self._clock = None
        if clock and self.mode(epoch) == "sample":
            # one counter per epoch: its updates only ever raise it (max), so their
            # order in the threaded actor does not matter
            self._clock = RayStepClock(f"{self._id}:{epoch}", self._clocks.handle)
            self._clock.advance(self._finished)

    def _advance(self, finished: int) -> None:
        """The trainer finished ``finished`` steps: wake the tasks that may draw now."""
        if finished <= self._finished:
            return
        self._finished = finished
        if self._thresholds and self._thresholds[0] <= finished and self._clock is not None:
            while self._thresholds and self._thresholds[0] <= finished:
                self._thresholds.pop(0)
            self._clock.advance(finished)

    def _finish_epoch(
        self, epoch: int, counters: EpochCounters, seen: list[np.ndarray], start: float
    ) -> None:
        stats = self.protocol.finish_epoch(epoch)
        counters.active_after, counters.pruned_after = stats.active, stats.pruned
        counters.distinct_samples = int(np.unique(np.concatenate(seen)).size) if seen else 0
        counters.reporter_max_depth = self.protocol.reporter.max_depth
        self.protocol.reporter.max_depth = 0
        counters.close()
        counters.seconds = time.perf_counter() - start
        self.history.append(counters)
        self._position = (epoch + 1, 0)
        auto = self.units_setting == "auto" and self._disk_tier  # remote: reads cost
        if epoch == 0 and self.sampling == "importance" and auto:
            self._choose_draws(counters)

    def _count_labels(self, index: torch.Tensor, targets: torch.Tensor) -> None:
        """Class counts per unit during the initialization epoch (integer targets only),
        for the clustered-layout guard."""
        if targets.dim() != 1 or targets.is_floating_point() or not len(targets):
            return
        labels = targets.detach().cpu().numpy().astype(np.int64)
        if labels.min() < 0 or labels.max() >= _MAX_CLASSES:
            return
        width = int(labels.max()) + 1
        if self._labels is None:
            self._labels = np.zeros((self.catalog.num_units, width), dtype=np.int64)
        elif width > self._labels.shape[1]:
            grown = np.zeros((self.catalog.num_units, width), dtype=np.int64)
            grown[:, : self._labels.shape[1]] = self._labels
            self._labels = grown
        units, _ = self.catalog.units_of(index.detach().cpu().numpy())
        np.add.at(self._labels, (units, labels), 1)

    def _choose_draws(self, first: EpochCounters) -> None:
        """After the initialization epoch: the cost model picks how sampled windows read
        (``pipeline.costs``), from what the read workers measured of the endpoint, the
        trainer's step time and the mass a cache of the budget would hold."""
        score = label_clustering(self._labels) if self._labels is not None else 0.0
        self.layout_clustering = score
        self._labels = None
        units = self.store.unit_stats(self.catalog.layout)
        g = units_per_window(self.window * self.batch_size, units.active, units.mass)
        if score > CLUSTERED:
            warnings.warn(
                f"the dataset's row order looks clustered (the units' label mixes differ "
                f"{score:.1f}x more than in a random order): locality-aware draws would bias "
                "each window, so they stay off; `isloader convert --shuffle-rows` fixes the "
                "layout once.",
                stacklevel=3,
            )
            g = 0
        latency, bandwidth = first.endpoint_measured()
        if bandwidth is None and first.fetch_seconds > 0:  # no large transfer to time
            bandwidth = first.bytes_fetched / first.fetch_seconds
        if latency is None and first.requests:
            latency = first.fetch_seconds / first.requests
        if latency is None or not bandwidth:  # nothing was fetched: nothing to weigh
            self.units = 0
            return
        endpoint = Endpoint(
            latency, bandwidth, self.reader_settings.concurrency, self.price_per_request
        )
        live = units.mass > 0
        self.draw_choice = choose_draws(
            batch_size=self.batch_size, window=self.window, coverage=self._expected_coverage(),
            row_bytes=self.row_bytes, step_seconds=max(first.step_seconds, 1e-4),
            endpoint=endpoint, locality_units=g,
            unit_bytes=float(self.catalog.unit_bytes().mean()),
            unit_rows=float(units.active[live].mean()) if live.any() else 0.0,
        )  # fmt: skip
        self.units = self.draw_choice.units

    def _expected_coverage(self, sample: int = 100_000) -> float:
        """The mass share a cache of the budget holds when it keeps the rows of highest q
        (from the store's q of up to ``sample`` random rows)."""
        n = len(self.catalog)
        s = self.reader_settings
        budget = s.memory_bytes + (s.cache_bytes if s.cache_bytes is not None else 1 << 62)
        rows = np.random.default_rng(self.seed).choice(n, min(n, sample), replace=False)
        q = self.store.lookup(np.sort(rows))
        return expected_coverage(q, np.full(len(q), float(self.row_bytes)), budget, n / len(q))

    # -- resume ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: resuming continues with the same remaining plan."""
        return {
            "epoch": self._position[0],
            "batches": self._position[1],
            "seed": self.seed,
            "units_per_window": self.units,
            "world_size": self.world_size,
            "phases": [list(p) for p in self._phases],  # earlier runs of this epoch
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state_dict`` was taken: the remaining batches of the same epoch,
        on as many ranks (each goes on with its own) or on another number of them (the
        batches all ranks had left are shared out, none read twice, at most
        ``world_size - 1`` left out: ``LoaderCore.resumed_tasks``). Every rank loads
        the same state (rank 0's: ranks step together).

        Raises:
            ValueError: the state was saved with another seed, or is inconsistent.
        """
        if state.get("seed") != self.seed:
            raise ValueError(
                f"state was saved with seed {state.get('seed')}, loader has {self.seed}"
            )
        epoch, batches = int(state["epoch"]), int(state["batches"])
        phases = [(int(w), int(n)) for w, n in state.get("phases", [])]
        here = batches - sum(n for _, n in phases)  # steps of the run that saved it
        if here < 0 or any(w < 1 or n < 0 for w, n in phases):
            raise ValueError(f"inconsistent resume state: {state}")
        self._phases = [*phases, (int(state.get("world_size", self.world_size)), here)]
        self._position = (epoch, batches)
        self.units = int(state.get("units_per_window", self.units))

    def close(self) -> None:
        """Send queued reports, then release what the loader owns: its read actors (their
        readers, caches' files and store clients) and its clock actor. Idempotent; also
        run by ``with`` and, as a last resort, when the loader is garbage-collected."""
        try:
            self.protocol.close()
        finally:
            self._clock = None
            self._pool.close()
            self._clocks.close()

    def __enter__(self) -> ImportanceLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # only in the process that made it: a forked copy (a DataLoader worker) must
        # not reach into the parent's Ray actors
        if getattr(self, "_pid", None) != os.getpid():
            return
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to free
            self._pool.close()
            self._clocks.close()
