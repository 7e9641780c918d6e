"""Thrift's compact protocol, generically: what a Parquet footer, an offset index and a
page header are made of.

pyarrow decodes Parquet but does not expose the page index or let a footer be edited;
reading only the pages that hold sampled rows needs both (docs/architecture.md, "Reading
at streaming speed"). A struct decodes to ``{field_id: (type, value)}`` and encodes back
byte for byte, unknown fields included, so a footer can be pruned and re-written without
a schema of every Parquet version. Lists and sets decode to ``(element_type, [values])``,
maps to ``(key_type, value_type, [(key, value)])``.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["Struct", "STRUCT", "LIST", "I32", "I64", "BINARY", "read_struct", "write_struct"]

Struct = dict[int, tuple[int, Any]]

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_DOUBLE = struct.Struct("<d")


class _Reader:
    def __init__(self, data: bytes | memoryview, pos: int) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):  # inside a container: one byte, 1 is true
            return self.byte() == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            (value,) = _DOUBLE.unpack_from(self.data, self.pos)
            self.pos += 8
            return value
        if kind == BINARY:
            size = self.varint()
            value = bytes(self.data[self.pos : self.pos + size])
            self.pos += size
            return value
        if kind in (LIST, SET):
            head = self.byte()
            size, element = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return (element, [self.value(element) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            types = self.byte()
            k, v = types >> 4, types & 0x0F
            return (k, v, [(self.value(k), self.value(v)) for _ in range(size)])
        if kind == STRUCT:
            return self.struct()
        raise ValueError(f"unknown thrift compact type {kind}")

    def struct(self) -> Struct:
        fields: Struct = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == STOP:
                return fields
            delta = head >> 4
            field = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields[field] = (TRUE, kind == TRUE)  # booleans carry their value in the type
            else:
                fields[field] = (kind, self.value(kind))
            last = field


def read_struct(data: bytes | memoryview, pos: int = 0) -> tuple[Struct, int]:
    """The struct encoded at ``data[pos:]`` and the position after it.

    Raises:
        ValueError, IndexError: the bytes are not a compact-protocol struct.
    """
    reader = _Reader(data, pos)
    return reader.struct(), reader.pos


def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _write_value(kind: int, value: Any, out: bytearray) -> None:
    if kind in (TRUE, FALSE):
        out.append(TRUE if value else FALSE)
    elif kind == BYTE:
        out.append(value & 0xFF)
    elif kind in (I16, I32, I64):
        _zigzag(value, out)
    elif kind == DOUBLE:
        out += _DOUBLE.pack(value)
    elif kind == BINARY:
        _varint(len(value), out)
        out += value
    elif kind in (LIST, SET):
        element, items = value
        if len(items) < 15:
            out.append((len(items) << 4) | element)
        else:
            out.append(0xF0 | element)
            _varint(len(items), out)
        for item in items:
            _write_value(element, item, out)
    elif kind == MAP:
        k, v, items = value
        _varint(len(items), out)
        if items:
            out.append((k << 4) | v)
            for key, item in items:
                _write_value(k, key, out)
                _write_value(v, item, out)
    elif kind == STRUCT:
        _write_struct(value, out)
    else:
        raise ValueError(f"unknown thrift compact type {kind}")


def _write_struct(fields: Struct, out: bytearray) -> None:
    last = 0
    for field in sorted(fields):
        kind, value = fields[field]
        wire = (TRUE if value else FALSE) if kind in (TRUE, FALSE) else kind
        if 0 < field - last <= 15:
            out.append(((field - last) << 4) | wire)
        else:
            out.append(wire)
            _zigzag(field, out)
        if kind not in (TRUE, FALSE):
            _write_value(kind, value, out)
        last = field
    out.append(STOP)


def write_struct(fields: Struct) -> bytes:
    """``fields`` in the compact protocol (fields in id order, as writers emit them)."""
    out = bytearray()
    _write_struct(fields, out)
    return bytes(out)
