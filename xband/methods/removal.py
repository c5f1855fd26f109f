"""What a removed band becomes: one vocabulary, and one way of removing bands, for the methods
and for the deletion checks.

- "data": that band of another image of the data (the run draws `background_images` of them
  per image and averages; the deletion curves take one seeded other image per image);
- "mean": the band's mean over the data;
- "zero": zero;
- "noise": noise with the band's mean and spread (deletion checks only);
- or one value per band, given by the user (the run only).

A constant does not always remove a band's information (product.md, "A trap with one constant
baseline"): "data" does, as an expectation over the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xband.errors import XbandError

DATA, MEAN, ZERO, NOISE = "data", "mean", "zero", "noise"
RUN_BASELINES = (DATA, MEAN, ZERO)  # --baseline (or one value per band)
DELETION_BASELINES = (MEAN, ZERO, DATA, NOISE)  # --deletion-baselines
ALIASES = {"shuffle": DATA}  # the deletion checks' name for "data" before version 0.3


def constant_values(baseline: str | Sequence[float], band_mean: np.ndarray) -> np.ndarray:
    """(B,) the constant a removed band becomes: its mean (also recorded as the value of the
    data baseline), zero, or the user's values, checked against the band count."""
    if baseline in (MEAN, DATA):
        return band_mean
    if baseline == ZERO:
        return np.zeros(len(band_mean), dtype=np.float32)
    if len(baseline) != len(band_mean):
        raise XbandError(f"baseline has {len(baseline)} values but the images have "
                         f"{len(band_mean)} bands. Give one value per band.")
    return np.asarray(baseline, dtype=np.float32)


def removal_values(baseline: str, x: torch.Tensor, band_mean: np.ndarray, band_std: np.ndarray,
                   seed: int) -> torch.Tensor:
    """(n, B, H, W) what each band of each image of `x` becomes when removed: the band's mean,
    zero, the band of another image of `x` (one seeded permutation), or noise with the band's
    mean and spread (seeded)."""
    mean = torch.from_numpy(band_mean).to(x).view(1, -1, 1, 1)
    if baseline == MEAN:
        return mean.expand_as(x)
    if baseline == ZERO:
        return torch.zeros_like(x)
    if baseline == DATA:
        order = np.random.default_rng([seed, 11]).permutation(len(x))
        return x[torch.from_numpy(order)]
    if baseline == NOISE:
        std = torch.from_numpy(band_std).to(x).view(1, -1, 1, 1)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 13)).to(x)
        return mean + std * noise
    raise XbandError(f"deletion baseline '{baseline}' is not one of: "
                     f"{', '.join(DELETION_BASELINES)}.")


def with_bands_removed(x: torch.Tensor, keep: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`x` (…, B, H, W) with the bands not in `keep` (…, B, 1, 1 broadcastable) replaced by
    `values` (broadcastable to `x`)."""
    return torch.where(keep, x, values)
