"""Integrated Gradients: each band's contribution to f_t(x) − f_t(baseline)."""

from __future__ import annotations

from captum.attr import IntegratedGradients

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    Method,
    baseline_like,
    pass_size,
    pixel_sum,
    register,
)


@register
class IntegratedGradientsMethod(Method):
    """Sum over the band's pixels of IG (Sundararajan et al. 2017); bands sum to f(x) − f(baseline)."""

    name = "integrated_gradients"
    label = "Integrated Gradients"
    kind = "attribution"
    signed = True
    units = "sum over pixels, in output units (bands add up to f(x) − f(baseline))"
    defaults = {"n_steps": 32}

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return options["n_steps"]

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        steps = ctx.options(self)["n_steps"]
        maps = IntegratedGradients(ctx.forward).attribute(
            batch.x,
            baselines=baseline_like(batch.x, ctx.baseline),
            target=batch.target,
            n_steps=steps,
            internal_batch_size=pass_size(ctx),
        ).detach()
        return BandAttribution(pixel_sum(maps), maps)
