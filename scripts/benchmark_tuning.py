"""Does tuning ever hurt? End-to-end `explain` time per method with the speed-ups and measured
pass sizes against `--untuned`, over repeated runs.

    python scripts/benchmark_tuning.py [--images 96] [--repeats 5]
                                       [--out docs/benchmark/tuning.json]

On the Keras Conv-BN-MaxPool-GAP CNN of issue 12 (24×24 pixels, 10 bands, 4 classes, converted
by xband), runs `xband.explain` for one method at a time on every image (`all_images`), tuned
and untuned in turns; every tuned run starts from an empty tuning cache, so each pays for its
own measurement; one untimed run first warms the process up, and the order alternates (tuned
first in even repeats, untuned first in odd ones), so neither side pays for the first calls.
Prints min / median / max wall seconds (tuning included) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

BUILD = """
import sys
import keras
keras.utils.set_random_seed(0)
L = keras.layers
keras.Sequential([keras.Input((24, 24, 10)), L.Conv2D(32, 3, padding="same"),
    L.BatchNormalization(), L.ReLU(), L.Conv2D(32, 3, padding="same", activation="relu"),
    L.MaxPooling2D(), L.Conv2D(64, 3, padding="same", activation="relu"),
    L.GlobalAveragePooling2D(), L.Dense(4, activation="softmax")]).save(sys.argv[1])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--out", default="docs/benchmark/tuning.json")
    args = parser.parse_args()
    import xband
    from xband.files import write_text
    from xband.methods import resolve_methods

    folder = Path(tempfile.mkdtemp(prefix="xband-tuning-"))
    subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD), str(folder / "bn.keras")],
                   check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    model = xband.load_model(folder / "bn.keras", verbose=False, cache_dir=folder / "cache")
    rng = np.random.default_rng(0)
    data = xband.image_set(rng.uniform(0, 1, (args.images, 24, 24, 10)).astype(np.float32),
                           np.arange(args.images) % 4)
    xband.explain(model, data, methods=resolve_methods(args.methods), n_boot=10, all_images=True,
                  progress=False, examples_per_class=0, tuned=False)  # warm-up, untimed
    rows = []
    for method in resolve_methods(args.methods):
        times: dict[bool, list[float]] = {True: [], False: []}
        sizes, sped_up = [], []
        for repeat in range(args.repeats):
            for tuned in ((True, False) if repeat % 2 == 0 else (False, True)):
                os.environ["XBAND_CACHE_DIR"] = str(folder / f"tuning-{method.name}-{repeat}")
                started = time.perf_counter()
                result = xband.explain(model, data, methods=[method], tuned=tuned, n_boot=10,
                                       all_images=True, progress=False, examples_per_class=0)
                times[tuned].append(time.perf_counter() - started)
                if tuned:
                    settings = result.summary["settings"]
                    sizes.append(settings["images_per_pass"])
                    sped_up.append(bool(settings["speed_ups"]))
        row = {"method": method.name, "tuned_s": sorted(times[True]),
               "untuned_s": sorted(times[False]), "pass_sizes": sizes, "sped_up": sped_up,
               "median_ratio": float(np.median(times[True]) / np.median(times[False]))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_text(args.out, json.dumps({"date": time.strftime("%Y-%m-%d"), "images": args.images,
                                     "repeats": args.repeats, "rows": rows}, indent=2))
    print("| method | tuned s, min / median / max | untuned s, min / median / max | "
          "tuned ÷ untuned (medians) | pass sizes chosen (forward, gradient) | tuned runs "
          "with speed-ups |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        chosen = sorted({(s["forward"], s["gradient"]) for s in r["pass_sizes"]})
        print(f"| {r['method']} | {_spread(r['tuned_s'])} | {_spread(r['untuned_s'])} | "
              f"{r['median_ratio']:.2f} | {', '.join(f'{f}/{g}' for f, g in chosen)} | "
              f"{sum(r['sped_up'])} of {len(r['sped_up'])} |")


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {np.median(values):.2f} / {max(values):.2f}"


if __name__ == "__main__":
    main()
