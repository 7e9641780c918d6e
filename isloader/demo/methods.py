"""The compared methods: the paper's, its baselines, and the size-matched random pruning.

- ``uniform``: a shuffled streaming pass per epoch (what a streaming loader does); on
  remote data it runs twice: ``uniform_stream`` with no cache (what WebDataset and Ray
  Data do by default) and ``uniform_cached`` through the same cache, with the same
  budget, as the importance-sampling methods;
- ``loss_is``: importance sampling on the loss (the paper's Loss-IS);
- ``ours_is``: importance sampling on the output-gradient norm (Eq. 7);
- ``ours_is_prune``: the same plus online pruning (Alg. 2, K = 2 every 2 epochs);
- ``random_prune``: uniform sampling over a random active set whose size follows
  ``ours_is_prune`` epoch by epoch; it separates "fewer samples" from "better samples".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from isloader.store.api import ImportanceStore

__all__ = ["METHODS", "UNIFORM", "CACHELESS", "loader_options", "random_prune"]

UNIFORM = ("uniform", "uniform_stream", "uniform_cached")  # the baselines
CACHELESS = ("uniform_stream",)  # remote methods that read with no cache at all

METHODS: dict[str, dict[str, Any]] = {
    "uniform": {"sampling": "uniform"},
    "uniform_stream": {"sampling": "uniform"},
    "uniform_cached": {"sampling": "uniform"},
    "loss_is": {"sampling": "importance", "metric": "loss"},
    "ours_is": {"sampling": "importance"},
    "ours_is_prune": {"sampling": "importance", "prune_every": 2, "prune_k": 2.0},
    "random_prune": {"sampling": "importance", "metric": "loss", "eps": 0.0},
}


def loader_options(method: str) -> dict[str, Any]:
    """``ImportanceLoader`` keyword arguments of ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    options = dict(METHODS[method])
    if method == "random_prune":
        options["loss_fn"] = _constant_loss  # q = 1: uniform sampling over the active set
    return options


def _constant_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(outputs))


def random_prune(store: ImportanceStore, target_active: int, seed: int) -> None:
    """Prune uniformly random active samples down to ``target_active``.

    The victims are measured at 0 (so their q falls to ``alpha``, every other sample
    holding 1), and Alg. 2 runs with the K whose threshold sits halfway between.
    """
    q = store.lookup(np.arange(store.num_samples))
    active = np.flatnonzero(q > 0)
    excess = len(active) - target_active
    if excess <= 0:
        return
    victims = np.random.default_rng(seed).choice(active, excess, replace=False)
    store.update(victims, np.zeros(excess))
    low = float(store.lookup(victims).max())
    store.prune(store.stats().q_mean / ((low + 1.0) / 2.0))
