"""Input × Gradient: a first-order contribution of each band, relative to an all-zero input."""

from __future__ import annotations

from dataclasses import dataclass

from xband.methods._base import BandAttribution, Batch, Context, GradientMethod, input_gradients, pixel_sum


@dataclass(frozen=True)
class InputXGradient(GradientMethod):
    """Sum over the band's pixels of x · ∂f_t/∂x."""

    name = "input_x_gradient"
    label = "Input × Gradient"
    units = "sum over pixels of x·∂f/∂x, in output units"

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        maps = batch.x * input_gradients(batch.x, batch.target, ctx, batch.fixed)
        return BandAttribution(pixel_sum(maps), maps)
