"""``ByteLRU``: a thread-safe LRU bounded by the bytes of what it holds."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["ByteLRU"]


class ByteLRU:
    """A thread-safe segmented LRU bounded by the summed ``nbytes`` of its values.

    New entries go to a probation segment; a second hit promotes an entry to the
    protected segment (``protected_share`` of the budget). Importance sampling hits
    the hot samples again and again while the cold ones come one at a time, so the
    stream of one-off cold reads evicts other cold reads, not the hot set.
    """

    def __init__(self, capacity_bytes: int, protected_share: float = 0.8) -> None:
        self.capacity = capacity_bytes
        self._protected_cap = int(capacity_bytes * protected_share)
        self._probation: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._protected: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._probation_bytes = 0
        self._protected_bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes the held values take."""
        return self._probation_bytes + self._protected_bytes

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key`` (now the most recent), or None."""
        with self._lock:
            item = self._protected.get(key)
            if item is not None:
                self._protected.move_to_end(key)
                return item[0]
            item = self._probation.pop(key, None)
            if item is None:
                return None
            self._probation_bytes -= item[1]
            self._protected[key] = item
            self._protected_bytes += item[1]
            while self._protected_bytes > self._protected_cap:  # demote, not drop
                old_key, old = self._protected.popitem(last=False)
                self._protected_bytes -= old[1]
                self._probation[old_key] = old
                self._probation_bytes += old[1]
            self._evict()
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Hold ``value``, evicting the least recent entries beyond the byte budget."""
        if nbytes > self.capacity:
            return
        with self._lock:
            self._drop(key)
            self._probation[key] = (value, nbytes)
            self._probation_bytes += nbytes
            self._evict()

    def discard(self, key: Hashable) -> None:
        """Drop ``key`` if held."""
        with self._lock:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        old = self._probation.pop(key, None)
        if old is not None:
            self._probation_bytes -= old[1]
        old = self._protected.pop(key, None)
        if old is not None:
            self._protected_bytes -= old[1]

    def _evict(self) -> None:
        while self.nbytes > self.capacity and self._probation:
            _, (_, size) = self._probation.popitem(last=False)
            self._probation_bytes -= size
        while self.nbytes > self.capacity and self._protected:
            _, (_, size) = self._protected.popitem(last=False)
            self._protected_bytes -= size
