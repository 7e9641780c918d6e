"""What a shard writes in its write-ahead log: the record kinds and the update
payload's codec (``wal.py`` frames, checksums and syncs records; this says what is in
them). Epoch-level changes are logged as JSON of their arguments."""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["UPDATE", "END_EPOCH", "PRUNE", "READMIT", "RESET", "encode_update", "decode_update"]

UPDATE, END_EPOCH, PRUNE, READMIT, RESET = 1, 2, 3, 4, 5
_REQUEST = struct.Struct("<QH")  # seq, len(client_id)


def encode_update(indices: np.ndarray, values: np.ndarray, client_id: str, seq: int) -> bytes:
    """An update as a log record's payload: seq, client id, then the raw arrays."""
    cid = client_id.encode()
    idx = np.asarray(indices, dtype="<i8").tobytes()
    return (
        _REQUEST.pack(seq, len(cid))
        + cid
        + struct.pack("<Q", len(idx))
        + idx
        + np.asarray(values, dtype="<f8").tobytes()
    )


def decode_update(payload: bytes) -> tuple[np.ndarray, np.ndarray, str, int]:
    """``(indices, values, client_id, seq)`` of an update record's payload."""
    seq, cid_len = _REQUEST.unpack_from(payload)
    pos = _REQUEST.size
    client_id = payload[pos : pos + cid_len].decode()
    pos += cid_len
    (idx_len,) = struct.unpack_from("<Q", payload, pos)
    pos += 8
    indices = np.frombuffer(payload, dtype="<i8", count=idx_len // 8, offset=pos)
    values = np.frombuffer(payload, dtype="<f8", offset=pos + idx_len)
    return indices, values, client_id, seq
