"""``isloader inspect``: what pruning kept and dropped, where, and which samples.

The store knows every sample's ``q`` (0 once pruned); the catalog knows which shard a
sample lives in and, where the rows have one, its label. ``inspect_pruning`` joins them
into a ``PruningReport``:

- per shard and per label: rows, the share pruned and the share of the mass held (a
  shard or a class pruned far more than the rest is a data problem worth a look:
  duplicates, a broken source, an easy class);
- the histogram of the active rows' ``log10 q``;
- the hardest and the easiest active samples by ``q`` (source indices);
- with ``thumbnails``, a PNG grid of those samples where their rows decode to images
  (encoded image bytes, or numeric arrays of a square size) or to 1-D signals (drawn as
  lines).

The report is JSON for scripts (``as_dict``) and a short text for people.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isloader.data.catalog import ShardCatalog
from isloader.data.reader import ShardReader
from isloader.errors import InvalidArgumentError
from isloader.export import column_names, label_column_of, store_q
from isloader.store.api import ImportanceStore

__all__ = ["PruningReport", "GroupShare", "inspect_pruning"]


@dataclass(frozen=True)
class GroupShare:
    """One shard's or one label's rows, pruned share and share of the mass."""

    name: str
    rows: int
    pruned_share: float
    mass_share: float


@dataclass
class PruningReport:
    """See the module docstring."""

    dataset: str
    rows: int
    pruned: int
    total_mass: float
    shards: list[GroupShare]
    labels: list[GroupShare]
    label_column: str | None
    histogram: list[int]
    histogram_log10_edges: list[float]
    hardest: list[dict[str, float]]  # {"index", "q"}, highest q first
    easiest: list[dict[str, float]]  # lowest active q first
    thumbnails: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values."""
        return asdict(self)

    def summary(self) -> str:
        """A few lines for a terminal: totals, then the groups pruned the most."""
        lines = [
            f"{self.dataset}: {self.rows:,} rows, {self.pruned:,} pruned "
            f"({self.pruned / max(self.rows, 1):.1%})"
        ]
        for title, groups in (("shards", self.shards), (f"labels ({self.label_column})",
                                                        self.labels)):  # fmt: skip
            if groups:
                top = sorted(groups, key=lambda g: -g.pruned_share)[:5]
                cells = ", ".join(f"{g.name} {g.pruned_share:.0%}" for g in top)
                lines.append(f"most pruned {title}: {cells}")
        if self.hardest:
            lines.append("hardest: " + ", ".join(str(int(h["index"])) for h in self.hardest[:8]))
        if self.thumbnails:
            lines.append(f"wrote {self.thumbnails}")
        return "\n".join(lines)


def _shares(names: list[str], groups: np.ndarray, q: np.ndarray) -> list[GroupShare]:
    total = max(float(q.sum()), 1e-300)
    rows = np.bincount(groups, minlength=len(names))
    pruned = np.bincount(groups, weights=(q == 0), minlength=len(names))
    mass = np.bincount(groups, weights=q, minlength=len(names))
    return [
        GroupShare(
            names[g], int(rows[g]), float(pruned[g] / max(rows[g], 1)), float(mass[g] / total)
        )
        for g in range(len(names))
        if rows[g]
    ]


