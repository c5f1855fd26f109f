"""What every attribution method shares: the call signature, the result, the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from xband.errors import XbandError
from xband.forward import PassSizes


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
    settings: dict = field(default_factory=dict)  # per-method options by method name
    features: torch.Tensor | None = None  # (B,) feature (band group) of each band; None: the bands
    passes: PassSizes = field(default_factory=PassSizes)  # images per network pass
    inference: nn.Module | None = None  # the same network, faster for forward-only passes

    @property
    def forward_only(self) -> nn.Module:
        """The network for passes without gradients."""
        return self.forward if self.inference is None else self.inference

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


def n_features(x: torch.Tensor, features: torch.Tensor | None) -> int:
    return x.shape[1] if features is None else int(features.max()) + 1


def blocks(n_images: int, n_variants: int, pass_size: int) -> Iterator[tuple[slice, slice]]:
    """(variants, images) slices covering every (variant, image) pair in blocks of at most about
    `pass_size` pairs: a few variants of all images, or one variant of a run of images.

    A block is built with one broadcast write, (variants, 1, ...) against (1, images, ...),
    instead of gathering each pair's image."""
    images = min(n_images, pass_size)
    variants = max(1, pass_size // images)
    for first in range(0, n_variants, variants):
        for start in range(0, n_images, images):
            yield slice(first, first + variants), slice(start, start + images)


def input_gradients(points: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
    """∂f_t/∂x at every image of `points` for its target class, in passes of the measured best
    size (`ctx.passes.gradient`); the same numbers as Captum's Saliency without abs."""
    grads = []
    with torch.enable_grad():
        for part, goal in zip(points.split(ctx.passes.gradient),
                              target.split(ctx.passes.gradient), strict=True):
            part = part.detach().requires_grad_(True)
            output = ctx.forward(part).gather(1, goal.view(-1, 1)).sum()
            grads.append(torch.autograd.grad(output, part)[0])
    return torch.cat(grads)


def pixel_mean(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().mean(dim=(2, 3)).cpu().numpy().astype(np.float64)


def pixel_sum(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().sum(dim=(2, 3)).cpu().numpy().astype(np.float64)
