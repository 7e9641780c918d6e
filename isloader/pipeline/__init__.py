"""The Ray Data pipeline and trainer integration (torch + ray)."""

from isloader.pipeline.loader import EpochCounters, ImportanceLoader
from isloader.pipeline.plan import ReadTask, sampling_tasks, skip_rows, streaming_tasks
from isloader.pipeline.reporter import Reporter

__all__ = [
    "EpochCounters",
    "ImportanceLoader",
    "ReadTask",
    "Reporter",
    "sampling_tasks",
    "skip_rows",
    "streaming_tasks",
]
