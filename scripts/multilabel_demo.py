"""A small multi-label run: a PyTorch CNN ending in a sigmoid per class, trained on synthetic
Sentinel-2 patches that carry one to three planted classes each (`xband.demo.demo_multilabel_data`:
Water B02, Crop B05, Forest B08, Bare soil B11, Urban B04 + B12, and a distractor blob), then
explained by every method for each image's labels. Prints per-label precision, recall and F1
and each method's top band per class (markdown), and writes the report.

    .venv/bin/python scripts/multilabel_demo.py [--out xband-multilabel-demo]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import xband
from xband.demo import BAND_NAMES, CLASS_NAMES, PLANTED, demo_multilabel_data


def train(x: np.ndarray, present: np.ndarray, epochs: int = 60, seed: int = 0) -> nn.Module:
    """Standardise each band (statistics of the training images, inside the network), two
    convolutions, global max pool, one logit per class, sigmoid; binary cross-entropy."""
    torch.manual_seed(seed)
    mean = torch.from_numpy(x.mean(axis=(0, 2, 3))).view(1, -1, 1, 1)
    std = torch.from_numpy(x.std(axis=(0, 2, 3))).view(1, -1, 1, 1)

    class Standardise(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return (t - mean) / std

    body = nn.Sequential(Standardise(), nn.Conv2d(13, 24, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                         nn.Flatten(), nn.Linear(24, len(CLASS_NAMES)))
    opt = torch.optim.Adam(body.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(present).float()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(body(xt[batch]), yt[batch]).backward()
            opt.step()
    return nn.Sequential(body, nn.Sigmoid()).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="xband-multilabel-demo")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=150)
    args = parser.parse_args()
    start = time.perf_counter()
    net = train(*demo_multilabel_data(args.train, seed=0))
    trained = time.perf_counter() - start
    x, present = demo_multilabel_data(args.test, seed=1)
    model = xband.load_model(net)
    result = xband.explain(model, (x, present), bands=BAND_NAMES, classes=CLASS_NAMES, seed=0)
    result.save(args.out)
    accuracy = result.summary["accuracy"]
    print(f"\ntraining {trained:.0f} s; explanation {result.summary['run_time_s']:.0f} s for "
          f"{len(x)} images, {len(result.pairs)} (image, label) pairs; exact match "
          f"{accuracy['exact_match']:.2f}\n")
    print("| label | planted | images | precision | recall | F1 |\n|---|---|---|---|---|---|")
    for name, row in accuracy["per_class"].items():
        print(f"| {name} | {' + '.join(PLANTED[name])} | {row['support']} | "
              f"{row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} |")
    top = result.top_bands(k=2).drop(index="all images")
    print("\n| label | " + " | ".join(top.columns) + " |\n|---|" + "---|" * len(top.columns))
    for name, row in top.iterrows():
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
