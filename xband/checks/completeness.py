"""Completeness of Integrated Gradients: do the band sums add up to f(x) − f(baseline)?

The convergence delta Σ_b s_b − (f_t(x) − f_t(baseline)) per image, at a quarter of, at, and at
four times the run's number of integration steps: it should shrink as the steps grow. Images are
taken until it is settled whether the median relative delta at the run's steps is within
WITHIN (`xband.checks.rounds`); the other numbers of steps, which decide nothing, run on half
of the first round's images. With a constant baseline the run's own scores are the explanation's;
with the data baseline the check draws its own background images, and computes them again so that
the output gain is taken over the same images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xband.checks._common import Setup
from xband.checks.rounds import Taken, flip_chance, take_until_settled
from xband.methods import Batch

METHOD = "integrated_gradients"
WITHIN = 0.05  # the median relative delta a settled check is compared with


class Completeness:
    """Per image and number of steps: the band sum and the output gain; a `rounds.Statistic`
    whose decision is "median relative delta at the run's steps ≤ WITHIN"."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.method = setup.explanation.plan.method(METHOD)
        self.steps = self.method.n_steps
        self.ctx = setup.context(setup.forward)
        self.frames: list[pd.DataFrame] = []
        self.batches = 0
        # the images the other numbers of steps (descriptive) run on: each class's first
        # `rule.descriptive_round`, all in the first round
        self.descriptive = np.concatenate([order[:setup.rule.descriptive_round]
                                           for order in setup.orders.values()])

    def _gain(self, positions: np.ndarray) -> np.ndarray:
        """f(x) − f(baseline) per image: the baseline's output is the mean over each image's
        background images with the data baseline."""
        x = self.setup.images(positions)
        target = torch.from_numpy(self.setup.target[positions]).to(x.device)
        index = torch.arange(len(x), device=x.device)

        def outputs(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.setup.forward(part)
                              for part in images.split(self.setup.passes.forward)])[index, target]

        with torch.inference_mode():
            base = torch.stack([outputs(b.expand_as(x)) for b in self.ctx.removal(
                Batch(x, target, target, positions))]).mean(dim=0)
            return (outputs(x) - base).double().cpu().numpy()

    def _band_sum(self, n_steps: int, positions: np.ndarray) -> np.ndarray:
        if n_steps == self.steps and not self.setup.explanation.plan.donor_backgrounds:
            return self.setup.reference(METHOD, positions).sum(axis=1)  # the explanation's
        method = self.method if n_steps == self.steps else self.method.with_options(
            n_steps=n_steps)
        done = self.setup.attribute([method], self.ctx, positions, first_batch=self.batches)
        return done[METHOD].scores.sum(axis=1)

    def add(self, positions: np.ndarray) -> None:
        gain = self._gain(positions)
        names = np.array(self.setup.explanation.class_names)
        images = self.setup.explanation.indices[self.setup.rows[positions]]
        others = np.isin(positions, self.descriptive)
        for n_steps in sorted({max(2, self.steps // 4), self.steps,
                               min(self.steps * 4, self.method.largest("n_steps"))}):
            chosen = np.ones(len(positions), bool) if n_steps == self.steps else others
            if not chosen.any():
                continue
            total = self._band_sum(n_steps, positions[chosen])
            delta = total - gain[chosen]
            self.frames.append(pd.DataFrame({
                "n_steps": n_steps, "image": images[chosen],
                "class": names[self.setup.image_class[positions[chosen]]],
                "band_sum": total, "output_gain": gain[chosen], "delta": delta,
                "relative_delta": np.abs(delta) / np.maximum(np.abs(gain[chosen]), 1e-12),
            }))
        self.batches += -(-len(positions) // self.setup.batch_size)

    def table(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True).sort_values(
            "n_steps", kind="stable").reset_index(drop=True)

    def change_chance(self, rng: np.random.Generator) -> float:
        table = self.table()
        relative = table.loc[table["n_steps"] == self.steps, "relative_delta"].to_numpy()
        draws = rng.integers(0, len(relative), size=(self.setup.rule.n_boot, len(relative)))
        within = np.median(relative[draws], axis=1) <= WITHIN
        return float(flip_chance(np.median(relative) <= WITHIN, within))


def completeness_check(setup: Setup, *, progress: bool = False) -> tuple[pd.DataFrame, Taken]:
    """Per image and number of steps: the band sum, the output gain f(x) − f(baseline), the delta
    and the delta relative to |gain|; and how the images were taken."""
    statistic = Completeness(setup)
    taken = take_until_settled(setup.orders, statistic, setup.rule, seed=setup.seed,
                               keep=setup.keep, label="completeness", progress=progress)
    return statistic.table(), taken


def completeness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per number of steps: median, 95th percentile and largest |delta|, the median relative
    delta, and the share of images within 1% and 5% of their output gain."""
    def summarise(block: pd.DataFrame) -> pd.Series:
        delta, rel = block["delta"].abs(), block["relative_delta"]
        return pd.Series({"images": len(block), "median_abs_delta": delta.median(),
                          "p95_abs_delta": delta.quantile(0.95), "max_abs_delta": delta.max(),
                          "median_relative_delta": rel.median(),
                          "within_1pct": float((rel <= 0.01).mean()),
                          "within_5pct": float((rel <= 0.05).mean())})
    return table.groupby("n_steps").apply(summarise, include_groups=False)
