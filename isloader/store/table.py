"""``ImportanceTable``: the paper's method for one contiguous index range.

The state machine of docs/architecture.md ("The method"), with no I/O in it:

- ``q[i] >= 0`` un-normalised importance, ``seen[i]``, ``pruned[i]``;
- sampling with replacement from ``p[i] = q[i] / sum_{j active} q[j]`` (pruned: 0)
  through a ``SumTree`` in ``O(B log N)``;
- weights ``w[i] = 1 / (N_active p[i])``;
- memory update ``q[i] = a q[i] + (1 - a) q_new`` (Eq. 8), repeated indices in one
  call averaged first, the first measurement of an unseen sample setting ``q``;
- ``end_epoch``: ``q += eps`` on active samples (Alg. 1 line 13);
- ``prune(threshold)``: seen, active samples with ``q <= threshold`` (Alg. 2);
- ``readmit``: a random share of pruned samples back at the active mean q;
- locality-aware draws (docs/architecture.md, "Reading at streaming speed"): with a
  registered unit layout, a window of ``count`` draws is restricted to ``G`` units
  picked i.i.d. with ``P(u) = mass_u / Q``; each draw takes one of them uniformly,
  then a row ``∝ q`` inside it, so ``P(i) = sum_j (1/G)(mass_u/Q)(q_i/mass_u) = q_i/Q``
  exactly and the weight ``1 / (N_active p_i)`` is unchanged.

Before the initialization epoch has measured a sample it holds ``initial_q``
(default 1.0), so ``sample`` is always defined and draws unseen samples uniformly
among themselves; the pipeline serves epoch 0 as a plain shuffled pass (Alg. 3), so
in normal operation no importance draw happens before ``stats().ready``. Unseen
samples are never pruned.

Every mutating call validates first and changes nothing on error. The table is not
thread-safe; the store server and ``LocalStore`` hold a lock around it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from isloader.errors import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    MessageTooLargeError,
    SnapshotMismatchError,
    UnknownLayoutError,
)
from isloader.store.limits import (
    MAX_SAMPLE,
    MAX_UNITS,
    REQUEST_WINDOW,
    check_count,
    check_end_epoch,
    check_epoch_jump,
    check_eps,
    check_values,
)
from isloader.store.records import Plan, ShardView, TableState, TableStats, UnitStats
from isloader.store.requests import RequestLog
from isloader.store.sumtree import SumTree

__all__ = ["TableConfig", "ImportanceTable", "prune_threshold", "STATE_FORMAT"]

STATE_FORMAT = 1
# Fixed log-spaced bins, 5 per decade over [1e-4, 1e4] (values outside count in the end
# bins): importance spans decades, and fixed edges let shards' histograms add up exactly.
_HISTOGRAM_EDGES = np.logspace(-4, 4, 41)
_MAX_LAYOUTS = 8


@dataclass(frozen=True)
class TableConfig:
    """One table's fixed settings.

    Args:
        start, stop: the global index range ``[start, stop)`` this table owns.
        alpha: EMA memory ``a`` in ``[0, 1)`` of Eq. 8 (default 0.3, the paper's value on
            most tasks; with 0 one confident measurement makes q tiny and its weight,
            until the next measurement, huge).
        initial_q: importance of a sample before its first measurement.
    """

    start: int
    stop: int
    alpha: float = 0.3
    initial_q: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise InvalidArgumentError(f"need 0 <= start < stop, got [{self.start}, {self.stop})")
        if not 0.0 <= self.alpha < 1.0:
            raise InvalidArgumentError(f"alpha must be in [0, 1), got {self.alpha}")
        if not (math.isfinite(self.initial_q) and self.initial_q > 0):
            raise InvalidArgumentError(f"initial_q must be finite and > 0, got {self.initial_q}")

    @property
    def size(self) -> int:
        """How many indices the shard owns (``stop - start``)."""
        return self.stop - self.start


def prune_threshold(total_mass: float, active_count: int, k: float) -> float:
    """Alg. 2's global threshold ``sum(q_active) / (K * N_active)``; larger K prunes less."""
    if not (math.isfinite(k) and k > 0):
        raise InvalidArgumentError(f"prune K must be finite and > 0, got {k}")
    return total_mass / (k * active_count) if active_count else 0.0


