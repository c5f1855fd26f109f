"""Peak memory of `xband explain` on EuroSAT-sized GeoTIFF class folders of growing size.

Writes N random 64×64×13 uint16 patches (10 class folders) under --work (default /tmp), exports
a small 13-band CNN to ONNX, and runs `xband explain --methods saliency --sensor eurosat` in a
fresh process per N, reporting its peak resident memory (ru_maxrss):

    .venv/bin/python scripts/measure_memory.py --n 2000 20000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]


def write_patches(root: Path, n: int, seed: int = 0) -> None:
    import tifffile

    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        (root / cls).mkdir(parents=True, exist_ok=True)
        patch = rng.integers(0, 4000, size=(64, 64, 13), dtype=np.uint16)
        tifffile.imwrite(root / cls / f"{cls}_{i}.tif", patch, photometric="minisblack",
                         planarconfig="contig")


def small_model(path: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(13, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(16, len(CLASSES))).eval()
    torch.onnx.export(net, (torch.zeros(2, 13, 64, 64),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def child(model: str, data: str, out: str) -> None:
    """Run the explain command in this process and print its peak RSS in MiB."""
    from xband.cli.main import main

    code = main(["explain", "--model", model, "--data", data, "--out", out, "--sensor", "eurosat",
                 "--scale", "0.0001", "--methods", "saliency", "--quiet"])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"PEAK_RSS_MIB {peak_mib:.0f} exit {code}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--work", default=tempfile.gettempdir(),
                        help="where the patches are written (default: the temp folder)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="xband-memory-", dir=args.work))
    model = small_model(work / "model.onnx")
    for n in args.n:
        data = work / f"eurosat_{n}"
        write_patches(data, n)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, __file__, "--child", str(model), str(data),
                              str(work / f"report_{n}")], capture_output=True, text=True)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith("PEAK_RSS_MIB")), None)
        if line is None:
            sys.exit(f"explain failed on {n} images:\n{run.stderr[-3000:]}")
        print(f"{n} images: peak RSS {line.split()[1]} MiB, {time.perf_counter() - start:.0f} s "
              f"(patches in {data})", flush=True)


if __name__ == "__main__":
    main()
