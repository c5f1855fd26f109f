"""What every attribution method shares: the call signature, the result, the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from xband.errors import XbandError


@dataclass
class Batch:
    """Images to explain, channels-first in the model's input space."""

    x: torch.Tensor  # (N, B, H, W)
    target: torch.Tensor  # (N,) class whose output is explained
    label: torch.Tensor  # (N,) true class, or predicted class where labels are unknown
    index: np.ndarray  # (N,) positions in the data set


@dataclass
class Context:
    """What a method may use besides the batch; the same for every method in one run."""

    forward: nn.Module  # channels-first input → logits or probabilities
    baseline: torch.Tensor  # (1, B, 1, 1) value a band takes when it is "removed"
    band_std: torch.Tensor  # (B,) spread of each band over the data
    donors: Callable[[np.ndarray, int], torch.Tensor]  # (index, repeat) → other images, seeded
    batch_size: int = 64
    settings: dict = field(default_factory=dict)  # per-method options by method name
    features: torch.Tensor | None = None  # (B,) feature (band group) of each band; None: the bands

    def options(self, method: Method) -> dict:
        """The method's defaults updated with what the user set for it."""
        return method.options(self.settings)


@dataclass
class BandAttribution:
    """One method's answer for a batch: a score per band, and pixel maps where the method has them."""

    scores: np.ndarray  # (N, B)
    maps: torch.Tensor | None = None  # (N, B, H, W)


class Method:
    """An attribution method reduced to one score per band.

    Subclasses set the class attributes and implement `attribute`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    kind: ClassVar[str]  # "gradient" | "attribution" | "group" | "dataset"
    signed: ClassVar[bool]
    units: ClassVar[str]
    defaults: ClassVar[dict] = {}
    grouped: ClassVar[bool] = False  # removes or shuffles `ctx.features` together (band groups)

    def options(self, settings: dict) -> dict:
        """The defaults updated with `settings[name]`, the user's per-method options."""
        return {**self.defaults, **settings.get(self.name, {})}

    def passes_per_image(self, n_bands: int, options: dict) -> int:
        """Forward (+backward) passes one image costs; used to pick sampled forms and to report."""
        return 1

    def note(self, n_bands: int, options: dict) -> str | None:
        """A line for the report when the method runs in a cheaper form than asked."""
        return None

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        raise NotImplementedError

    def info(self) -> dict:
        return {"label": self.label, "kind": self.kind, "signed": self.signed, "units": self.units}


METHODS: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under its name."""
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise XbandError(
            f"unknown method '{name}'. Choose from: {', '.join(METHODS)} (or 'all')."
        ) from None


def band_mask(x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
    """Captum feature mask over all pixels: one feature per band, or `features[b]` for band b
    (contiguous, see findings)."""
    n, b, h, w = x.shape
    ids = torch.arange(b, device=x.device) if features is None else features.to(x.device)
    return ids.view(1, b, 1, 1).expand(1, b, h, w).contiguous()


def n_features(x: torch.Tensor, features: torch.Tensor | None) -> int:
    return x.shape[1] if features is None else int(features.max()) + 1


def pass_size(ctx: Context) -> int:
    """Images per forward pass for methods that evaluate many variants of each image: two batches
    (13 bands × 64 images in one pass ran 1.3-2× slower than passes of 128 images on a small CNN
    and MobileNetV2; 128 is at or near the best batch size of the three benchmark models)."""
    return 2 * ctx.batch_size


def baseline_like(x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """The per-band baseline expanded to images of `x`'s size."""
    return baseline.expand(1, -1, x.shape[2], x.shape[3]).contiguous()


def group_scores(attr: torch.Tensor, features: torch.Tensor | None = None) -> np.ndarray:
    """Per-feature value of a group method: every pixel of a feature holds the feature's score.

    Read one pixel of one band per feature; summing over pixels would multiply the score by H·W.
    """
    if features is not None:
        first = [int(torch.nonzero(features == f)[0]) for f in range(int(features.max()) + 1)]
        attr = attr[:, first]
    return attr[:, :, 0, 0].detach().cpu().numpy().astype(np.float64)


def pixel_mean(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().mean(dim=(2, 3)).cpu().numpy().astype(np.float64)


def pixel_sum(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().sum(dim=(2, 3)).cpu().numpy().astype(np.float64)
