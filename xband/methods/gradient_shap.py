"""GradientShap: expected gradients with baselines drawn from the data."""

from __future__ import annotations

import torch
from captum.attr import GradientShap

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    Method,
    pass_size,
    pixel_sum,
    register,
)


@register
class GradientShapMethod(Method):
    """Sum over the band's pixels of GradientShap (Lundberg & Lee 2017), baselines = other images."""

    name = "gradient_shap"
    label = "GradientShap"
    kind = "attribution"
    signed = True
    units = "sum over pixels, in output units (vs. images drawn from the data)"
    defaults = {"n_samples": 16}

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return options["n_samples"]

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        n_samples = ctx.options(self)["n_samples"]
        explainer = GradientShap(ctx.forward)
        donors = ctx.donors(batch.index, 0)  # the baseline distribution for the whole batch
        # Captum evaluates images × n_samples points in one pass
        per_call = max(1, pass_size(ctx) // n_samples)
        maps = torch.cat([
            explainer.attribute(x, baselines=donors, target=target, n_samples=n_samples,
                                stdevs=0.0).detach()
            for x, target in zip(batch.x.split(per_call), batch.target.split(per_call), strict=True)
        ])
        return BandAttribution(pixel_sum(maps), maps)
