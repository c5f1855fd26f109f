"""Completeness of Integrated Gradients: do the band sums add up to f(x) − f(baseline)?

The convergence delta Σ_b s_b − (f_t(x) − f_t(baseline)) per image, at a quarter of, at, and at
four times the run's number of integration steps: it should shrink as the steps grow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xband.checks._common import Setup
from xband.methods import Batch

METHOD = "integrated_gradients"


def completeness_check(setup: Setup) -> pd.DataFrame:
    """Per image and number of steps: the band sum, the output gain f(x) − f(baseline), the delta
    and the delta relative to |gain|."""
    method = setup.explanation.plan.method(METHOD)
    steps = method.n_steps
    forward = setup.forward
    index = torch.arange(len(setup.x), device=setup.x.device)
    target = torch.from_numpy(setup.target).to(setup.x.device)

    def outputs(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([forward(part) for part in x.split(setup.passes.forward)])[index, target]

    ctx = setup.context(forward)
    with torch.inference_mode():  # the output gain over the baseline (each image's background
        # images, the mean of their outputs, with the data baseline)
        base = torch.stack([outputs(b.expand_as(setup.x)) for b in ctx.removal(
            Batch(setup.x, target, target, np.arange(len(setup.x))))]).mean(dim=0)
        gain = (outputs(setup.x) - base).double().cpu().numpy()
    images = setup.explanation.indices[setup.positions]
    frames = []
    for n_steps in sorted({max(2, steps // 4), steps, min(steps * 4, method.largest("n_steps"))}):
        if n_steps == steps:  # the explanation's own setting: the cached reference scores
            total = setup.reference(method)[0].sum(axis=1)
        else:
            total = setup.attribute(method.with_options(n_steps=n_steps),
                                    ctx)[0].sum(axis=1)
        delta = total - gain
        frames.append(pd.DataFrame({
            "n_steps": n_steps, "image": images,
            "class": np.array(setup.explanation.class_names)[setup.image_class],
            "band_sum": total, "output_gain": gain, "delta": delta,
            "relative_delta": np.abs(delta) / np.maximum(np.abs(gain), 1e-12),
        }))
    return pd.concat(frames, ignore_index=True)


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
