"""Band Shapley values: each band's fair share of f_t(x) − f_t(all bands at baseline)."""

from __future__ import annotations

from math import factorial

import numpy as np
import torch
from captum.attr import ShapleyValueSampling

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


def coalitions(n_bands: int) -> torch.Tensor:
    """All 2^B band subsets as 0/1 rows; row c holds the bits of c."""
    codes = torch.arange(2**n_bands).unsqueeze(1)
    return ((codes >> torch.arange(n_bands)) & 1).float()


def shapley_weights(n_bands: int) -> torch.Tensor:
    """(B, 2^B) matrix W with φ = W v for coalition values v.

    φ_b = Σ_{S∌b} |S|!(B−|S|−1)!/B! · (v(S∪{b}) − v(S)); each coalition enters once with a plus
    sign (for its members, weight of S without b) and once with a minus sign (for non-members).
    """
    members = coalitions(n_bands)
    size = members.sum(dim=1)
    weight = [factorial(s) * factorial(n_bands - s - 1) / factorial(n_bands) for s in range(n_bands)]
    weight = torch.tensor(weight + [0.0], dtype=torch.float64)
    plus = weight[(size - 1).clamp(min=0).long()].unsqueeze(0) * members.T.double()
    minus = weight[size.long()].unsqueeze(0) * (1 - members.T.double())
    return plus - minus


@register
class ShapleyMethod(Method):
    """Exact Shapley values over the 2^B band coalitions when affordable, sampled otherwise.

    Captum's `ShapleyValues` enumerates B! orderings, hopeless for 13 bands; the coalition formula
    needs 2^B evaluations (8192 for 13 bands).
    """

    name = "shapley"
    label = "Band Shapley values"
    kind = "group"
    signed = True
    units = "share of f(x) − f(all bands at baseline), output units"
    defaults = {"max_exact_bands": 10, "n_samples": 25}
    grouped = True

    def exact(self, n_bands: int, options: dict) -> bool:
        return n_bands <= options["max_exact_bands"]

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        if self.exact(n_bands, options):
            return 2**n_bands
        return options["n_samples"] * (n_bands + 1)

    def note(self, n_bands: int, options: dict) -> str | None:
        if self.exact(n_bands, options):
            return None
        return (
            f"shapley: {n_bands} bands → sampled Shapley values ({options['n_samples']} "
            f"permutations); exact values need {2**n_bands} passes per image "
            f"(raise max_exact_bands to {n_bands} to pay for them)"
        )

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        options = ctx.options(self)
        n_feat = n_features(batch.x, ctx.features)
        baseline = baseline_like(batch.x, ctx.baseline)
        if not self.exact(n_feat, options):
            with torch.no_grad():
                attr = ShapleyValueSampling(ctx.forward).attribute(
                    batch.x,
                    baselines=baseline,
                    target=batch.target,
                    feature_mask=band_mask(batch.x, ctx.features),
                    n_samples=options["n_samples"],
                    perturbations_per_eval=perturbations_per_eval(batch.x, n_feat, ctx),
                )
            return BandAttribution(group_scores(attr, ctx.features))
        members = coalitions(n_feat)
        if ctx.features is not None:  # a band is present when its group is
            members = members[:, ctx.features.cpu()]
        members = members.to(batch.x).view(len(members), -1, 1, 1)
        weights = shapley_weights(n_feat)
        chunk = max(ctx.batch_size, 256)
        scores = np.empty((len(batch.x), n_feat))
        with torch.inference_mode():
            for i, (image, target) in enumerate(zip(batch.x, batch.target, strict=True)):
                values = torch.cat([
                    ctx.forward(baseline + part * (image - baseline))[:, target]
                    for part in members.split(chunk)
                ])
                scores[i] = (weights @ values.double().cpu()).numpy()
        return BandAttribution(scores)
