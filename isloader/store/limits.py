"""What a store accepts, in one place: the wire contract's bounds.

Each bound keeps a single request from exhausting a shard or poisoning its state:
a draw count that would allocate gigabytes, an epoch number that overflows the
snapshot's integers, an importance so large that the total mass becomes infinite, a
sequence number that makes every later one look old, an unbounded set of clients.
Requests outside them get INVALID_ARGUMENT or RESOURCE_EXHAUSTED and change nothing.
"""

from __future__ import annotations

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
