"""Input × Gradient: a first-order contribution of each band, relative to an all-zero input."""

from __future__ import annotations

from captum.attr import InputXGradient

from xband.methods._base import BandAttribution, Batch, Context, Method, pixel_sum, register


@register
class InputXGradientMethod(Method):
    """Sum over the band's pixels of x · ∂f_t/∂x."""

    name = "input_x_gradient"
    label = "Input × Gradient"
    kind = "attribution"
    signed = True
    units = "sum over pixels of x·∂f/∂x, in output units"

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        maps = InputXGradient(ctx.forward).attribute(batch.x, target=batch.target).detach()
        return BandAttribution(pixel_sum(maps), maps)
