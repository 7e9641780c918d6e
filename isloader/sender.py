"""``BackgroundSender``: queue items, send them in order on one owned thread, surface
the first failure; used by the store client's asynchronous updates and the reporter.

The thread sends up to ``max_batch`` queued items per call, so a sender that fell
behind catches up with fewer, larger calls; with ``linger`` it waits that long for a
batch to fill, trading a little delay for fewer calls.

Nothing queued is dropped. A failed item stays at the head of the queue and sending
pauses: the failure is raised by the next ``submit`` or ``flush``, and ``flush``
resumes sending (the send function is idempotent, so retrying an item that may have
been applied is safe). ``submit`` waits at most ``put_timeout`` seconds for room,
so a hung peer surfaces as an error instead of a stalled training step. ``close``
flushes, stops the thread and joins it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from isloader.errors import StoreUnavailableError

__all__ = ["BackgroundSender"]

T = TypeVar("T")


class BackgroundSender(Generic[T]):
    """Sends ``send(item)`` for each submitted item, in order, on its own thread.

    Args:
        send: the call that delivers a list of items (in order); raises on failure.
        max_batch: most items per ``send`` call (default 1).
        linger: seconds the thread waits for ``max_batch`` items before sending fewer
            (default 0; ``flush`` sends at once).
        max_pending: queue bound; ``submit`` waits for room (back-pressure).
        put_timeout: longest ``submit`` waits for room before raising.
        name: the thread's name.
    """

    def __init__(
        self,
        send: Callable[[list[T]], None],
        *,
        max_batch: int = 1,
        linger: float = 0.0,
        max_pending: int = 64,
        put_timeout: float = 30.0,
        name: str = "isloader-send",
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._linger = linger
        self._flushing = 0
        self._max = max_pending
        self._put_timeout = put_timeout
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        self._busy = False
        self._closed = False
        self.max_depth = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Items queued and not yet sent."""
        with self._cond:
            return len(self._items)

    def submit(self, item: T) -> None:
        """Queue ``item``.

        Raises:
            The failure of an earlier item (it stays queued; ``flush`` retries it).
            StoreUnavailableError: no room within ``put_timeout`` (the peer hangs).
            RuntimeError: the sender is closed.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("the sender is closed")
            if self._failure is not None:
                raise self._failure
            if not self._cond.wait_for(
                lambda: len(self._items) < self._max or self._failure is not None,
                self._put_timeout,
            ):
                raise StoreUnavailableError(
                    f"{len(self._items)} items still unsent after {self._put_timeout:.0f} s "
                    "(is the store reachable?)"
                )
            if self._failure is not None:
                raise self._failure
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Return once every queued item is sent; retries a failed one first.

        Raises:
            The failure of an item (it stays queued).
            StoreUnavailableError: items still unsent after ``timeout`` seconds.
        """
        with self._cond:
            self._failure = None  # resume: the head item is tried again
            self._flushing += 1
            self._cond.notify_all()
            try:
                done = self._cond.wait_for(
                    lambda: (not self._items and not self._busy) or self._failure is not None,
                    timeout,
                )
            finally:
                self._flushing -= 1
            if self._failure is not None:
                raise self._failure
            if not done:
                raise StoreUnavailableError(f"{len(self._items)} items unsent after {timeout} s")

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop and join the thread (also when the flush fails).

        Raises:
            What ``flush`` raises; the unsent items are then lost with the sender.
        """
        try:
            if not self._closed:
                self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (self._items and self._failure is None))
                if self._closed:
                    return
                if self._linger and len(self._items) < self._max_batch:
                    self._cond.wait_for(
                        lambda: (
                            len(self._items) >= self._max_batch or self._flushing or self._closed
                        ),
                        self._linger,
                    )
                batch = list(itertools.islice(self._items, self._max_batch))
                self._busy = True
            try:
                self._send(batch)
            except BaseException as exc:  # surfaced by submit() / flush()
                with self._cond:
                    self._failure = exc
                    self._busy = False
                    self._cond.notify_all()
                continue
            with self._cond:
                for _ in batch:
                    self._items.popleft()
                self._busy = False
                self._cond.notify_all()
