"""What every attribution method shares: the call, the result, the options, the families.

A method is a configured, immutable object (`IntegratedGradients(n_steps=64)`) with one verb,
`attribute(batch, ctx) -> BandAttribution`: one score per band (or per band group) and image.
Two families share their machinery: `GradientMethod`s read input gradients and keep per-pixel
maps; `BandSubsetMethod`s evaluate the network on copies of each image with some band features
removed (`_coalitions.masked_outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from xband.errors import BadValue, XbandError, whole_number


class SharedOutputs:
    """The network's outputs for masked copies of images, kept while the methods work on one
    batch: a copy is named by its image's position, which alternative its removed bands took
    (`Context.removal_keys`) and which bands it keeps, so that band ablation, permutation,
    Shapley, LIME and KernelSHAP, on bands and on band groups, pay for a copy once."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}  # a copy's name → its row of `outputs()`
        self.blocks: list[torch.Tensor] = []  # (P, C) outputs of the copies, in row order
        self.alternatives: dict[tuple, int] = {}  # removal key → its number in copy names
        self.evaluated = self.reused = 0  # copies through the network, copies found here

    def add(self, names: list[bytes], outputs: torch.Tensor) -> None:
        """Keep the (P, C) `outputs` of the copies called `names`."""
        self.index.update(zip(names, range(len(self.index), len(self.index) + len(names)),
                              strict=True))
        self.blocks.append(outputs)

    def outputs(self) -> torch.Tensor:
        """(P, C) every copy's outputs, row `index[name]` for each name."""
        if len(self.blocks) > 1:
            self.blocks = [torch.cat(self.blocks)]
        return self.blocks[0]


@dataclass
class Batch:
    """Images to explain, channels-first in the model's input space."""

    x: torch.Tensor  # (N, B, H, W)
    target: torch.Tensor  # (N,) class whose output is explained
    label: torch.Tensor  # (N,) true class, or predicted class where labels are unknown
    index: np.ndarray  # (N,) positions among the explained images
    # outputs of masked copies already computed for these images (None: computed per call)
    shared: SharedOutputs | None = None
    # (N, K, H, W) what the network takes beside the bands (a segmentation run's class mask,
    # `xband.models.segmentation`): never removed nor scored, every copy of an image carries
    # its own (`network_input`); None: the network takes the bands alone
    fixed: torch.Tensor | None = None

    def rows(self, chosen: np.ndarray) -> Batch:
        """The batch of the `chosen` rows ((N,) bools), sharing its computed outputs."""
        pick = torch.from_numpy(np.flatnonzero(chosen)).to(self.x.device)
        return Batch(self.x[pick], self.target[pick], self.label[pick], self.index[chosen],
                     self.shared, None if self.fixed is None else self.fixed[pick])


@dataclass
class Context:
    """What a method may use besides the batch; the same for every method in one run."""

    forward: nn.Module  # channels-first input → logits or probabilities
    baseline: torch.Tensor  # (1, B, 1, 1) a removed band's value, unless `background` is set
    band_std: torch.Tensor  # (B,) spread of each band over the data
    donors: Callable[[np.ndarray, int], torch.Tensor]  # (positions, repeat) → other images, seeded
    passes: PassSizes  # images per network pass, forward-only and with gradients
    features: torch.Tensor | None = None  # (B,) feature (band group) of each band; None: the bands
    # multi-label: a label is predicted where its output exceeds this; None: the largest output
    threshold: float | None = None
    # the data baseline: a removed band takes that band of this many other images of the data
    # per image (donors, repeats 0…M−1), the score being the mean over them; 0: `baseline`
    background: int = 0
    # segmentation (xband.models.segmentation.ClassPixels): the outputs are C class scores,
    # then C shares of each class's pixels predicted as it, by which a class counts as found
    pixel_shares: bool = False

    @property
    def n_background(self) -> int:
        """Images a removed band is taken from in turn, per image (1: the constant baseline)."""
        return max(1, self.background)

    def removal_keys(self) -> tuple[tuple, ...]:
        """A name for each alternative of `removal`, the same whichever method asks: the
        constant baseline, or donor repeat r (the images permutation importance shuffles in)."""
        if not self.background:
            return (("constant",),)
        return tuple(("donor", r) for r in range(self.background))

    def removal(self, batch: Batch) -> torch.Tensor:
        """What removed bands of the batch become: (1, 1, B, 1, 1) the constant baseline, or
        (M, N, B, H, W) M background images per image."""
        if not self.background:
            return self.baseline.unsqueeze(0)
        return torch.stack([self.donors(batch.index, r) for r in range(self.background)])


@dataclass(frozen=True)
class PassSizes:
    """Images per network pass, forward-only and forward+backward (xband.run.tuning chooses them).
    Random draws are made per batch of images, not per pass."""

    forward: int = 64
    gradient: int = 64

    def as_dict(self) -> dict:
        return {"forward": self.forward, "gradient": self.gradient}


@dataclass
class BandAttribution:
    """One method's answer for a batch: a score per feature, and pixel maps where the method has them."""

    scores: np.ndarray  # (N, F)
    maps: torch.Tensor | None = None  # (N, B, H, W)


