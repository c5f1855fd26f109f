"""LIME and KernelSHAP over bands: a linear surrogate of which bands are present.

Captum's Lime and KernelShap explain a batch one image at a time, one small forward pass per
image, drawing one band subset per Python call. Here the subsets of the whole batch are drawn at
once from the same distributions, every (image, subset) pair goes through the network in passes
of the measured best size, and Captum's surrogate (scikit-learn's Lasso, or least squares, with
Captum's sample weights) is fitted per image: given the same subsets, the numbers are Captum's
(tests/test_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import Lasso, LinearRegression

from xband.methods._base import (
    BandAttribution,
    BandSubsetMethod,
    Batch,
    Context,
    background_draws,
    n_features,
    option,
)
from xband.methods._coalitions import feature_of_band, masked_outputs, target_values


@dataclass(frozen=True)
class SurrogateMethod(BandSubsetMethod):
    """Fit a surrogate on random band subsets (absent bands at their baseline) per image."""

    n_samples: int = option(64, "band subsets drawn per image (one forward pass each)",
                            maximum=10_000, why="the subsets of a batch are held at once, "
                            "images × subsets × bands")
    until_settled = {"n_samples": 32}

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return self.n_samples

    def subsets(self, n_images: int, n_feat: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K, F) 0/1 band-feature subsets, drawn as Captum's sampler draws them, and the
        (N, K) background each is evaluated against."""
        raise NotImplementedError

    def weights(self, batch: Batch, ctx: Context, present: torch.Tensor, absent: torch.Tensor,
                pick: torch.Tensor) -> torch.Tensor:
        """(N, K) sample weights of the surrogate fit, as Captum's similarity function gives them
        (absent, pick: as `masked_outputs` takes them)."""
        raise NotImplementedError

    def surrogate(self):
        """A scikit-learn linear model, as Captum's default for the method."""
        raise NotImplementedError

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        present, pick = self.subsets(len(batch.x), n_features(batch.x, ctx.features), ctx)
        absent = ctx.removal(batch)
        values = target_values(masked_outputs(batch, ctx, present, absent, pick,
                                              ctx.removal_keys()), batch.target)
        # float32, as Captum hands them to scikit-learn
        fits = zip(present.float().numpy(), values.float().cpu().numpy(),
                   self.weights(batch, ctx, present, absent, pick).float().numpy(), strict=True)
        return BandAttribution(np.stack([
            self.surrogate().fit(x, y, sample_weight=w).coef_.astype(np.float64)
            for x, y, w in fits]))


@dataclass(frozen=True)
class Lime(SurrogateMethod):
    """Captum's Lime (Ribeiro et al. 2016): sparse linear surrogate, weighted by similarity."""

    name = "lime"
    label = "LIME (bands)"
    units = "surrogate coefficient: output change when the band is present, output units"

    def subsets(self, n_images: int, n_feat: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        present = torch.bernoulli(torch.full((n_images, self.n_samples, n_feat), 0.5))
        return present, background_draws((n_images, self.n_samples), ctx)

    def surrogate(self):
        return Lasso(alpha=0.01)

    def weights(self, batch: Batch, ctx: Context, present: torch.Tensor, absent: torch.Tensor,
                pick: torch.Tensor) -> torch.Tensor:
        """Captum's default kernel, exp(−d²/2) with d the cosine distance between the image and
        the image with absent bands replaced, from per-band sums instead of every pixel."""
        x = batch.x.double()
        base = absent.double().expand(-1, len(x), -1, *x.shape[2:])  # (M, N, B, H, W)
        keep = present[..., feature_of_band(x.shape[1], ctx)].to(x.device).double()  # (N, K, B)
        drop = 1 - keep
        index = pick.to(x.device).unsqueeze(2).expand(-1, -1, x.shape[1])  # (N, K, B)
        square = (x * x).sum(dim=(2, 3)).unsqueeze(1)  # (N, 1, B)
        cross = torch.einsum("nbhw,mnbhw->nmb", x, base).gather(1, index)  # Σ pixels x·replaced
        base_square = (base * base).sum(dim=(3, 4)).transpose(0, 1).gather(1, index)
        dot = (keep * square + drop * cross).sum(dim=2)
        norm_perturbed = (keep * square + drop * base_square).sum(dim=2).sqrt()
        norm_image = square.sum(dim=2).sqrt()
        eps = 1e-8
        cosine = dot / (norm_image.clamp(min=eps) * norm_perturbed.clamp(min=eps))
        return torch.exp(-((1 - cosine) ** 2) / 2).cpu()


@dataclass(frozen=True)
class KernelShap(SurrogateMethod):
    """Captum's KernelShap (Lundberg & Lee 2017): the Shapley-kernel weighted surrogate."""

    name = "kernel_shap"
    label = "KernelSHAP (bands)"
    units = "approximate Shapley value, output units"
    ENDS_WEIGHT = 1e6  # Captum's weight of the full and the empty subset

    n_samples: int = option(128, "band subsets per image: all, none, and drawn by the "
                                 "Shapley kernel", maximum=10_000, why="the subsets of a "
                            "batch are held at once, images × subsets × bands")
    until_settled = {"n_samples": 32}

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return self.n_samples + n_background - 1

    def subsets(self, n_images: int, n_feat: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """All bands, none (against every background image: their mean is the surrogate's
        intercept), then subsets in pairs, each drawn subset followed by its complement, a pair
        against one background: its size k has probability ∝ (F−1)/(k(F−k)), uniform among
        subsets of that size (Captum's kernel_shap_perturb_generator). Pairs halve the error at
        the same cost on the models measured (README, "Exact or sampled")."""
        sizes = torch.arange(n_feat, dtype=torch.float)
        probs = torch.tensor(n_feat - 1) / (sizes * (n_feat - sizes))
        probs[0] = 0.0
        pairs = (self.n_samples - 1) // 2
        size = torch.multinomial(probs, n_images * pairs, replacement=True).view(n_images, pairs, 1)
        rank = torch.randn(n_images, pairs, n_feat).argsort(dim=2).argsort(dim=2)
        drawn = (rank >= n_feat - size).float()  # the `size` features with the largest draws
        paired = torch.stack([drawn, 1 - drawn], dim=2).flatten(1, 2)
        n_background = ctx.n_background
        ends = torch.cat([torch.ones(1, n_feat), torch.zeros(n_background, n_feat)])
        present = torch.cat([ends.expand(n_images, -1, -1), paired], dim=1)
        pick = torch.cat([torch.zeros(n_images, 1, dtype=torch.long),  # unused: all present
                          torch.arange(n_background).expand(n_images, -1),
                          background_draws((n_images, pairs), ctx).repeat_interleave(2, dim=1)],
                         dim=1)
        keep = self.passes_per_image(n_feat, n_background)
        return present[:, :keep], pick[:, :keep]

    def surrogate(self):
        return LinearRegression()

    def weights(self, batch: Batch, ctx: Context, present: torch.Tensor, absent: torch.Tensor,
                pick: torch.Tensor) -> torch.Tensor:
        """1, and a large weight for the empty and the full subset (Captum's kernel)."""
        size = present.sum(dim=2)
        ends = (size == 0) | (size == present.shape[2])
        return torch.where(ends, self.ENDS_WEIGHT, 1.0)
