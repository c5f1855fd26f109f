"""The model's outputs with some bands removed, batched across images and band subsets.

Band ablation, band Shapley values, LIME, KernelSHAP and permutation importance all evaluate
the network on copies of each image in which the bands of some features are replaced (by the
baseline, or by another image's). Captum builds these copies one feature at a time through pixel
masks; here every (subset, image) pair of a batch goes through the network in passes of the
measured best size (`ctx.passes.forward`), built pass by pass so memory stays flat. The numbers
are Captum's (tests/test_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xband.methods._base import BandAttribution, BandSubsetMethod, Batch, Context, blocks, n_features


def feature_of_band(n_bands: int, ctx: Context) -> torch.Tensor:
    """(B,) feature each band belongs to: itself, or its band group."""
    return torch.arange(n_bands) if ctx.features is None else ctx.features.cpu()


def masked_outputs(batch: Batch, ctx: Context, present: torch.Tensor,
                   absent: torch.Tensor) -> torch.Tensor:
    """(N, K, C) outputs for every image with only the features in subset k present.

    present: (K, F) 0/1 over features, the same subsets for every image, or (N, K, F) per image.
    absent: what a removed band becomes, broadcastable to the batch: the (1, B, 1, 1) baseline
    or (N, B, H, W) other images.
    """
    x = batch.x
    n, n_bands = x.shape[:2]
    keep = present.to(torch.bool)[..., feature_of_band(n_bands, ctx)].to(x.device)
    if keep.dim() == 2:
        keep = keep.expand(n, -1, -1)
    n_subsets = keep.shape[1]
    absent = absent.expand_as(x)
    outputs = None
    with torch.inference_mode():
        for subsets, images in blocks(n, n_subsets, ctx.passes.forward):
            mask = keep[images, subsets].transpose(0, 1)[..., None, None]  # (k, n, B, 1, 1)
            variants = torch.where(mask, x[images].unsqueeze(0), absent[images].unsqueeze(0))
            out = ctx.forward(variants.flatten(0, 1)).view(*mask.shape[:2], -1)
            if outputs is None:
                outputs = out.new_empty(n, n_subsets, out.shape[-1])
            outputs[images, subsets] = out.transpose(0, 1)
    return outputs


def target_values(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, K) output of each image's target class from (N, K, C) outputs, in float64."""
    index = target.view(-1, 1, 1).expand(-1, outputs.shape[1], 1)
    return outputs.gather(2, index).squeeze(2).double()


@dataclass(frozen=True)
class LinearSubsetMethod(BandSubsetMethod):
    """Scores that are a fixed linear combination of the target output over fixed band subsets:
    one weight matrix over one masked-outputs path, φ = W v."""

    def coalitions(self, n_feat: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, F) 0/1 subsets of features present, and the (F, K) float64 weights W."""
        raise NotImplementedError

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        present, weights = self.coalitions(n_features(batch.x, ctx.features))
        values = target_values(masked_outputs(batch, ctx, present, ctx.baseline), batch.target)
        return BandAttribution((values.cpu() @ weights.T).numpy())
