"""Few draws per image and more images, or many draws per image: which settles a class's answer
for less time? (README, "Few draws per image until settled".)

    python scripts/draws_per_image.py [--per-class 32] [--folder /tmp/xband-eurosat]

Explains the same images (a seeded `--per-class` of each class of `scripts/benchmark_dataset.py`'s
27,000-image set, built there if missing) twice, every image each time: with the methods' full
draws (their options, 8 background images) and with the few draws a run until settled gives each
image (their `until_settled` options, 1 background image). Per method it prints the ratio of the
seconds per image, of the variance of a band's share over a class's images (the median over the
classes of the mean over each class's 4 leading bands), and their product: the time a class needs
for the same precision of its mean with few draws, relative to full ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from benchmark_dataset import BANDS, CLASSES, build  # noqa: E402

import xband  # noqa: E402
from xband.methods import METHODS, get_method  # noqa: E402
from xband.run.aggregate import shares  # noqa: E402

# methods whose scores draw at random per image (band ablation: only its background images)
DRAWN = [name for name, cls in METHODS.items() if cls.until_settled or name == "feature_ablation"]


def run(model, data, few: bool) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-image scores and seconds of every method with draws, full or few."""
    methods = [get_method(name, **(METHODS[name].until_settled if few else {})) for name in DRAWN]
    result = xband.explain(model, data, methods=methods, all_images=True, tuned=False,
                           background_images=1 if few else 8, progress=False)
    return result.scores, {m: result.record.timings[m] for m in DRAWN}


def image_set(images: np.ndarray, labels: np.ndarray):
    return xband.image_set(images, labels, sensor="sentinel2",
                           classes=[f"class{c}" for c in range(CLASSES)])


def leading_variance(share: np.ndarray, other: np.ndarray, y: np.ndarray, c: int) -> float:
    """Mean variance over the class's images of its 4 leading bands (by both runs' means)."""
    mine, theirs = share[y == c], other[y == c]
    lead = np.argsort(-(mine.mean(0) + theirs.mean(0)))[:4]
    return float(mine[:, lead].var(0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--folder", default="/tmp/xband-eurosat")
    args = parser.parse_args()
    x_path, y_path, model_path = build(Path(args.folder), 27000)
    x, y = np.load(x_path, mmap_mode="r"), np.load(y_path)
    rng = np.random.default_rng(5)
    pick = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), args.per_class,
                                              replace=False) for c in range(CLASSES)]))
    y = y[pick]
    images = np.asarray(x[pick]).astype(np.float32) * 1e-4
    data = image_set(images, y)
    model = xband.load_model(str(model_path))
    run(model, image_set(images[:40], y[:40]), few=True)  # warm-up: no timed run pays first calls
    started = time.perf_counter()
    full, full_s = run(model, data, few=False)
    few, few_s = run(model, data, few=True)
    print(f"{len(y)} images, {time.perf_counter() - started:.0f} s")
    print("| method | passes per image, full → few draws | seconds per image, few ÷ full | "
          "variance of a share, few ÷ full | time to the same precision, few ÷ full |")
    print("|---|---|---|---|---|")
    for name in DRAWN:
        a, b = shares(full[name]), shares(few[name])
        ratio = np.median([leading_variance(b, a, y, c) / leading_variance(a, b, y, c)
                           for c in range(CLASSES)])
        method = get_method(name)
        passes = (f"{method.passes_per_image(BANDS, 8)} → "
                  f"{method.with_options(**method.until_settled).passes_per_image(BANDS, 1)}")
        seconds = few_s[name] / full_s[name]
        print(f"| {name} | {passes} | {seconds:.2f} | {ratio:.2f} | {ratio * seconds:.2f} |")


if __name__ == "__main__":
    main()
