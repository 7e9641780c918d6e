"""Decoding WebDataset samples from their members' bytes.

Members keep the webdataset conventions: the extension names the field. ``cls``
and ``idx`` become integers, ``txt`` text, ``json`` text; everything else stays
bytes for the user's transform to decode (images, audio, tensors).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["samples_to_table"]

_INT_EXTS = {"cls", "cls2", "idx", "index"}
_TEXT_EXTS = {"txt", "text", "json"}


def _decode(ext: str, data: bytes) -> Any:
    if ext in _INT_EXTS:
        return int(data.decode().strip())
    if ext in _TEXT_EXTS:
        return data.decode()
    return data


def samples_to_table(samples: list[dict[str, bytes]], columns: list[str] | None) -> pa.Table:
    """One row per sample; ``__key__`` plus one column per member extension."""
    names = columns or sorted({k for s in samples for k in s if k != "__key__"})
    data: dict[str, list[Any]] = {"__key__": [s["__key__"].decode() for s in samples]}
    for name in names:
        data[name] = [_decode(name, s[name]) if name in s else None for s in samples]
    return pa.table(data)
