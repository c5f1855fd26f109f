"""Each check takes images until its own answer is settled: the rule `xband.run.sampling` applies
to the explanation, applied to what each check decides.

A check takes every class's next images together (in `Setup.orders`), a few per class in the
first round and a growing number after, computes its statistic on the new images, and after each
round asks a bootstrap over the images taken (resampled within each class) how often one of its
decisions (is this method's ranking kept with every layer random? does deleting bands in its
order beat random orders?) would come out the other way. Below `stop_chance` the check stops; it
also stops when the pool runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from xband.run.aggregate import resample_counts
from xband.run.sampling import ALL_IMAGES, SETTLED, next_round

ONE_ROUND = "one round"  # a descriptive step that decides nothing: one round of half the size


@dataclass(frozen=True)
class CheckRule:
    """When a check's answer counts as settled.

    first_round: images per class in the first round (the fewest a check takes); growth: each
    later round adds this fraction of the images a class has taken (at least first_round);
    stop_chance: a check stops when the bootstrap chance that any of its decisions changes is
    below this; n_boot: bootstrap resamples per test.
    """

    first_round: int = 4
    growth: float = 0.5
    stop_chance: float = 0.05
    n_boot: int = 200

    @property
    def descriptive_round(self) -> int:
        """Images per class of a descriptive step (a cascade stage before the last, a baseline
        other than the run's): it decides nothing, so half a first round."""
        return max(1, self.first_round // 2)

    def as_dict(self) -> dict:
        return asdict(self)


class Statistic(Protocol):
    """What a check computes on the images it takes."""

    def add(self, positions: np.ndarray) -> None:
        """Compute on the images newly taken at `positions`."""

    def change_chance(self, rng: np.random.Generator) -> float:
        """The bootstrap chance that one of the check's undecided answers would change; answers
        that are settled stop taking images."""


@dataclass(frozen=True)
class Taken:
    """How a check's images were taken: how many, in how many rounds, and why it stopped."""

    images: int
    rounds: int
    reason: str  # SETTLED or ALL_IMAGES
    change_chance: float
    seconds: float

    def as_dict(self) -> dict:
        return {**asdict(self), "change_chance": round(self.change_chance, 3),
                "seconds": round(self.seconds, 2)}


def take_until_settled(orders: dict[int, np.ndarray], statistic: Statistic, rule: CheckRule, *,
                       seed: int, keep: Callable[[np.ndarray], None], label: str,
                       progress: bool, one_round: bool = False) -> Taken:
    """Give `statistic` every class's next images in rounds (`keep` reads them first) until its
    change chance falls below `rule.stop_chance` or the images run out (with `one_round`: one
    round of `rule.descriptive_round` images per class); a bar named `label` shows the images
    taken."""
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 47])
    taken = dict.fromkeys(orders, 0)
    rounds, chance = 0, float("nan")
    pool = sum(len(order) for order in orders.values())
    first = rule.descriptive_round if one_round else rule.first_round
    with tqdm(total=pool, desc=label, unit="img", disable=not progress, leave=False) as bar:
        while True:
            want = next_round(orders, taken, orders, first, rule.growth)
            new = np.concatenate([orders[c][taken[c]:taken[c] + want[c]] for c in orders])
            if not len(new):
                break
            keep(new)
            statistic.add(new)
            rounds += 1
            taken = {c: taken[c] + want[c] for c in orders}
            chance = statistic.change_chance(rng)
            bar.update(len(new))
            bar.set_postfix_str(f"round {rounds}, chance of a change {chance:.2f}")
            if chance < rule.stop_chance or one_round:
                break
    done = sum(taken.values())
    reason = SETTLED if chance < rule.stop_chance else ALL_IMAGES if done == pool else ONE_ROUND
    return Taken(done, rounds, reason, chance, time.perf_counter() - started)


def class_means(values: np.ndarray, image_class: np.ndarray, n_classes: int,
                rng: np.random.Generator | None = None, n_boot: int = 0) -> np.ndarray:
    """(1 + n_boot, C, F): each class's mean of `values` (n, F) over its images, then the same
    over `n_boot` resamples of each class's images; NaN for classes without images. Columns
    resampled together stay paired (the same images)."""
    out = np.full((1 + n_boot, n_classes, values.shape[1]), np.nan)
    for c in range(n_classes):
        members = values[image_class == c]
        if len(members):
            out[0, c] = members.mean(axis=0)
            if n_boot:
                out[1:, c] = resample_counts(rng, len(members), n_boot) @ members / len(members)
    return out


def mean_over(values: np.ndarray, axis: int, missing: float = np.nan) -> np.ndarray:
    """Mean of the finite values along `axis`, `missing` where there are none (no warning)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), missing)


def flip_chance(point: bool | np.ndarray, resampled: np.ndarray) -> np.ndarray:
    """Share of bootstrap resamples (axis 0 of `resampled`) whose decision differs from the
    decision on the images themselves (`point`)."""
    return np.mean(resampled != point, axis=0)
