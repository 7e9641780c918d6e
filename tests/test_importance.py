import pytest
import torch
import torch.nn.functional as F

from isloader.importance import (
    autograd_grad_norm,
    cross_entropy_grad_norm,
    importance_metric,
    mse_grad_norm,
)


def test_analytic_cross_entropy_norm_equals_autograd() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(64, 10) * 3, torch.randint(0, 10, (64,))
    expected = autograd_grad_norm(logits, y, lambda z, t: F.cross_entropy(z, t, reduction="none"))
    torch.testing.assert_close(cross_entropy_grad_norm(logits, y), expected)


def test_analytic_mse_norm_equals_autograd() -> None:
    torch.manual_seed(1)
    z, y = torch.randn(32, 5), torch.randn(32, 5)
    per_sample = lambda a, b: F.mse_loss(a, b, reduction="none").mean(dim=1)  # noqa: E731
    torch.testing.assert_close(mse_grad_norm(z, y), autograd_grad_norm(z, y, per_sample))


def test_metric_lookup_and_loss_baseline() -> None:
    z, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    q = importance_metric("loss")(z, y)
    torch.testing.assert_close(q, F.cross_entropy(z, y, reduction="none"))
    assert importance_metric()(z, y).shape == (8,)
    with pytest.raises(ValueError, match="metric must be one of"):
        importance_metric("nope")


def test_does_not_touch_the_networks_graph() -> None:
    layer = torch.nn.Linear(4, 3)
    out = layer(torch.randn(5, 4))
    importance_metric(loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none"))(
        out, torch.zeros(5, dtype=torch.long)
    )
    assert layer.weight.grad is None
