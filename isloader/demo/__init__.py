"""``isloader demo``: the paper's comparison, end to end through the real pipeline.

By default the data lives in object storage: MNIST-1D with rows of several KB is
served by a local S3 endpoint (moto) behind a proxy that adds per-request latency
and caps each connection's bandwidth, started and stopped by the demo itself. The
uniform baseline streams it every epoch, as a streaming loader would; the
importance-sampling methods read locality-aware windows through the importance-
aware cache (at most ``cache_fraction`` of the dataset's bytes). ``--local`` runs the
same comparison on local Parquet files, where loading costs nothing.

Concerns live apart: ``data`` (datasets), ``endpoint`` (the emulated object store),
``methods`` (what is compared), ``train`` (the loop), ``report`` (table and plots),
``settings`` (the flags), ``comparison`` (one run of them all). Only ``settings`` is
imported eagerly: the CLI runs in the store image, which has no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from isloader.demo.settings import DemoSettings

_LAZY = {
    "Comparison": "isloader.demo.comparison",
    "open_comparison": "isloader.demo.comparison",
    "run_demo": "isloader.demo.comparison",
    "RunResult": "isloader.demo.train",
    "build_model": "isloader.demo.train",
    "evaluate": "isloader.demo.train",
    "train_method": "isloader.demo.train",
}

__all__ = ["DemoSettings", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'isloader.demo' has no attribute {name!r}")
