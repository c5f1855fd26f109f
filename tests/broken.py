"""Broken copies of a converted network, which every fidelity check must fail: one weight
changed, or a backward that does not follow its forward. Shared by the tests and by the zoo
scripts (scripts/check_keras_zoo.py, scripts/check_onnx_route.py)."""

from __future__ import annotations

import torch
from torch import nn


def break_first_conv(module: nn.Module) -> None:
    """Negate the largest weight of the first convolution, in place: a broken conversion."""
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        flat = conv.weight.view(-1)
        flat[flat.abs().argmax()] *= -1


class _ScaledBackward(torch.autograd.Function):
    """Identity forward, gradient × 1.1 backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.1


class WrongBackward(nn.Module):
    """`inner` with a forward that is right and a backward that is not."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_ScaledBackward.apply(x))
