"""LIME and KernelSHAP over bands: a linear surrogate of which bands are present.

Captum's Lime and KernelShap explain a batch one image at a time, one small forward pass per
image. Here the band subsets are drawn with Captum's own samplers, every (image, subset) pair goes
through the network in passes of about two batches, and Captum's surrogate models are fitted per
image with Captum's weights: given the same subsets, the numbers are Captum's
(tests/test_speed.py).
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap, Lime
from captum.attr._core.lime import default_perturb_func
from torch.distributions.categorical import Categorical
from torch.utils.data import DataLoader, TensorDataset

from xband.methods._base import BandAttribution, Batch, Context, Method, n_features, register
from xband.methods._coalitions import feature_of_band, masked_outputs, target_values


class _SurrogateMethod(Method):
    """Fit a surrogate on random band subsets (absent bands at their baseline) per image."""

    kind = "group"
    signed = True
    grouped = True
    defaults = {"n_samples": 64}
    explainer: type

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return options["n_samples"]

    def subsets(self, explainer, n_feat: int, n_samples: int) -> torch.Tensor:
        """(n_samples, F) 0/1 band-feature subsets for one image, from Captum's sampler."""
        raise NotImplementedError

    def weights(self, explainer, batch: Batch, ctx: Context, present: torch.Tensor) -> torch.Tensor:
        """(N, K) sample weights of the surrogate fit, as Captum's similarity function gives them."""
        raise NotImplementedError

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        n_samples = ctx.options(self)["n_samples"]
        n_feat = n_features(batch.x, ctx.features)
        explainer = self.explainer(ctx.forward)
        present = torch.stack([self.subsets(explainer, n_feat, n_samples) for _ in batch.x])
        values = target_values(masked_outputs(batch, ctx, present, ctx.baseline), batch.target)
        weights = self.weights(explainer, batch, ctx, present)
        surrogate = explainer.interpretable_model
        coefficients = []
        for subsets, value, weight in zip(present.float(), values.float().cpu(), weights.float(),
                                          strict=True):
            surrogate.fit(DataLoader(TensorDataset(subsets, value, weight), batch_size=n_samples))
            coefficients.append(surrogate.representation().detach().reshape(-1))
        return BandAttribution(torch.stack(coefficients).double().numpy())


@register
class LimeMethod(_SurrogateMethod):
    """Captum's Lime (Ribeiro et al. 2016): sparse linear surrogate, weighted by similarity."""

    name = "lime"
    label = "LIME (bands)"
    units = "surrogate coefficient: output change when the band is present, output units"
    explainer = Lime

    def subsets(self, explainer, n_feat: int, n_samples: int) -> torch.Tensor:
        return torch.cat([default_perturb_func(torch.empty(0), num_interp_features=n_feat)
                          for _ in range(n_samples)])

    def weights(self, explainer, batch: Batch, ctx: Context, present: torch.Tensor) -> torch.Tensor:
        """Captum's default kernel, exp(−d²/2) with d the cosine distance between the image and
        the image with absent bands at the baseline, from per-band sums instead of every pixel."""
        x = batch.x.double()
        base = ctx.baseline.double().view(1, 1, -1)
        keep = present[..., feature_of_band(x.shape[1], ctx)].to(x.device).double()  # (N, K, B)
        drop = 1 - keep
        square = (x * x).sum(dim=(2, 3)).unsqueeze(1)  # (N, 1, B)
        total = x.sum(dim=(2, 3)).unsqueeze(1)
        pixels = x.shape[2] * x.shape[3]
        dot = (keep * square + drop * base * total).sum(dim=2)
        norm_perturbed = (keep * square + drop * pixels * base**2).sum(dim=2).sqrt()
        norm_image = square.sum(dim=2).sqrt()
        eps = 1e-8
        cosine = dot / (norm_image.clamp(min=eps) * norm_perturbed.clamp(min=eps))
        return torch.exp(-((1 - cosine) ** 2) / 2).cpu()


@register
class KernelShapMethod(_SurrogateMethod):
    """Captum's KernelShap (Lundberg & Lee 2017): the Shapley-kernel weighted surrogate."""

    name = "kernel_shap"
    label = "KernelSHAP (bands)"
    units = "approximate Shapley value, output units"
    defaults = {"n_samples": 128}
    explainer = KernelShap

    def subsets(self, explainer, n_feat: int, n_samples: int) -> torch.Tensor:
        sizes = torch.arange(n_feat, dtype=torch.float)
        probs = torch.tensor(n_feat - 1) / (sizes * (n_feat - sizes))  # as KernelShap.attribute
        probs[0] = 0.0
        draws = explainer.kernel_shap_perturb_generator(
            torch.empty(0), num_select_distribution=Categorical(probs), num_interp_features=n_feat)
        return torch.cat([next(draws) for _ in range(n_samples)])

    def weights(self, explainer, batch: Batch, ctx: Context, present: torch.Tensor) -> torch.Tensor:
        """1, and a large weight for the empty and the full subset (Captum's kernel)."""
        size = present.sum(dim=2)
        ends = (size == 0) | (size == present.shape[2])
        return torch.where(ends, float(explainer.inf_weight), 1.0)
