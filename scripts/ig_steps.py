"""How many integration steps does Integrated Gradients need per background image? Measured.

With the data baseline, IG's score for an image is the mean of IG from each of its K background
images. Each of those paths is a Gauss-Legendre integral; this prints, for s steps per path
(K = 8 background images per image, so s × 8 gradient passes per image), against s = 64:
- the completeness gap: |Σ bands − (f(x) − mean f(background))| / |f(x) − mean f(background)|,
  median and 90th percentile over images;
- the per-image error of the band scores: ‖scores − reference‖ / ‖reference‖, median and 90th pct;
- how often a class's top 3 bands (mean score over its images) are the reference's;
and, for scale, the same for another draw of the K background images at 64 steps: the error the
choice of backgrounds alone makes.

    .venv/bin/python scripts/ig_steps.py [--statlog /work/shared/data/statlog]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import xband  # noqa: E402
from xband.methods import Batch, Context, get_method  # noqa: E402
from xband.methods._base import PassSizes
from xband.run.forward import forward_module  # noqa: E402

STEPS = (1, 2, 4, 8, 16, 32)
REFERENCE = 64
K = 8

sys.path.insert(0, str(Path(__file__).parent))
from background_size import arguments, explained_sets  # noqa: E402


def ig_scores(model: xband.LoadedModel, x: np.ndarray, y: np.ndarray, pool: np.ndarray,
              drawn: torch.Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, B) IG band scores over K background images with `steps` steps per path, and (N,)
    f(x) − mean f(background) for the target class."""
    forward = forward_module(model.network("logits"), model.layout, "cpu")
    xt, target, pool = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(pool)
    ctx = Context(forward=forward, baseline=torch.zeros(1, x.shape[1], 1, 1),
                  band_std=torch.ones(x.shape[1]), background=K,
                  donors=lambda positions, repeat: pool[drawn[repeat][positions]],
                  passes=PassSizes(forward=256, gradient=128))
    method = get_method("integrated_gradients").with_options(n_steps=steps * K)
    scores, gaps = [], []
    with torch.no_grad():
        for part in np.array_split(np.arange(len(x)), -(-len(x) // 32)):
            batch = Batch(x=xt[part], target=target[part], label=target[part], index=part)
            with torch.enable_grad():
                scores.append(method.attribute(batch, ctx).scores)
            pick = target[part].view(-1, 1)
            fx = forward(xt[part]).gather(1, pick).squeeze(1)
            fb = torch.stack([forward(pool[drawn[r][part]]).gather(1, pick).squeeze(1)
                              for r in range(K)]).mean(0)
            gaps.append((fx - fb).numpy())
    return np.concatenate(scores), np.concatenate(gaps)


def summarise(name: str, model: xband.LoadedModel, x: np.ndarray, y: np.ndarray,
              pool: np.ndarray, rng: np.random.Generator) -> None:
    drawn = torch.from_numpy(rng.integers(0, len(pool), (K, len(x))))
    reference, _ = ig_scores(model, x, y, pool, drawn, REFERENCE)
    tops = {c: set(np.argsort(-reference[y == c].mean(axis=0))[:3]) for c in np.unique(y)}
    print(f"\n{name}: {len(x)} images, {x.shape[1]} bands, K = {K} background images per image, "
          f"reference {REFERENCE} steps per path")
    print("| steps per path | gradient passes per image | completeness gap (median / 90th pct) | "
          "band-score error vs reference (median / 90th pct) | classes with reference top 3 |")
    print("|---|---|---|---|---|")
    other = torch.from_numpy(rng.integers(0, len(pool), (K, len(x))))
    for steps, draw in [*((s, drawn) for s in STEPS), (REFERENCE, other)]:
        scores, own_change = ig_scores(model, x, y, pool, draw, steps)
        gap = np.abs(scores.sum(axis=1) - own_change) / np.maximum(np.abs(own_change), 1e-12)
        error = (np.linalg.norm(scores - reference, axis=1)
                 / np.maximum(np.linalg.norm(reference, axis=1), 1e-12))
        same = np.mean([set(np.argsort(-scores[y == c].mean(axis=0))[:3]) == top
                        for c, top in tops.items()])
        row = f"{steps}" if draw is drawn else f"{steps}, other backgrounds"
        print(f"| {row} | {steps * K} | {np.median(gap):.3f} / {np.percentile(gap, 90):.3f} | "
              f"{np.median(error):.3f} / {np.percentile(error, 90):.3f} | {same:.2f} |",
              flush=True)


def main() -> None:
    rng = np.random.default_rng(0)
    for name, model, x, y, pool in explained_sets(arguments(__doc__.split("\n\n")[0]), rng):
        summarise(name, model, x, y, pool, rng)


if __name__ == "__main__":
    main()
