"""Which ``(client_id, seq)`` requests a table has applied, so a retry is applied once.

Sequence numbers from one client are mostly increasing but may arrive out of order
(concurrent senders, retries), so an exact set is kept for the most recent
``window`` numbers per client and anything older counts as already applied. A seq
far beyond the client's highest is refused (it would make every later one look
old), and only the ``MAX_CLIENTS`` most recently active clients are remembered.
"""

from __future__ import annotations

from collections import OrderedDict

from isloader.errors import InvalidArgumentError
from isloader.store.limits import MAX_CLIENT_ID, MAX_CLIENTS, MAX_SEQ, MAX_SEQ_AHEAD

__all__ = ["RequestLog"]


class RequestLog:
    """Per-client record of applied sequence numbers, bounded to ``window`` each."""

    def __init__(self, window: int = 65536, max_clients: int = MAX_CLIENTS) -> None:
        self._window = window
        self._max_clients = max_clients
        self._clients: OrderedDict[str, tuple[int, set[int]]] = OrderedDict()

    @property
    def window(self) -> int:
        return self._window

    def __len__(self) -> int:
        return len(self._clients)

    def check(self, client_id: str, seq: int) -> None:
        """Raise unless ``(client_id, seq)`` is a well-formed request id.

        Raises:
            InvalidArgumentError: an id over ``MAX_CLIENT_ID`` bytes, a seq out of range
                or too far ahead of the client's highest.
        """
        if len(client_id.encode()) > MAX_CLIENT_ID:
            raise InvalidArgumentError(f"client_id longer than {MAX_CLIENT_ID} bytes")
        if not 0 <= seq <= MAX_SEQ:
            raise InvalidArgumentError(f"seq must be in [0, 2**63), got {seq}")
        high = self._clients.get(client_id, (0, set()))[0]
        if seq > max(high, 0) + MAX_SEQ_AHEAD:
            raise InvalidArgumentError(
                f"seq {seq} is more than {MAX_SEQ_AHEAD} beyond this client's highest ({high})"
            )

    def applied(self, client_id: str, seq: int) -> bool:
        high, recent = self._clients.get(client_id, (-1, set()))
        return seq <= high - self._window or seq in recent

    def record(self, client_id: str, seq: int) -> None:
        high, recent = self._clients.pop(client_id, (-1, set()))
        recent.add(seq)
        high = max(high, seq)
        if len(recent) > 2 * self._window:
            recent = {s for s in recent if s > high - self._window}
        self._clients[client_id] = (high, recent)  # most recently active last
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    def to_dict(self) -> dict[str, list[int]]:
        return {c: [*sorted(recent), high] for c, (high, recent) in self._clients.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[int]], window: int = 65536) -> RequestLog:
        log = cls(window)
        for client, values in data.items():
            log._clients[client] = (values[-1], set(values[:-1]))
        return log
