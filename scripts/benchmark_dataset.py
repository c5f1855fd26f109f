"""The default `xband explain` on a EuroSAT-sized data set: time to the answer, and whether the
answer is the one every image would give.

    python scripts/benchmark_dataset.py [--images 27000] [--folder /tmp/xband-eurosat]
        [--reference REFERENCE/importance.csv] [--device cpu] [--seed 0]
        [--all-images-only [--few-draws]]

Builds (once, seeded) 27,000 synthetic Sentinel-2 patches of 64×64×13 in EuroSAT-MS's storage
(uint16 reflectance ×10000, bands last) in 10 classes, each class marked by three planted bands
of falling strength, every image also carrying a blob in a band its class does not use; trains a
small CNN (Conv-BN-ReLU-MaxPool ×2, global average pool) on 6,000 more and exports it to ONNX.
Then times the default `xband explain` (every method; images per class until settled) from the
command line, tuning and model loading included, and compares each method's top-3 bands per
class with those of an every-image run (`--all-images-only` makes just that reference, and
`--reference` reads it); `--seed` changes which images the rounds take, to see how much the
time to the answer depends on that draw. `--few-draws` gives every image the draws of the
rounds until settled (one background image, one antithetic pair of band orders, …): the answer
the default run's estimators give on all 27,000 images, 100 minutes on 2 CPU cores; without
it each image takes the full draws of `--all-images` (about 5 hours here; minutes on a GPU with
`--device cuda`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BANDS, SIZE, CLASSES = 13, 64, 10
LEVEL = np.array([1300, 1100, 1000, 900, 1200, 1900, 2200, 2400, 2500, 800, 40, 1800, 1200])
SPREAD = np.array([200, 300, 300, 300, 300, 300, 300, 300, 300, 200, 5, 300, 300])
USABLE = [b for b in range(BANDS) if b != 10]  # B10's spread is tiny, as in real data
# class → its (strong, medium, weak) planted bands
PLANTED = {c: (USABLE[c], USABLE[(c + 4) % 12], USABLE[(c + 8) % 12]) for c in range(CLASSES)}
HEIGHTS = (1.6, 1.0, 0.6)  # blob heights in units of the band's spread × 3


def make(n: int, seed: int, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (N, 64, 64, 13) uint16 and labels, seeded, generated in chunks."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = np.empty((n, SIZE, SIZE, BANDS), dtype=np.uint16)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for start in range(0, n, chunk):
        labels = y[start:start + chunk]
        k = len(labels)
        coarse = rng.normal(size=(k, BANDS, SIZE // 8, SIZE // 8))
        texture = 0.7 * np.kron(coarse, np.ones((1, 1, 8, 8))) + 0.5 * rng.normal(
            size=(k, BANDS, SIZE, SIZE))
        images = LEVEL[None, :, None, None] + SPREAD[None, :, None, None] * texture
        for i, c in enumerate(labels):
            other = rng.choice([b for b in USABLE if b not in PLANTED[c]])
            for band, height in [*zip(PLANTED[c], HEIGHTS, strict=True), (other, 1.6)]:
                cy, cx = rng.uniform(12, SIZE - 12, 2)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(5, 9) ** 2))
                images[i, band] += 3 * SPREAD[band] * height * blob
        x[start:start + k] = np.clip(np.moveaxis(images, 1, 3), 0, 65535).astype(np.uint16)
    return x, y


def build(folder: Path, n_images: int) -> tuple[Path, Path, Path]:
    """The data (x.npy, y.npy) and the trained model (model.onnx), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    x_path, y_path, model_path = folder / "x.npy", folder / "y.npy", folder / "model.onnx"
    if not (x_path.exists() and y_path.exists()):
        started = time.perf_counter()
        x, y = make(n_images, seed=1)
        np.save(y_path, y)
        np.save(x_path, x)
        print(f"data: {n_images} images in {time.perf_counter() - started:.0f} s", flush=True)
    if not model_path.exists():
        train(model_path)
    return x_path, y_path, model_path


