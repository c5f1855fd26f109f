"""What the trust checks cost beside the explanation they check, measured in one process: the
built-in demo (13 bands, `xband demo`'s data and Keras model) and the planted 200-band set
(xband.demo.spectra, explained by spectral region), each explained with the default settings,
then checked by `xband.evaluate` with its defaults; prints both times, their ratio, the images
each check took, the load average, and the verdict (trusted methods and one sentence per class).

    .venv/bin/python scripts/evaluate_cost.py [--case demo|spectra|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import xband  # noqa: E402
from xband import demo  # noqa: E402
from xband.demo.spectra import CLASS_NAMES, spectral_images, train_spectral  # noqa: E402


def demo_case():
    """The demo's model and data, as `xband demo` makes them."""
    images, labels = demo.demo_data(n_per_class=20, seed=1)
    data = xband.image_set(images, labels, bands=demo.BAND_NAMES, classes=demo.CLASS_NAMES)
    return xband.load_model(demo.MODEL_PATH, probe=images[:32], verbose=False), data, {}


def spectra_case():
    """The planted 200-band CNN (trained as tests/test_hyperspectral.py trains it) and 100
    held-out images, explained by spectral region."""
    x, y, wavelength = spectral_images(24, seed=0)
    net = train_spectral(x, y)
    test_x, test_y, _ = spectral_images(20, seed=1)
    data = xband.image_set(test_x, test_y, classes=CLASS_NAMES, wavelengths=wavelength)
    return xband.load_model(net, verbose=False), data, {"regions": "auto"}


def measure(name: str, case) -> dict:
    model, data, settings = case()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = xband.explain(model, data, progress=False, **settings)
    explained = time.perf_counter()
    quiet = {"progress": False} if "progress" in inspect.signature(xband.evaluate).parameters \
        else {}
    result.evaluation = xband.evaluate(model, data, result, **quiet)
    checked = time.perf_counter()
    verdict = result.verdict()
    out = {"case": name, "explain_s": round(explained - started, 1),
           "evaluate_s": round(checked - explained, 1),
           "ratio": round((checked - explained) / (explained - started), 2),
           "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
           "images_explained": int(len(result.indices)),
           "images_taken": result.evaluation.settings.get("images_taken",
                                                          result.evaluation.settings["images"]),
           "trusted": list(verdict.trusted), "excluded": verdict.excluded,
           "sentences": [c.sentence for c in verdict.classes]}
    print(json.dumps(out, indent=1, ensure_ascii=False), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("demo", "spectra", "both"), default="both")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    cases = {"demo": demo_case, "spectra": spectra_case}
    chosen = list(cases) if args.case == "both" else [args.case]
    found = [measure(name, cases[name]) for name in chosen]
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
