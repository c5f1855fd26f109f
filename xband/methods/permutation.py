"""Permutation importance: how much accuracy drops when a band is shuffled across images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xband.methods._base import (
    BandAttribution,
    BandSubsetMethod,
    Batch,
    Context,
    n_features,
    option,
    predicted,
)
from xband.methods._coalitions import masked_outputs


@dataclass(frozen=True)
class Permutation(BandSubsetMethod):
    """Per image, the mean over seeded repeats of [correct(x) − correct(x with band b from another
    image)]; its mean over a class is that class's accuracy drop (Breiman 2001). Multi-label:
    correct means the explained label is predicted, and the mean is the drop in its recall;
    segmentation: correct is the share of the class's pixels predicted as it, and the mean is the
    drop in the class's pixel accuracy."""

    name = "permutation"
    label = "Permutation importance"
    kind = "dataset"
    units = "drop in accuracy when the band is shuffled across images"

    n_repeats: int = option(5, "shuffles of each band (each a fresh draw of donor images)",
                               maximum=1000, why="each shuffle is a pass per band and image")
    until_settled = {"n_repeats": 1}

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        return self.n_repeats * n_features

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        n_feat = n_features(batch.x, ctx.features)
        subsets = torch.cat([torch.ones(1, n_feat), 1 - torch.eye(n_feat)])  # all; all but f
        drop = torch.zeros(len(batch.x), n_feat, dtype=torch.float64)
        for repeat in range(self.n_repeats):
            donors = ctx.donors(batch.index, repeat)
            outputs = masked_outputs(batch, ctx, subsets, donors.unsqueeze(0),
                                     torch.zeros(len(subsets), dtype=torch.long),
                                     (("donor", repeat),))
            label = batch.label.unsqueeze(1).expand(*outputs.shape[:2])
            correct = predicted(outputs, label, ctx).double().cpu()
            drop += correct[:, :1] - correct[:, 1:]
        return BandAttribution((drop / self.n_repeats).numpy())
