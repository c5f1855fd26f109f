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


def sampled_shapley_weights(orders: torch.Tensor, *, shared_start: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Subsets (N, K, F) and weights (N, F, K) with φ_n = W_n v_n for Shapley value sampling
    along each image's S feature orders (`orders`: (N, S, F)).

    Along each order features join one at a time, starting from none; a feature's value is the
    mean of its marginal gains, as in Captum's ShapleyValueSampling. shared_start: one empty
    subset for all of an image's orders (K = 1 + S·F); otherwise each order starts from its own
    (K = S·(F + 1)), to be evaluated against its own background.
    """
    n_images, n_orders, n_feat = orders.shape
    width, start = (n_feat, 1) if shared_start else (n_feat + 1, 0)
    first = start + torch.arange(n_orders).view(1, -1, 1) * width + (1 - start)  # (1, S, 1)
    rank = orders.argsort(dim=2)  # (N, S, F): when each feature joins along each order
    joined = rank.unsqueeze(2) <= torch.arange(n_feat).view(1, 1, -1, 1)  # (N, S, step, F)
    present = torch.zeros(n_images, start + n_orders * width, n_feat)
    columns = (first + torch.arange(n_feat).view(1, 1, -1)).flatten()  # (S·F,) order-major
    present[:, columns] = joined.flatten(1, 2).float()
    gains = first + rank  # (N, S, F): the column where a feature joins
    before = gains - 1 if not shared_start else torch.where(rank > 0, gains - 1, 0)
    weights = torch.zeros(n_images, n_feat, present.shape[1], dtype=torch.float64)
    share = torch.full((n_images, n_feat, n_orders), 1 / n_orders, dtype=torch.float64)
    weights.scatter_add_(2, gains.transpose(1, 2), share)
    weights.scatter_add_(2, before.transpose(1, 2), -share)
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
    until_settled = {"n_samples": 2}

    def exact(self, n_features: int) -> bool:
        return n_features <= self.max_exact_bands

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        if self.exact(n_features):
            return (2**n_features - 1) * n_background + 1
        if n_background == 1:
            return self.n_samples * n_features + 1
        return self.n_samples * (n_features + 1)

    def note(self, n_features: int, n_background: int = 1, *, feature: str = "band") -> str | None:
        if self.exact(n_features):
            return None
        exact = self.with_options(max_exact_bands=n_features)
        return (
            f"shapley: {n_features} {feature}s → sampled Shapley values ({self.n_samples} "
            f"antithetic {feature} orders, {self.passes_per_image(n_features, n_background)} passes "
            f"per image); exact values need {exact.passes_per_image(n_features, n_background)} "
            "passes per image "
            f"(--method-option shapley.max_exact_bands={n_features} to pay for them)"
        )

    def coalitions(self, n_feat: int, n_background: int, n_images: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact: every coalition against every background. Sampled: each image's own band
        orders (so that images average out each other's draws); with background images, each
        pair of orders runs against one background drawn for it."""
        if self.exact(n_feat):
            return over_backgrounds(coalitions(n_feat), shapley_weights(n_feat), n_background)
        orders = antithetic_orders(n_images, n_feat, self.n_samples)
        if n_background == 1:
            present, weights = sampled_shapley_weights(orders)
            return present, weights, torch.zeros(present.shape[1], dtype=torch.long)
        present, weights = sampled_shapley_weights(orders, shared_start=False)
        pairs = -(-self.n_samples // 2)
        drawn = torch.randint(n_background, (n_images, pairs))
        pick = drawn.repeat_interleave(2, dim=1)[:, :self.n_samples]  # (N, orders)
        return present, weights, pick.repeat_interleave(n_feat + 1, dim=1)


def antithetic_orders(n_images: int, n_feat: int, n_samples: int) -> torch.Tensor:
    """(N, S, F) feature orders per image in pairs, each drawn order followed by its reverse: a
    band that joins early in one joins late in the other, which halves the error of Shapley value
    sampling at the same cost on the models measured (README, "Exact or sampled")."""
    pairs = -(-n_samples // 2)
    drawn = torch.rand(n_images, pairs, n_feat).argsort(dim=2)
    return torch.stack([drawn, drawn.flip(2)], dim=2).flatten(1, 2)[:, :n_samples]
