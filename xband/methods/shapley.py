"""Band Shapley values: each band's fair share of f_t(x) − f_t(all bands at baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import torch

from xband.methods._base import option
from xband.methods._coalitions import LinearSubsetMethod, over_backgrounds


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


def sampled_shapley_weights(permutations: list[list[int]], *, shared_start: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Subsets and the (F, K) matrix M with φ = M v for Shapley value sampling.

    Along each of the S permutations features join one at a time, starting from none; a
    feature's value is the mean of its marginal gains, as in Captum's ShapleyValueSampling.
    shared_start: one empty subset for every permutation (K = 1 + S·F); otherwise each
    permutation starts from its own (K = S·(F + 1)), to be evaluated against its own background.
    """
    n_feat, n_perm = len(permutations[0]), len(permutations)
    width = n_feat if shared_start else n_feat + 1
    start = 1 if shared_start else 0
    present = torch.zeros(start + n_perm * width, n_feat)
    weights = torch.zeros(n_feat, start + n_perm * width, dtype=torch.float64)
    for s, order in enumerate(permutations):
        empty = 0 if shared_start else s * width  # the order's starting column
        first = start + s * width + (0 if shared_start else 1)  # its first feature joins here
        for k, feature in enumerate(order):
            column = first + k
            present[column, order[: k + 1]] = 1
            weights[feature, column] += 1 / n_perm
            weights[feature, column - 1 if k else empty] -= 1 / n_perm
    return present, weights


@dataclass(frozen=True)
class Shapley(LinearSubsetMethod):
    """Exact Shapley values over the 2^B band coalitions when affordable, sampled otherwise
    (Captum's ShapleyValueSampling over antithetic pairs of band orders).

    Captum's `ShapleyValues` enumerates B! orderings, hopeless for 13 bands; the coalition formula
    needs 2^B evaluations (8192 for 13 bands).
    """

    name = "shapley"
    label = "Band Shapley values"
    units = "share of f(x) − f(all bands at baseline), output units"

    max_exact_bands: int = option(5, "exact values (2^B passes per image) up to this many "
                                     "bands or groups; sampled above (from 6 bands on, the "
                                     "sampled form costs fewer passes)")
    n_samples: int = option(8, "band orders drawn when sampling, in antithetic pairs")

    def exact(self, n_features: int) -> bool:
        return n_features <= self.max_exact_bands

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        if self.exact(n_features):
            return (2**n_features - 1) * n_background + 1
        if n_background == 1:
            return self.n_samples * n_features + 1
        return self.n_samples * (n_features + 1)

    def note(self, n_features: int, n_background: int = 1) -> str | None:
        if self.exact(n_features):
            return None
        exact = self.with_options(max_exact_bands=n_features)
        return (
            f"shapley: {n_features} bands → sampled Shapley values ({self.n_samples} "
            f"antithetic band orders, {self.passes_per_image(n_features, n_background)} passes "
            f"per image); exact values need {exact.passes_per_image(n_features, n_background)} "
            "passes per image "
            f"(--method-option shapley.max_exact_bands={n_features} to pay for them)"
        )

    def coalitions(self, n_feat: int, n_background: int, n_images: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact: every coalition against every background. Sampled: with background images,
        each pair of band orders of an image runs against one background drawn for it."""
        if self.exact(n_feat):
            return over_backgrounds(coalitions(n_feat), shapley_weights(n_feat), n_background)
        orders = antithetic_permutations(n_feat, self.n_samples)
        if n_background == 1:
            present, weights = sampled_shapley_weights(orders)
            return present, weights, torch.zeros(len(present), dtype=torch.long)
        present, weights = sampled_shapley_weights(orders, shared_start=False)
        pairs = -(-self.n_samples // 2)
        drawn = torch.randint(n_background, (n_images, pairs))
        pick = drawn.repeat_interleave(2, dim=1)[:, :self.n_samples]  # (N, orders)
        return present, weights, pick.repeat_interleave(n_feat + 1, dim=1)


def antithetic_permutations(n_feat: int, n_samples: int) -> list[list[int]]:
    """`n_samples` feature orders in pairs, each drawn order followed by its reverse: a band that
    joins early in one joins late in the other, which halves the error of Shapley value
    sampling at the same cost on the models measured (README, "Exact or sampled")."""
    orders: list[list[int]] = []
    while len(orders) < n_samples:
        order = torch.randperm(n_feat).tolist()
        orders += [order, order[::-1]]
    return orders[:n_samples]
