"""How many background images does the data baseline need? Measured, not guessed.

With the data baseline, a band's score for an image is the mean over K other images of the data
(its background images, drawn per image) of its score with that one image as the baseline. A
class's mean score then varies for two reasons: between images (σ²_img) and between an image's
backgrounds (σ²_bg / K per image); both are in the bootstrap interval, the second only widens
it. Band ablation is run against M = 32 background images per image; per class and band this
prints, for K background images:
- how much the backgrounds widen the class's interval, √(1 + σ²_bg / (K σ²_img)), median and 90th
  percentile over each class's top 3 bands;
- how often a class's top 3 bands with K backgrounds per image (50 random draws of K of the 32)
  are its top 3 with all 32.

    .venv/bin/python scripts/background_size.py [--statlog /work/shared/data/statlog]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import xband  # noqa: E402
from xband import demo  # noqa: E402
from xband.methods import Batch, Context, get_method  # noqa: E402
from xband.methods._base import PassSizes
from xband.run.forward import forward_module  # noqa: E402

SIZES = (1, 2, 4, 8, 16)
M = 32


def balanced(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` rows drawn class by class in turns."""
    drawn = rng.permutation(len(labels))
    turn = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        turn[drawn[labels[drawn] == c]] = np.arange(int((labels == c).sum()))
    return drawn[np.argsort(turn[drawn], kind="stable")][:n]


def per_background(model: xband.LoadedModel, x: np.ndarray, y: np.ndarray, pool: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(M, N, B) band ablation scores of each image against each of its M background images
    (drawn from `pool` per image) alone."""
    forward = forward_module(model.network("logits"), model.layout, "cpu")
    xt, target, pool = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(pool)
    method = get_method("feature_ablation")
    drawn = torch.from_numpy(rng.integers(0, len(pool), (M, len(x))))
    out = []
    for row in drawn:
        ctx = Context(forward=forward, baseline=torch.zeros(1, x.shape[1], 1, 1),
                      band_std=torch.ones(x.shape[1]), background=1,
                      donors=lambda positions, repeat, row=row: pool[row[positions]],
                      passes=PassSizes(forward=256, gradient=64))
        out.append(np.concatenate([
            method.attribute(Batch(x=xt[part], target=target[part], label=target[part],
                                   index=part), ctx).scores
            for part in np.array_split(np.arange(len(x)), -(-len(x) // 256))]))
    return np.stack(out)


def summarise(name: str, scores: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    full = scores.mean(axis=0)  # (N, B)
    print(f"\n{name}: {scores.shape[1]} images, {scores.shape[2]} bands, {M} background images "
          "per image")
    print("| K | interval widened by (median / 90th pct over class × top-3 band) | "
          "top-3 set as with 32 | passes per image, band ablation |")
    print("|---|---|---|---|")
    for k in SIZES:
        widen, same = [], []
        for c in np.unique(y):
            rows = y == c
            top = np.argsort(-full[rows].mean(axis=0))[:3]
            var_img = full[rows][:, top].var(axis=0, ddof=1)
            var_bg = scores[:, rows][:, :, top].var(axis=0, ddof=1).mean(axis=0)
            widen += list(np.sqrt(1 + var_bg / (k * np.maximum(var_img, 1e-30))))
            for _ in range(50):
                pick = rng.choice(M, k, replace=False)
                mean = scores[pick][:, rows].mean(axis=(0, 1))
                same.append(set(np.argsort(-mean)[:3]) == set(top))
        print(f"| {k} | {np.median(widen):.2f} / {np.percentile(widen, 90):.2f} | "
              f"{np.mean(same):.2f} | {scores.shape[2] * k + 1} |")


def explained_sets(args: argparse.Namespace, rng: np.random.Generator):
    """(name, model, chosen images (n, B, H, W), their labels, every image as donors) for the
    demo and, with `--statlog`, the Statlog test split: `--per-class` images per class, drawn
    in turns."""
    x, y = demo.demo_data()
    sets = [("demo", xband.load_model(demo.MODEL_PATH, probe=x[:16], verbose=False), x, y)]
    if args.statlog:
        sys.path.insert(0, str(Path(__file__).parent))
        from explain_statlog import load_split

        x, y = load_split(args.statlog, "sat.tst")
        root = Path(__file__).resolve().parents[1]
        sets.append(("statlog", xband.load_model(root / "docs/statlog/statlog_cnn.keras",
                                                  probe=x[:32], verbose=False), x, y))
    for name, model, x, y in sets:
        x = np.moveaxis(x, 3, 1).copy()
        chosen = balanced(y, args.per_class * (int(y.max()) + 1), rng)
        yield name, model, x[chosen], y[chosen], x


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--statlog", type=Path, help="the Statlog folder (sat.tst)")
    parser.add_argument("--per-class", type=int, default=20, help="images per class")
    return parser.parse_args()


def main() -> None:
    rng = np.random.default_rng(0)
    for name, model, x, y, pool in explained_sets(arguments(__doc__.split("\n\n")[0]), rng):
        summarise(name, per_background(model, x, y, pool, rng), y, rng)


if __name__ == "__main__":
    main()
