"""Known-answer benchmark: do the methods find the bands that carry the class, and can the checks
tell which methods to trust?

Five synthetic tasks whose causal bands are known, each learnt by a small CNN (one of them a Keras
model through Keras → ONNX → PyTorch, in its own process): the class sits in
- intensity: the mean level of one band;
- ratio: an NDVI-like index of two bands, under a random brightness common to all bands;
- texture: the spatial pattern of one band (same mean and spread in every class);
- distractor: one band's level, with a second band correlated with it (ρ ≈ 0.8) that the rule
  does not use;
- per-class (Keras): a blob in a different band for each class.
For every method: top-k recall of the causal bands per class (k = number of causal bands) with
the data baseline (a removed band takes that band of background images drawn from the data) and
with the band-mean baseline, the deletion gap to random band orders, and the model-randomisation
result (both for the data-baseline run). Prints a markdown table.

    .venv/bin/python scripts/planted_benchmark.py [--per-class 30] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

import xband
from xband.checks.randomisation import ALL_LAYERS
from xband.demo.spectra import fit_full_batch

N_BANDS, SIZE, N_CLASSES = 6, 12, 3
SEEDS = {"train": 0, "test": 1}


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.5, 0.1, size=(n, N_BANDS, SIZE, SIZE)).astype(np.float32)


def intensity(n: int, rng: np.random.Generator):
    y = rng.integers(0, N_CLASSES, n)
    x = _noise(rng, n)
    x[:, 0] += (0.25 * y + rng.uniform(-0.08, 0.08, n))[:, None, None].astype(np.float32)
    return x, y, {c: [0] for c in range(N_CLASSES)}


def ratio(n: int, rng: np.random.Generator):
    y = rng.integers(0, N_CLASSES, n)
    x = _noise(rng, n) * 0.5
    ndvi = np.array([-0.4, 0.0, 0.4])[y] + rng.uniform(-0.1, 0.1, n)
    brightness = rng.uniform(0.4, 1.6, n)
    red, nir = brightness * (1 - ndvi), brightness * (1 + ndvi)
    x[:, 2] += red[:, None, None].astype(np.float32)
    x[:, 3] += nir[:, None, None].astype(np.float32)
    x += (brightness[:, None, None, None] * 0.8).astype(np.float32)  # every band tracks brightness
    return x, y, {c: [2, 3] for c in range(N_CLASSES)}


def texture(n: int, rng: np.random.Generator):
    y = rng.integers(0, N_CLASSES, n)
    x = _noise(rng, n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i, c in enumerate(y):
        phase = rng.uniform(0, 2 * np.pi)
        pattern = [np.zeros((SIZE, SIZE)), np.sin(xx * np.pi / 2 + phase),
                   np.sin((xx + yy) * np.pi / 2 + phase) * np.sin((xx - yy) * np.pi / 2)][c]
        x[i, 4] += (0.3 * pattern).astype(np.float32)
    return x, y, {c: [4] for c in range(N_CLASSES)}


def distractor(n: int, rng: np.random.Generator):
    y = rng.integers(0, N_CLASSES, n)
    x = _noise(rng, n)
    level = 0.25 * y + rng.uniform(-0.08, 0.08, n)
    x[:, 1] += level[:, None, None].astype(np.float32)
    x[:, 5] += (level + rng.normal(0, 0.12, n))[:, None, None].astype(np.float32)
    return x, y, {c: [1] for c in range(N_CLASSES)}


def per_class(n: int, rng: np.random.Generator):
    planted = {0: 0, 1: 2, 2: 4}
    y = rng.integers(0, N_CLASSES, n)
    x = _noise(rng, n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i, c in enumerate(y):
        cy, cx = rng.uniform(3, SIZE - 3, 2)
        x[i, planted[int(c)]] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0).astype(
            np.float32)
    return x, y, {c: [b] for c, b in planted.items()}


BASELINES = ("data", "mean")  # what a removed band becomes; the table shows both
TASKS = {"intensity": intensity, "ratio": ratio, "texture": texture, "distractor": distractor,
         "per-class (Keras)": per_class}
KERAS_TASK = "per-class (Keras)"

KERAS_TRAIN = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
data = np.load(sys.argv[1])
x, y = data["x"], data["y"]
model = keras.Sequential([
    keras.Input(x.shape[1:]),
    keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    keras.layers.GlobalMaxPooling2D(),
    keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=60, batch_size=64, verbose=0)
model.save(sys.argv[2])
"""


def torch_model(x: np.ndarray, y: np.ndarray, epochs: int = 150) -> xband.LoadedModel:
    """A small CNN (mean and max pooled features) fitted full-batch."""
    net = fit_full_batch(lambda: nn.Sequential(
        nn.Conv2d(N_BANDS, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, N_CLASSES)),
        x, y, epochs=epochs, lr=1e-2)
    return xband.load_model(net, layout="channels_first", verbose=False)


