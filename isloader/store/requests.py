"""Which ``(client_id, seq)`` requests a table has applied, so a retry is applied once.

Sequence numbers from one client are mostly increasing but may arrive out of order
(concurrent senders, retries), so an exact set is kept for the most recent
``window`` numbers per client and anything older counts as already applied.
"""

from __future__ import annotations

__all__ = ["RequestLog"]


class RequestLog:
    """Per-client record of applied sequence numbers, bounded to ``window`` each."""

    def __init__(self, window: int = 65536) -> None:
        self._window = window
        self._clients: dict[str, tuple[int, set[int]]] = {}

    @property
    def window(self) -> int:
        return self._window

    def applied(self, client_id: str, seq: int) -> bool:
        high, recent = self._clients.get(client_id, (-1, set()))
        return seq <= high - self._window or seq in recent

    def record(self, client_id: str, seq: int) -> None:
        high, recent = self._clients.get(client_id, (-1, set()))
        recent.add(seq)
        high = max(high, seq)
        if len(recent) > 2 * self._window:
            recent = {s for s in recent if s > high - self._window}
        self._clients[client_id] = (high, recent)

    def to_dict(self) -> dict[str, list[int]]:
        return {c: [*sorted(recent), high] for c, (high, recent) in self._clients.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[int]], window: int = 65536) -> RequestLog:
        log = cls(window)
        for client, values in data.items():
            log._clients[client] = (values[-1], set(values[:-1]))
        return log
