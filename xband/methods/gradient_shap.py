"""GradientShap: expected gradients with baselines drawn from the data."""

from __future__ import annotations

from captum.attr import GradientShap

from xband.methods._base import BandAttribution, Batch, Context, Method, pixel_sum, register


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
        maps = GradientShap(ctx.forward).attribute(
            batch.x,
            baselines=ctx.donors(batch.index, 0),
            target=batch.target,
            n_samples=ctx.options(self)["n_samples"],
            stdevs=0.0,
        ).detach()
        return BandAttribution(pixel_sum(maps), maps)
