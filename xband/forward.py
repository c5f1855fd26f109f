"""The forward pass every method calls: channels-first images in, eval mode, weights frozen, and
made faster with the same numbers (BatchNorm folded into convolutions, channels-last memory).

Each speed-up is kept only when its outputs and input gradients match the plain forward on
an example batch; otherwise it is dropped with a note (a model that calls `.view` on its
activations, say, cannot run channels-last).

Measured on 2 CPU cores (scripts/benchmark.py): channels-last runs the converted small CNN 2.5×
faster forward and 1.8× forward+backward, MobileNetV2 1.5× / 1.3×, ResNet50 about the same.
`torch.compile` was measured and left out: 40-100 s to compile per model and input size, then no
faster than channels-last eager on CPU (slower backward).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from xband.errors import XbandError

RTOL, ATOL = 1e-4, 1e-5


class ChannelsFirst(nn.Module):
    """Feeds (N, B, H, W) images to a network that takes its own layout, in `memory_format`."""

    def __init__(self, network: nn.Module, layout: str,
                 memory_format: torch.memory_format = torch.contiguous_format):
        super().__init__()
        self.network = network
        self.layout = layout
        self.memory_format = memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        return self.network(x.permute(0, 2, 3, 1) if self.layout == "channels_last" else x)


def forward_module(network: nn.Module, layout: str, device: str) -> ChannelsFirst:
    """`network` taking channels-first images, in eval mode on `device`, weights frozen."""
    return _frozen(ChannelsFirst(network, layout).to(device).eval())


def _frozen(forward: ChannelsFirst) -> ChannelsFirst:
    """No gradients for the weights: the methods differentiate with respect to the input only."""
    for p in forward.parameters():
        p.requires_grad_(False)
    return forward


def check_device(device: str) -> str:
    """`device` if torch can compute there; a message saying what to do otherwise."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise XbandError(f"device '{device}' is not a torch device: use 'cpu' or 'cuda'.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise XbandError(
            f"device '{device}': torch sees no CUDA GPU (torch {torch.__version__}, "
            "torch.cuda.is_available() is False). Run on a machine with an NVIDIA GPU and a "
            "CUDA build of torch, or use --device cpu."
        )
    if parsed.type not in ("cpu", "cuda"):
        raise XbandError(f"device '{device}' is not supported: use 'cpu' or 'cuda'.")
    return device


def _has_batchnorm(forward: ChannelsFirst) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in forward.modules())


def fold_batchnorm(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy with each BatchNorm that follows a convolution folded into it (eval mode only)."""
    from torch.fx.experimental.optimization import fuse

    return ChannelsFirst(fuse(forward.network), forward.layout, forward.memory_format)


def channels_last(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy whose 4-d weights and input are in channels-last (NHWC) memory order."""
    network = copy.deepcopy(forward.network).to(memory_format=torch.channels_last)
    return ChannelsFirst(network, forward.layout, torch.channels_last)


Step = Callable[[ChannelsFirst], ChannelsFirst]
STEPS: dict[str, tuple[Callable[[ChannelsFirst], bool], Step]] = {
    "batchnorm folded into convolutions": (_has_batchnorm, fold_batchnorm),
    "channels-last memory": (lambda forward: True, channels_last),
}


def _output_and_gradient(forward: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = example.clone().requires_grad_(True)
    out = forward(x)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    return out.detach(), grad


def tune(forward: ChannelsFirst, example: torch.Tensor
         ) -> tuple[ChannelsFirst, list[str], list[str]]:
    """`forward` made faster, the steps applied, and a note for each step that was dropped.

    `example`: a few images (N, B, H, W) on the forward's device.
    """
    want = _output_and_gradient(forward, example)
    applied, notes = [], []
    for name, (applies, step) in STEPS.items():
        if not applies(forward):
            continue
        try:
            candidate = _frozen(step(forward))
            got = _output_and_gradient(candidate, example)
        except Exception as error:  # any failure of an optional speed-up means: go without it
            notes.append(f"speed: {name} not used (the model fails with it: "
                         f"{type(error).__name__}: {str(error).splitlines()[0][:120]})")
            continue
        if all(torch.allclose(g, w, rtol=RTOL, atol=ATOL * max(1.0, float(w.abs().max())))
               for g, w in zip(got, want, strict=True)):
            forward = candidate
            applied.append(name)
        else:
            notes.append(f"speed: {name} not used (outputs or gradients changed beyond "
                         f"rtol {RTOL})")
    return forward, applied, notes
