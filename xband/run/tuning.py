"""How many images go through the network at once: chosen by measurement only when it is clearly
faster than the plain default, within a small time budget, and remembered per model and machine.

A pass size changes the speed, and the numbers only at float rounding (the network's own
arithmetic can differ with the batch it sees). Remembering the choice per model and machine
keeps repeated runs identical; measuring within a budget keeps tuning from costing more than it
can save on a small job.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xband.files import write_text
from xband.methods._base import PassSizes
from xband.run import memory

DEFAULT_SIZE = 64
CANDIDATE_SIZES = (32, 64, 128, 256)
REFERENCE_PIXELS = DEFAULT_SIZE * 64 * 64  # pixels per pass at the default: 64 images of 64×64
LARGEST_SIZE = 1024
ROUNDS = 3  # timed passes per size, taken in turns with the other sizes
MARGIN = 0.10  # a size is adopted only if at least this much faster than the default
KINDS = ("forward", "gradient")
TUNING_SHARE = 0.05  # of the run's estimated time, at most, spent making it faster
SPEED_UP_COST_S = 0.5  # about what trying the network speed-ups costs on a small CNN, 2 cores


@dataclass(frozen=True)
class PassTiming:
    """The pass sizes a run uses, the measured seconds per image of one pass of each kind at
    those sizes (for cost estimates), where they came from, and what choosing them cost."""

    sizes: PassSizes
    seconds_per_image: dict[str, float]  # "forward", "gradient" → seconds
    source: str  # "measured", "remembered", "default", or why the default
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"images_per_pass": self.sizes.as_dict(), "seconds_per_image_pass":
                {k: float(f"{v:.3g}") for k, v in self.seconds_per_image.items()},
                "source": self.source, "tuning_s": round(self.seconds, 3)}


@dataclass(frozen=True)
class Choice:
    """A pass size, its seconds per image, whether the timings were steady enough to remember
    (the default's passes within `STEADY` of each other), and the sizes timed."""

    size: int
    seconds_per_image: float
    steady: bool
    tried: tuple[int, ...]


STEADY = 1.25  # slowest / fastest timing of the default for a choice worth remembering


def choose_size(measure: Callable[[int], float], budget_s: float, *, first: float | None = None,
                default: int = DEFAULT_SIZE, candidates: Iterable[int] = CANDIDATE_SIZES,
                rounds: int = ROUNDS, margin: float = MARGIN) -> Choice:
    """The pass size to use, chosen by timing.

    measure(size) runs one pass of `size` images and returns its seconds; `first`, when given,
    is the time of a pass at the default size already taken after a warm-up. Every candidate
    whose timing fits in `budget_s` (judged from the default's speed) is timed in turns with the
    default, `rounds` times each after one warm-up pass. A candidate replaces the default only
    if its median time per image is at least `margin` below the default's and even its slowest
    pass beat the default's fastest: an ambiguous measurement keeps the default.
    """
    started = time.perf_counter()
    if first is None:
        measure(default)  # the first pass of a new shape sets up kernels
        first = measure(default)
    per_image = {default: [first / default]}
    guess = first / default
    sizes = [default]
    planned = guess * default * (rounds - 1)  # the default's further timings
    for size in candidates:
        needed = guess * size * (rounds + 1)  # a warm-up and `rounds` timings
        if size != default and planned + needed <= budget_s - (time.perf_counter() - started):
            sizes.append(size)
            planned += needed
    for size in sizes[1:]:
        measure(size)
        per_image[size] = []
    for round_no in range(rounds if len(sizes) > 1 else 0):
        for size in sizes:
            if size != default or round_no > 0:
                per_image[size].append(measure(size) / size)
    typical = {size: statistics.median(times) for size, times in per_image.items()}
    best = min(typical, key=typical.get)
    faster = best != default and clearly_faster(per_image[best], per_image[default], margin)
    chosen = best if faster else default
    steady = max(per_image[default]) <= STEADY * min(per_image[default])
    return Choice(chosen, typical[chosen], steady, tuple(sizes))


def clearly_faster(candidate: list[float], default: list[float], margin: float = MARGIN) -> bool:
    """The rule every tuning choice follows: the candidate's median time at least `margin` below
    the default's, and even its slowest timing below the default's fastest."""
    return (statistics.median(candidate) <= (1 - margin) * statistics.median(default)
            and max(candidate) < min(default))


def sizes_for(image_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """The default pass size and the candidates for images of `image_shape` (..., H, W): 64 and
    32…256 for images of 64×64 pixels or more; for smaller images as many times more images per
    pass (a power of two, at most 1024) as keep the pixels per pass those of 64 images of 64×64,
    so that each layer's fixed cost per pass is spread over as much work."""
    height, width = image_shape[-2:]
    scale = max(1, REFERENCE_PIXELS // (DEFAULT_SIZE * height * width))
    default = min(LARGEST_SIZE, DEFAULT_SIZE << (scale.bit_length() - 1))
    return default, tuple(size for size in (default // 2, default, default * 2, default * 4)
                          if size <= LARGEST_SIZE)


def _forward_pass(forward: nn.Module, example: torch.Tensor) -> Callable[[int], float]:
    """One forward-only pass of `size` perturbed copies of the example images, as the band
    subset methods build them (a masked write, then the network)."""
    def measure(size: int) -> float:
        x = example[torch.arange(size) % len(example)]
        mask = (torch.arange(x.shape[1], device=x.device) % 2 == 0).view(1, -1, 1, 1)
        started = time.perf_counter()
        with torch.inference_mode():
            forward(torch.where(mask, x, torch.zeros_like(x)))
        _synchronise(x)
        return time.perf_counter() - started
    return measure


def _gradient_pass(forward: nn.Module, example: torch.Tensor) -> Callable[[int], float]:
    """One forward+backward pass with respect to `size` copies of the example images."""
    def measure(size: int) -> float:
        x = example[torch.arange(size) % len(example)].detach().requires_grad_(True)
        started = time.perf_counter()
        with torch.enable_grad():
            torch.autograd.grad(forward(x)[:, 0].sum(), x)
        _synchronise(x)
        return time.perf_counter() - started
    return measure


def _synchronise(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


PASSES = {"forward": _forward_pass, "gradient": _gradient_pass}


@dataclass(frozen=True)
class Verdict:
    """Whether the speed-ups made the passes clearly faster, and whether the plain network's
    timings were steady (within `STEADY` of each other): a verdict worth remembering."""

    pays: bool
    steady: bool


def speed_ups_pay(time_plain: Callable[[], float], time_sped_up: Callable[[], float], *,
                  rounds: int = ROUNDS, margin: float = MARGIN) -> Verdict:
    """Whether the network with its speed-ups is clearly faster than the plain one: each timed
    `rounds` times in turns after a warm-up, under `clearly_faster`: a speed-up that keeps the
    numbers can still be slower on a given machine and model."""
    time_plain(), time_sped_up()
    plain, sped_up = [], []
    for _ in range(rounds):
        plain.append(time_plain())
        sped_up.append(time_sped_up())
    return Verdict(clearly_faster(sped_up, plain, margin), max(plain) <= STEADY * min(plain))


def run_seconds(forward: nn.Module, example: torch.Tensor, passes: dict[str, float],
                size: int = DEFAULT_SIZE) -> Callable[[], float]:
    """A timer of what the run's passes cost with `forward`: one pass of each kind of `size`
    images, weighted by `passes`, the run's passes per image of that kind."""
    measures = {kind: PASSES[kind](forward, example) for kind in passes}
    return lambda: sum(n * measures[kind](size) for kind, n in passes.items())


SMALLEST_TIMING = 8  # images per pass below which a timing says little about the run's passes


def timing_size(seconds_per_image: dict[str, float], budget_s: float) -> int | None:
    """Images per pass with which `speed_ups_pay` (a warm-up and `ROUNDS` timings of both
    networks, one pass of each kind) fits in `budget_s`, judged from the plain network's
    `seconds_per_image`: the default size, or fewer; None below `SMALLEST_TIMING`."""
    per_image = 2 * (ROUNDS + 1) * sum(seconds_per_image.values())
    size = DEFAULT_SIZE if per_image * DEFAULT_SIZE <= budget_s else int(budget_s / per_image)
    return size if size >= SMALLEST_TIMING else None


def plain_timing(forward: nn.Module, example: torch.Tensor, *, kinds: Iterable[str],
                 size: int) -> PassTiming:
    """One pass of each kind of `size` images, timed: passes as given, and the run's estimate."""
    started = time.perf_counter()
    seconds = {k: PASSES[k](forward, example)(size) / size for k in KINDS if k in set(kinds)}
    return PassTiming(PassSizes(size, size), seconds, "default",
                      time.perf_counter() - started)


def pass_timing(forward: nn.Module, example: torch.Tensor, *, kinds: Iterable[str],
                budget_s: float, cache: Path | None) -> PassTiming:
    """The pass sizes for `kinds` of passes ("forward", "gradient"), with seconds per image:
    those remembered in `cache` for this model and machine, else chosen by `choose_size` within
    `budget_s` seconds and remembered when the timings were steady."""
    started = time.perf_counter()
    kinds = [k for k in KINDS if k in set(kinds)]
    default, candidates = sizes_for(example.shape)
    remembered = _recall(cache, kinds, default)
    if remembered is not None:
        return remembered
    choices = {}
    for i, kind in enumerate(kinds):
        left = budget_s - (time.perf_counter() - started)
        choices[kind] = choose_size(PASSES[kind](forward, example), left / (len(kinds) - i),
                                    default=default, candidates=candidates)
    sizes = {k: c.size for k, c in choices.items()}
    steady = all(c.steady for c in choices.values())
    timing = PassTiming(PassSizes(sizes.get("forward", default), sizes.get("gradient", default)),
                        {k: c.seconds_per_image for k, c in choices.items()},
                        "measured" if steady else "measured (timings unsteady: not remembered)",
                        time.perf_counter() - started)
    if steady:
        _remember(cache, timing)
    return timing


def cache_file(root: Path, *, model_id: str, output: str, device: str,
               image_shape: tuple[int, ...]) -> Path:
    """Where the pass sizes of this model, on this machine, torch and allocator, are remembered."""
    machine = "|".join([platform.node(), platform.machine(), platform.processor(),
                        str(os.cpu_count()), torch.__version__, str(torch.get_num_threads()),
                        memory.allocator(), device, output, "x".join(map(str, image_shape)),
                        model_id])
    return root / "tuning" / f"{hashlib.sha256(machine.encode()).hexdigest()[:24]}.json"


def module_id(module: nn.Module) -> str:
    """A content hash of a module's weights, for models that come without a file."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def recall_speed_ups(cache: Path | None, speed_ups: Sequence[str]) -> bool | None:
    """Whether `speed_ups` made this model's passes clearly faster on this machine when last
    timed (`remember_speed_ups`); None when they were not timed here yet."""
    decisions = _saved(cache).get("speed_ups")
    verdict = decisions.get(" + ".join(speed_ups)) if isinstance(decisions, dict) else None
    return verdict if isinstance(verdict, bool) else None


def remember_speed_ups(cache: Path | None, speed_ups: Sequence[str], pays: bool) -> None:
    """Keep the verdict on `speed_ups`, timed steadily, beside the pass sizes, so that later runs
    of the model on this machine do not time the network twice over again."""
    saved = _saved(cache)
    saved["speed_ups"] = {**saved.get("speed_ups", {}), " + ".join(speed_ups): bool(pays)}
    _write(cache, saved)


def _saved(cache: Path | None) -> dict:
    """What the cache file holds; nothing when it is missing or damaged."""
    if cache is None or not cache.is_file():
        return {}
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _recall(cache: Path | None, kinds: list[str], default: int) -> PassTiming | None:
    """The remembered sizes of `kinds` (`default` for a kind the run does not make)."""
    saved = _saved(cache)
    try:
        seconds = {kind: float(saved["seconds_per_image"][kind]) for kind in kinds}
        sizes = {kind: int(saved["sizes"][kind]) for kind in kinds}
    except (KeyError, TypeError, ValueError):
        return None  # not measured yet for these kinds, or a damaged entry: measured again
    return PassTiming(PassSizes(**{**dict.fromkeys(KINDS, default), **sizes}), seconds,
                      "remembered")


def _remember(cache: Path | None, timing: PassTiming) -> None:
    """Add the measured kinds' sizes and seconds to those remembered for the other kinds."""
    saved = _saved(cache)
    measured = {kind: getattr(timing.sizes, kind) for kind in timing.seconds_per_image}
    _write(cache, {**saved, "sizes": {**_dict(saved.get("sizes")), **measured},
                   "seconds_per_image": {**_dict(saved.get("seconds_per_image")),
                                         **timing.seconds_per_image}})


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _write(cache: Path | None, saved: dict) -> None:
    if cache is not None:
        try:
            write_text(cache, json.dumps(saved))
        except OSError:
            pass  # a read-only cache only costs the next run its tuning
