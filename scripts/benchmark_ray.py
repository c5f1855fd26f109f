"""Throughput of `--engine ray` with 1 and 2 workers against the single-process run, on this
machine, and what the driver and each worker hold per image.

    python scripts/benchmark_ray.py [--images 32,160] [--workers 1,2] [--json docs/benchmark/ray.json]

A EuroSAT-sized network (64×64×13, Conv-BN-ReLU-MaxPool ×2, global average pool; weights as
initialised: speed does not depend on training) explains synthetic images with Integrated
Gradients (32 steps from the band mean, every image) through `xband.explain`. Each engine
explains a small and a large set; the marginal rate (extra images ÷ extra seconds) is the
engine's images/s, and what the small run took beyond its images at that rate is its fixed cost
(Ray start, actors loading the network). The Ray runs start their own local Ray with as many
CPUs as workers. Numbers go to stdout and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import xband  # noqa: E402

BANDS, SIZE, CLASSES = 13, 64, 10
SETTINGS = dict(methods=[xband.IntegratedGradients(n_steps=32)], baseline="mean",
                all_images=True, progress=False, n_boot=20, accept_low_accuracy=True,
                tuned=False, examples_per_class=0)


def network() -> nn.Module:
    torch.manual_seed(0)
    block = [nn.Conv2d(BANDS, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, CLASSES))


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, BANDS, SIZE, SIZE)).astype(np.float32), np.arange(n) % CLASSES


def timed(model, n: int, engine) -> tuple[float, dict]:
    x, y = images(n)
    started = time.perf_counter()
    result = xband.explain(model, (x, y), engine=engine, **SETTINGS)
    return time.perf_counter() - started, result.scores


def measure(model, sizes: tuple[int, int], engine) -> dict:
    (t_small, _), (t_large, scores) = timed(model, sizes[0], engine), timed(model, sizes[1], engine)
    rate = (sizes[1] - sizes[0]) / (t_large - t_small)
    return {"seconds": [round(t_small, 1), round(t_large, 1)], "images_per_s": round(rate, 2),
            "fixed_s": round(t_small - sizes[0] / rate, 1), "scores": scores}


def memory_per_image(model, n_methods: int = 10, background: int = 8) -> dict:
    """Bytes the driver keeps per image (band scores of every method, float64, plus label and
    prediction) and what a worker holds: the network, a batch with its donor images."""
    buffer = io.BytesIO()
    torch.save(model.module, buffer)
    image = BANDS * SIZE * SIZE * 4
    return {"driver_bytes_per_image": n_methods * BANDS * 8 + 16,
            "worker_network_bytes": len(buffer.getvalue()),
            "worker_batch_bytes": 64 * image * (1 + background), "image_bytes": image}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="32,160", help="small,large image counts")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to measure")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    sizes = tuple(int(v) for v in args.images.split(","))
    model = xband.load_model(network(), verbose=False)
    rows = {"single process": measure(model, sizes, "single")}
    for workers in (int(v) for v in args.workers.split(",")):
        rows[f"ray, {workers} worker{'s' * (workers > 1)}"] = measure(
            model, sizes, xband.RayEngine(workers=workers))
    reference = rows["single process"]["scores"]
    print(f"Integrated Gradients (32 steps), {SIZE}×{SIZE}×{BANDS}, {os.cpu_count()} CPU cores; "
          f"{sizes[0]} and {sizes[1]} images per engine")
    print("| engine | s, small / large | images/s | fixed s | same scores |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        same = all(np.array_equal(reference[m], row["scores"][m]) for m in reference)
        row["same_scores"] = same
        print(f"| {name} | {row['seconds'][0]} / {row['seconds'][1]} | {row['images_per_s']} | "
              f"{row['fixed_s']} | {same} |")
    memory = memory_per_image(model)
    print(json.dumps(memory))
    if args.json:
        kept = {name: {k: v for k, v in row.items() if k != "scores"} for name, row in rows.items()}
        args.json.write_text(json.dumps({"sizes": sizes, "engines": kept, "memory": memory},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
