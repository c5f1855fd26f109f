"""Band Shapley values: each band's fair share of f_t(x) − f_t(all bands at baseline)."""

from __future__ import annotations

from math import factorial

import torch

from xband.methods._base import BandAttribution, Batch, Context, Method, n_features, register
from xband.methods._coalitions import masked_outputs, target_values


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


def sampled_shapley_weights(permutations: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Subsets and the (F, 1 + S·F) matrix M with φ = M v for Shapley value sampling.

    Along each of the S permutations features join one at a time, starting from none (subset 0,
    shared); a feature's value is the mean of its marginal gains, as in Captum's
    ShapleyValueSampling.
    """
    n_feat, n_perm = len(permutations[0]), len(permutations)
    present = torch.zeros(1 + n_perm * n_feat, n_feat)
    weights = torch.zeros(n_feat, 1 + n_perm * n_feat, dtype=torch.float64)
    for s, order in enumerate(permutations):
        for k, feature in enumerate(order):
            column = 1 + s * n_feat + k
            present[column, order[: k + 1]] = 1
            weights[feature, column] += 1 / n_perm
            weights[feature, column - 1 if k else 0] -= 1 / n_perm
    return present, weights


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
        return options["n_samples"] * n_bands + 1

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
        if self.exact(n_feat, options):
            present, weights = coalitions(n_feat), shapley_weights(n_feat)
        else:  # the permutations Captum's ShapleyValueSampling would draw, in its order
            present, weights = sampled_shapley_weights(
                [torch.randperm(n_feat).tolist() for _ in range(options["n_samples"])])
        values = target_values(masked_outputs(batch, ctx, present, ctx.baseline), batch.target)
        return BandAttribution((values.cpu() @ weights.T).numpy())