def keras_model(x: np.ndarray, y: np.ndarray, folder: Path) -> xband.LoadedModel:
    """A Keras CNN trained in its own process, loaded through ONNX."""
    np.savez(folder / "train.npz", x=np.moveaxis(x, 1, 3), y=y)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KERAS_TRAIN), str(folder / "train.npz"),
         str(folder / "model.keras")],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode:
        sys.exit(f"Keras training failed:\n{proc.stderr[-3000:]}")
    return xband.load_model(folder / "model.keras", probe=np.moveaxis(x[:16], 1, 3), verbose=False)


def run_task(name: str, per_class_images: int, folder: Path, quick: bool) -> pd.DataFrame:
    """Per method: causal-band recall, deletion gap and randomisation results on one task."""
    make = TASKS[name]
    x, y, causal = make(per_class_images * N_CLASSES * 4, np.random.default_rng(SEEDS["train"]))
    test_x, test_y, _ = make(per_class_images * N_CLASSES, np.random.default_rng(SEEDS["test"]))
    is_keras = name == KERAS_TASK
    model = keras_model(x, y, folder) if is_keras else torch_model(x, y)
    images = np.moveaxis(test_x, 1, 3) if is_keras else test_x
    data = xband.image_set(images, test_y, bands=[f"b{i}" for i in range(N_BANDS)])
    results = {baseline: xband.explain(model, data, methods="all", baseline=baseline,
                                       progress=False, n_boot=200, seed=0)
               for baseline in BASELINES}
    result = results["data"]
    ev = xband.evaluate(model, data, result, checks="randomisation,faithfulness",
                        max_images=24 if quick else 48, baselines="mean,data",
                        random_orders=6 if quick else 10, cascade_stages=2)
    rows = []
    final = ev.randomisation[ev.randomisation["stage"] == ALL_LAYERS].set_index("method")
    gaps = ev.faithfulness[(ev.faithfulness["curve"] == "deletion")
                           & (ev.faithfulness["metric"] == "accuracy")]
    for method in result.methods:
        method_gaps = gaps[gaps["method"] == method].groupby("baseline")["gap"].mean()
        rows.append({"task": name, "method": method, "accuracy": result.summary["accuracy"]["overall"],
                     **{f"recall_{b}": recall(r, method, causal) for b, r in results.items()},
                     "gap_mean": method_gaps.get("mean", np.nan),
                     "gap_data": method_gaps.get("data", np.nan),
                     "random_rho": final.loc[method, "rank_rho"],
                     "flagged": bool(final.loc[method, "flagged"])})
    return pd.DataFrame(rows)


def recall(result: xband.Explanation, method: str, causal: dict[int, list[int]]) -> float:
    """Mean over classes of the share of a class's causal bands among its top-k by `method`."""
    table = result.table(method)
    found = []
    for c, bands in causal.items():
        ranked = table[table["class"] == result.class_names[c]].sort_values(["rank", "band_index"])
        found.append(len(set(ranked["band_index"][: len(bands)]) & set(bands)) / len(bands))
    return float(np.mean(found))


def markdown(results: pd.DataFrame) -> str:
    """Method rows; per task the top-k recall with the data / the mean baseline; then the mean
    recall, the mean over tasks of the deletion gap and of the trained-vs-random ρ, and how often
    the method was flagged."""
    tasks = list(pd.unique(results["task"]))
    accuracy = results.groupby("task", sort=False)["accuracy"].first()
    head = ["method"] + [f"{t} (acc {accuracy[t]:.2f})" for t in tasks] + [
        "mean recall", "deletion gap, mean / data", "ρ trained vs random", "flagged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, block in results.groupby("method", sort=False):
        per = block.set_index("task")
        cells = [" / ".join(f"{per.loc[t, f'recall_{b}']:.2f}" for b in BASELINES) for t in tasks]
        cells += [" / ".join(f"{block[f'recall_{b}'].mean():.2f}" for b in BASELINES),
                  f"{block['gap_mean'].mean():+.2f} / {block['gap_data'].mean():+.2f}",
                  f"{block['random_rho'].mean():+.2f}",
                  f"{int(block['flagged'].sum())}/{len(block)}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=30, help="test images per class")
    parser.add_argument("--quick", action="store_true", help="fewer images for the checks")
    parser.add_argument("--csv", type=Path, help="also write the per-task rows here")
    args = parser.parse_args()
    started = time.perf_counter()
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("XBAND_CACHE_DIR", str(Path(tmp) / "cache"))
        for name in TASKS:
            t0 = time.perf_counter()
            frames.append(run_task(name, args.per_class, Path(tmp), args.quick))
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = pd.concat(frames, ignore_index=True)
    if args.csv:
        results.to_csv(args.csv, index=False)
    print(markdown(results))
    print(f"\n{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
