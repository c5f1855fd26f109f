"""Keras applications exported to ONNX by tf2onnx, then handed to xband as .onnx files: the check
of an ONNX source (onnxruntime for the logits; the torch module's input gradient against float64
central differences of itself, as onnxruntime has no gradients) must pass every correct
conversion, and fail a copy of the converted module with one weight changed (the largest weight
of the first convolution negated) or with a backward that does not follow its forward.

    python scripts/check_onnx_route.py [--only NAME ...] [--out scripts/onnx_route.md]

Writes a markdown table after every model (default scripts/onnx_route.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from check_keras_zoo import _BUILD, SIZES, _python  # noqa: E402

from converters.cache import content_hash, export_keras  # noqa: E402
from converters.keras_export import default_probe  # noqa: E402
from converters.onnx_to_torch import onnx_to_torch, read_onnx  # noqa: E402
from tests.broken import WrongBackward, break_first_conv  # noqa: E402
from xband import load_model  # noqa: E402
from xband.errors import XbandError  # noqa: E402
from xband.models.load import onnx_fidelity  # noqa: E402

DEFAULT = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121",
           "InceptionV3", "VGG16")


def _negated_first_weight(module: nn.Module) -> nn.Module:
    broken = copy.deepcopy(module)
    break_first_conv(broken)
    return broken


def _wrong_backward(module: nn.Module) -> nn.Module:
    return WrongBackward(module).eval()


def check(name: str, work: Path, seed: int) -> dict:
    """Build one architecture, export it to ONNX, and check the ONNX file as xband does."""
    path = work / f"{name}.keras"
    built = _python(_BUILD, name, str(path), json.dumps(SIZES), str(seed))
    row = {"name": name, "size": built.get("size")}
    if "error" in built:
        return {**row, "status": "not built", "message": built["error"]}
    start = time.perf_counter()
    try:
        exp = export_keras(path, "keras", content_hash(path), cache_dir=work / "cache")
        model = load_model(exp.onnx_path, accept_mismatch=True, verbose=False)
        conv = onnx_to_torch(read_onnx(exp.onnx_path), exp.onnx_path)
        logits = conv.logits_module or conv.module
        shape = (model.n_bands, *model.spatial_size) if model.layout == "channels_first" else \
            (*model.spatial_size, model.n_bands)
        probe = default_probe(shape)
        graph = conv.logits_graph.SerializeToString()
        broken = {kind: onnx_fidelity(graph, make(logits), probe, reference="onnxruntime",
                                      probe_desc="probe", source=name).passed
                  for kind, make in (("weight", _negated_first_weight),
                                     ("backward", _wrong_backward))}
    except XbandError as err:
        return {**row, "status": "refused", "message": str(err)[:300],
                "total_s": time.perf_counter() - start}
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(work / "cache", ignore_errors=True)
    fid = model.fidelity
    return {**row, "status": "PASS" if fid.passed else "FAIL", "rel_diff": fid.rel_diff,
            "grad_rel": fid.grad_rel_diff, "grad_reference": fid.grad_reference,
            "broken_weight": "PASS" if broken["weight"] else "FAIL",
            "broken_backward": "PASS" if broken["backward"] else "FAIL",
            "total_s": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    lines = ["| architecture | input | ONNX file check | logits max \\|diff\\| / range | "
             "gradient rel diff (float64 central differences) | one weight changed | "
             "wrong backward | total s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size']}x{r['size']}x13" if r.get("size") else ""
        lines.append(
            f"| {r['name']} | {size} | {r['status']} | "
            f"{'' if r.get('rel_diff') is None else format(r['rel_diff'], '.1e')} | "
            f"{'' if r.get('grad_rel') is None else format(r['grad_rel'], '.1e')} | "
            f"{r.get('broken_weight', '')} | {r.get('broken_backward', '')} | "
            f"{'' if r.get('total_s') is None else format(r['total_s'], '.0f')} |")
    notes = [f"- **{r['name']}**: {r['message']}" for r in rows if "message" in r]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", default=list(DEFAULT))
    parser.add_argument("--seed", type=int, default=0, help="Keras random seed of the weights")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("onnx_route.md"))
    args = parser.parse_args()
    header = ("Keras applications (`weights=None`, 13 bands, 10 classes, Keras seed "
              f"{args.seed}) exported to ONNX by tf2onnx and explained as .onnx files: xband's "
              "check of an ONNX source, and the same check of a converted module with one weight "
              "changed or a wrong backward (both must FAIL). Probe: 8 uniform [0, 1] images. "
              "Generated by `scripts/check_onnx_route.py`.\n\n")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="xband-onnx-route-") as tmp:
        for name in args.only:
            rows.append(check(name, Path(tmp), args.seed))
            print(json.dumps(rows[-1], default=str), flush=True)
            args.out.write_text(header + table(rows))
    return 0 if all(r["status"] == "PASS" and r["broken_weight"] == "FAIL"
                    and r["broken_backward"] == "FAIL" for r in rows if "broken_weight" in r) else 1


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
