"""Band ablation: the drop in the class output when one band is replaced by its baseline."""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    Method,
    band_mask,
    baseline_like,
    group_scores,
    n_features,
    perturbations_per_eval,
    register,
)


@register
class FeatureAblationMethod(Method):
    """f_t(x) − f_t(x with band b set to its baseline), one value per band."""

    name = "feature_ablation"
    label = "Band ablation"
    kind = "group"
    signed = True
    units = "f(x) − f(x with the band at its baseline), output units"
    grouped = True

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return n_bands + 1

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        with torch.no_grad():
            attr = FeatureAblation(ctx.forward).attribute(
                batch.x,
                baselines=baseline_like(batch.x, ctx.baseline),
                target=batch.target,
                feature_mask=band_mask(batch.x, ctx.features),
                perturbations_per_eval=perturbations_per_eval(
                    batch.x, n_features(batch.x, ctx.features), ctx),
            )
        return BandAttribution(group_scores(attr, ctx.features))
