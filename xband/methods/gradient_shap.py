"""GradientShap: expected gradients with baselines drawn from the data."""

from __future__ import annotations

from dataclasses import dataclass

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
class GradientShap(GradientMethod):
    """Sum over the band's pixels of GradientShap (Lundberg & Lee 2017), baselines = other images.

    Per image, the mean over n_samples draws of ∂f_t/∂x at b + α(x − b) times (x − b), with b one
    of the batch's donor images and α uniform in [0, 1]: Captum's GradientShap with stdevs=0,
    computed in gradient passes of the measured best size rather than images × samples at once.
    """

    name = "gradient_shap"
    label = "GradientShap"
    units = "sum over pixels, in output units (vs. images drawn from the data)"

    n_samples: int = option(16, "draws of (donor image, point on the path) per image",
                               maximum=10_000, why="each draw is a gradient pass per image")
    until_settled = {"n_samples": 4}

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return self.n_samples

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        donors = ctx.donors(batch.index, 0)  # the baseline distribution for the whole batch
        x = batch.x
        pick = torch.randint(len(donors), (len(x), self.n_samples)).to(x.device)
        alphas = torch.rand(len(x), self.n_samples).to(x)
        maps = torch.zeros_like(x)
        for samples, images in blocks(len(x), self.n_samples, ctx.passes.gradient):
            base = donors[pick[images, samples].T]  # (samples, images, B, H, W)
            alpha = alphas[images, samples].T[..., None, None, None]
            gap = x[images].unsqueeze(0) - base
            target = batch.target[images].repeat(len(base))
            fixed = None if batch.fixed is None else batch.fixed[images].repeat(len(base), 1, 1, 1)
            grad = input_gradients((base + alpha * gap).flatten(0, 1), target, ctx, fixed)
            for term in grad.view_as(gap) * gap:  # in sample order, so that the pass size
                maps[images] += term  # never changes a sum
        maps /= self.n_samples
        return BandAttribution(pixel_sum(maps), maps)
