"""The importance store: numpy, grpcio and fsspec only (no torch, no Ray)."""

from isloader.store.records import Plan, ShardView, TableState, TableStats
from isloader.store.sumtree import SumTree
from isloader.store.table import ImportanceTable, TableConfig, prune_threshold

__all__ = [
    "ImportanceTable",
    "Plan",
    "ShardView",
    "SumTree",
    "TableConfig",
    "TableState",
    "TableStats",
    "prune_threshold",
]
