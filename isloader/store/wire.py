"""The wire's array codec, shared by the client and the servicer: arrays travel as raw
little-endian bytes (packed, no per-element framing)."""

from __future__ import annotations

import numpy as np

from isloader.errors import InvalidArgumentError

__all__ = ["decode_array", "encode_array", "SAMPLE_REPLY_BYTES"]

SAMPLE_REPLY_BYTES = 16  # a draw in a Sample reply: its index and its q


def decode_array(data: bytes, dtype: str, name: str) -> np.ndarray:
    """Raw little-endian bytes to a numpy array.

    Raises:
        InvalidArgumentError: a byte count that is not a whole number of elements.
    """
    width = np.dtype(dtype).itemsize
    if len(data) % width:
        raise InvalidArgumentError(f"{name}: {len(data)} bytes is not a multiple of {width}")
    return np.frombuffer(data, dtype=dtype)


def encode_array(values: np.ndarray, dtype: str) -> bytes:
    """A numpy array as raw little-endian bytes."""
    return np.asarray(values, dtype=dtype).tobytes()
