"""Integrated Gradients: each band's contribution to f_t(x) − f_t(baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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

    Captum's IntegratedGradients (Gauss–Legendre nodes and weights, its default), with the
    (step, image) points built block by block in gradient passes of the measured best size.
    With the data baseline, the mean of IG from each of the image's K background images, the
    steps shared between them (n_steps // K per path): bands then sum to f(x) − the mean of f
    over them, for the passes of one path (scripts/ig_steps.py measures what that costs).
    """

    name = "integrated_gradients"
    label = "Integrated Gradients"
    units = "sum over pixels, in output units (bands add up to f(x) − f(baseline))"

    n_steps: int = option(32, "integration steps, gradient passes per image (with K background "
                                  "images: n_steps // K steps from each)", maximum=1000,
                            why="Gauss-Legendre nodes for n steps take time growing as n³, "
                            "and more steps change the sums by less than float32 rounding")
    until_settled = {"n_steps": 8}  # one background image per image then: 8 steps on its path

    def steps_per_path(self, n_background: int) -> int:
        return max(1, self.n_steps // n_background)

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return self.steps_per_path(n_background) * n_background

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        bases = ctx.removal(batch)
        steps = self.steps_per_path(len(bases))
        maps = sum(self.path(batch, ctx, base, steps) for base in bases) / len(bases)
        return BandAttribution(pixel_sum(maps), maps)

    def path(self, batch: Batch, ctx: Context, base: torch.Tensor, n_steps: int) -> torch.Tensor:
        """(N, B, H, W) IG maps from the baseline `base`, (N, B, H, W) or (1, B, 1, 1), in
        `n_steps` steps."""
        step_sizes, alphas = (torch.tensor(v, dtype=batch.x.dtype, device=batch.x.device)
                              for v in gauss_legendre(n_steps))
        x = batch.x
        total = torch.zeros_like(x)
        for steps, images in blocks(len(x), n_steps, ctx.passes.gradient):
            alpha = alphas[steps].view(-1, 1, 1, 1, 1)
            start = base if len(base) == 1 else base[images]
            points = (start + alpha * (x[images] - start).unsqueeze(0)).flatten(0, 1)
            target = batch.target[images].repeat(len(alpha))
            fixed = None if batch.fixed is None else batch.fixed[images].repeat(len(alpha), 1, 1, 1)
            grad = input_gradients(points, target, ctx, fixed).view(len(alpha), -1, *x.shape[1:])
            for step, weight in zip(grad, step_sizes[steps], strict=True):  # in step order,
                total[images] += step * weight  # so that the pass size never changes a sum
        return total * (x - base)


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(step sizes, alphas) of the `n_steps`-point Gauss–Legendre rule on [0, 1]: the weights and
    nodes of numpy's rule on [−1, 1], halved and shifted (Captum's default for IG)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * weights, 0.5 * (1 + nodes)
