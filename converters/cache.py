"""Run the Keras→ONNX step in its own process, cached by the model's content hash.

The ONNX file is keyed by the sha256 of the model (file, or every file of a SavedModel folder) and
the opset; the TensorFlow reference outputs additionally by the probe, so a second run with the
same model and probe starts no TensorFlow process at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from converters.files import write_text
from converters.keras_export import PROBE_N, PROBE_SEED

_REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$XBAND_CACHE_DIR`, else `~/.cache/xband`."""
    return Path(cache_dir or os.environ.get("XBAND_CACHE_DIR") or Path.home() / ".cache" / "xband")


def content_hash(path: Path) -> str:
    """sha256 of a file, or of every file (relative name and bytes) below a folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def probe_key(probe: np.ndarray | None, input_size: tuple[int, int] | None,
              probe_layout: str | None = None) -> str:
    """Cache key of a probe: the hash of user data (and of its layout), or the recipe of the
    default probe."""
    if probe is None:
        size = "x".join(map(str, input_size)) if input_size else "auto"
        return f"uniform-n{PROBE_N}-seed{PROBE_SEED}-{size}"
    arr = np.ascontiguousarray(probe, dtype=np.float32)
    described = f"{arr.shape}{probe_layout or ''}".encode()
    return "data-" + hashlib.sha256(described + arr.tobytes()).hexdigest()[:16]


@dataclass
class KerasExport:
    """What the Keras process produced: ONNX file, reference on the probe, and how it went."""

    onnx_path: Path
    probe: np.ndarray
    outputs: np.ndarray
    logits: np.ndarray | None  # before the final softmax/sigmoid; None if TensorFlow cannot tell
    grad: np.ndarray  # input gradient of the logits (else of the outputs) for class `target`
    target: int
    final_activation: str | None  # "softmax", "sigmoid", "none"; None: unknown (SavedModel)
    cache_hit: bool
    convert_seconds: float | None
    # the same three computed in float64 (the model's float64 twin), when asked for and possible
    exact_outputs: np.ndarray | None = None
    exact_logits: np.ndarray | None = None
    exact_grad: np.ndarray | None = None


def export_keras(path: Path, fmt: str, sha256: str, *, opset: int = 17,
                 probe: np.ndarray | None = None, probe_layout: str | None = None,
                 input_size: tuple[int, int] | None = None,
                 cache_dir: str | os.PathLike | None = None, trust_graph: bool = False,
                 float64: bool = False) -> KerasExport:
    """ONNX file and TensorFlow reference for a Keras/SavedModel source (cache or subprocess);
    `probe_layout` ("channels_first", "channels_last"; None: the model's) is the band axis of
    `probe`; `trust_graph` lets a SavedModel whose graph reads or writes files or calls Python
    run; `float64` adds the reference computed by the model's float64 twin (a Keras model's)."""
    entry = cache_root(cache_dir) / "keras" / f"{sha256}-opset{opset}"
    onnx_path = entry / "model.onnx"
    suffix = "-float64" if float64 else ""
    ref_path = entry / f"ref2-{probe_key(probe, input_size, probe_layout)}{suffix}.npz"
    meta_path = entry / "meta.json"
    hit = onnx_path.exists() and ref_path.exists() and meta_path.exists()
    if not hit:
        report = _run_subprocess(path, fmt, onnx_path, ref_path, opset, probe, probe_layout,
                                 input_size, trust_graph, float64)
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta.update(source=str(path), format=fmt, opset=opset, input_shape=report["input_shape"])
        meta.setdefault("convert_seconds", report.get("convert_seconds"))
        write_text(meta_path, json.dumps(meta, indent=1))
    meta = json.loads(meta_path.read_text())
    with np.load(ref_path) as ref:
        kind = str(ref["final_activation"])
        has_logits = kind not in ("unknown", "none")
        exact = "exact_outputs" in ref.files
        return KerasExport(onnx_path, ref["probe"], ref["outputs"],
                           ref["logits"] if has_logits else None, ref["grad"],
                           int(ref["target"]), None if kind == "unknown" else kind, hit,
                           meta.get("convert_seconds"),
                           ref["exact_outputs"] if exact else None,
                           ref["exact_logits"] if exact and has_logits else None,
                           ref["exact_grad"] if exact else None)


def _run_subprocess(path: Path, fmt: str, onnx_path: Path, ref_path: Path, opset: int,
                    probe: np.ndarray | None, probe_layout: str | None,
                    input_size: tuple[int, int] | None, trust_graph: bool,
                    float64: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="xband-keras-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "converters.keras_export", str(path), "--format", fmt,
               "--onnx", str(onnx_path), "--reference", str(ref_path), "--opset", str(opset),
               "--result", str(result)]
        if probe is not None:
            np.save(Path(tmp) / "probe.npy", np.asarray(probe, dtype=np.float32))
            cmd += ["--probe", str(Path(tmp) / "probe.npy")]
            if probe_layout:
                cmd += ["--probe-layout", str(probe_layout)]
        if input_size:
            cmd += ["--input-size", *map(str, input_size)]
        if trust_graph:
            cmd.append("--trust-graph")
        if float64:
            cmd.append("--float64")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT),
                                                            os.environ.get("PYTHONPATH")])))
        returncode, stderr = _run_child(cmd, env)
        if os.environ.get("XBAND_VERBOSE", "") not in ("", "0"):
            sys.stderr.write(stderr)  # TensorFlow's and tf2onnx's own lines, when asked for
        if not result.exists():
            tail = "\n".join(stderr.strip().splitlines()[-5:])
            killed = (" It was killed, most likely for lack of memory: convert on a machine with "
                      "more memory, or export to ONNX there and pass the .onnx file."
                      if returncode in (-9, 137) else "")
            raise ConversionError(f"{path}: the Keras conversion process stopped (exit code "
                             f"{returncode}) without a report.{killed} Its last messages:\n"
                             f"{tail}")
        report = json.loads(result.read_text())
    if not report["ok"]:
        raise ConversionError(report["message"])
    return report


def _run_child(cmd: list[str], env: dict) -> tuple[int, str]:
    """Exit code and stderr of `cmd`. Interrupted (Ctrl-C, SIGTERM), the child is asked to stop
    with SIGTERM, so that it removes its temporary files, before the interrupt goes on."""
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        try:
            _, stderr = proc.communicate()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return proc.returncode, stderr