@dataclass(frozen=True)
class Method:
    """An attribution method reduced to one score per band, with its options as fields.

    Subclasses set the class attributes, declare their options as dataclass fields (`option`:
    whole numbers from 1 to a maximum, with a line of help) and implement `attribute`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    kind: ClassVar[str]  # "gradient" | "attribution" | "perturbation" | "dataset"
    signed: ClassVar[bool]
    units: ClassVar[str]
    grouped: ClassVar[bool] = False  # removes or shuffles the bands of a feature together
    has_maps: ClassVar[bool] = False  # gives per-pixel maps
    # option values in the rounds until settled: the fewest random draws per image that keep its
    # scores unbiased, the class's answer taking its precision from more images (README, "Few
    # draws per image"); options a user sets win
    until_settled: ClassVar[dict[str, int]] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            name = f"{self.name}.{field.name}"
            value = whole_number(getattr(self, field.name), name)
            maximum, why = field.metadata["maximum"], field.metadata["why"]
            if value > maximum:  # refused now rather than failing for memory hours later
                raise BadValue(name, value if value < 1e15 else float(value),
                               f"at most {maximum} ({why})")
            object.__setattr__(self, field.name, value)

    def options(self) -> dict:
        """The method's options and their values."""
        return dataclasses.asdict(self)

    @classmethod
    def option_help(cls) -> list[tuple[str, object, str]]:
        """(option, default, what it does and its largest value) for each option."""
        return [(f.name, f.default, f"{f.metadata['help']} (at most {f.metadata['maximum']})")
                for f in dataclasses.fields(cls)]

    @classmethod
    def largest(cls, option: str) -> int:
        """The largest value `option` takes."""
        return next(f.metadata["maximum"] for f in dataclasses.fields(cls) if f.name == option)

    def with_options(self, **options) -> Method:
        """A copy with some options changed; unknown options are named with the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise XbandError(f"method {self.name} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(sorted(known)) or 'none'}.")
        return dataclasses.replace(self, **options)

    def passes_per_image(self, n_features: int, n_background: int = 1) -> int:
        """Forward (+backward) passes one image costs with `n_background` background images
        (1: a constant baseline); used to pick sampled forms and to report."""
        return 1

    def note(self, n_features: int, n_background: int = 1, *, feature: str = "band") -> str | None:
        """A line for the report when the method runs in a cheaper form than asked; `feature`:
        what the features are ("band", "region")."""
        return None

    def attribute(self, batch: Batch, ctx: Context) -> BandAttribution:
        raise NotImplementedError

    def info(self) -> dict:
        return {"label": self.label, "kind": self.kind, "signed": self.signed, "units": self.units}


def option(default: int, help: str, *, maximum: int, why: str):  # noqa: A002 - argparse's name
    """A method option: a whole number from 1 to `maximum` with a default and a line of help;
    `why` says what a larger value would cost (arrays that do not fit in memory, passes that
    never end)."""
    return dataclasses.field(default=default, metadata={"help": help, "maximum": maximum,
                                                        "why": why})


@dataclass(frozen=True)
class GradientMethod(Method):
    """Methods computed from input gradients ∂f_t/∂x; they keep per-pixel maps, and their band
    scores are summed over a band group's bands."""

    kind = "attribution"
    signed = True
    has_maps = True


@dataclass(frozen=True)
class BandSubsetMethod(Method):
    """Methods that evaluate the network on copies of each image with some band features removed
    (replaced by the baseline, or by another image's bands); a band group is one feature."""

    kind = "perturbation"
    signed = True
    grouped = True


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


def network_input(bands: torch.Tensor, fixed: torch.Tensor | None) -> torch.Tensor:
    """What the network takes for images whose bands are `bands` (N, B, H, W): the bands, then
    the channels of `Batch.fixed` of the images they are copies of (N, K, H, W)."""
    return bands if fixed is None else torch.cat([bands, fixed.to(bands.dtype)], dim=1)


def input_gradients(points: torch.Tensor, target: torch.Tensor, ctx: Context,
                    fixed: torch.Tensor | None = None) -> torch.Tensor:
    """∂f_t/∂x at every image of `points` for its target class, in passes of the measured best
    size (`ctx.passes.gradient`); the same numbers as Captum's Saliency without abs. fixed: the
    points' `Batch.fixed` channels, which the network takes beside the bands (no gradient)."""
    grads = []
    size = ctx.passes.gradient
    parts = [None] * -(-len(points) // size) if fixed is None else fixed.split(size)
    with torch.enable_grad():
        for part, goal, beside in zip(points.split(size), target.split(size), parts, strict=True):
            part = part.detach().requires_grad_(True)
            output = ctx.forward(network_input(part, beside)).gather(1, goal.view(-1, 1)).sum()
            grads.append(torch.autograd.grad(output, part)[0])
    return torch.cat(grads)


def predicted(outputs: torch.Tensor, label: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Whether `label` is predicted from `outputs` (..., C), `label` shaped like outputs[..., 0]:
    the largest output, or, multi-label, an output above `ctx.threshold`; segmentation
    (`ctx.pixel_shares`), the share of the class's pixels predicted as it, in [0, 1]."""
    if ctx.pixel_shares:
        shares = outputs[..., outputs.shape[-1] // 2:]
        return shares.gather(-1, label.unsqueeze(-1)).squeeze(-1)
    if ctx.threshold is None:
        return outputs.argmax(dim=-1) == label
    return outputs.gather(-1, label.unsqueeze(-1)).squeeze(-1) > ctx.threshold


def background_draws(shape: tuple[int, ...], ctx: Context) -> torch.Tensor:
    """Which background image each of a `shape` of random evaluations uses, drawn uniformly
    (all 0, drawing nothing, with a constant baseline): sampled methods draw the background with
    the subset, an unbiased estimate of the expectation over the background at no extra pass."""
    if ctx.n_background == 1:
        return torch.zeros(shape, dtype=torch.long)
    return torch.randint(ctx.n_background, shape)


def pixel_mean(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().mean(dim=(2, 3)).cpu().numpy().astype(np.float64)


def pixel_sum(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().sum(dim=(2, 3)).cpu().numpy().astype(np.float64)
