"""What a shard format is to the rest of the data plane: one small protocol.

The catalog indexes shards through it, the reader reads rows and whole units through it,
and nothing outside ``isloader/data/formats/`` asks which format it holds
(docs/architecture.md, "The data plane"). A format has two halves:

- ``ShardFormat``: stateless; indexes one shard (``index_shard``), turns every shard's
  index into the catalog's columnar arrays (``catalog_arrays``), checks them and sizes
  units (``unit_bytes``);
- ``FormatReader``: made per reader process (``ShardFormat.reader``), holding what it
  learned about the shards (Parquet footers and page indexes); it fetches through the
  reader's ``RangeFetcher`` and decodes with the format's library.

A format reads **rows** (``read_rows``: only the bytes of the sampled rows, merged where
the gap costs less than a request) and **units** (``read_units``: a streaming pass reads
whole row groups or runs of tar samples in one range each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import fsspec
    import pyarrow as pa

    from isloader.data.catalog import ShardCatalog
    from isloader.data.fetch import RangeFetcher

__all__ = ["ShardIndex", "ReadAmplification", "ShardFormat", "FormatReader"]


@dataclass
class ShardIndex:
    """What indexing one shard found: its rows and the arrays the format keeps of it."""

    rows: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "no page index"


@dataclass(frozen=True)
class ReadAmplification:
    """What a sampled row is expected to cost in this layout, for ``isloader index``."""

    bytes_per_row: float  # stored bytes of a row's requested columns
    bytes_per_sampled_row: float  # bytes fetched for one sampled row (its pages or unit)
    granularity: str  # "row", "page" or "unit"
    advice: str = ""

    @property
    def ratio(self) -> float:
        """Bytes fetched per sampled row over the row's stored bytes."""
        return self.bytes_per_sampled_row / max(self.bytes_per_row, 1.0)


class FormatReader(Protocol):
    """One process's reader of a catalog's shards in one format."""

    def read_rows(self, indices: np.ndarray, columns: Sequence[str] | None) -> pa.Table:
        """The rows at sorted, distinct global ``indices``, in that order.

        Raises:
            CorruptShardError, ShardChangedError, MissingShardError: named, with the URI.
            InvalidArgumentError: unknown columns.
        """

    def read_units(self, units: np.ndarray, columns: Sequence[str] | None) -> list[pa.Table]:
        """Every row of each of ``units``, one table per unit, in order."""

    def row_bytes(self, indices: np.ndarray, columns: Sequence[str] | None) -> np.ndarray:
        """Stored bytes of each row at ``indices`` (what a miss of it costs at least)."""


class ShardFormat(Protocol):
    """A shard format: indexing and sizing; see the module docstring."""

    name: str
    suffixes: tuple[str, ...]
    array_names: tuple[str, ...]  # the catalog arrays this format saves

    def index_shard(self, fs: fsspec.AbstractFileSystem, path: str, uri: str) -> ShardIndex:
        """Index one shard file.

        Raises:
            CorruptShardError: the file is not a readable shard of this format.
        """

    def catalog_arrays(self, shards: list[ShardIndex], **options: Any) -> dict[str, np.ndarray]:
        """The catalog's arrays for ``shards`` in catalog order (``unit_bounds`` and
        ``unit_shard`` at least)."""

    def check(self, catalog: ShardCatalog) -> None:
        """Raise ``InvalidArgumentError`` unless the catalog's arrays are consistent."""

    def unit_bytes(self, catalog: ShardCatalog) -> np.ndarray:
        """Approximate stored bytes of each unit."""

    def write_shard(
        self, fs: fsspec.AbstractFileSystem, path: str, table: pa.Table, rows_per_group: int
    ) -> None:
        """Write ``table`` as one shard at ``path``, readable by the format's own tools
        (``isloader export``)."""

    def reader(self, catalog: ShardCatalog, fetcher: RangeFetcher) -> FormatReader:
        """A reader of ``catalog``'s shards for one process."""

    def amplification(
        self, catalog: ShardCatalog, fetcher: RangeFetcher, columns: Sequence[str] | None
    ) -> ReadAmplification:
        """What a sampled row costs in this dataset's layout (reads one shard's metadata)."""
