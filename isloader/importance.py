"""Per-sample importance from the forward pass the trainer already did (torch).

The paper's metric (Eq. 7) is the norm of the loss gradient with respect to the
network *output*, ``q = || dL / dm(x) ||_2``. For softmax cross-entropy it is
analytic, ``|| softmax(z) - onehot(y) ||_2``; for mean squared error
``|| 2 (z - y) / D ||_2`` (``D`` output dimensions, mean reduction). Any other
per-sample loss goes through autograd on a detached copy of the outputs, which
costs one small backward through the loss only, never through the network. The
loss value itself is the paper's Loss-IS baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "METRICS",
    "cross_entropy_grad_norm",
    "mse_grad_norm",
    "autograd_grad_norm",
    "per_sample_loss",
    "importance_metric",
]

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def cross_entropy_grad_norm(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``|| softmax(z) - onehot(y) ||_2`` per row: d CE / d logits, no backprop.

    On the CPU it runs in numpy: for a batch of small rows that is half the cost of
    torch's per-operation dispatch, and it runs on the reporter's thread beside training.
    """
    if logits.device.type == "cpu":
        z = logits.float().numpy()
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        p[np.arange(len(p)), targets.numpy().astype(np.int64)] -= 1.0
        return torch.from_numpy(np.sqrt(np.einsum("ij,ij->i", p, p)))
    grad = torch.softmax(logits.float(), dim=-1)
    grad[torch.arange(len(targets), device=grad.device), targets.long()] -= 1.0
    return grad.norm(dim=-1)


@torch.no_grad()
def mse_grad_norm(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``|| 2 (z - y) / D ||_2`` per row: d mean-squared-error / d outputs."""
    diff = (outputs.float() - targets.float()).reshape(len(outputs), -1)
    return (2.0 * diff / diff.shape[1]).norm(dim=-1)


def autograd_grad_norm(
    outputs: torch.Tensor, targets: torch.Tensor, loss_fn: PerSampleLoss
) -> torch.Tensor:
    """``|| d loss_i / d output_i ||_2`` for any per-sample ``loss_fn`` (reduction='none')."""
    z = outputs.detach().float().requires_grad_(True)
    with torch.enable_grad():
        losses = loss_fn(z, targets)
        (grad,) = torch.autograd.grad(losses.sum(), z)
    return grad.reshape(len(z), -1).norm(dim=-1)


@torch.no_grad()
def per_sample_loss(
    outputs: torch.Tensor, targets: torch.Tensor, loss_fn: PerSampleLoss | None = None
) -> torch.Tensor:
    """The loss of each sample (Loss-IS); cross-entropy unless ``loss_fn`` is given."""
    if loss_fn is None:
        return F.cross_entropy(outputs.float(), targets.long(), reduction="none")
    return loss_fn(outputs.float(), targets)


METRICS = ("output_grad_norm", "loss")


def importance_metric(
    metric: str = "output_grad_norm",
    *,
    loss: str = "cross_entropy",
    loss_fn: PerSampleLoss | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The ``q_new`` function for a metric name and loss.

    Args:
        metric: ``"output_grad_norm"`` (the paper's, Eq. 7) or ``"loss"`` (Loss-IS).
        loss: ``"cross_entropy"`` or ``"mse"`` pick the analytic forms.
        loss_fn: any per-sample loss; uses autograd (or its value for ``"loss"``).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "loss":
        if loss_fn is None and loss == "mse":
            return lambda z, y: ((z.float() - y.float()) ** 2).reshape(len(z), -1).mean(dim=1)
        return lambda z, y: per_sample_loss(z, y, loss_fn)
    if loss_fn is not None:
        return lambda z, y: autograd_grad_norm(z, y, loss_fn)
    if loss == "cross_entropy":
        return cross_entropy_grad_norm
    if loss == "mse":
        return mse_grad_norm
    raise ValueError(f"no analytic form for loss {loss!r}: pass loss_fn")
