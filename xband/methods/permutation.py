"""Permutation importance: how much accuracy drops when a band is shuffled across images."""

from __future__ import annotations

import torch

from xband.methods._base import BandAttribution, Batch, Context, Method, register


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
        n, n_bands = batch.x.shape[:2]
        repeats = ctx.options(self)["n_repeats"]
        # copy f of each image has the bands of feature f taken from the image's donor
        features = torch.arange(n_bands) if ctx.features is None else ctx.features.cpu()
        n_feat = int(features.max()) + 1
        swap = (features.view(1, -1) == torch.arange(n_feat).view(-1, 1)).to(batch.x.device)
        swap = swap.view(1, n_feat, n_bands, 1, 1)
        drop = torch.zeros(n, n_feat, dtype=torch.float64)
        with torch.inference_mode():
            correct = ctx.forward(batch.x).argmax(dim=1) == batch.label
            for repeat in range(repeats):
                donors = ctx.donors(batch.index, repeat)
                shuffled = torch.where(swap, donors.unsqueeze(1), batch.x.unsqueeze(1))
                predicted = torch.cat([
                    ctx.forward(part).argmax(dim=1)
                    for part in shuffled.flatten(0, 1).split(ctx.batch_size * 4)
                ]).view(n, n_feat)
                hit = predicted == batch.label.unsqueeze(1)
                drop += (correct.unsqueeze(1).double() - hit.double()).cpu()
        return BandAttribution((drop / repeats).numpy())
