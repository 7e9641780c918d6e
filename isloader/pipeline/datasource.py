"""``ImportanceDatasource``: one epoch of a loader as a Ray Data ``Datasource``.

Each Ray ``ReadTask`` is one plan window (or one chunk of a streaming pass). Its
``read_fn`` runs ``run_read_task`` when Ray executes it, so the plan is drawn then,
after the step clock lets it (see ``clock``). The result is an ordinary
``ray.data.Dataset``: ``iter_torch_batches``, ``map_batches`` and Ray Train take it
as they take any other.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data import Datasource, ReadTask
from ray.data.block import BlockAccessor, BlockMetadata

from isloader.pipeline.plan import ReadTask as PlanTask
from isloader.pipeline.tasks import TaskContext, run_read_task

if TYPE_CHECKING:
    import ray.data

    from isloader.pipeline.loader import ImportanceLoader

__all__ = ["ImportanceDatasource", "read_importance"]


def _read(task: PlanTask, context: TaskContext) -> list[Any]:
    return [BlockAccessor.batch_to_block(run_read_task(task, context)[0])]


class ImportanceDatasource(Datasource):
    """The read tasks of one epoch of one rank; see the module docstring.

    Args:
        tasks: the epoch's plan windows or streaming chunks, in order.
        context: what every task needs (reader settings, store, clock).
        row_bytes: estimated in-memory bytes per row (for Ray's memory planning).
    """

    def __init__(self, tasks: list[PlanTask], context: TaskContext, row_bytes: int) -> None:
        super().__init__()
        self.tasks = tasks
        self.context = context
        self.row_bytes = row_bytes

    def get_name(self) -> str:
        """The name Ray Data shows for this read."""
        return "Importance"

    def estimate_inmemory_data_size(self) -> int:
        """Rows times the estimated bytes per row (for Ray's memory planning)."""
        return sum(t.kept for t in self.tasks) * self.row_bytes

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        """One Ray read task per window, whatever ``parallelism`` asks: a window is the
        unit of plan staleness and of locality, so it is never split or merged."""
        return [
            ReadTask(
                functools.partial(_read, task, self.context),
                BlockMetadata(
                    num_rows=task.kept,
                    size_bytes=task.kept * self.row_bytes,
                    input_files=None,
                    exec_stats=None,
                ),
                per_task_row_limit=per_task_row_limit,
            )
            for task in self.tasks
        ]


def read_importance(loader: ImportanceLoader, epoch: int) -> ray.data.Dataset:
    """Epoch ``epoch`` of ``loader`` as a ``ray.data.Dataset`` (this rank's share).

    Iterate it as any dataset (``iter_torch_batches``, ``map_batches``, a Ray Train
    worker), call ``loader.report`` for each batch and ``loader.end_epoch(epoch)``
    after the last (``loader.epoch(epoch)`` runs the same read tasks on its own,
    lower-latency scheduler: see ``executor``).
    """
    import ray

    tasks = loader.tasks(epoch)
    context = loader.ray_task_context(epoch)
    source = ImportanceDatasource(tasks, context, loader.row_bytes)
    # Sampling windows wait on the step clock: run no more of them than can be due.
    due = int(np.ceil(loader.prefetch / loader.window)) + 1 if context.clock else None
    ds = ray.data.read_datasource(source, concurrency=due)
    ds.context.execution_options.preserve_order = True  # resumable, reproducible order
    return ds
