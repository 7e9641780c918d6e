"""Decoding WebDataset samples from the bytes of a tar unit.

A unit's bytes run from its first sample's first header to the end of its last
sample's padded data, so they are a tar of their own (without the end marker) and
``tarfile`` reads the members, PAX and GNU long names included. Members keep the
webdataset conventions: the extension names the field; ``cls`` and ``idx`` become
integers, ``txt`` and ``json`` text; everything else stays bytes for the user's
transform to decode (images, audio, tensors).
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pyarrow as pa

from isloader.data.catalog import webdataset_split

__all__ = ["samples_to_table", "unit_samples"]

_INT_EXTS = {"cls", "cls2", "idx", "index"}
_TEXT_EXTS = {"txt", "text", "json"}


def _decode(ext: str, data: bytes) -> Any:
    if ext in _INT_EXTS:
        return int(data.decode().strip())
    if ext in _TEXT_EXTS:
        return data.decode()
    return data


def unit_samples(data: bytes, columns: list[str] | None) -> list[dict[str, bytes]]:
    """The samples in a unit's bytes, in order: ``__key__`` plus the wanted members.

    Raises:
        tarfile.TarError: the bytes are not tar members (the caller names the shard).
    """
    samples: list[dict[str, bytes]] = []
    key = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            split = webdataset_split(member.name) if member.isfile() else None
            if split is None:
                continue
            if split[0] != key:
                key = split[0]
                samples.append({"__key__": key.encode()})
            if columns is None or split[1] in columns:
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file always has data
                samples[-1][split[1]] = extracted.read()
    return samples


def samples_to_table(samples: list[dict[str, bytes]], columns: list[str] | None) -> pa.Table:
    """One row per sample; ``__key__`` plus one column per member extension."""
    names = columns or sorted({k for s in samples for k in s if k != "__key__"})
    data: dict[str, list[Any]] = {"__key__": [s["__key__"].decode() for s in samples]}
    for name in names:
        data[name] = [_decode(name, s[name]) if name in s else None for s in samples]
    return pa.table(data)
