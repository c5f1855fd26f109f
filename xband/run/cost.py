"""What a run will cost before it starts: passes per image × images × the measured time of a
pass, per method; and how a time budget is shared between the methods."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from xband.errors import XbandError
from xband.methods import GradientMethod, Method, Shapley

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(value: str | float | int | None) -> float | None:
    """Seconds from "90s", "5m", "1.5h" or a number of seconds; None for no budget."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(value))
        if not match:
            raise XbandError(f"budget '{value}': give a time such as 90s, 5m or 1.5h.")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds > 0:
        raise XbandError(f"budget '{value}': it must be more than zero seconds.")
    return seconds


def pass_kind(method: Method) -> str:
    """The kind of network pass a method is made of: "gradient" or "forward"."""
    return "gradient" if isinstance(method, GradientMethod) else "forward"


@dataclass(frozen=True)
class MethodCost:
    """One method's expected seconds per image on this model and machine."""

    method: str
    passes_per_image: int
    seconds_per_image: float

    def seconds(self, images: int) -> float:
        return self.passes_per_image * self.seconds_per_image * images


def method_passes(method: Method, features: Sequence[int], n_background: int = 1) -> int:
    """Passes per image of `method`: over the run's features (bands or regions), and for a
    method that removes features whole once more over each further set (the band groups)."""
    return sum(method.passes_per_image(n, n_background)
               for n in (features if method.grouped else features[:1]))


def method_cost(method: Method, features: Sequence[int], seconds_per_pass: dict[str, float],
                n_background: int = 1) -> MethodCost:
    """Seconds per image of `method` over the feature sets `features` (`method_passes`) with
    `n_background` background images (1: a constant baseline)."""
    passes = method_passes(method, features, n_background)
    return MethodCost(method.name, passes, seconds_per_pass[pass_kind(method)])


def passes_by_kind(methods: tuple[Method, ...], features: Sequence[int], n_background: int = 1
                   ) -> dict[str, int]:
    """The network passes per image the methods make together, by kind of pass."""
    passes: dict[str, int] = {}
    for method in methods:
        kind = pass_kind(method)
        passes[kind] = passes.get(kind, 0) + method_passes(method, features, n_background)
    return passes


def fit_budget(methods: tuple[Method, ...], features: Sequence[int],
               seconds_per_pass: dict[str, float],
               budget_s: float, n_classes: int, min_images: int, n_background: int = 1
               ) -> tuple[tuple[Method, ...], list[str]]:
    """The methods in the form that fits an equal share of the budget, and a line per choice.

    Exact band Shapley values cost 2^B passes per image: when the share would then pay for fewer
    than `min_images` images per class and the sampled form for more, the sampled form runs.
    """
    share = budget_s / len(methods)
    chosen, notes = [], []
    for method in methods:
        cost = method_cost(method, features, seconds_per_pass, n_background)
        images = int(share / (cost.passes_per_image * cost.seconds_per_image * n_classes))
        if isinstance(method, Shapley) and method.exact(features[0]) and images < min_images:
            sampled = method.with_options(max_exact_bands=features[0] - 1)
            fits = int(share / (method_cost(sampled, features, seconds_per_pass,
                                            n_background).seconds(1) * n_classes))
            if fits > images:
                notes.append(f"budget: shapley runs sampled "
                             f"({method_passes(sampled, features, n_background)} passes per "
                             f"image, about {fits} images per class in its {share:.0f} s share) "
                             f"instead of exact ({cost.passes_per_image} passes per image, "
                             f"{images} images per class)")
                method, images = sampled, fits
        notes.append(f"budget: {method.name} planned at {share:.0f} s (about {images} images "
                     "per class at the measured speed; the methods take their rounds together "
                     "until the budget is spent)")
        chosen.append(method)
    return tuple(chosen), notes


def estimate_lines(costs: list[MethodCost], first_round: int, n_classes: int,
                   n_images: int, unit: str = "images") -> list[str]:
    """The cost estimate as printed before the run: per method and in total, for the first
    round and for every image (every item of `unit`: multi-label runs count pairs)."""
    first = min(first_round * n_classes, n_images)
    lines = [f"estimated time (measured pass speed × passes per image × {unit}; first round "
             f"{first} {unit}, all {n_images}):"]
    for cost in costs:
        lines.append(f"  {cost.method:<22} {cost.passes_per_image:>6} passes/image  "
                     f"{_duration(cost.seconds(first)):>9} first round  "
                     f"{_duration(cost.seconds(n_images)):>9} all {unit}")
    total_first = sum(c.seconds(first) for c in costs)
    total_all = sum(c.seconds(n_images) for c in costs)
    lines.append(f"  {'total':<22} {'':>6} {'':<12}  {_duration(total_first):>9} first round  "
                 f"{_duration(total_all):>9} all {unit}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