class ImportanceTable:
    """Importance, seen and pruned flags for ``config.size`` samples (18 bytes each).

    ``q`` lives in the sum tree's leaves; a pruned sample's leaf is 0 (its old q is
    not needed: readmission starts it afresh). Updates write leaves at once and
    queue the tree refresh until something reads the tree (``sample``, the epoch
    operations), so a stream of updates between two plan draws is refreshed in one
    vectorised pass. The running total is kept exactly at every refresh.
    """

    def __init__(self, config: TableConfig, *, request_window: int = REQUEST_WINDOW) -> None:
        self.config = config
        n = config.size
        self._tree = SumTree(n)
        self._q = self._tree.leaves
        self._q[:] = config.initial_q
        self._seen = np.zeros(n, dtype=np.bool_)
        self._pruned = np.zeros(n, dtype=np.bool_)
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._total = 0.0
        self._requests = RequestLog(request_window)
        self._active = n
        self._seen_count = 0
        self._epoch = 0  # number of completed epochs
        self._last_prune_epoch = -1
        self._last_readmit_epoch = -1
        self._version = 0
        self._layouts: dict[str, tuple[int, np.ndarray]] = {}
        self._rebuild()

    # -- views -------------------------------------------------------------

    @property
    def start(self) -> int:
        """The first global index this table owns."""
        return self.config.start

    @property
    def stop(self) -> int:
        """One past the last global index this table owns."""
        return self.config.stop

    @property
    def version(self) -> int:
        """Incremented by every change; with the seed it fixes what ``sample`` draws."""
        return self._version

    @property
    def epoch(self) -> int:
        """The next epoch number ``end_epoch`` applies (epochs before it have ended)."""
        return self._epoch

    @property
    def nbytes(self) -> int:
        """Bytes of the sum tree (whose leaves are q) and the seen and pruned flags."""
        return self._tree.nbytes + self._seen.nbytes + self._pruned.nbytes  # q: the leaves

    def view(self, *, fresh: bool = True) -> ShardView:
        """Total mass and active count: exact (the tree is brought up to date first, so a
        read never moves the reported mass), or with ``fresh=False`` as of the last
        refresh, without the cost of one."""
        if fresh:
            self._refresh()
        return ShardView(self._total, self._active)

    def importance(self, indices: np.ndarray) -> np.ndarray:
        """Current ``q`` at global ``indices`` (a copy)."""
        return self._q[self._local(indices)].copy()

    # -- the method ----------------------------------------------------------

    def update(
        self,
        indices: np.ndarray,
        values: np.ndarray,
        *,
        request: tuple[str, int] | None = None,
    ) -> bool:
        """Eq. 8 for each distinct index; returns False for an already applied request."""
        local, values = self.validate_update(indices, values)
        if request is not None:
            self.check_request(request)
        if request is not None and not self.claim(request):
            return False
        self.apply_update(local, values)
        return True

    def validate_update(
        self, indices: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check an update without changing anything; returns local indices and values."""
        local = self._local(indices)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or len(values) != len(local):
            raise InvalidArgumentError(
                f"indices and values differ in length ({len(local)} != {values.size})"
            )
        check_values("values", values)
        return local, values

    def check_request(self, request: tuple[str, int]) -> None:
        """Raise unless ``(client_id, seq)`` is a well-formed request id."""
        self._requests.check(*request)

    def applied(self, request: tuple[str, int]) -> bool:
        """Whether ``(client_id, seq)`` was applied before (a retry)."""
        return self._requests.applied(*request)

    def claim(self, request: tuple[str, int]) -> bool:
        """Record ``(client_id, seq)``; False when it was recorded before (a retry)."""
        self._requests.check(*request)
        if self._requests.applied(*request):
            return False
        self._requests.record(*request)
        return True

    def apply_update(self, local: np.ndarray, values: np.ndarray) -> None:
        """The EMA itself, on input that ``validate_update`` accepted."""
        if local.size:
            uniq, inverse = np.unique(local, return_inverse=True)
            mean = np.bincount(inverse, weights=values) / np.bincount(inverse)
            live = ~self._pruned[uniq]  # reports on pruned samples change nothing
            uniq, mean = uniq[live], mean[live]
            old = self._q[uniq]
            was_seen = self._seen[uniq]
            a = self.config.alpha
            new = np.where(was_seen, a * old + (1.0 - a) * mean, mean)
            self._q[uniq] = new
            self._seen[uniq] = True
            self._seen_count += int(uniq.size - was_seen.sum())
            self._pending.append(uniq)
            self._pending_count += uniq.size
            if self._pending_count > (1 << 18):
                self._refresh()
        self._version += 1

    def sample(
        self,
        count: int,
        rng: np.random.Generator,
        *,
        layout: str | None = None,
        units: int = 0,
    ) -> Plan:
        """Draw ``count`` global indices with replacement from ``p = q / sum(q_active)``.

        With ``layout`` (registered by ``set_layout``) and ``units = G > 0`` the draws
        are locality-aware: restricted to ``G`` units picked by mass, same marginals.
        """
        count = check_count("sample count", count, MAX_SAMPLE)
        units = check_count("units per window", units, MAX_SAMPLE)
        if count == 0:
            empty = np.zeros(0)
            return Plan(np.zeros(0, dtype=np.int64), empty, empty)
        self._refresh()
        total, active = self.view()
        if not (active and total > 0):
            raise InvalidArgumentError(
                f"table [{self.start}, {self.stop}) has no sampling mass "
                f"(active={active}, total={total}); call end_epoch with eps > 0"
            )
        if layout is not None and units:
            local = self._draw_in_units(count, rng, total, self._layout(layout)[1], units)
        else:
            local = self._draw(count, rng, total)
        p = self._q[local] / total
        return Plan(local + self.start, p, 1.0 / (active * p))

    def _draw(self, count: int, rng: np.random.Generator, total: float) -> np.ndarray:
        """``count`` local indices ``∝ q`` over the whole table."""
        local = self._tree.find(rng.random(count) * total)
        # Rounding at the top of the range can land on a zero-mass leaf: redraw those.
        for _ in range(16):
            bad = (self._q[local] <= 0) | self._pruned[local]
            if not bad.any():
                break
            local[bad] = self._tree.find(rng.random(int(bad.sum())) * total)
        return local

    def _draw_in_units(
        self, count: int, rng: np.random.Generator, total: float, bounds: np.ndarray, g: int
    ) -> np.ndarray:
        """``count`` local indices, each ``∝ q`` inside one of ``g`` units picked ``∝ mass``."""
        unit = np.searchsorted(bounds, self._draw(g, rng, total), side="right") - 1
        lo, hi = bounds[unit], bounds[unit + 1]
        cover = self._tree.cover(lo, hi)
        mass = self._tree.sums(cover).sum(axis=1)
        which = rng.integers(g, size=count)
        local = self._tree.find_in(cover, which, rng.random(count) * mass[which])
        for _ in range(16):
            safe = np.clip(local, 0, self.config.size - 1)
            bad = (local < lo[which]) | (local >= hi[which]) | (self._q[safe] <= 0)
            bad |= self._pruned[safe]
            if not bad.any():
                break
            redo = which[bad]
            local[bad] = self._tree.find_in(cover, redo, rng.random(redo.size) * mass[redo])
        return local

    # -- unit layouts (locality-aware draws and the importance-aware cache) ------

    def set_layout(self, layout: str, bounds: np.ndarray) -> int:
        """Register unit boundaries ``bounds`` (global, ascending, ``0 .. N``) under the
        name ``layout``; the units overlapping this table are kept, clipped to its range.
        Returns how many units overlap. The newest few layouts are kept."""
        b = np.asarray(bounds)
        if b.ndim != 1 or b.size < 2 or not np.issubdtype(b.dtype, np.integer):
            raise InvalidArgumentError("unit bounds must be >= 2 ascending integers")
        if b.size > MAX_UNITS + 1:
            raise MessageTooLargeError(f"a layout has at most {MAX_UNITS} units")
        b = b.astype(np.int64)
        if b[0] != 0 or (np.diff(b) <= 0).any() or b[-1] < self.stop:
            raise InvalidArgumentError(
                f"unit bounds must rise strictly from 0 to at least {self.stop}"
            )
        if not layout or len(layout) > 128:
            raise InvalidArgumentError("a layout name is 1-128 characters")
        first = int(np.searchsorted(b, self.start, side="right")) - 1
        last = int(np.searchsorted(b, self.stop, side="left"))  # bound at or after stop
        local = np.clip(b[first : last + 1], self.start, self.stop) - self.start
        self._layouts.pop(layout, None)
        self._layouts[layout] = (first, local)
        while len(self._layouts) > _MAX_LAYOUTS:
            self._layouts.pop(next(iter(self._layouts)))
        return len(local) - 1

    def unit_stats(self, layout: str) -> UnitStats:
        """Mass and active rows of every unit overlapping this table, and the pruned
        flags of its range (what the importance-aware cache ranks and filters by)."""
        first, bounds = self._layout(layout)
        self._refresh()
        starts = bounds[:-1]
        return UnitStats(
            first_unit=first,
            mass=np.add.reduceat(self._q, starts),
            active=np.add.reduceat((~self._pruned).astype(np.int64), starts),
            pruned=self._pruned.copy(),
        )

    def _layout(self, layout: str) -> tuple[int, np.ndarray]:
        try:
            return self._layouts[layout]
        except KeyError:
            raise UnknownLayoutError(f"unit layout {layout!r} is not registered") from None

    def check_end_epoch(self, epoch: int, eps: float) -> None:
        """Raise what ``end_epoch`` would raise, changing nothing: an ``eps`` that would
        push a q past ``MAX_VALUE`` (the snapshot could no longer be loaded), an epoch
        more than ``MAX_EPOCH_JUMP`` beyond this table's (every later epoch-end would be
        ignored as already done)."""
        top = 0.0
        if eps and self._active:
            self._refresh()
            top = float(self._q[~self._pruned].max())
        check_end_epoch(epoch, eps, top, self._epoch)

    def check_prune(self, threshold: float, epoch: int | None) -> None:
        """Raise ``InvalidArgumentError`` for a threshold or epoch ``prune`` would refuse
        (the shard checks before it logs the change)."""
        check_eps("threshold", threshold)
        self._check_epoch_jump(epoch)

    def check_readmit(self, fraction: float, epoch: int | None) -> None:
        """Raise ``InvalidArgumentError`` for a fraction or epoch ``readmit`` would refuse
        (the shard checks before it logs the change)."""
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise InvalidArgumentError(f"readmit fraction must be in [0, 1], got {fraction}")
        self._check_epoch_jump(epoch)

    def _check_epoch_jump(self, epoch: int | None) -> None:
        if epoch is not None:
            check_epoch_jump(epoch, self._epoch)

    def end_epoch(self, epoch: int, eps: float) -> bool:
        """Alg. 1 line 13, once per epoch number: ``q += eps`` on every active sample."""
        self.check_end_epoch(epoch, eps)
        epoch = int(epoch)
        if epoch < self._epoch:
            return False
        if eps:
            self._q[~self._pruned] += eps
        self._rebuild()
        self._epoch = epoch + 1
        self._version += 1
        return True

    def prune(self, threshold: float, *, epoch: int | None = None) -> int:
        """Alg. 2: prune seen, active samples with ``q <= threshold``; returns how many.

        With ``epoch`` the call is applied once per epoch number (ranks may all call it).
        """
        self.check_prune(threshold, epoch)
        if epoch is not None and epoch <= self._last_prune_epoch:
            return 0
        newly = self._seen & ~self._pruned & (self._q <= threshold)
        count = int(newly.sum())
        self._pruned |= newly
        self._q[newly] = 0.0
        self._active -= count
        if epoch is not None:
            self._last_prune_epoch = epoch
        self._rebuild()
        self._version += 1
        return count

    def readmit(
        self, fraction: float, rng: np.random.Generator, *, epoch: int | None = None
    ) -> int:
        """Put ``round(fraction * pruned)`` random pruned samples back, unseen, at the active
        mean q, so the next pass measures them afresh; returns how many."""
        self.check_readmit(fraction, epoch)
        if epoch is not None and epoch <= self._last_readmit_epoch:
            return 0
        candidates = np.flatnonzero(self._pruned)
        chosen = rng.choice(candidates, size=round(fraction * candidates.size), replace=False)
        self._refresh()
        total, active = self.view()
        level = total / active if active and total > 0 else self.config.initial_q
        self._pruned[chosen] = False
        self._seen_count -= int(self._seen[chosen].sum())
        self._seen[chosen] = False
        self._q[chosen] = level
        self._active += int(chosen.size)
        if epoch is not None:
            self._last_readmit_epoch = epoch
        self._rebuild()
        self._version += 1
        return int(chosen.size)

    def reset(self) -> None:
        """Forget every measurement: all samples unseen and active at ``initial_q``,
        epoch 0 (a new training run on the same store). Request ids are kept, so a
        retried update from before the reset is still recognised."""
        self._q[:] = self.config.initial_q
        self._seen[:] = False
        self._pruned[:] = False
        self._active, self._seen_count = self.config.size, 0
        self._epoch = 0
        self._last_prune_epoch = self._last_readmit_epoch = -1
        self._rebuild()
        self._version += 1

    def stats(self) -> TableStats:
        """Totals over the active samples and their q histogram on the fixed shared edges."""
        live = self._q[~self._pruned]
        edges = _HISTOGRAM_EDGES
        counts, _ = np.histogram(np.clip(live, edges[0], edges[-1]), bins=edges)
        return TableStats(
            num_samples=self.config.size,
            active=self._active,
            seen=self._seen_count,
            pruned=self.config.size - self._active,
            total_mass=float(live.sum()),
            sum_sq=float(np.dot(live, live)),
            q_min=float(live.min()) if live.size else 0.0,
            q_max=float(live.max()) if live.size else 0.0,
            epoch=self._epoch,
            version=self._version,
            histogram=tuple(int(c) for c in counts),
            histogram_edges=tuple(float(e) for e in edges),
        )

    # -- persistence (the bytes: isloader.store.snapshot.save_table / restore_table) --

    def export_state(self) -> TableState:
        """A consistent copy of the whole state, cheap enough to take under a lock."""
        return TableState(
            q=self._q.copy(),
            seen=self._seen.copy(),
            pruned=self._pruned.copy(),
            meta={
                "format": STATE_FORMAT,
                "config": asdict(self.config),
                "epoch": self._epoch,
                "last_prune_epoch": self._last_prune_epoch,
                "last_readmit_epoch": self._last_readmit_epoch,
                "version": self._version,
                "requests": self._requests.to_dict(),
            },
        )

    def load_state(self, state: TableState) -> None:
        """Replace the state with ``state``; a snapshot of another config is an error."""
        meta = state.meta
        if meta.get("format") != STATE_FORMAT:
            raise SnapshotMismatchError(f"snapshot format {meta.get('format')} != {STATE_FORMAT}")
        if meta.get("config") != asdict(self.config):
            raise SnapshotMismatchError(
                f"snapshot was taken with {meta.get('config')}, this table is {asdict(self.config)}"
            )
        n = self.config.size
        if not (state.q.shape == state.seen.shape == state.pruned.shape == (n,)):
            raise SnapshotMismatchError(f"snapshot arrays do not have {n} entries")
        check_values("snapshot q", state.q)
        self._q[:] = np.where(state.pruned, 0.0, state.q)
        self._seen = state.seen.astype(np.bool_, copy=True)
        self._pruned = state.pruned.astype(np.bool_, copy=True)
        self._active = int(n - self._pruned.sum())
        self._seen_count = int(self._seen.sum())
        self._epoch = int(meta["epoch"])
        self._last_prune_epoch = int(meta["last_prune_epoch"])
        self._last_readmit_epoch = int(meta["last_readmit_epoch"])
        self._version = int(meta["version"])
        self._requests = RequestLog.from_dict(meta["requests"], self._requests.window)
        self._rebuild()

    # -- internals -----------------------------------------------------------

    def _local(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise InvalidArgumentError(f"indices must be one-dimensional, got shape {idx.shape}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise InvalidArgumentError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < self.start or idx.max() >= self.stop):
            bad = idx[(idx < self.start) | (idx >= self.stop)][0]
            raise IndexOutOfRangeError(
                f"index {bad} is outside this table's range [{self.start}, {self.stop})"
            )
        return idx - self.start

    def _refresh(self) -> None:
        """Bring the tree up to date with the leaves written since the last refresh."""
        if not self._pending:
            return
        if self._pending_count > self.config.size // 8:
            self._rebuild()
            return
        self._tree.refresh(np.concatenate(self._pending))
        self._pending.clear()
        self._pending_count = 0
        self._total = self._tree.total()

    def _rebuild(self) -> None:
        self._tree.rebuild()
        self._pending.clear()
        self._pending_count = 0
        self._total = self._tree.total()
