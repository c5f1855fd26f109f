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

import numpy as np
import torch

from xband.methods._base import (
    BandAttribution,
    BandSubsetMethod,
    Batch,
    Context,
    SharedOutputs,
    n_features,
    network_input,
)
from xband.methods.removal import with_bands_removed


def feature_of_band(n_bands: int, ctx: Context) -> torch.Tensor:
    """(B,) feature each band belongs to: itself, or its band group."""
    return torch.arange(n_bands) if ctx.features is None else ctx.features.cpu()


def masked_outputs(batch: Batch, ctx: Context, present: torch.Tensor, absent: torch.Tensor,
                   pick: torch.Tensor, keys: tuple[tuple, ...]) -> torch.Tensor:
    """(N, K, C) outputs for every image with only the features in subset k present.

    present: (K, F) 0/1 over features, the same subsets for every image, or (N, K, F) per image.
    absent: what a removed band becomes, M alternatives: (M, N, B, H, W) per image, or
    (M, 1, B, 1, 1) one value per band (`Context.removal`); subset k of image n takes
    alternative pick[k] ((K,)) or pick[n, k] ((N, K)); keys: the M alternatives' names
    (`Context.removal_keys`). A copy computed before for the batch (`Batch.shared`), or twice
    in this call, goes through the network once.
    """
    x = batch.x
    n, n_bands = x.shape[:2]
    keep = present.to(torch.bool)[..., feature_of_band(n_bands, ctx)]
    if keep.dim() == 2:
        keep = keep.expand(n, -1, -1)
    n_subsets = keep.shape[1]
    pick = pick.expand(n, n_subsets).cpu().numpy()
    shared = batch.shared if batch.shared is not None else SharedOutputs()
    names = copy_names(batch.index, keep.cpu().numpy(), pick, keys, shared.alternatives)
    first: dict[bytes, int] = {}
    for i, name in enumerate(names):
        first.setdefault(name, i)
    missing = [name for name in first if name not in shared.index]
    if missing:
        todo = torch.tensor([first[name] for name in missing], dtype=torch.long)  # flat n·K + k
        shared.add(missing, _evaluate(x, batch.fixed, ctx, keep.to(x.device), absent,
                                      torch.from_numpy(pick).to(x.device), todo))
    shared.evaluated += len(missing)
    shared.reused += len(first) - len(missing)
    rows = np.fromiter(map(shared.index.__getitem__, names), dtype=np.int64, count=len(names))
    return shared.outputs()[torch.from_numpy(rows).to(x.device)].view(n, n_subsets, -1)


def _evaluate(x: torch.Tensor, fixed: torch.Tensor | None, ctx: Context, keep: torch.Tensor,
              absent: torch.Tensor, pick: torch.Tensor, todo: torch.Tensor) -> torch.Tensor:
    """(len(todo), C) outputs of the masked copies `todo` (flat image · K + subset), built and
    sent through the network pass by pass (`ctx.passes.forward` copies each), so that memory
    stays flat. fixed: the images' `Batch.fixed` channels, beside every copy's bands (None: no
    such channels); keep: (N, K, B) bands kept; pick: (N, K) the alternative of `absent` taken."""
    n_subsets = keep.shape[1]
    rows = torch.arange(len(x), device=x.device) if absent.shape[1] > 1 else torch.zeros(
        len(x), dtype=torch.long, device=x.device)
    outputs = []
    with torch.inference_mode():
        for part in todo.to(x.device).split(ctx.passes.forward):
            image, subset = part // n_subsets, part % n_subsets
            mask = keep[image, subset][..., None, None]  # (P, B, 1, 1)
            other = absent[pick[image, subset], rows[image]]  # (P, B, H or 1, W or 1)
            fixed_part = None if fixed is None else fixed[image]
            outputs.append(ctx.forward(network_input(with_bands_removed(x[image], mask, other),
                                                     fixed_part)))
    return torch.cat(outputs)


def copy_names(positions: np.ndarray, keep: np.ndarray, pick: np.ndarray,
               keys: tuple[tuple, ...], alternatives: dict[tuple, int]) -> list[bytes]:
    """The name of each masked copy, (N·K,) in row order from (N, K, B) bands kept and (N, K)
    alternatives picked: image position, the alternative (numbered by its key in
    `alternatives`, which grows; −1 with every band kept: nothing is removed), and the kept
    bands as bits, packed into bytes."""
    number = np.array([alternatives.setdefault(key, len(alternatives)) for key in keys])
    n, n_subsets = keep.shape[:2]
    head = np.empty((n, n_subsets, 2), dtype="<i8")
    head[..., 0] = np.asarray(positions, dtype=np.int64)[:, None]
    head[..., 1] = np.where(keep.all(axis=2), -1, number[pick])
    name = np.concatenate([head.view(np.uint8), np.packbits(keep, axis=2)], axis=2)
    return np.ascontiguousarray(name).view(f"V{name.shape[2]}").ravel().tolist()


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
        outputs = masked_outputs(batch, ctx, present, ctx.removal(batch), pick,
                                 ctx.removal_keys())
        values = target_values(outputs, batch.target).cpu()
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
