"""How far sampled band Shapley values are from exact ones, as a function of network passes.

    python scripts/shapley_error.py [--bands 10,13] [--images-per-class 20] [--repeats 3]
                                    [--out docs/benchmark/shapley_error.json]

For a 10-band and a 13-band CNN trained on planted data (4 classes, each marked by a strong
and a weaker band, every image carrying a distractor band), computes exact band Shapley values
over all 2^B coalitions, then for several numbers of passes per image the estimates of:
permutation sampling (Captum's ShapleyValueSampling), antithetic permutation sampling (each
permutation paired with its reverse), KernelSHAP (Captum's) and KernelSHAP with paired subsets
(each subset with its complement). Reports, averaged over seeds: the median relative error per
image, how often the image's top band matches the exact one, and how often each class's top-3
bands (by mean share) equal the exact ones (bands within one percentage point of share of each
other may swap, as in xband's stopping rule).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from xband.methods import Batch, Context, KernelShap, Shapley  # noqa: E402
from xband.methods._base import PassSizes
from xband.methods.shapley import sampled_shapley_weights  # noqa: E402
from xband.run.aggregate import shares  # noqa: E402
from xband.run.forward import forward_module  # noqa: E402
from xband.run.runner import seeded  # noqa: E402

CLASSES, SIZE = 4, 16


def planted(n_bands: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c: a strong blob in band 3c and a weaker one in band 3c+1 (mod B); every image a
    blob in a random other band."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), per_class)
    x = rng.normal(scale=0.3, size=(len(y), n_bands, SIZE, SIZE)).astype(np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i, c in enumerate(y):
        strong, weak = (3 * c) % n_bands, (3 * c + 1) % n_bands
        other = rng.choice([b for b in range(n_bands) if b not in (strong, weak)])
        for band, height in ((strong, 2.0), (weak, 1.0), (other, 2.0)):
            cy, cx = rng.uniform(4, SIZE - 4, 2)
            x[i, band] += height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    return x, y


def trained(x: np.ndarray, y: np.ndarray) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(x.shape[1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(32, CLASSES))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


class PlainPermutations(Shapley):
    """Permutation sampling with independent orders (Captum's ShapleyValueSampling); xband's
    sampled form pairs each order with its reverse."""

    def coalitions(self, n_feat: int, n_background: int, n_images: int):
        orders = torch.rand(n_images, self.n_samples, n_feat).argsort(dim=2)
        present, weights = sampled_shapley_weights(orders)
        return present, weights, torch.zeros(present.shape[1], dtype=torch.long)


class PairedKernelShap(KernelShap):
    """KernelSHAP whose drawn subsets come with their complements."""

    def subsets(self, n_images: int, n_feat: int, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        half, pick = KernelShap(n_samples=2 + (self.n_samples - 2 + 1) // 2).subsets(
            n_images, n_feat, ctx)
        drawn = half[:, 2:]
        present = torch.cat([half[:, :2], drawn, 1 - drawn], dim=1)[:, :self.n_samples]
        return present, torch.zeros(present.shape[:2], dtype=torch.long)  # a constant baseline


def scores(method, x: torch.Tensor, target: torch.Tensor, ctx: Context, seed: int) -> np.ndarray:
    with seeded(seed):
        batch = Batch(x=x, target=target, label=target, index=np.arange(len(x)))
        return method.attribute(batch, ctx).scores


def compare(estimate: np.ndarray, exact: np.ndarray, y: np.ndarray,
            tie: float = 0.01) -> dict[str, float]:
    """Median relative error per image; how often the image's top band is the exact one; how
    often a class's top-3 bands by mean share are the exact ones (bands whose exact mean shares
    are within `tie` of each other may swap, as in xband's stopping rule)."""
    error = np.linalg.norm(estimate - exact, axis=1) / np.linalg.norm(exact, axis=1)
    top1 = np.mean(estimate.argmax(axis=1) == exact.argmax(axis=1))
    classes = []
    for c in range(CLASSES):
        reference = shares(exact[y == c]).mean(axis=0)
        est = set(np.argsort(-shares(estimate[y == c]).mean(axis=0))[:3])
        ref = set(np.argsort(-reference)[:3])
        gained, lost = est - ref, ref - est
        classes.append(not gained or max(reference[list(lost)]) - min(reference[list(gained)])
                       <= tie)
    return {"median_rel_error": float(np.median(error)), "image_top1_match": float(top1),
            "class_top3_match": float(np.mean(classes))}


def forms(n_bands: int) -> list[tuple[str, int, object]]:
    """(form, passes per image, method) for a range of costs up to the exact form's."""
    out = []
    for perms in (2, 4, 8, 16, 32, 64):
        passes = perms * n_bands + 1
        if passes < 2 ** n_bands:
            out.append(("permutation", passes,
                        PlainPermutations(max_exact_bands=1, n_samples=perms)))
            out.append(("antithetic permutation", passes,
                        Shapley(max_exact_bands=1, n_samples=perms)))
    for samples in (32, 64, 128, 256, 512, 1024):
        if samples < 2 ** n_bands:
            out.append(("kernelshap", samples, KernelShap(n_samples=samples)))
            out.append(("kernelshap paired", samples, PairedKernelShap(n_samples=samples)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", default="10,13")
    parser.add_argument("--images-per-class", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmark/shapley_error.json")
    args = parser.parse_args()
    from xband.files import write_text

    rows = []
    for n_bands in map(int, args.bands.split(",")):
        x, y = planted(n_bands, 150, seed=0)
        test_x, test_y = planted(n_bands, args.images_per_class, seed=1)
        forward = forward_module(trained(x, y), "channels_first", "cpu")
        xt, target = torch.from_numpy(test_x), torch.from_numpy(test_y)
        ctx = Context(forward=forward, baseline=xt.mean(dim=(0, 2, 3), keepdim=True),
                      band_std=torch.ones(n_bands), donors=None, passes=PassSizes(256, 256))
        started = time.perf_counter()
        exact = scores(Shapley(max_exact_bands=n_bands), xt, target, ctx, 0)
        print(f"{n_bands} bands: exact values, {2 ** n_bands} passes per image, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        for form, passes, method in forms(n_bands):
            measured = [compare(scores(method, xt, target, ctx, seed), exact, test_y)
                        for seed in range(args.repeats)]
            row = {"bands": n_bands, "form": form, "passes_per_image": passes,
                   "exact_passes": 2 ** n_bands,
                   **{k: float(np.mean([m[k] for m in measured])) for k in measured[0]}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_text(args.out, json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print("| bands | form | passes/image | median rel. error | image top band = exact | "
          "class top 3 = exact |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bands']} | {r['form']} | {r['passes_per_image']} | "
              f"{r['median_rel_error']:.3f} | {r['image_top1_match']:.2f} | "
              f"{r['class_top3_match']:.2f} |")


if __name__ == "__main__":
    main()
