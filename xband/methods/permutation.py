"""Permutation importance: how much accuracy drops when a band is shuffled across images."""

from __future__ import annotations

import torch

from xband.methods._base import BandAttribution, Batch, Context, Method, n_features, register
from xband.methods._coalitions import masked_outputs


@register
class PermutationMethod(Method):
    """Per image, the mean over seeded repeats of [correct(x) − correct(x with band b from another
    image)]; its mean over a class is that class's accuracy drop (Breiman 2001)."""

    name = "permutation"
    label = "Permutation importance"
    kind = "dataset"
    signed = True
    units = "drop in accuracy when the band is shuffled across images"
    defaults = {"n_repeats": 5}
    grouped = True

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        return options["n_repeats"] * n_bands

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        repeats = ctx.options(self)["n_repeats"]
        shuffled = 1 - torch.eye(n_features(batch.x, ctx.features))  # subset f: all but f
        with torch.inference_mode():
            correct = (ctx.forward_only(batch.x).argmax(dim=1) == batch.label).double().cpu()
        drop = torch.zeros(len(batch.x), len(shuffled), dtype=torch.float64)
        for repeat in range(repeats):
            donors = ctx.donors(batch.index, repeat)
            predicted = masked_outputs(batch, ctx, shuffled, donors).argmax(dim=2)
            drop += correct.unsqueeze(1) - (predicted == batch.label.unsqueeze(1)).double().cpu()
        return BandAttribution((drop / repeats).numpy())
