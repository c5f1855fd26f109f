"""Explaining until the answer is settled: each class's images in a seeded random order, taken in
rounds, until the class's top bands no longer move under a bootstrap, or the budget is spent.

The per-class question (which bands does the model use for Forest?) is usually answered by a few
hundred images of the class; explaining every image of a large archive is for per-image work
(`all_images`). Every method takes each class's images in the same order, so the images one
method explained are a prefix of those another explained.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from xband.run.aggregate import resample_counts

ALL_IMAGES = "all images"
SETTLED = "settled"
BUDGET = "budget spent"
LEADER_SETTLED = "bands settled first"


@dataclass(frozen=True)
class StoppingRule:
    """When a class's answer counts as settled.

    top_k: bands whose set must be stable (at most the number of bands); stop_chance: the
    bootstrap chance that the top-k set changes must fall below this; min_images: never stop a
    class with fewer images (unless it has no more); tie: bands whose mean shares differ by less
    than this (a share of Σ|s|) may swap places without counting as a change; n_boot: bootstrap
    resamples per test; first_round: images per class in the first round; growth: each later
    round takes this fraction of the images a class has taken so far (at least first_round), so
    that a class stops at most that fraction past the images it needed.
    """

    top_k: int = 3
    stop_chance: float = 0.05
    min_images: int = 30
    tie: float = 0.01
    n_boot: int = 200
    first_round: int = 32
    growth: float = 0.125

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassStop:
    """Why a method stopped taking images of one class."""

    n: int  # images explained
    reason: str  # SETTLED, ALL_IMAGES or BUDGET
    change_chance: float  # bootstrap chance that the top-k set changes (NaN: not tested)

    def as_dict(self) -> dict:
        return {"n": self.n, "reason": self.reason,
                "change_chance": None if np.isnan(self.change_chance)
                else round(self.change_chance, 3)}


def class_orders(known: np.ndarray, n_classes: int, seed: int) -> dict[int, np.ndarray]:
    """Each class's positions among the candidate images, in a seeded random order."""
    rng = np.random.default_rng([seed, 31])
    return {c: rng.permutation(np.flatnonzero(known == c)) for c in range(n_classes)
            if (known == c).any()}


def next_round(orders: dict[int, np.ndarray], taken: Mapping[int, int], classes, first_round: int,
               growth: float) -> dict[int, int]:
    """Images each of `classes` takes next: `growth` × those it has taken, at least
    `first_round`, at most those left in its order."""
    return {c: min(max(first_round, int(growth * taken[c])), len(orders[c]) - taken[c])
            for c in classes}


def change_chance(shares: np.ndarray, rule: StoppingRule, rng: np.random.Generator) -> float:
    """Bootstrap chance that the top-k bands of the mean of `shares` (n images × bands) change:
    the share of resamples whose top-k set gains a band whose mean share is more than `rule.tie`
    below a band it loses."""
    n, n_bands = shares.shape
    k = min(rule.top_k, n_bands)
    if k == n_bands:
        return 0.0
    mean = shares.mean(axis=0)
    top = np.zeros(n_bands, dtype=bool)
    top[np.argsort(-mean, kind="stable")[:k]] = True
    counts = resample_counts(rng, n, rule.n_boot)
    boot = counts @ shares / n  # (n_boot, bands)
    boot_top = np.zeros_like(boot, dtype=bool)
    np.put_along_axis(boot_top, np.argsort(-boot, axis=1, kind="stable")[:, :k], True, axis=1)
    gained = np.where(boot_top & ~top, mean, np.inf).min(axis=1)  # weakest band that came in
    lost = np.where(~boot_top & top, mean, -np.inf).max(axis=1)  # strongest band that went out
    return float(np.mean(lost - gained > rule.tie))