def train(path: Path) -> None:
    import torch
    from torch import nn

    started = time.perf_counter()
    x, y = make(6000, seed=0)
    xt = torch.from_numpy(np.moveaxis(x, 3, 1).astype(np.float32) * 1e-4)
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(BANDS, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, CLASSES))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for epoch in range(6):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            batch = order[start:start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            opt.step()
        with torch.no_grad():
            accuracy = (net.eval()(xt[:1000]).argmax(1) == yt[:1000]).float().mean()
        net.train()
        print(f"epoch {epoch}: training accuracy {accuracy:.3f}", flush=True)
    net.eval()
    torch.onnx.export(nn.Sequential(net, nn.Softmax(dim=1)), (xt[:2],), str(path),
                      dynamo=False, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    print(f"model: trained and exported in {time.perf_counter() - started:.0f} s", flush=True)


def run_xband(x_path: Path, y_path: Path, model_path: Path, out: Path, *extra: str) -> float:
    """Wall time of `xband explain` from the command line (model loading and tuning included)."""
    import shutil

    from xband.cli.main import main

    shutil.rmtree(out, ignore_errors=True)  # this script's own output from an earlier run
    names = ",".join(f"class{c}" for c in range(CLASSES))
    started = time.perf_counter()
    code = main(["explain", "--model", str(model_path), "--data", str(x_path), "--labels",
                 str(y_path), "--sensor", "sentinel2", "--scale", "0.0001", "--classes", names,
                 "--out", str(out), "--quiet", *extra])
    if code != 0:
        sys.exit(f"xband explain failed (exit {code})")
    return time.perf_counter() - started


def few_draws_options() -> list[str]:
    """Options giving every image the draws the rounds until settled give it."""
    from xband.methods import METHODS
    from xband.run.config import BACKGROUND_UNTIL_SETTLED

    options = ["--background-images", str(BACKGROUND_UNTIL_SETTLED)]
    for name, method in METHODS.items():
        for option, value in method.until_settled.items():
            options += ["--method-option", f"{name}.{option}={value}"]
    return options


def top3(importance: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    rows = importance[(importance["grouping"] == "true_class")
                      & (importance["class"] != "all images")]
    return {(m, c): list(g.sort_values("share", ascending=False)["band"][:3])
            for (m, c), g in rows.groupby(["method", "class"], sort=False)}


def differences(sampled: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Each (method, class) whose top-3 set differs, with the bands' share intervals."""
    mine, theirs = top3(sampled), top3(reference)
    lines = []
    for key, bands in mine.items():
        if set(bands) != set(theirs[key]):
            method, cls = key
            rows = sampled[(sampled["method"] == method) & (sampled["class"] == cls)
                           & (sampled["grouping"] == "true_class")].set_index("band")
            detail = ", ".join(f"{b} {100 * rows.loc[b, 'share']:.1f}% "
                               f"[{100 * rows.loc[b, 'share_ci_low']:.1f}, "
                               f"{100 * rows.loc[b, 'share_ci_high']:.1f}]"
                               for b in dict.fromkeys(bands + theirs[key]))
            lines.append(f"{method}, {cls}: sampled {bands} vs every image {theirs[key]} "
                         f"(sampled shares with 95% intervals: {detail})")
    return lines


def all_images_rows(out: Path, reference: pd.DataFrame) -> list[str]:
    """How far the sampled run's "all images" shares lie from the every-image run's: as written
    (each class weighed by its images in the data), and as plain means over the images
    explained (recomputed from scores.npz), which lean toward the classes that took many."""
    from xband.run.aggregate import importance_table

    def everyone(table: pd.DataFrame) -> pd.Series:
        rows = table[(table["grouping"] == "true_class") & (table["class"] == "all images")]
        return rows.set_index(["method", "band"])["share"]

    saved = np.load(out / "scores.npz")
    methods = [name.removeprefix("scores_") for name in saved.files if name.startswith("scores_")]
    plain = importance_table({m: saved[f"scores_{m}"] for m in methods}, labels=saved["labels"],
                             predictions=saved["predictions"],
                             class_names=list(saved["class_names"]),
                             band_names=list(saved["band_names"]), target_mode="true", n_boot=10)
    truth, lines = everyone(reference), []
    for name, table in (("as written (classes by their images)", pd.read_csv(out / "importance.csv")),
                        ("plain means over the images explained", plain)):
        shares = everyone(table)
        gap = 100 * (shares - truth.reindex(shares.index)).abs()
        first = sum(shares[m].idxmax() == truth[m].idxmax() for m in methods)
        lines.append(f"{name}: |share - every image| max {gap.max():.1f}, mean {gap.mean():.2f} "
                     f"percentage points; first band equal for {first} of {len(methods)} methods")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=27000)
    parser.add_argument("--folder", default="/tmp/xband-eurosat")
    parser.add_argument("--reference", help="importance.csv of an every-image run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="xband explain's --seed")
    parser.add_argument("--all-images-only", action="store_true")
    parser.add_argument("--few-draws", action="store_true",
                        help="with --all-images-only: each image the draws of the rounds until "
                        "settled")
    args = parser.parse_args()
    folder = Path(args.folder)
    x_path, y_path, model_path = build(folder, args.images)
    if args.all_images_only:
        out = folder / ("all-images-few-draws" if args.few_draws else "all-images")
        draws = few_draws_options() if args.few_draws else []
        seconds = run_xband(x_path, y_path, model_path, out, "--all-images", "--device",
                            args.device, *draws)
        print(f"every image: {seconds:.0f} s; table: {out / 'importance.csv'}")
        return
    out = folder / ("default" if args.seed == 0 else f"default-seed{args.seed}")
    seconds = run_xband(x_path, y_path, model_path, out, "--device", args.device,
                        "--seed", str(args.seed))
    sampled = pd.read_csv(out / "importance.csv")
    summary = json.loads((out / "summary.json").read_text())
    print(f"default xband explain (seed {args.seed}): {seconds:.0f} s wall ({args.images} images, "
          f"{summary['data']['n_images']} explained)")
    if args.reference:
        reference = pd.read_csv(args.reference)
        diffs = differences(sampled, reference)
        mine, theirs = top3(sampled), top3(reference)
        total = len(mine)
        first = sum(mine[key][0] == theirs[key][0] for key in mine)
        two = sum(mine[key][:2] == theirs[key][:2] for key in mine)
        print(f"top-3 bands equal to the every-image run for {total - len(diffs)} of {total} "
              f"(method, class) pairs; the first band for {first}, the first two in order for "
              f"{two}")
        for line in diffs:
            print("  " + line)
        print("the 'all images' rows against the every-image run's:")
        for line in all_images_rows(out, reference):
            print("  " + line)


if __name__ == "__main__":
    main()
