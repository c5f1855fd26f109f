"""Saliency: how sensitive the class output is to each band, per unit of the band's value."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    GradientMethod,
    input_gradients,
    pixel_mean,
)


@dataclass(frozen=True)
class Saliency(GradientMethod):
    """Mean over pixels of |∂f_t/∂x| in each band (Simonyan et al. 2014)."""

    name = "saliency"
    label = "Saliency |∂f/∂x|"
    kind = "gradient"
    signed = False
    units = "mean |gradient| over pixels, per unit of the band's value"

    def _scale(self, ctx: Context) -> torch.Tensor | float:
        return 1.0

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        maps = input_gradients(batch.x, batch.target, ctx, batch.fixed).abs() * self._scale(ctx)
        return BandAttribution(pixel_mean(maps), maps)


@dataclass(frozen=True)
class ScaledSaliency(Saliency):
    """Saliency times the band's standard deviation over the data: sensitivity to a typical change.

    Raw gradients favour bands with a small spread (product.md, "a trap with raw gradients").
    """

    name = "scaled_saliency"
    label = "Scaled saliency |∂f/∂x|·σ"
    units = "mean |gradient| over pixels × the band's std over the data"

    def _scale(self, ctx: Context) -> torch.Tensor:
        return ctx.band_std.view(1, -1, 1, 1)
