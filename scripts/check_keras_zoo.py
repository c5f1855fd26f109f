"""Convert every keras.applications architecture (13 bands, 10 classes, weights=None) to PyTorch.

For each architecture: build it at 64x64x13 (or its minimum size) in a TensorFlow subprocess,
save it as .keras, load it with `xband.load_model` (Keras -> ONNX -> torch, fresh cache), and
record whether it converted, the output max abs diff, the input-gradient relative diff and the
conversion seconds. Writes a markdown table (default scripts/keras_zoo.md) after every model.

    python scripts/check_keras_zoo.py [--only NAME ...] [--out scripts/keras_zoo.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xband import load_model
from xband.errors import XbandError

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


def check(name: str, work: Path) -> dict:
    """Build, save and convert one architecture; the row of the table as a dict."""
    path = work / f"{name}.keras"
    built = _python(_BUILD, name, str(path), json.dumps(SIZES))
    row = {"name": name, "size": built.get("size"), "params": built.get("params")}
    if "error" in built:
        return {**row, "status": "not built", "message": built["error"]}
    start = time.perf_counter()
    try:
        model = load_model(path, cache_dir=work / "cache", accept_mismatch=True, verbose=False)
    except XbandError as err:
        return {**row, "status": "refused", "message": str(err).replace(str(path), path.name),
                "total_s": time.perf_counter() - start}
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(work / "cache", ignore_errors=True)
    fid = model.fidelity
    return {**row, "status": "converted" if fid.passed else "mismatch",
            "max_abs": fid.max_abs_diff, "grad_rel": fid.grad_rel_diff,
            "convert_s": model.timings.get("keras_to_onnx"),
            "total_s": time.perf_counter() - start}


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """Markdown table of the rows, then the messages of those that did not convert."""
    lines = [("| architecture | input | params (M) | status | max abs diff | grad rel diff | "
              "tf2onnx s | total s |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = _fmt(r["params"] and r["params"] / 1e6, ".1f")
        size = f"{r['size']}x{r['size']}x13" if r["size"] else ""
        lines.append(f"| {r['name']} | {size} | {params} | {r['status']} | "
                     f"{_fmt(r.get('max_abs'), '.1e')} | {_fmt(r.get('grad_rel'), '.1e')} | "
                     f"{_fmt(r.get('convert_s'), '.1f')} | {_fmt(r.get('total_s'), '.1f')} |")
    failed = [r for r in rows if "message" in r]
    if failed:
        lines += ["", "Messages:", ""] + [f"- **{r['name']}**: {r['message']}" for r in failed]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="architectures to check")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("keras_zoo.md"))
    args = parser.parse_args()
    names = args.only or _python(_LIST)
    if isinstance(names, dict):
        sys.exit(f"cannot list keras.applications: {names['error']}")
    names = sorted(names, key=lambda n: any(h in n for h in HEAVY))  # small ones first
    rows: list[dict] = []
    header = ("Keras applications → ONNX → PyTorch, `weights=None`, 13 bands, 10 classes, "
              "probe: 8 uniform [0, 1] images; tolerance 1e-4 absolute or 1e-3 × output range. "
              "Generated by `scripts/check_keras_zoo.py`.\n\n")
    with tempfile.TemporaryDirectory(prefix="xband-zoo-") as tmp:
        for name in names:
            rows.append(check(name, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
            args.out.write_text(header + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
