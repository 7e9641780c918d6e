"""Which ``(client_id, seq)`` requests a table has applied, so a retry is applied once.

Sequence numbers from one client mostly rise but may arrive out of order (concurrent
senders, retries), so each client keeps its highest seq and a bitmap of the ``window``
seqs at and below it (a bit a request: 8 KiB a client at the default 65,536). Bounds
make the memory and the answers exact:

- a seq more than ``window`` beyond the client's highest is refused: accepting it would
  push every seq the client has in flight out of the window;
- a seq at or below ``highest - window`` cannot be told apart from an applied one any
  more: it is refused with ``RequestTooOldError``, never silently treated as applied;
- at most ``max_clients`` clients are remembered (least recently active forgotten), so
  the whole log takes at most ``max_clients * window / 8`` bytes (32 MiB by default).
"""

from __future__ import annotations

import base64
from collections import OrderedDict

from isloader.errors import InvalidArgumentError, RequestTooOldError
from isloader.store.limits import MAX_CLIENT_ID, MAX_CLIENTS, MAX_SEQ

__all__ = ["RequestLog"]


class _Client:
    """One client's highest seq and the bitmap of the window below it (ring-indexed)."""

    __slots__ = ("bits", "high")

    def __init__(self, window: int) -> None:
        self.high = -1
        self.bits = bytearray(window // 8)

    def has(self, seq: int, window: int) -> bool:
        bit = seq % window
        return bool(self.bits[bit >> 3] & (1 << (bit & 7)))

    def set(self, seq: int, window: int) -> None:
        if seq > self.high:
            self._clear(self.high + 1, seq, window)
            self.high = seq
        bit = seq % window
        self.bits[bit >> 3] |= 1 << (bit & 7)

    def _clear(self, first: int, last: int, window: int) -> None:
        """Forget seqs ``first..last`` (their slots are reused by the new ones)."""
        if last - first + 1 >= window:
            self.bits[:] = bytes(len(self.bits))
            return
        for seq in range(first, last + 1):
            bit = seq % window
            self.bits[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF


class RequestLog:
    """Per-client record of applied sequence numbers; see the module docstring.

    Args:
        window: seqs remembered per client (a multiple of 8).
        max_clients: clients remembered.
    """

    def __init__(self, window: int = 65536, max_clients: int = MAX_CLIENTS) -> None:
        if window < 8 or window % 8:
            raise InvalidArgumentError(f"request window must be a multiple of 8, got {window}")
        self._window = window
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    @property
    def window(self) -> int:
        """How many seqs below a client's highest the log can still answer for."""
        return self._window

    @property
    def nbytes(self) -> int:
        """Memory the bitmaps take (at most ``max_clients * window / 8``)."""
        return len(self._clients) * self._window // 8

    def __len__(self) -> int:
        return len(self._clients)

    def check(self, client_id: str, seq: int) -> None:
        """Raise unless ``(client_id, seq)`` is a request id this log can answer for.

        Raises:
            InvalidArgumentError: an id over ``MAX_CLIENT_ID`` bytes, a seq out of range
                or more than ``window`` beyond the client's highest.
            RequestTooOldError: a seq too far below the client's highest to tell
                whether it was applied.
        """
        if len(client_id.encode()) > MAX_CLIENT_ID:
            raise InvalidArgumentError(f"client_id longer than {MAX_CLIENT_ID} bytes")
        if not 0 <= seq <= MAX_SEQ:
            raise InvalidArgumentError(f"seq must be in [0, 2**63), got {seq}")
        client = self._clients.get(client_id)
        high = client.high if client is not None else 0
        if seq > high + self._window:
            raise InvalidArgumentError(
                f"seq {seq} is more than {self._window} beyond this client's highest ({high})"
            )
        if client is not None and seq <= high - self._window:
            raise RequestTooOldError(
                f"seq {seq} of {client_id!r} is older than the last {self._window} requests "
                f"(highest {high}): whether it was applied can no longer be told"
            )

    def applied(self, client_id: str, seq: int) -> bool:
        """Whether ``(client_id, seq)`` was applied (``check`` it first)."""
        client = self._clients.get(client_id)
        return client is not None and seq <= client.high and client.has(seq, self._window)

    def record(self, client_id: str, seq: int) -> None:
        """Mark ``(client_id, seq)`` applied (``check`` it first); beyond the bound on
        clients, the least recently active one is forgotten."""
        client = self._clients.pop(client_id, None) or _Client(self._window)
        client.set(seq, self._window)
        self._clients[client_id] = client  # most recently active last
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    def to_dict(self) -> dict[str, list]:
        """``{client: [highest, base64 bitmap]}`` (JSON, for snapshots)."""
        return {
            c: [entry.high, base64.b64encode(bytes(entry.bits)).decode()]
            for c, entry in self._clients.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, list], window: int = 65536) -> RequestLog:
        """The log ``to_dict`` wrote; also the older form ``[*seqs, highest]``."""
        log = cls(window)
        for client, values in data.items():
            entry = _Client(window)
            if len(values) == 2 and isinstance(values[1], str):
                entry.high = int(values[0])
                bits = base64.b64decode(values[1])
                if len(bits) == len(entry.bits):
                    entry.bits[:] = bits
            else:
                for seq in values[:-1]:
                    if int(seq) > int(values[-1]) - window:
                        entry.set(int(seq), window)
                entry.high = int(values[-1])
            log._clients[client] = entry
        return log
