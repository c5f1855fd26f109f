"""Integrated Gradients: each band's contribution to f_t(x) − f_t(baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    GradientMethod,
    blocks,
    input_gradients,
    option,
    pixel_sum,
)


@dataclass(frozen=True)
class IntegratedGradients(GradientMethod):
    """Sum over the band's pixels of IG (Sundararajan et al. 2017); bands sum to f(x) − f(baseline).

    Captum's IntegratedGradients (Gauss-Legendre nodes and weights, its default), with the
    (step, image) points built block by block in gradient passes of the measured best size.
    """

    name = "integrated_gradients"
    label = "Integrated Gradients"
    units = "sum over pixels, in output units (bands add up to f(x) − f(baseline))"

    n_steps: int = option(32, "integration steps (gradient passes per image)")

    def passes_per_image(self, n_features: int) -> int:
        return self.n_steps

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        step_sizes, alphas = (torch.tensor(f(self.n_steps), dtype=batch.x.dtype,
                                           device=batch.x.device)
                              for f in approximation_parameters("gausslegendre"))
        x, base = batch.x, ctx.baseline
        total = torch.zeros_like(x)
        for steps, images in blocks(len(x), self.n_steps, ctx.passes.gradient):
            alpha = alphas[steps].view(-1, 1, 1, 1, 1)
            points = (base + alpha * (x[images] - base).unsqueeze(0)).flatten(0, 1)
            target = batch.target[images].repeat(len(alpha))
            grad = input_gradients(points, target, ctx).view(len(alpha), -1, *x.shape[1:])
            for step, weight in zip(grad, step_sizes[steps], strict=True):  # in step order,
                total[images] += step * weight  # so that the pass size never changes a sum
        maps = total * (x - base)
        return BandAttribution(pixel_sum(maps), maps)
