"""LIME and KernelSHAP over bands: a linear surrogate of which bands are present."""

from __future__ import annotations

import torch
from captum.attr import KernelShap, Lime

from xband.methods._base import (
    BandAttribution,
    Batch,
    Context,
    Method,
    band_mask,
    baseline_like,
    group_scores,
    register,
)


def _present_bands(curr_sample: torch.Tensor, original_inputs: torch.Tensor, **kwargs) -> torch.Tensor:
    """The image with absent bands at their baseline, for a 0/1 vector over features (bands or
    band groups).

    Same result as Captum's default transform for a mask constant over each band's pixels,
    without indexing every pixel through the mask (3-4x faster per perturbation, measured).
    """
    feature_of_band = kwargs["feature_mask"][0, :, 0, 0]
    present = curr_sample[0][feature_of_band].view(1, -1, 1, 1).to(original_inputs.dtype)
    baselines = kwargs["baselines"]
    return baselines + present * (original_inputs - baselines)


class _SurrogateMethod(Method):
    """Fit a surrogate on random band subsets (absent bands at their baseline) per image."""

    kind = "group"
    signed = True
    grouped = True
    defaults = {"n_samples": 64}
    explainer: type

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return options["n_samples"]

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        n_samples = ctx.options(self)["n_samples"]
        explainer = self.explainer(ctx.forward)
        explainer.from_interp_rep_transform = _present_bands
        with torch.no_grad():
            attr = explainer.attribute(
                batch.x,
                baselines=baseline_like(batch.x, ctx.baseline),
                target=batch.target,
                feature_mask=band_mask(batch.x, ctx.features),
                n_samples=n_samples,
                perturbations_per_eval=n_samples,
            )
        return BandAttribution(group_scores(attr, ctx.features))


@register
class LimeMethod(_SurrogateMethod):
    """Captum's Lime (Ribeiro et al. 2016): sparse linear surrogate, weighted by similarity."""

    name = "lime"
    label = "LIME (bands)"
    units = "surrogate coefficient: output change when the band is present, output units"
    explainer = Lime


@register
class KernelShapMethod(_SurrogateMethod):
    """Captum's KernelShap (Lundberg & Lee 2017): the Shapley-kernel weighted surrogate."""

    name = "kernel_shap"
    label = "KernelSHAP (bands)"
    units = "approximate Shapley value, output units"
    defaults = {"n_samples": 128}
    explainer = KernelShap
