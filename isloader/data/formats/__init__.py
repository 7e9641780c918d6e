"""Shard formats behind one protocol (``base``), registered by name.

The catalog, the reader and the cache call a format through ``ShardFormat`` and
``FormatReader``; nothing outside this package branches on which format a dataset is in
(docs/architecture.md, "The data plane"). Add a format by implementing the protocol and
registering it in ``FORMATS``.
"""

from __future__ import annotations

from isloader.data.formats.base import FormatReader, ReadAmplification, ShardFormat, ShardIndex
from isloader.data.formats.parquet import ParquetFormat
from isloader.data.formats.webdataset import WebDatasetFormat
from isloader.errors import InvalidArgumentError

__all__ = [
    "FORMATS",
    "ShardFormat",
    "FormatReader",
    "ShardIndex",
    "ReadAmplification",
    "get_format",
    "guess_format",
]

FORMATS: dict[str, ShardFormat] = {
    "parquet": ParquetFormat(),
    "webdataset": WebDatasetFormat(),
}


def get_format(name: str) -> ShardFormat:
    """The registered format ``name``.

    Raises:
        InvalidArgumentError: no such format.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown shard format {name!r}; choose from {sorted(FORMATS)}"
        ) from None


def guess_format(names: list[str]) -> str | None:
    """The first registered format whose suffix one of ``names`` ends with."""
    for name, fmt in FORMATS.items():
        if any(n.endswith(fmt.suffixes) for n in names):
            return name
    return None
