"""The explanation's band rankings against those of another network or setting on the same images.

The trained model's per-image scores are the explanation's own (never computed again); the other
side runs on the images a check takes, every method of a batch together (sharing masked copies),
until each method's "ρ ≥ threshold" is settled (`xband.checks.rounds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xband.checks._common import Setup, nan_mean, nan_min
from xband.checks.rounds import class_means, flip_chance, mean_over
from xband.methods import Context, Method
from xband.run.aggregate import shares, spearman_rows


def map_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over bands of Spearman's ρ between the pixels of |a| and |b| ((B, H, W) maps)."""
    flat_a = np.abs(a).reshape(len(a), -1).astype(np.float64)
    flat_b = np.abs(b).reshape(len(b), -1).astype(np.float64)
    return nan_mean(spearman_rows(flat_a, flat_b)) if flat_a.shape[1] > 1 else float("nan")


class RankingComparison:
    """Per method: Spearman's ρ between the class band rankings (by mean share) of the
    explanation and of `ctx` on the images taken, a `rounds.Statistic` whose decision is
    ρ ≥ `threshold` (mean over classes)."""

    def __init__(self, setup: Setup, ctx: Context, *, threshold: float,
                 methods: Sequence[Method] | None = None):
        self.setup, self.ctx, self.threshold = setup, ctx, threshold
        self.active = list(setup.methods if methods is None else methods)
        self.methods = [m.name for m in self.active]
        # method → per round: (positions, the explanation's scores, ctx's scores)
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            m: [] for m in self.methods}
        self.map_rho: dict[str, list[float]] = {m: [] for m in self.methods}
        self.batches = 0  # the next round's batches are numbered on: draws differ by round

    def add(self, positions: np.ndarray) -> None:
        done = self.setup.attribute(self.active, self.ctx, positions, first_batch=self.batches,
                                    keep_maps=True)
        self.batches += -(-len(positions) // self.setup.batch_size)
        for method in self.active:
            name = method.name
            self.parts[name].append((positions, self.setup.reference(name, positions),
                                     done[name].scores))
            trained = self.setup.reference_maps(name)
            self.map_rho[name] += [map_similarity(trained[p], other)
                                   for p, other in done[name].maps.items() if p in trained]

    def _stacked(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        positions, ours, theirs = (np.concatenate(part) for part in zip(*self.parts[name],
                                                                        strict=True))
        return positions, shares(ours), shares(theirs)

    def per_class(self, name: str, rng: np.random.Generator | None = None,
                  n_boot: int = 0) -> np.ndarray:
        """(1 + n_boot, C) ρ per class on the images taken, then on resamples of them."""
        positions, ours, theirs = self._stacked(name)
        means = class_means(np.concatenate([ours, theirs], axis=1),
                            self.setup.image_class[positions], self.setup.n_classes, rng, n_boot)
        return spearman_rows(means[..., :ours.shape[1]], means[..., ours.shape[1]:])

    def change_chance(self, rng: np.random.Generator) -> float:
        """The largest chance, over the methods still undecided, that "ρ ≥ threshold" changes
        under a resample; methods below the rule's stop chance are settled."""
        rule, chances = self.setup.rule, []
        for method in list(self.active):
            rho = mean_over(self.per_class(method.name, rng, rule.n_boot), axis=1)
            decided = rho >= self.threshold  # no ranking (NaN): not kept
            chance = float(flip_chance(decided[0], decided[1:]))
            if chance < rule.stop_chance:
                self.active.remove(method)
            else:
                chances.append(chance)
        return max(chances, default=0.0)

    def rows(self) -> list[dict]:
        """Per method: ρ of the class rankings (mean and lowest over classes), mean ρ of the
        per-image rankings and of the example maps, and the images it took."""
        out = []
        for name in self.methods:
            positions, ours, theirs = self._stacked(name)
            per_class = self.per_class(name)[0]
            out.append({"method": name, "rank_rho": nan_mean(per_class),
                        "rank_rho_min": nan_min(per_class),
                        "image_rank_rho": nan_mean(spearman_rows(ours, theirs)),
                        "map_rho": nan_mean(self.map_rho[name]), "images": len(positions)})
        return out
