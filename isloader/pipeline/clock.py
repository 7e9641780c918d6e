"""Step clocks: how plans stay no staler than promised, by construction.

A read task that draws a plan window starting at epoch step ``f`` first waits until
the trainer has finished ``f - prefetch`` steps. Every batch of the window is then
used at most ``window + prefetch`` steps after its plan was drawn, however far
ahead the executor would otherwise run (docs/architecture.md, "Staleness").

The trainer side advances the clock (batches handed out, reports sent); read tasks
wait on it. ``RayStepClock`` is a named counter in a small threaded Ray actor that its
loader owns (``ClockActor``: made on first use, killed by ``close``);
``SharedStepClock`` is a shared integer for ``torch.utils.data`` workers on one
machine.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any, Protocol

__all__ = ["StepClock", "RayStepClock", "ClockActor", "SharedStepClock"]


class StepClock(Protocol):
    """How read tasks learn the trainer's progress: ``advance`` from the trainer, ``wait``
    from the read workers, so no plan is drawn more than the staleness bound ahead."""

    def advance(self, steps: int) -> None:
        """The trainer has finished ``steps`` steps of the current epoch."""

    def wait(self, steps: int, timeout: float) -> int:
        """Block until at least ``steps`` steps are finished (or ``timeout`` seconds
        pass); returns the steps finished at wake-up."""


class _Clocks:
    """The actor: named counters, and waiters parked on a condition."""

    def __init__(self) -> None:
        self._steps: dict[str, int] = {}
        self._cond = threading.Condition()

    def advance(self, key: str, steps: int) -> None:
        with self._cond:
            self._steps[key] = max(self._steps.get(key, -1), steps)
            self._cond.notify_all()

    def wait(self, key: str, steps: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._steps.get(key, -1) >= steps, timeout)
            return self._steps.get(key, -1)

    def forget(self, key: str) -> None:
        with self._cond:
            self._steps.pop(key, None)


class ClockActor:
    """The clocks actor one loader owns: made on first use, killed by ``close``."""

    def __init__(self) -> None:
        self._handle: Any = None

    @property
    def handle(self) -> Any:
        """The actor (it takes no CPU slot)."""
        if self._handle is None:
            import ray

            self._handle = ray.remote(num_cpus=0, max_concurrency=256)(_Clocks).remote()
        return self._handle

    def close(self) -> None:
        """Kill the actor (waiting tasks fail fast instead of waiting on a dead clock)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            import ray

            ray.kill(handle)


class RayStepClock:
    """One named counter in a loader's clock actor (a ``ClockActor`` handle); pickles
    into Ray tasks."""

    def __init__(self, key: str, actor: Any) -> None:
        self.key = key
        self._actor = actor

    def __reduce__(self) -> tuple[Any, ...]:
        return RayStepClock, (self.key, self._actor)

    def advance(self, steps: int) -> None:
        """The trainer has finished ``steps`` steps (sent without waiting for the actor)."""
        self._actor.advance.remote(self.key, steps)

    def wait(self, steps: int, timeout: float) -> int:
        """Block in the actor until ``steps`` steps are finished or ``timeout`` passes;
        returns the steps finished then."""
        import ray

        return int(ray.get(self._actor.wait.remote(self.key, steps, timeout)))

    def forget(self) -> None:
        """Drop this clock's counter from the actor (the loader is closed)."""
        self._actor.forget.remote(self.key)


class SharedStepClock:
    """A counter in shared memory, for ``DataLoader`` worker processes on one machine."""

    def __init__(self) -> None:
        self._value = multiprocessing.get_context().Value("q", -1)

    def advance(self, steps: int) -> None:
        """The trainer has finished ``steps`` steps (the counter never goes back)."""
        with self._value.get_lock():
            self._value.value = max(self._value.value, steps)

    def reset(self, steps: int) -> None:
        """Set the counter at an epoch's start (it may go back)."""
        with self._value.get_lock():
            self._value.value = steps

    def wait(self, steps: int, timeout: float) -> int:
        """Poll until ``steps`` steps are finished or ``timeout`` passes; returns the
        steps finished then."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self._value.value < steps and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return int(self._value.value)
