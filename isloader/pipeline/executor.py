"""``WindowExecutor``: runs an epoch's read tasks just in time on a pool of Ray actors.

``ImportanceLoader.epoch`` runs the same read tasks as its ``ImportanceDatasource``
(one ``run_read_task`` per window), but schedules them itself: the task of a window
that starts at epoch step ``f`` is submitted once the trainer has finished
``f - prefetch`` steps, and the actor draws the plan when it runs it, so no plan is
older than ``window + prefetch`` steps when used, by construction. Measured on 2
cores, Ray Data's executor takes 100-200 ms from a finished read task to the
driver; an actor call takes a few milliseconds, which is what lets a small
staleness bound and streaming throughput hold together (docs/architecture.md,
"Staleness").

A ``ReadWorkerPool`` holds the actors, each running up to two tasks at once so that
one task's fetches overlap another's decoding (a sampled window mostly waits on the
endpoint's latency). The loader that owns the pool makes it on first use and ``close``
kills its actors, so a loader's readers (memory tiers, open files, store
clients) leave with it. Within a loader they live across epochs.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from isloader.pipeline.plan import ReadTask
from isloader.pipeline.tasks import ReadStats, TaskContext, WorkerState, run_read_task
from isloader.store.records import Plan

__all__ = ["WindowExecutor", "Block", "ReadWorkerPool"]

# tasks one actor runs at once: one's fetches wait on the endpoint while another decodes
# (the tasks share the process's reader, caches and store client; each counts its own
# costs through ``ReaderCounters.tally``)
_TASKS_PER_ACTOR = 2


class _ReadWorker:
    """A Ray actor that runs read tasks; its ``WorkerState`` keeps readers and store
    clients across them."""

    def __init__(self) -> None:
        self._contexts: dict[str, TaskContext] = {}
        self._state = WorkerState()

    def bind(self, loader_id: str, context: TaskContext) -> None:
        """Keep the context of a loader's current epoch, so each call ships only its task."""
        self._contexts[loader_id] = context

    def run(
        self, loader_id: str, task: ReadTask, plan: Plan | None
    ) -> tuple[dict[str, np.ndarray], ReadStats]:
        """Run one task of the bound loader (its plan drawn here unless given)."""
        return run_read_task(task, self._contexts[loader_id], plan, self._state)

    def close(self) -> None:
        """Close the readers and store clients (their files, threads and channels)."""
        self._contexts.clear()
        self._state.close()


class ReadWorkerPool:
    """The read actors one loader owns: made on first use, killed by ``close``.

    By default two per two CPUs of this node (2-8 in all), next to the trainer; with
    ``spread`` two on every alive node, so each node's disk cache serves the reads
    placed there.
    """

    def __init__(self, *, spread: bool = False) -> None:
        self.spread = spread
        self._actors: list[Any] | None = None

    @property
    def actors(self) -> list[Any]:
        """The actors (created on first use)."""
        if self._actors is None:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            if self.spread:
                nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
            else:
                here = ray.get_runtime_context().get_node_id()
                cpus = int(ray.available_resources().get("CPU", 2) or 2)
                nodes = [here] * (min(max(cpus, 2), 8) // 2)
            actors = []
            for node in nodes:
                place = NodeAffinitySchedulingStrategy(node, soft=not self.spread)
                actor = ray.remote(
                    num_cpus=0, max_concurrency=_TASKS_PER_ACTOR, scheduling_strategy=place
                )(_ReadWorker)
                actors += [actor.remote(), actor.remote()]
            self._actors = actors
        return self._actors

    def close(self) -> None:
        """Let each actor close its readers (10 s at most), then kill it."""
        actors, self._actors = self._actors, None
        if not actors:
            return
        import ray

        with contextlib.suppress(Exception):  # one gone or stuck is killed all the same
            ray.get([a.close.remote() for a in actors], timeout=10)
        for actor in actors:
            ray.kill(actor)


class Block(NamedTuple):
    """One task's rows, its costs, and (sampling) the trainer's finished steps when its
    plan was drawn (-1 for streaming tasks)."""

    columns: dict[str, np.ndarray]
    stats: ReadStats
    drawn_at: int


class WindowExecutor:
    """Yields each read task's ``Block``, in order, submitting each task when the
    trainer is within ``prefetch`` steps of it.

    Args:
        tasks: the epoch's tasks (sampling windows carry ``count`` and ``first_step``).
        context: what the tasks need; bound to every actor once per epoch.
        pool: the read actors to run the tasks on (the loader's).
        prefetch: steps a window may be submitted ahead of its first step.
        draw: draws a sampling task's plan at submission, in this process (an
            in-process store: no round trip back into the trainer); None: the actor
            draws it when it runs the task.
        ahead: most tasks in flight for streaming epochs (no staleness there).
    """

    def __init__(
        self,
        tasks: list[ReadTask],
        context: TaskContext,
        *,
        pool: ReadWorkerPool,
        prefetch: int,
        draw: Callable[[ReadTask], Plan] | None = None,
        ahead: int = 4,
    ) -> None:
        import ray

        self._tasks = deque(tasks)
        self._loader = context.loader_id
        self._prefetch = prefetch
        self._draw = draw
        self._ahead = ahead
        self._actors = pool.actors
        try:  # an actor that never answers (its process lost) must not hang the trainer
            ray.get([a.bind.remote(self._loader, context) for a in self._actors], timeout=300)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                "the loader's read actors did not answer within 300 s; is the Ray node "
                "out of processes or memory? (`ray status`)"
            ) from None
        self._turn = 0
        self._in_flight: deque[tuple[Any, int]] = deque()

    def run(self, finished: Callable[[], int]) -> Iterator[Block]:
        """The tasks' blocks in order; ``finished()`` gives the steps the trainer has
        finished (read before each round of submissions)."""
        import ray

        while self._tasks or self._in_flight:
            self._submit(finished())
            ref, submitted = self._in_flight.popleft()
            columns, stats = ray.get(ref)
            yield Block(columns, stats, submitted)  # drawn at or after submission

    def _submit(self, finished: int) -> None:
        """Submit what is due (at least one task when none is in flight)."""
        while self._tasks:
            task = self._tasks[0]
            due = (
                task.first_step - self._prefetch <= finished
                if task.count
                else (len(self._in_flight) < self._ahead)
            )
            if not due and self._in_flight:
                return
            self._tasks.popleft()
            actor = self._actors[self._turn % len(self._actors)]
            self._turn += 1
            plan = self._draw(task) if task.count and self._draw is not None else None
            ref = actor.run.remote(self._loader, task, plan)
            self._in_flight.append((ref, finished if task.count else -1))
