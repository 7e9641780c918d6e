"""What a store accepts, in one place: the wire contract's bounds.

Each bound keeps a single request from exhausting a shard or poisoning its state:
a draw count that would allocate gigabytes, an epoch number that overflows the
snapshot's integers, an importance so large that the total mass becomes infinite, a
sequence number that makes every later one look old, an unbounded set of clients.
Requests outside them get INVALID_ARGUMENT or RESOURCE_EXHAUSTED and change nothing.
The checks below are the ones the table, the shard and the client all call, so the
in-process store and the sharded client refuse the same requests with the same errors.
"""

from __future__ import annotations

import math

import numpy as np

from isloader.errors import InvalidArgumentError, MessageTooLargeError

__all__ = [
    "MAX_SAMPLE",
    "MAX_EPOCH",
    "MAX_VALUE",
    "MAX_CLIENT_ID",
    "MAX_SEQ",
    "MAX_EPOCH_JUMP",
    "REQUEST_WINDOW",
    "MAX_CLIENTS",
    "MAX_UNITS",
    "check_values",
    "check_count",
    "check_epoch",
    "check_eps",
    "check_end_epoch",
    "check_epoch_jump",
]

MAX_SAMPLE = 1 << 22  # draws per Sample call: at most 64 MiB of indices and q in reply
MAX_EPOCH = 1 << 40  # epoch numbers
MAX_VALUE = 1e30  # q, eps: a billion samples at this value still sum to a finite float64
MAX_CLIENT_ID = 128  # bytes of a client id
MAX_SEQ = (1 << 63) - 1  # sequence numbers
MAX_EPOCH_JUMP = 1 << 10  # an epoch-end this far beyond the shard's epoch is refused
REQUEST_WINDOW = 1 << 16  # seqs a shard remembers per client (8 KiB of bitmap each)
MAX_CLIENTS = 4096  # clients remembered (least recent forgotten): 32 MiB of bitmaps at most
MAX_UNITS = 1 << 28  # units in one layout


def check_values(name: str, values: np.ndarray) -> None:
    """Raise ``InvalidArgumentError`` unless every value is finite, >= 0 and <= ``MAX_VALUE``."""
    if values.size and not np.isfinite(values).all():
        raise InvalidArgumentError(f"{name} contains NaN or infinity")
    if values.size and (values < 0).any():
        raise InvalidArgumentError(f"{name} contains negative values (min {values.min()})")
    if values.size and values.max() > MAX_VALUE:
        raise InvalidArgumentError(f"{name} exceeds {MAX_VALUE:g} (max {values.max():g})")


def check_count(name: str, value: object, limit: int) -> int:
    """An integer in ``[0, limit]``; more than ``limit`` is too large a request
    (``MessageTooLargeError``), anything else ``InvalidArgumentError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, got {value}")
    if value > limit:
        raise MessageTooLargeError(f"{name} {value} exceeds the limit of {limit}")
    return int(value)


def check_epoch(epoch: object) -> int:
    """An epoch number as an int in ``[0, MAX_EPOCH)``, else ``InvalidArgumentError``."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise InvalidArgumentError(f"epoch must be an integer, got {epoch!r}")
    if not 0 <= epoch < MAX_EPOCH:
        raise InvalidArgumentError(f"epoch must be in [0, {MAX_EPOCH}), got {epoch}")
    return int(epoch)


def check_eps(name: str, value: float) -> None:
    """Raise ``InvalidArgumentError`` unless ``value`` is finite, >= 0 and <= ``MAX_VALUE``."""
    if not (math.isfinite(value) and 0 <= value <= MAX_VALUE):
        raise InvalidArgumentError(f"{name} must be finite, >= 0 and <= {MAX_VALUE:g}, got {value}")


def check_end_epoch(epoch: object, eps: float, largest_q: float, current_epoch: int) -> int:
    """An epoch end a store can take: ``eps`` within bounds and not pushing the largest
    active q past ``MAX_VALUE`` (the snapshot could no longer be loaded), the epoch not
    more than ``MAX_EPOCH_JUMP`` beyond the store's (every later epoch end would be
    ignored as done). Returns the epoch as an int; raises ``InvalidArgumentError``."""
    check_eps("eps", eps)
    epoch = check_epoch_jump(epoch, current_epoch)
    if eps and largest_q + eps > MAX_VALUE:
        raise InvalidArgumentError(
            f"eps {eps:g} would push q past {MAX_VALUE:g} (largest q {largest_q:g})"
        )
    return epoch


def check_epoch_jump(epoch: object, current_epoch: int) -> int:
    """An epoch number (``check_epoch``) at most ``MAX_EPOCH_JUMP`` beyond the store's."""
    epoch = check_epoch(epoch)
    if epoch > current_epoch + MAX_EPOCH_JUMP:
        raise InvalidArgumentError(
            f"epoch {epoch} is more than {MAX_EPOCH_JUMP} beyond the store's ({current_epoch})"
        )
    return epoch
