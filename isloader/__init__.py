"""isloader: online importance sampling and pruning for PyTorch data loading.

The public API. Names resolve lazily, so ``import isloader`` loads neither torch
nor Ray (the store image has neither): each comes in with the first name that
needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the importance store (numpy + grpc)
    "ImportanceTable": "isloader.store.table",
    "TableConfig": "isloader.store.table",
    "prune_threshold": "isloader.store.table",
    "Plan": "isloader.store.records",
    "TableStats": "isloader.store.records",
    "ImportanceStore": "isloader.store.api",
    "LocalStore": "isloader.store.local",
    "StoreClient": "isloader.store.client",
    "StoreConnection": "isloader.store.client",
    "TlsConfig": "isloader.store.client",
    "StoreServer": "isloader.store.server",
    "StoreSettings": "isloader.config",
    # the data plane (pyarrow + fsspec)
    "ShardCatalog": "isloader.data.catalog",
    "ShardReader": "isloader.data.reader",
    "convert_parquet": "isloader.data.convert",
    # the trainer side (torch + ray)
    "ImportanceLoader": "isloader.pipeline.loader",
    "ImportanceDataset": "isloader.pipeline.torch_dataset",
    "read_importance": "isloader.pipeline.datasource",
    "ImportanceDatasource": "isloader.pipeline.datasource",
    "EpochCounters": "isloader.pipeline.loader",
    "LoaderCore": "isloader.pipeline.core",
    "importance_metric": "isloader.importance",
    # what pruning decided, as a product (store + data plane)
    "export_kept": "isloader.export",
    "verify_export": "isloader.export",
    "ExportManifest": "isloader.export",
    "inspect_pruning": "isloader.pruning_report",
    "PruningReport": "isloader.pruning_report",
}

__all__ = [*sorted(_EXPORTS), "errors"]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("isloader.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'isloader' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        extra = (
            "train" if module.startswith(("isloader.pipeline", "isloader.importance")) else "data"
        )
        raise ImportError(f"{name} needs `pip install isloader[{extra}]` ({exc})") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from isloader.config import (
        StoreSettings as StoreSettings,
    )
    from isloader.data.catalog import (
        ShardCatalog as ShardCatalog,
    )
    from isloader.data.convert import (
        convert_parquet as convert_parquet,
    )
    from isloader.data.reader import (
        ShardReader as ShardReader,
    )
    from isloader.export import (
        ExportManifest as ExportManifest,
    )
    from isloader.export import (
        export_kept as export_kept,
    )
    from isloader.export import (
        verify_export as verify_export,
    )
    from isloader.importance import (
        importance_metric as importance_metric,
    )
    from isloader.pipeline.core import (
        LoaderCore as LoaderCore,
    )
    from isloader.pipeline.datasource import (
        ImportanceDatasource as ImportanceDatasource,
    )
    from isloader.pipeline.datasource import (
        read_importance as read_importance,
    )
    from isloader.pipeline.loader import (
        EpochCounters as EpochCounters,
    )
    from isloader.pipeline.loader import (
        ImportanceLoader as ImportanceLoader,
    )
    from isloader.pipeline.torch_dataset import (
        ImportanceDataset as ImportanceDataset,
    )
    from isloader.pruning_report import (
        PruningReport as PruningReport,
    )
    from isloader.pruning_report import (
        inspect_pruning as inspect_pruning,
    )
    from isloader.store.api import (
        ImportanceStore as ImportanceStore,
    )
    from isloader.store.client import (
        StoreClient as StoreClient,
    )
    from isloader.store.client import (
        StoreConnection as StoreConnection,
    )
    from isloader.store.client import (
        TlsConfig as TlsConfig,
    )
    from isloader.store.local import (
        LocalStore as LocalStore,
    )
    from isloader.store.records import (
        Plan as Plan,
    )
    from isloader.store.records import (
        TableStats as TableStats,
    )
    from isloader.store.server import (
        StoreServer as StoreServer,
    )
    from isloader.store.table import (
        ImportanceTable as ImportanceTable,
    )
    from isloader.store.table import (
        TableConfig as TableConfig,
    )
    from isloader.store.table import (
        prune_threshold as prune_threshold,
    )
