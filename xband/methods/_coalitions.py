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


def masked_outputs(batch: Batch, ctx: Context, present: torch.Tensor, absent: torch.Tensor,
                   pick: torch.Tensor) -> torch.Tensor:
    """(N, K, C) outputs for every image with only the features in subset k present.

    present: (K, F) 0/1 over features, the same subsets for every image, or (N, K, F) per image.
    absent: what a removed band becomes, M alternatives: (M, N, B, H, W) per image, or
    (M, 1, B, 1, 1) one value per band (`Context.removal`); subset k of image n takes
    alternative pick[k] ((K,)) or pick[n, k] ((N, K)).
    """
    x = batch.x
    n, n_bands = x.shape[:2]
    keep = present.to(torch.bool)[..., feature_of_band(n_bands, ctx)].to(x.device)
    if keep.dim() == 2:
        keep = keep.expand(n, -1, -1)
    n_subsets = keep.shape[1]
    pick = pick.to(x.device).expand(n, n_subsets)
    rows = torch.arange(n, device=x.device) if absent.shape[1] > 1 else torch.zeros(
        n, dtype=torch.long, device=x.device)
    outputs = None
    with torch.inference_mode():
        for subsets, images in blocks(n, n_subsets, ctx.passes.forward):
            mask = keep[images, subsets].transpose(0, 1)[..., None, None]  # (k, n, B, 1, 1)
            other = absent[pick[images, subsets].T, rows[images]]  # (k, n, B, H or 1, W or 1)
            variants = torch.where(mask, x[images].unsqueeze(0), other)
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

    def coalitions(self, n_feat: int, n_background: int, n_images: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """0/1 subsets of features present, (K, F) or (N, K, F) per image; the float64 weights
        W, (F, K) or (N, F, K); and the background each subset is evaluated against: (K,), or
        (N, K) per image."""
        raise NotImplementedError

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        present, weights, pick = self.coalitions(n_features(batch.x, ctx.features),
                                                 ctx.n_background, len(batch.x))
        values = target_values(masked_outputs(batch, ctx, present, ctx.removal(batch), pick),
                               batch.target).cpu()
        scores = values @ weights.T if weights.dim() == 2 else torch.einsum(
            "nk,nfk->nf", values, weights)
        return BandAttribution(scores.numpy())


def over_backgrounds(present: torch.Tensor, weights: torch.Tensor, n_background: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed design (subsets, weights) evaluated against every background and averaged: the
    expectation over the background, exactly. The subset with every feature present does not
    depend on the background and is evaluated once."""
    if n_background == 1:
        return present, weights, torch.zeros(len(present), dtype=torch.long)
    full = present.bool().all(dim=1)
    rest = present[~full]
    return (torch.cat([present[full], rest.repeat(n_background, 1)]),
            torch.cat([weights[:, full], weights[:, ~full].repeat(1, n_background) / n_background],
                      dim=1),
            torch.cat([torch.zeros(int(full.sum()), dtype=torch.long),
                       torch.arange(n_background).repeat_interleave(len(rest))]))