def inspect_pruning(
    dataset: str | ShardCatalog,
    store: ImportanceStore,
    *,
    label_column: str | None = None,
    top: int = 16,
    bins: int = 20,
    thumbnails: str | None = None,
    image_column: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> PruningReport:
    """The report of ``dataset`` against ``store`` (see the module docstring).

    ``label_column``: default, the first column named like a label (``y``, ``label``...) (none: no
    per-label shares). ``thumbnails``: a PNG path for the grid of the ``top`` hardest
    and easiest samples, drawn from ``image_column`` (default: the first column that
    is not the label).

    Raises:
        InvalidArgumentError: a store of another size, or a named column the rows lack.
    """
    if not isinstance(dataset, ShardCatalog):
        dataset = ShardCatalog.open(dataset, storage_options)
    catalog = dataset
    n = len(catalog)
    if store.num_samples != n:
        raise InvalidArgumentError(f"the store holds {store.num_samples} samples, the dataset {n}")
    q = store_q(store)
    unit_of = np.repeat(np.arange(catalog.num_units), np.diff(catalog.unit_bounds))
    shard_of = catalog.unit_shard[unit_of]
    shards = _shares([s.path for s in catalog.shards], shard_of, q)
    reader = ShardReader(catalog, memory_bytes=0, cache_dir="")
    try:
        columns = column_names(catalog) if n else []
        if label_column is not None and label_column not in columns:
            raise InvalidArgumentError(f"no column {label_column!r} among {columns}")
        label = label_column or label_column_of(columns)
        labels: list[GroupShare] = []
        if label is not None:
            values = reader.read_units(np.arange(catalog.num_units), [label])
            codes, names = _codes(values.column(label).to_pylist())
            labels = _shares(names, codes, q)
        active = np.flatnonzero(q > 0)
        by_q = active[np.argsort(-q[active], kind="stable")]
        hardest = [{"index": int(i), "q": float(q[i])} for i in by_q[:top]]
        easiest = [{"index": int(i), "q": float(q[i])} for i in by_q[::-1][:top]]
        counts, edges = np.histogram(np.log10(q[active]) if len(active) else [], bins=bins)
        report = PruningReport(
            dataset=catalog.root, rows=n, pruned=int((q == 0).sum()),
            total_mass=float(q.sum()), shards=shards, labels=labels, label_column=label,
            histogram=counts.tolist(), histogram_log10_edges=edges.tolist(),
            hardest=hardest, easiest=easiest,
        )  # fmt: skip
        if thumbnails and len(active):
            column = image_column or next((c for c in columns if c not in (label, "__key__")), None)
            if column is None or column not in columns:
                raise InvalidArgumentError(f"no column {column!r} to draw among {columns}")
            _grid(reader, column, by_q[:top], by_q[::-1][:top], Path(thumbnails), report)
    finally:
        reader.close()
    return report


def _codes(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    names = sorted({str(v) for v in values}, key=lambda s: (len(s), s))
    where = {name: k for k, name in enumerate(names)}
    return np.array([where[str(v)] for v in values], np.int64), names


def _picture(value: Any) -> tuple[str, np.ndarray] | None:
    """("image", HxW[xC]) or ("signal", 1-D) for a row's value, None if neither."""
    if isinstance(value, bytes):
        try:
            from PIL import Image

            return "image", np.asarray(Image.open(io.BytesIO(value)))
        except Exception:
            try:  # a .npy blob, as the demo's tars hold
                return _picture(np.load(io.BytesIO(value), allow_pickle=False))
            except Exception:
                return None
    array = np.asarray(value)
    if array.dtype.kind not in "biuf" or array.size < 2:
        return None
    side = round(float(np.sqrt(array.size)))
    if array.ndim >= 2:
        return "image", array
    if side * side == array.size and side >= 4:
        return "image", array.reshape(side, side)
    return "signal", array.ravel()


def _grid(
    reader: ShardReader,
    column: str,
    hardest: np.ndarray,
    easiest: np.ndarray,
    path: Path,
    report: PruningReport,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"hardest (highest q)": hardest, "easiest (lowest active q)": easiest}
    width = max(len(hardest), len(easiest))
    fig, axes = plt.subplots(2, width, figsize=(1.4 * width, 3.4), squeeze=False)
    drawn = 0
    for r, (title, indices) in enumerate(rows.items()):
        values = reader.read(np.sort(indices), [column]) if len(indices) else None
        by_index: dict[int, Any] = {}
        if values is not None:
            keys, cells = values.column("index").to_pylist(), values.column(column).to_pylist()
            by_index = dict(zip(keys, cells, strict=True))
        for c in range(width):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(indices):
                ax.axis("off")
                continue
            picture = _picture(by_index[int(indices[c])])
            if picture is not None:
                kind, data = picture
                if kind == "image":
                    ax.imshow(data, cmap="gray")
                else:
                    ax.plot(data, lw=0.8)
                drawn += 1
            ax.set_title(f"{int(indices[c])}", fontsize=7)
        axes[r][0].set_ylabel(title, fontsize=7)
    fig.suptitle(f"{report.dataset}: samples by q ({report.pruned:,} of {report.rows:,} pruned)",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    if drawn:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        report.thumbnails = str(path)
    else:
        report.notes.append(f"column {column!r} decodes to neither images nor signals")
    plt.close(fig)
