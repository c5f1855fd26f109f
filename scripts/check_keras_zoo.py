"""Convert every keras.applications architecture (13 bands, 10 classes, weights=None) to PyTorch.

For each architecture: build it at 64x64x13 (or its minimum size) in a TensorFlow subprocess,
its weights drawn with Keras' random seed `--seed`, save it as .keras, load it with
`xband.load_model` (Keras -> ONNX -> torch, fresh cache), and record whether it converted (or
is numerically unstable: TensorFlow's own float32 results fail the check against its float64
results), the range of its probabilities and logits on the probe, the logits' max |diff|
relative to their range, the input-gradient relative diff, the same two with both sides in
float64 and TensorFlow's own float32-vs-float64 differences (when the float32 check failed and
the float64 one ran), and the conversion seconds. Then it breaks the conversion on purpose (the
largest weight of the first convolution negated) and records whether the fidelity check catches
it: with the check of version 0.1 (probabilities, 1e-4 absolute or 1e-3 x range) and with the
current one (logits relative to their range, and the input gradient, in float64 too where float32
fails). Writes a markdown table (default scripts/keras_zoo.md) after every model.

    python scripts/check_keras_zoo.py [--only NAME ...] [--seed N] [--out scripts/keras_zoo.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.cache import export_keras  # noqa: E402
from converters.fidelity import torch_outputs  # noqa: E402
from tests.broken import break_first_conv  # noqa: E402
from xband import load_model  # noqa: E402
from xband.errors import XbandError  # noqa: E402
from xband.models.load import keras_fidelity  # noqa: E402

SIZES = (64, 71, 75, 96, 128, 160, 224, 331)
HEAVY = ("XLarge", "Large", "Base", "B5", "B6", "B7", "V2M", "V2L", "152", "169", "201")

_LIST = """
import json, keras
names = sorted(n for n in dir(keras.applications) if n[0].isupper()
               and callable(getattr(keras.applications, n)))
print(json.dumps(names))
"""

_BUILD = """
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
name, out = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(int(sys.argv[4]))
for size in json.loads(sys.argv[3]):
    try:
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 13),
                                                  classes=10)
    except ValueError as err:
        error = str(err)
        continue
    model.save(out)
    print(json.dumps({"size": size, "params": model.count_params()}))
    break
else:
    print(json.dumps({"error": error.splitlines()[0][:200]}))
