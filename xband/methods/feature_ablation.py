"""Band ablation: the drop in the class output when one band is replaced by its baseline."""

from __future__ import annotations

import torch

from xband.methods._base import BandAttribution, Batch, Context, Method, n_features, register
from xband.methods._coalitions import masked_outputs, target_values


@register
class FeatureAblationMethod(Method):
    """f_t(x) − f_t(x with band b set to its baseline), one value per band (or band group).

    The same numbers as Captum's FeatureAblation with a band mask, batched across images.
    """

    name = "feature_ablation"
    label = "Band ablation"
    kind = "group"
    signed = True
    units = "f(x) − f(x with the band at its baseline), output units"
    grouped = True

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return n_bands + 1

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        n_feat = n_features(batch.x, ctx.features)
        present = torch.cat([torch.ones(1, n_feat), 1 - torch.eye(n_feat)])  # all, then all but f
        values = target_values(masked_outputs(batch, ctx, present, ctx.baseline), batch.target)
        return BandAttribution((values[:, :1] - values[:, 1:]).cpu().numpy())
