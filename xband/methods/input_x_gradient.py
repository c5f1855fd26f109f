"""Input × Gradient: a first-order contribution of each band, relative to an all-zero input."""

from __future__ import annotations

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    Method,
    input_gradients,
    pixel_sum,
    register,
)


@register
class InputXGradientMethod(Method):
    """Sum over the band's pixels of x · ∂f_t/∂x."""

    name = "input_x_gradient"
    label = "Input × Gradient"
    kind = "attribution"
    signed = True
    units = "sum over pixels of x·∂f/∂x, in output units"

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        maps = batch.x * input_gradients(batch.x, batch.target, ctx)
        return BandAttribution(pixel_sum(maps), maps)