"""


def _python(code: str, *args: str) -> dict | list:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: " + " ".join(proc.stderr.split()[-30:])}
    return json.loads(lines[-1])


def check(name: str, work: Path, seed: int) -> dict:
    """Build, save and convert one architecture; the row of the table as a dict."""
    path = work / f"{name}.keras"
    built = _python(_BUILD, name, str(path), json.dumps(SIZES), str(seed))
    row = {"name": name, "size": built.get("size"), "params": built.get("params")}
    if "error" in built:
        return {**row, "status": "not built", "message": built["error"]}
    start = time.perf_counter()
    try:
        model = load_model(path, cache_dir=work / "cache", accept_mismatch=True, verbose=False)
        total = time.perf_counter() - start
        exp = export_keras(path, "keras", model.sha256, cache_dir=work / "cache")  # cache hit
        broken = broken_check(model, exp, lambda: export_keras(
            path, "keras", model.sha256, cache_dir=work / "cache", float64=True))
    except XbandError as err:
        return {**row, "status": "refused", "message": str(err).replace(str(path), path.name),
                "total_s": time.perf_counter() - start}
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(work / "cache", ignore_errors=True)
    fid = model.fidelity
    status = "converted" if fid.passed else "unstable" if fid.reference_unstable else "mismatch"
    return {**row, "status": status,
            "prob_range": float(np.ptp(exp.outputs)), "logit_range": fid.output_range,
            "compared": fid.compared, "rel_diff": fid.rel_diff, "grad_rel": fid.grad_rel_diff,
            "float64_rel": fid.float64_rel_diff, "float64_grad": fid.float64_grad_rel_diff,
            "rounding_rel": fid.reference_rounding, "rounding_grad": fid.reference_grad_rounding,
            **broken, "convert_s": model.timings.get("keras_to_onnx"), "total_s": total}


def broken_check(model, exp, float64_reference) -> dict:
    """Verdicts, old and new, on a copy of the converted model with one weight changed: the
    largest-magnitude weight of the first convolution negated. The new one, as `load_model`'s,
    repeats the comparison in float64 (`float64_reference`) when float32 fails."""
    broken = copy.deepcopy(model)
    break_first_conv(broken.module)
    probs = torch_outputs(broken.module, exp.probe).astype(np.float64)
    max_abs = float(np.abs(probs - exp.outputs).max())
    old = max_abs <= 1e-4 or max_abs <= 1e-3 * float(np.ptp(exp.outputs))
    kind = broken.final_activation if broken.logits_module is not None else "none"
    converted = SimpleNamespace(module=broken.module, logits_module=broken.logits_module,
                                final_activation=kind)
    new = keras_fidelity(exp, converted, "probe", float64_reference).passed
    return {"broken_old": "PASS" if old else "FAIL", "broken_new": "PASS" if new else "FAIL"}


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _pair(row: dict, first: str, second: str) -> str:
    """'a / b' of two figures of a row, '' when the first was not measured."""
    if row.get(first) is None:
        return ""
    return f"{_fmt(row[first], '.1e')} / {_fmt(row.get(second), '.1e') or '-'}"


def table(rows: list[dict]) -> str:
    """Markdown table of the rows, then the messages of those that did not convert."""
    lines = [("| architecture | input | params (M) | status | probability range | logit range | "
              "logits max \\|diff\\| / range | grad rel diff | both in float64: logits / grad | "
              "TF float32 vs float64: logits / grad | broken copy: 0.1 check | "
              "broken copy: this check | tf2onnx s | total s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = _fmt(r["params"] and r["params"] / 1e6, ".1f")
        size = f"{r['size']}x{r['size']}x13" if r["size"] else ""
        compared = "" if r.get("compared") in (None, "logits") else f" ({r['compared']})"
        lines.append(f"| {r['name']} | {size} | {params} | {r['status']} | "
                     f"{_fmt(r.get('prob_range'), '.1e')} | {_fmt(r.get('logit_range'), '.1e')} | "
                     f"{_fmt(r.get('rel_diff'), '.1e')}{compared} | "
                     f"{_fmt(r.get('grad_rel'), '.1e')} | {_pair(r, 'float64_rel', 'float64_grad')} | "
                     f"{_pair(r, 'rounding_rel', 'rounding_grad')} | {r.get('broken_old', '')} | "
                     f"{r.get('broken_new', '')} | {_fmt(r.get('convert_s'), '.1f')} | "
                     f"{_fmt(r.get('total_s'), '.1f')} |")
    failed = [r for r in rows if "message" in r]
    if failed:
        lines += ["", "Messages:", ""] + [f"- **{r['name']}**: {r['message']}" for r in failed]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="architectures to check")
    parser.add_argument("--seed", type=int, default=0, help="Keras random seed of the weights")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("keras_zoo.md"))
    args = parser.parse_args()
    names = args.only or _python(_LIST)
    if isinstance(names, dict):
        sys.exit(f"cannot list keras.applications: {names['error']}")
    names = sorted(names, key=lambda n: any(h in n for h in HEAVY))  # small ones first
    rows: list[dict] = []
    header = ("Keras applications → ONNX → PyTorch, `weights=None`, 13 bands, 10 classes, "
              "probe: 8 uniform [0, 1] images. Compared with TensorFlow: the logits (the "
              "network without its final softmax) within 1e-3 × their range, and the input "
              "gradient of one class's logit within 1e-2 (relative). 'Broken copy': the largest "
              "weight of the first convolution negated, judged by version 0.1's check "
              "(probabilities within 1e-4 absolute or 1e-3 × their range) and by this one. "
              "Where the float32 comparison fails, it is repeated with both sides in float64 "
              "('both in float64'), beside TensorFlow's own float32 results against its float64 "
              "ones; 'unstable': those already differ beyond the tolerances. Weights drawn with "
              f"Keras seed {args.seed}. Generated by `scripts/check_keras_zoo.py`.\n\n")
    with tempfile.TemporaryDirectory(prefix="xband-zoo-") as tmp:
        for name in names:
            rows.append(check(name, Path(tmp), args.seed))
            print(json.dumps(rows[-1]), flush=True)
            args.out.write_text(header + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