def sample_until_settled(
    attribute: Callable[[np.ndarray, Mapping[str, set[int]]],
                        Mapping[str, tuple[np.ndarray, np.ndarray]]],
    methods: Sequence[str],
    orders: dict[int, np.ndarray],
    rule: StoppingRule,
    *,
    class_of: np.ndarray,
    seed: int,
    seconds_per_image: Mapping[str, float],
    deadline: float | None = None,
    follows: Mapping[str, str] | None = None,
) -> dict[str, dict[int, ClassStop]]:
    """Explain images class by class in rounds until every method has stopped every class.

    A round takes each class's next images for every method still going on that class, so the
    methods work on the same new images together. attribute(positions, active) explains the
    usable ones of those images by each method for the classes in `active[method]`, and returns
    per method the images it explained and their band shares for the class each counts as
    (`class_of`). seconds_per_image: each method's expected cost, scaled as rounds finish by
    what they took; deadline: a `time.perf_counter()` value after which no round starts, and by
    which rounds are shrunk to end. Each method's bootstrap draws are its own. follows: answers
    that stop with another at the latest (a method's band groups stop when its bands do, or
    sooner when settled first), whose cost `seconds_per_image` counts in the other's.
    """
    follows = follows or {}
    rngs = {m: np.random.default_rng([seed, 37]) for m in methods}
    taken = {c: 0 for c in orders}  # images of the order used up (explained or left out)
    shares: dict[str, dict[int, list[np.ndarray]]] = {m: {c: [] for c in orders} for m in methods}
    stops: dict[str, dict[int, ClassStop]] = {m: {} for m in methods}
    scale = 1.0  # measured seconds over expected ones
    while True:
        active = {m: {c for c in orders if c not in stops[m]} for m in methods}
        classes = [c for c in orders if any(c in going for going in active.values())]
        if not classes:
            break
        want = next_round(orders, taken, classes, rule.first_round, rule.growth)
        affordable = _affordable(want, taken, {c: scale * sum(
            seconds_per_image.get(m, 0.0) for m in methods if c in active[m]) for c in classes},
                                 deadline)
        if affordable is None:
            for m in methods:
                stops[m] |= {c: ClassStop(_count(shares[m][c]), BUDGET, np.nan) for c in active[m]}
            break
        started = time.perf_counter()
        done = attribute(np.concatenate([orders[c][taken[c]:taken[c] + affordable[c]]
                                         for c in classes]), active)
        expected = sum(seconds_per_image.get(m, 0.0) * len(used)
                       for m, (used, _) in done.items())
        if expected > 0:
            scale = (time.perf_counter() - started) / expected
        ends = {c: (taken[c] + affordable[c] >= len(orders[c]), affordable[c] < want[c])
                for c in classes}
        for m in sorted(done, key=lambda answer: answer in follows):  # leaders first
            stops[m] |= _round_stops(*done[m], class_of, shares[m], active[m], ends, rule,
                                     rngs[m], stops[follows[m]] if m in follows else {})
        for c in classes:
            taken[c] += affordable[c]
    return {m: {c: stops[m][c] for c in orders} for m in methods}


def _round_stops(used: np.ndarray, result: np.ndarray, class_of: np.ndarray,
                 shares: dict[int, list[np.ndarray]], classes: set[int],
                 ends: dict[int, tuple[bool, bool]], rule: StoppingRule,
                 rng: np.random.Generator, leader: dict[int, ClassStop]) -> dict[int, ClassStop]:
    """One answer's stops after a round: its new images' `result` (band shares) added to each
    of its `classes`' shares, then each class tested. ends: per class, whether its images ran
    out and whether the budget cut its round; leader: the stops of the answer it follows."""
    stops = {}
    for c in classes:
        if len(used):
            shares[c].append(result[class_of[used] == c])
        exhausted, over_budget = ends[c]
        stop = _stop(np.concatenate(shares[c]) if shares[c] else np.empty((0, 0)), exhausted,
                     rule, rng, over_budget=over_budget, leader=leader.get(c))
        if stop is not None:
            stops[c] = stop
    return stops


def _count(parts: list[np.ndarray]) -> int:
    return int(sum(len(p) for p in parts))


def _affordable(want: dict[int, int], taken: dict[int, int], seconds_per_image: dict[int, float],
                deadline: float | None) -> dict[int, int] | None:
    """Images per class that fit before the deadline (`seconds_per_image`: per class, all its
    methods together); at least one of a class that has none yet, so that every method answers
    for every class. None: not one more image fits."""
    if deadline is None:
        return want
    left = deadline - time.perf_counter()
    total = sum(n * seconds_per_image[c] for c, n in want.items())
    if total <= left:
        return want
    fraction = max(left, 0.0) / total
    fitted = {c: max(int(n * fraction), 0 if taken[c] else min(n, 1)) for c, n in want.items()}
    return fitted if sum(fitted.values()) > 0 else None


def _stop(shares: np.ndarray, exhausted: bool, rule: StoppingRule, rng: np.random.Generator, *,
          over_budget: bool, leader: ClassStop | None = None) -> ClassStop | None:
    """The class's stop after a round, or None to go on; `leader`: the stop of the answer this
    one follows, if it has stopped."""
    n = len(shares)
    chance = change_chance(shares, rule, rng) if n > 1 else np.nan
    if n >= rule.min_images and chance < rule.stop_chance:
        return ClassStop(n, SETTLED, chance)
    if exhausted:
        return ClassStop(n, ALL_IMAGES, chance)
    if leader is not None:
        return ClassStop(n, LEADER_SETTLED if leader.reason == SETTLED else leader.reason, chance)
    if over_budget:
        return ClassStop(n, BUDGET, chance)
    return None
