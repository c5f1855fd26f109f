"""Loading classifiers into PyTorch: one `LoadedModel` whatever the source format."""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import os
import pickle
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from xband.imports import keep_triton_out

keep_triton_out()  # before torch and onnx2torch: TensorFlow may have been imported after xband

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from converters.cache import KerasExport, content_hash, export_keras  # noqa: E402
from converters.errors import ConversionError  # noqa: E402
from converters.fidelity import (  # noqa: E402
    FLOAT64_REFERENCE,
    Fidelity,
    check_in_float64,
    compare,
    enforce,
    gradient_against_float64,
    gradient_target,
    input_gradient,
    torch_outputs,
)
from converters.keras_export import DEFAULT_SPATIAL, PROBE_N, default_probe  # noqa: E402
from converters.onnx_graph import strip_final_activation  # noqa: E402
from converters.onnx_to_torch import onnx_to_torch, read_onnx, torch_to_onnx  # noqa: E402
from xband.data.images import image_set  # noqa: E402
from xband.errors import (  # noqa: E402
    XbandError,
    option,
    whole_number,  # noqa: E402
)
from xband.files import atomic_path  # noqa: E402
from xband.layout import Layout, spectra_layout  # noqa: E402
from xband.models.programs import load_time_code, pickled_globals, unscreened_ops  # noqa: E402
from xband.models.segmentation import classes_first, output_layout  # noqa: E402
from xband.verbosity import verbose  # noqa: E402

Output = Literal["logits", "probabilities"]
ACTIVATIONS = ("softmax", "sigmoid", "none")  # what a network can end in, as xband tells


@dataclass
class LoadedModel:
    """A classifier as a torch module in eval mode, with what xband needs to know about it."""

    module: nn.Module  # computes what the source computes
    # the same network without its final softmax or sigmoid; None if it ends in neither, or
    # if the activation cannot be stripped (inside a module's forward, say)
    logits_module: nn.Module | None
    layout: Layout
    n_bands: int
    n_classes: int
    spatial_size: tuple[int, int] | None
    final_activation: str  # "softmax", "sigmoid" or "none" (the outputs are logits)
    # "keras", "h5", "savedmodel", "onnx", "torch-module", "torchscript", "torch-export",
    # "torch-pickle"
    source_format: str
    source_path: str | None = None
    sha256: str | None = None
    fidelity: Fidelity | None = None
    onnx_path: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: keras_to_onnx, to_torch
    # a segmentation network (per-pixel class outputs): where the classes are in its outputs,
    # (N, C, H, W) channels-first or (N, H, W, C) channels-last; None: a classifier, (N, C)
    segmentation: Layout | None = None
    # where the final activation (or its absence) was seen: "nn.Softmax, the nn.Sequential's
    # last layer", "torch.sigmoid at the end of forward (traced with torch.fx)"; "" if not said
    activation_seen: str = ""

    def __post_init__(self) -> None:
        self.layout = Layout.parse(self.layout, "layout")
        if self.final_activation not in ACTIVATIONS:
            raise ValueError(f"final_activation must be one of {ACTIVATIONS}")

    @property
    def class_axis(self) -> int:
        """Axis of the classes in the network's outputs."""
        return 1 if self.segmentation is None else self.segmentation.band_axis

    @property
    def ends_with_softmax(self) -> bool:
        return self.final_activation == "softmax"

    def summary(self) -> str:
        """What was loaded, notes, and the fidelity figures."""
        size = "any size" if self.spatial_size is None else "x".join(map(str, self.spatial_size))
        size = "one spectrum per pixel" if self.layout.spectra else size
        per_pixel = "" if self.segmentation is None else \
            f" per pixel (segmentation, classes on output axis {self.class_axis})"
        head = (f"{self.source_path or 'module'}: {self.source_format}, {self.layout} "
                f"(bands on axis {self.band_axis}), {self.n_bands} bands, {self.n_classes} "
                f"classes{per_pixel}, input {size}; {self.activation_statement()}")
        return "\n".join([head, *self.notes, *([self.fidelity.summary()] if self.fidelity else [])])

    def activation_statement(self) -> str:
        """What the network ends in and what xband explains, in a few words."""
        seen = f" ({self.activation_seen})" if self.activation_seen else ""
        if self.final_activation == "none":
            return f"ends without softmax or sigmoid{seen}: its outputs are logits"
        if self.logits_module is not None:
            return f"ends with a {self.final_activation}{seen}, stripped to explain logits"
        return (f"ends with a {self.final_activation}{seen} that cannot be stripped: "
                "scores are for probabilities")

    @property
    def band_axis(self) -> int:
        """Axis of the bands in a batch laid out as the model expects."""
        return self.layout.band_axis

    def output_space(self, output: Output = "logits") -> str:
        """What `network(output)` gives: "logits", or "probabilities" when asked for or when a
        final activation cannot be stripped."""
        if output == "logits" and (self.logits_module is not None
                                   or self.final_activation == "none"):
            return "logits"
        return "probabilities"

    def network(self, output: Output = "logits", multi_label: bool = False) -> nn.Module:
        """The module giving `output`. Logits fall back to probabilities when the final
        activation cannot be stripped; probabilities of a network that ends in logits are its
        softmax (its sigmoid for a multi-label model), appended here."""
        if output == "logits":
            return self.logits_module if self.logits_module is not None else self.module
        if self.final_activation != "none":
            return self.module
        return nn.Sequential(self.module, nn.Sigmoid() if multi_label
                             else nn.Softmax(dim=self.class_axis))

    def __call__(self, x: torch.Tensor, output: Output = "logits") -> torch.Tensor:
        return self.network(output)(x)


_SUFFIX_FORMATS = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".onnx": "onnx"}
_TORCH_SUFFIXES = {".pt", ".pth", ".ts", ".pt2"}
_ACCEPTED = ("Keras .keras/.h5, a TensorFlow SavedModel folder, .onnx, TorchScript "
             ".pt/.pth/.ts, torch.export .pt2")


def detect_format(path: Path) -> str:
    """Source format of the file or folder at `path` (by suffix, else by content)."""
    if not path.exists():
        raise XbandError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise XbandError(f"{path}: this folder is not a TensorFlow SavedModel (no saved_model.pb "
                         f"inside); xband reads {_ACCEPTED}.")
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        fmt = _SUFFIX_FORMATS[suffix]
        with open(path, "rb") as f:
            head = f.read(8)
        if (fmt == "keras" and not zipfile.is_zipfile(path)) or (
                fmt == "h5" and not head.startswith(b"\x89HDF")):
            raise XbandError(f"{path}: not a valid {suffix} file (damaged or incomplete?); "
                             "save the model again.")
        return fmt
    if suffix in _TORCH_SUFFIXES:
        return _torch_archive_kind(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "h5"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if "config.json" in zf.namelist():
                return "keras"
        return _torch_archive_kind(path)
    raise XbandError(f"{path}: unknown model format (suffix '{suffix}'); xband reads {_ACCEPTED}.")


def _torch_archive_kind(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return "torch-pickle"  # legacy torch.save format, or a damaged file: torch.load will tell
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith("/archive_format") for n in names):
        return "torch-export"
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "torch-pickle"


class FixedBatch(nn.Module):
    """Runs a module exported for one fixed batch size on batches of any size (padded chunks)."""

    def __init__(self, module: nn.Module, batch: int):
        super().__init__()
        self.inner, self.batch = module, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, pad = x.shape[0], -x.shape[0] % self.batch
        if pad:
            x = torch.cat([x, x[:1].expand(pad, *x.shape[1:])])
        return torch.cat([self.inner(chunk) for chunk in x.split(self.batch)])[:n]


def _user_errors(function: Callable) -> Callable:
    """`function` raising the converters' `ConversionError` as xband's own `XbandError`."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ConversionError as err:
            raise XbandError(str(err)) from None

    return wrapped


@_user_errors
def load_model(source: str | os.PathLike | nn.Module, *, layout: Layout | None = None,
               n_bands: int | None = None, input_size: tuple[int, int] | None = None,
               probe: np.ndarray | None = None, probe_layout: Layout | str | None = None,
               probe_source: str | None = None, opset: int = 17, accept_mismatch: bool = False,
               trust_pickle: bool = False, trust_graph: bool = False,
               cache_dir: str | os.PathLike | None = None, verbose: bool = True) -> LoadedModel:
    """Load a classifier as a torch module and prove it computes what the source computes.

    `source`: a path (.keras, .h5, SavedModel folder, .onnx, TorchScript, .pt2, or a full-pickle
    .pt with `trust_pickle`) or an `nn.Module`, which xband copies: the module you keep is never
    put in eval mode, frozen or moved. Weights in float64 or float16 run in their own type on
    float32 images. `probe`: user images for the fidelity check
    (default: 8 seeded uniform [0, 1] images), their bands on the axis `probe_layout` says
    ("channels_first" or "channels_last"; default: the model's layout), named in messages as
    `probe_source` (the data file they came from; default: "the images given with --data").
    Nothing stored in a file runs unless trusted: `trust_pickle` for pickles (a full-pickle .pt,
    pickled entries in a .pt2), `trust_graph` for a SavedModel or TorchScript file whose code
    uses operations an image classifier does not need (files, printing, Python, custom
    operators: docs/security.md). Raises `XbandError` when the source cannot be read or
    converted, or when the outputs differ beyond tolerance and `accept_mismatch` is False.
    """
    keep_triton_out()
    n_bands = None if n_bands is None else whole_number(n_bands, "n_bands")
    input_size = tuple(whole_number(v, "input_size") for v in input_size) if input_size else None
    opset = whole_number(opset, "opset", minimum=7)
    req = _Request(None if layout is None else Layout.parse(layout, "layout"), n_bands,
                   input_size,
                   None if probe is None else _as_batch(probe), opset, accept_mismatch,
                   cache_dir, trust_graph,
                   None if probe_layout is None else Layout.parse(probe_layout, "probe_layout"),
                   probe_source)
    if isinstance(source, nn.Module):
        loaded = _from_module(own_copy(source), "torch-module", None, None, req)
    else:
        path = Path(source)
        fmt = detect_format(path)
        if fmt in ("keras", "h5", "savedmodel"):
            loaded = _from_keras(path, fmt, req)
        elif fmt == "onnx":
            loaded = _from_onnx(path, req)
        else:
            loaded = _from_torch_file(path, fmt, trust_pickle, req)
    if verbose:
        print(loaded.summary())
    return loaded


@dataclass
class _Request:
    layout: Layout | None
    n_bands: int | None
    input_size: tuple[int, int] | None
    probe: np.ndarray | None
    opset: int
    accept_mismatch: bool
    cache_dir: str | os.PathLike | None
    trust_graph: bool = False
    probe_layout: Layout | None = None  # band axis of `probe`; None: the model's
    probe_source: str | None = None  # what messages call the probe images


def _as_batch(probe: np.ndarray) -> np.ndarray | None:
    """The user's sample as a float32 batch of its finite images, or None if none is finite:
    images with NaN/Inf say nothing about fidelity (the data checks name them)."""
    arr = np.asarray(probe, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim == 2:  # spectra (N, B): 1×1 images
        arr = arr[:, :, None, None]
    if arr.ndim != 4 or len(arr) == 0:
        raise XbandError(f"the images given with --data have shape {arr.shape}; expected images "
                         "(N, height, width, bands) or (N, bands, height, width).")
    arr = arr[np.isfinite(arr).all(axis=(1, 2, 3))]
    return arr if len(arr) else None


def _make_probe(req: _Request, layout: Layout, n_bands: int,
                spatial: tuple[int, int] | None, source: str) -> tuple[np.ndarray, str]:
    """The user's (finite) images checked against the model and put in its layout, or the
    default probe."""

    if req.probe is not None:
        sample = image_set(req.probe, layout=req.probe_layout,
                           source=req.probe_source or f"{source}: the images given with --data"
                           ).fitted(
            n_bands, spatial, layout)
        probe = sample.take(np.arange(len(sample)))
        if layout is Layout.CHANNELS_LAST:
            probe = np.moveaxis(probe, 1, 3)
        elif layout.spectra:
            probe = probe.reshape(len(probe), *layout.spectrum_shape(n_bands))
        return np.ascontiguousarray(probe), f"user data ({len(probe)} images)"
    if layout.spectra:
        return default_probe(layout.spectrum_shape(n_bands)), \
            f"random uniform [0, 1] ({PROBE_N} spectra)"
    h, w = spatial or req.input_size or (DEFAULT_SPATIAL, DEFAULT_SPATIAL)
    shape = (h, w, n_bands) if layout is Layout.CHANNELS_LAST else (n_bands, h, w)
    return default_probe(shape), f"random uniform [0, 1] ({PROBE_N} images)"


DYNAMIC_BATCH = ("export it with a dynamic batch axis: torch.export.export(model, (x,), "
                 "dynamic_shapes=({0: torch.export.Dim('batch')},)), then torch.export.save")


def _cause(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip()[:300]}"


def _check_batch_sizes(module: nn.Module, probe: np.ndarray, source: str) -> np.ndarray:
    """Outputs on the probe, after checking that another batch size gives the same rows."""

    try:
        out = torch_outputs(module, probe)
    except Exception as err:
        raise XbandError(f"{source}: the PyTorch model fails on float32 images of shape "
                         f"{probe.shape} ({_cause(err)}). Check the axis of the bands "
                         f"({option('layout=', '--model-layout')}) and the image size the "
                         "model takes (input_size=, or give images with --data).") from err
    try:
        more = torch_outputs(module, np.concatenate([probe, probe[:1]]))
    except Exception as err:
        raise XbandError(f"{source}: the PyTorch model runs on a batch of {len(probe)} images "
                         f"but fails on {len(probe) + 1} ({_cause(err)}): its batch size is "
                         f"fixed inside; {DYNAMIC_BATCH}.") from err
    scale = 1e-4 + 1e-3 * float(np.ptp(out))
    if more.shape[0] != len(probe) + 1 or np.abs(more[:-1] - out).max() > scale:
        raise XbandError(f"{source}: the PyTorch model gives different results for the same "
                         "images in batches of different sizes; re-export it with a dynamic "
                         "batch axis and in inference mode.")
    return out


def _classes(out: np.ndarray, probe: np.ndarray, layout: Layout, source: str
             ) -> tuple[np.ndarray, int, Layout | None]:
    """The outputs on the probe with the classes on axis 1, the class count, and, for a
    segmentation network (per-pixel outputs), where its outputs hold the classes."""
    segmentation = output_layout(out.shape, layout.image_size(probe.shape), layout, source)
    out = classes_first(out, segmentation)
    return out, out.shape[1], segmentation


_VISIBLE = ("end the network in a softmax, sigmoid or log-softmax layer (nn.Softmax, nn.Sigmoid, "
            "nn.LogSoftmax last in an nn.Sequential, or the ONNX graph's last node), or return "
            "logits, so that xband sees it and strips it")


def _final(conv_kind: str, out: np.ndarray) -> tuple[str, list[str]]:
    """The final activation and its note: `conv_kind` when the graph showed one, else what the
    outputs prove. Rows of non-negative values summing to 1 are a softmax's (which cannot be
    stripped); outputs merely within [0, 1] prove nothing (logits can fall there), so they are
    taken for logits, and so are log-probabilities, each with a note saying so."""
    if conv_kind != "none":
        return conv_kind, []
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1, atol=1e-5):
        return "softmax", [
            "final activation: the outputs' rows sum to 1 on the probe images, as a softmax's "
            "do, and the softmax is inside the network where it cannot be stripped, so scores "
            f"are for probabilities; {_VISIBLE} to explain logits"]
    if out.max() <= 0 and np.allclose(np.exp(out).sum(axis=1), 1, atol=1e-5):
        return "none", [
            "final activation: the outputs are log-probabilities (the exponentials of each row "
            "sum to 1 on the probe images) from inside the network, where they cannot be "
            "stripped: they are explained as they are; they differ from logits by a constant "
            f"per image; {_VISIBLE}"]
    if out.min() >= 0 and out.max() <= 1:
        return "none", [
            "final activation: the outputs lie within [0, 1] on the probe images, but no final "
            "sigmoid is visible in the network, so they are taken for logits (single-label); if "
            f"the network ends in a sigmoid (multi-label), {_VISIBLE}"]
    return "none", []


def _probe_description(req: _Request, n: int) -> str:
    return (f"user data ({n} images)" if req.probe is not None
            else f"random uniform [0, 1] ({n} images)")


def keras_fidelity(exp: KerasExport, conv, probe_desc: str,
                   float64_reference: Callable[[], KerasExport] | None = None) -> Fidelity:
    """Torch against TensorFlow: logits and their input gradient when both sides stripped the
    same final activation (or neither has one), else the outputs and their gradient. When they
    differ and `float64_reference` gives TensorFlow's float64 values, the comparison is repeated
    with both sides in float64 (`check_in_float64`)."""
    same = exp.final_activation == conv.final_activation
    explained = conv.logits_module if same and conv.logits_module is not None else conv.module
    if same:
        ref, compared = (exp.outputs if exp.logits is None else exp.logits), "logits"
    else:
        ref, compared = exp.outputs, "outputs"
    # TensorFlow's gradient is of its logits when it knows the activation, else of its outputs
    grad_matches = same or exp.final_activation is None or exp.final_activation == "none"
    grad = input_gradient(explained, exp.probe, exp.target) if grad_matches else None
    fid = compare(ref, torch_outputs(explained, exp.probe), reference="tensorflow",
                  probe=probe_desc, compared=compared, ref_grad=exp.grad, grad=grad,
                  target=exp.target)
    if fid.passed or float64_reference is None:
        return fid
    try:
        exact = float64_reference()
    except XbandError:  # its process failed (out of memory, say): the float32 verdict stands
        return fid
    exact_ref = exact.exact_logits if same and exp.logits is not None else exact.exact_outputs
    if exact_ref is not None:
        check_in_float64(fid, explained, exp.probe, ref=ref, exact_ref=exact_ref,
                         ref_grad=exp.grad, exact_ref_grad=exact.exact_grad)
    return fid


def _from_keras(path: Path, fmt: str, req: _Request) -> LoadedModel:

    sha = content_hash(path)
    exp = export_keras(path, fmt, sha, opset=req.opset, probe=req.probe,
                       probe_layout=req.probe_layout, input_size=req.input_size,
                       cache_dir=req.cache_dir,
                       trust_graph=req.trust_graph)
    start = time.perf_counter()
    conv = onnx_to_torch(read_onnx(exp.onnx_path), path)
    timings = {"to_torch": time.perf_counter() - start}
    layout = req.layout or _graph_layout(conv) or Layout.CHANNELS_LAST
    n_bands = exp.probe.shape[layout.band_axis]
    out, n_classes, segmentation = _classes(_check_batch_sizes(conv.module, exp.probe, str(path)),
                                            exp.probe, layout, str(path))

    def float64_reference() -> KerasExport:  # a second TensorFlow process, only when needed
        return export_keras(path, fmt, sha, opset=req.opset, probe=req.probe,
                            probe_layout=req.probe_layout, input_size=req.input_size,
                            cache_dir=req.cache_dir, trust_graph=req.trust_graph, float64=True)

    fid = keras_fidelity(exp, conv, _probe_description(req, len(exp.probe)), float64_reference)
    enforce(fid, str(path), req.accept_mismatch)
    if exp.cache_hit:
        notes = [f"Keras->ONNX: cache hit ({exp.onnx_path})"]
    else:
        notes = [f"Keras->ONNX: converted, cached at {exp.onnx_path}"]
    if exp.convert_seconds is not None:
        timings["keras_to_onnx"] = exp.convert_seconds
    kind, activation_notes = _final(conv.final_activation, out)
    return LoadedModel(conv.module, conv.logits_module, layout, n_bands, n_classes,
                       _spatial(conv.input_shape, layout), kind, fmt, str(path), sha, fid,
                       str(exp.onnx_path), _spectra_note(conv.input_shape, layout, req) + notes
                       + activation_notes, timings, segmentation)


def _graph_layout(conv) -> Layout | None:
    """The band axis the ONNX graph tells (None when it does not): spectra by the input's rank
    ((N, B); (N, B, 1) or (N, 1, B)), images by the graph's first operations."""
    if len(conv.input_shape) in (2, 3):
        return spectra_layout(conv.input_shape)
    return None if conv.layout is None else Layout(conv.layout)


def _spatial(shape: list[int | None], layout: Layout) -> tuple[int, int] | None:
    hw = layout.image_size(shape)
    return None if None in hw else (hw[0], hw[1])


def _from_onnx(path: Path, req: _Request) -> LoadedModel:

    sha = content_hash(path)
    start = time.perf_counter()
    conv = onnx_to_torch(read_onnx(path), path)
    timings = {"to_torch": time.perf_counter() - start}
    layout = req.layout or _graph_layout(conv)
    if layout is None:
        raise XbandError(f"{path}: cannot tell from the graph (input {conv.input_shape}) which "
                         f"axis holds the bands; pass {option('layout=', '--model-layout')} "
                         "channels_last, channels_first, or for spectra spectra, "
                         "spectra_channels_last, spectra_channels_first.")
    if len(conv.input_shape) != 4 and not layout.spectra:
        raise XbandError(f"{path}: the input has shape {conv.input_shape}; xband needs "
                         "images (batch, height, width, bands) or (batch, bands, height, width), "
                         "or spectra (batch, bands), (batch, bands, 1) or (batch, 1, bands).")
    n_bands = layout.n_bands(conv.input_shape) or req.n_bands or _probe_bands(req)
    if n_bands is None:
        raise XbandError(f"{path}: the number of bands is not fixed in the graph; pass n_bands.")
    spatial = _spatial(conv.input_shape, layout)
    probe, probe_desc = _make_probe(req, layout, n_bands, spatial, str(path))
    out, n_classes, segmentation = _classes(_check_batch_sizes(conv.module, probe, str(path)),
                                            probe, layout, str(path))
    fid = onnx_fidelity(conv.logits_graph.SerializeToString(),
                        conv.module if conv.logits_module is None else conv.logits_module,
                        probe, reference="onnxruntime", probe_desc=probe_desc, source=str(path))
    enforce(fid, str(path), req.accept_mismatch)
    kind, notes = _final(conv.final_activation, out)
    return LoadedModel(conv.module, conv.logits_module, layout, n_bands, n_classes, spatial,
                       kind, "onnx", str(path), sha, fid, str(path),
                       _spectra_note(conv.input_shape, layout, req) + notes, timings,
                       segmentation)


def _spectra_note(shape: list[int | None], layout: Layout, req: _Request) -> list[str]:
    """For a model of spectra: what its input is and how that was told."""
    if not layout.spectra:
        return []
    how = "layout as stated" if req.layout is not None else "told from the graph's input"
    shown = ", ".join("None" if d is None else str(d) for d in shape)
    return [f"input: {layout.describe()} ({how}, ({shown}))"]


def onnx_fidelity(graph: bytes, module: nn.Module, probe: np.ndarray, *, reference: str,
                  probe_desc: str, source: str) -> Fidelity:
    """`module` against onnxruntime running `graph` (both without the final activation when it
    was stripped): the outputs relative to their range; and, as onnxruntime has no gradients,
    the module's autograd input gradient along two directions per image against central
    differences of its own float64 copy (`converters.fidelity.float64_slopes`): a backward
    that does not follow the forward fails, and ReLU or max-pool kinks do not."""
    ref = _onnxruntime(graph, source)(probe)
    target = gradient_target(ref)
    exact, slopes = gradient_against_float64(module, probe, target)
    fid = compare(ref, torch_outputs(module, probe), reference=reference, probe=probe_desc,
                  compared="logits", ref_grad=exact, grad=None if exact is None else slopes,
                  target=target, grad_reference=FLOAT64_REFERENCE)
    if exact is None:
        fid.grad_reference = ("not checked: the converted module does not compute cleanly in "
                              "float64 (a cast to float32 inside), so there is no exact reference")
    return fid


def _onnxruntime(graph: bytes, source: str) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX graph run by onnxruntime (in chunks, padded, if its batch size is fixed)."""

    def fail(err: Exception) -> XbandError:
        return XbandError(f"{source}: onnxruntime, the reference for the fidelity check, cannot "
                          f"run this file ({str(err).strip()[-300:]}); re-export it with an "
                          "older opset or IR version.")

    options = ort.SessionOptions()
    options.log_severity_level = 2 if verbose() else 3  # its warnings only with --verbose
    try:
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise fail(err) from err
    inp = session.get_inputs()[0]

    def run(x: np.ndarray) -> np.ndarray:
        batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
        pad = -len(x) % batch
        padded = np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) if pad else x
        try:
            chunks = [session.run(None, {inp.name: padded[i:i + batch]})[0]
                      for i in range(0, len(padded), batch)]
        except Exception as err:
            raise fail(err) from err
        return np.concatenate(chunks)[:len(x)]

    return run


def _from_torch_file(path: Path, fmt: str, trust_pickle: bool, req: _Request) -> LoadedModel:

    sha = content_hash(path)
    if fmt == "torchscript":
        return _from_module(_load_torchscript(path, req.trust_graph), fmt, path, sha, req)
    if fmt == "torch-export":
        return _from_export(path, sha, req, trust_pickle)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        raise XbandError(_pickle_refusal(path)) from err
    except Exception as err:
        raise XbandError(f"{path}: cannot read this file as a PyTorch model "
                         f"({type(err).__name__}: {str(err)[:200]}); is it complete?") from err
    if isinstance(obj, dict):
        raise XbandError(f"{path}: this file holds a state_dict (weights without the network): "
                         "build the module in Python, call module.load_state_dict(...), and pass "
                         "the module to xband.load_model(module).")
    if not isinstance(obj, nn.Module):
        raise XbandError(f"{path}: this file holds a {type(obj).__name__}, not a torch module.")
    return _from_module(obj, "torch-pickle", path, sha, req)


_TRUST_GRAPH = option("trust_graph=True", "--trust-graph")
_TRUST_PICKLE = option("trust_pickle=True", "--trust-pickle")


def _pickle_refusal(path: Path) -> str:
    """Why a torch file that the safe loader refused was not loaded: a damaged file, or a pickle
    that names code (a whole saved module's classes, or worse: functions that reach the system)."""
    names = pickled_globals(path)
    if names is None:
        return (f"{path}: cannot read this file as a PyTorch model (the pickle is not valid); "
                "is it complete?")
    system = [n for n in names if n.split(".")[0] in _SYSTEM_MODULES or n in _BUILTIN_CALLS]
    classes = [n for n in names if not (n.startswith(_TENSOR_PLUMBING) or n.endswith("Storage"))]
    listed = system or classes or names
    shown = ", ".join(listed[:4]) + (" …" if len(listed) > 4 else "")
    head = f"{path}: this file holds code (a pickle that calls {shown}), so it was not loaded."
    if system:
        return (f"{head} These reach the system (processes, files, Python itself), which no "
                f"model needs: do not pass {_TRUST_PICKLE} unless you made this file yourself.")
    return (f"{head} It looks like a whole module saved with torch.save: if you trust its "
            f"source, pass {_TRUST_PICKLE}; better, save the model with torch.jit.save or "
            "torch.export.save, or build the module in Python and pass it to "
            "xband.load_model.")


# what a pickle that reaches past a model calls (for the message only: no pickle that names
# code is loaded without trust_pickle)
_SYSTEM_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
                   "runpy", "pty", "code", "ctypes", "pickle", "marshal", "webbrowser",
                   "urllib", "requests", "http"}
_TENSOR_PLUMBING = ("torch._utils.", "collections.OrderedDict", "builtins.set", "__builtin__.set")
_BUILTIN_CALLS = {f"{module}.{name}" for module in ("builtins", "__builtin__")
                  for name in ("eval", "exec", "compile", "open", "getattr", "__import__")}


def _load_torchscript(path: Path, trust_graph: bool) -> torch.jit.ScriptModule:
    """The TorchScript module at `path`. Unless `trust_graph`, a file whose code runs while it
    loads (`__setstate__`) is refused before loading, and a module whose code uses operations
    outside what a classifier needs (`programs.TORCHSCRIPT_OPS`) before it runs."""
    at_load = [] if trust_graph else load_time_code(path)
    if at_load:
        raise XbandError(f"{path}: this TorchScript file holds code that runs while it loads "
                         f"(__setstate__, in {', '.join(at_load[:3])}), so it was not loaded. "
                         f"If you trust its source, pass {_TRUST_GRAPH}; better, save the model "
                         "with torch.export.save (.pt2) or as ONNX.")
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated, but the file is valid
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise XbandError(f"{path}: cannot load this TorchScript file ({type(err).__name__}: "
                         f"{str(err)[:200]}); is it complete?") from err
    unknown = {} if trust_graph else unscreened_ops(module)
    if unknown:
        listing = ", ".join(f"{op} (in {where[0]})" for op, where in list(unknown.items())[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise XbandError(f"{path}: this TorchScript model is a program that calls operations an "
                         f"image classifier does not need: {listing}{more}. They can read or "
                         "write files or run other code, so xband did not run it. If you trust "
                         f"its source, pass {_TRUST_GRAPH}; else ask for the model as ONNX or "
                         "torch.export (.pt2).")
    return module


class ExportedProgram(nn.Module):
    """A `torch.export` program's module. It runs in the mode it was exported in and refuses
    `.train()`/`.eval()`, so switching modes here sets the flag and leaves the program alone.
    `archive` holds the bytes of the .pt2 file it was loaded from, which is how it travels to
    Ray workers (`from_archive`); `stripped`: its final activation was taken off."""

    def __init__(self, program: nn.Module, archive: bytes | None = None, stripped: bool = False):
        super().__init__()
        self.program, self.archive, self.stripped = program, archive, stripped

    @classmethod
    def from_archive(cls, archive: bytes, stripped: bool) -> ExportedProgram:
        """The program loaded again from the bytes of its (already checked) .pt2 file."""
        module = cls(torch.export.load(io.BytesIO(archive)).module(), archive)
        return _strip_exported(module).logits if stripped else module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> ExportedProgram:
        self.training = mode
        return self


_PICKLE_HEADS = tuple(b"\x80" + bytes([protocol]) for protocol in range(2, 6))
_PICKLED_PREFIXES = ("custom_obj", "opaque_obj")  # torch.export's pickled constants


def pickled_entries(path: Path) -> list[str]:
    """Entries of a torch.export archive that only a full unpickler reads (which can run code):
    weights or constants marked `use_pickle`, pickled objects, and torch.save blobs (the
    sample inputs) that `torch.load(weights_only=True)` refuses. Nothing is unpickled here
    beyond that safe loader."""
    found = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as entry:
                head = entry.read(4)
            if head.startswith(_PICKLE_HEADS):
                found.append(info.filename)
            elif head == b"PK\x03\x04" and not _safe_torch_blob(zf.read(info)):
                found.append(info.filename)
            elif "/data/" in f"/{info.filename}" and info.filename.endswith("config.json"):
                found += _pickled_payloads(info.filename, zf.read(info))
    return found


def _safe_torch_blob(blob: bytes) -> bool:
    try:
        torch.load(io.BytesIO(blob), weights_only=True)
    except Exception:
        return False
    return True


def _pickled_payloads(name: str, raw: bytes) -> list[str]:
    try:
        config = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError):
        return [name]
    return [f"{name}: {key}" for key, meta in config.items()
            if not isinstance(meta, dict) or meta.get("use_pickle")
            or str(meta.get("path_name", "")).startswith(_PICKLED_PREFIXES)]


def _load_export(path: Path, trust_pickle: bool):
    """`torch.export.load`, after refusing pickled entries unless `trust_pickle`."""
    try:
        pickled = [] if trust_pickle else pickled_entries(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise XbandError(f"{path}: cannot read this torch.export archive ({err}); is it "
                         "complete?") from None
    if pickled:
        listing = ", ".join(pickled[:3]) + (f" and {len(pickled) - 3} more" if len(pickled) > 3
                                            else "")
        raise XbandError(f"{path}: this torch.export archive holds pickled entries ({listing}); "
                         "unpickling them can run any code stored in them. If you trust its "
                         "source, pass --trust-pickle (trust_pickle=True); better, export the "
                         "model again with plain tensors (torch.export.save).")
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # torch logs a traceback before raising; the message says it
    try:
        return torch.export.load(str(path))
    except Exception as err:
        raise XbandError(f"{path}: cannot load this torch.export program "
                         f"({type(err).__name__}: {str(err)[:200]}); is it complete?") from None
    finally:
        logger.setLevel(level)


def _from_export(path: Path, sha: str, req: _Request, trust_pickle: bool) -> LoadedModel:
    program = _load_export(path, trust_pickle)
    user = set(program.graph_signature.user_inputs)
    specs = [n.meta["val"].shape for n in program.graph.nodes
             if n.op == "placeholder" and n.name in user]
    if len(specs) != 1 or not (len(specs[0]) == 4 or spectra_layout(specs[0])):
        raise XbandError(f"{path}: the program takes inputs of shapes {specs}; xband needs one "
                         "image batch of rank 4, or spectra (N, B), (N, B, 1) or (N, 1, B).")
    dims = [d if isinstance(d, int) else None for d in specs[0]]
    module = ExportedProgram(program.module(), path.read_bytes())
    notes = ["torch.export program: runs in the mode it was exported in (export it in eval mode)"]
    if dims[0] is not None:
        module = FixedBatch(module, dims[0])
        notes.append(f"exported for batch size {dims[0]}: other batch sizes run in padded chunks "
                     f"of {dims[0]} (slower); to run any batch size, {DYNAMIC_BATCH}")
    layout = req.layout or spectra_layout(dims) or Layout.CHANNELS_FIRST
    n_bands = layout.n_bands(dims)
    spatial = _spatial(dims, layout)
    req = replace(req, layout=layout, n_bands=req.n_bands or n_bands,
                  input_size=spatial or req.input_size)
    loaded = _from_module(module, "torch-export", path, sha, req)
    loaded.spatial_size = spatial
    loaded.notes[:0] = notes
    return loaded


def _first_conv_bands(module: nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d) or getattr(sub, "original_name", None) == "Conv2d":
            return int(sub.weight.shape[1] * getattr(sub, "groups", 1))
    return None


def _from_module(module: nn.Module, fmt: str, path: Path | None, sha: str | None,
                 req: _Request) -> LoadedModel:
    source = str(path) if path else f"{type(module).__name__} module"
    module, notes = in_float32(module.eval())
    layout, n_bands, input_notes = module_input(module, req, source)
    spatial = (1, 1) if layout.spectra else req.input_size
    probe, probe_desc = _make_probe(req, layout, n_bands, spatial, source)
    out, n_classes, segmentation = _classes(_check_batch_sizes(module, probe, source), probe,
                                            layout, source)
    module, ending, activation_notes = _module_ending(module, probe, out, segmentation)
    return LoadedModel(module, ending.logits, layout, n_bands, n_classes, spatial,
                       ending.kind, fmt, None if path is None else str(path), sha,
                       Fidelity(reference="none", probe=probe_desc, n_probe=len(probe)),
                       notes=notes + input_notes + activation_notes, segmentation=segmentation,
                       activation_seen=ending.seen)


def module_input(module: nn.Module, req: _Request, source: str) -> tuple[Layout, int, list[str]]:
    """The layout and band count of a torch module's input, and a note on how they were told.

    A Conv2d anywhere: images, channels-first, bands from the first Conv2d. Otherwise the first
    layer tells spectra: nn.Linear(B → …) takes (N, B); nn.Conv1d with one input channel
    (N, 1, B); nn.Linear(1 → …) (a Transformer embedding each band) (N, B, 1) or (N, B),
    whichever runs. Bands the weights do not fix come from `n_bands` or the data given."""
    from_data = req.n_bands or _probe_bands(req)
    first = None if req.input_size is not None else _first_spectral_layer(module, req.n_bands)
    if (req.layout is None and (_first_conv_bands(module) is not None or first is None)) or (
            req.layout is not None and not req.layout.spectra):
        n_bands = req.n_bands or _first_conv_bands(module)
        if n_bands is None:
            raise XbandError(f"{source}: cannot tell what the model takes (no Conv2d layer, and "
                             "no Conv1d or Linear layer that takes spectra first); pass n_bands "
                             "(images), or layout='spectra' (spectra (N, bands)).")
        return req.layout or Layout.CHANNELS_FIRST, n_bands, []
    kind, n_in = first or ("", 0)
    candidates = _spectra_candidates(kind, n_in) if req.layout is None else [req.layout]
    n_bands = n_in if candidates == [Layout.SPECTRA] and n_in > 1 else from_data
    if n_bands is None:
        raise XbandError(f"{source}: the first layer ({kind}) does not fix the number of bands; "
                         f"pass n_bands, or data ({option('probe=', '--data')}).")
    layout = next((c for c in candidates if len(candidates) == 1
                   or _runs_as(module, c, n_bands)), None)
    if layout is None:
        raise XbandError(f"{source}: the model runs on spectra neither as (N, {n_bands}, 1) nor "
                         f"as (N, {n_bands}); pass layout= and n_bands.")
    how = "layout as stated" if req.layout is not None else f"told from the first layer, {kind}"
    return layout, n_bands, [f"input: {layout.describe()}, {n_bands} bands ({how})"]


def _first_spectral_layer(module: nn.Module, n_bands: int | None) -> tuple[str, int] | None:
    """("nn.Conv1d(1 → 16)" or "nn.Linear(198 → 64)", its input size) of the first Conv1d or
    Linear layer (TorchScript ones too), in the order the module registers them; None when a
    Flatten comes first, or a Linear that does not take `n_bands` (both: flattened images)."""
    for sub in module.modules():
        name = getattr(sub, "original_name", None) if isinstance(
            sub, torch.jit.ScriptModule) else type(sub).__name__
        if isinstance(sub, nn.Flatten) or name == "Flatten":
            return None
        if isinstance(sub, nn.Conv1d | nn.Linear) or name in ("Conv1d", "Linear"):
            weight = getattr(sub, "weight", None)
            if weight is None or isinstance(weight, nn.parameter.UninitializedParameter):
                continue
            n_in = int(weight.shape[1] * getattr(sub, "groups", 1))
            kind = "Conv1d" if isinstance(sub, nn.Conv1d) or name == "Conv1d" else "Linear"
            if kind == "Linear" and n_bands not in (None, n_in) and n_in > 1:
                return None
            return f"nn.{kind}({n_in} → {int(weight.shape[0])})", n_in
    return None


def _spectra_candidates(kind: str, n_in: int) -> list[Layout]:
    """The spectra layouts a model whose first layer is `kind` may take, most likely first."""
    if kind.startswith("nn.Conv1d"):
        return [Layout.SPECTRA_CHANNELS_FIRST] if n_in == 1 else []
    return [Layout.SPECTRA] if n_in > 1 else [Layout.SPECTRA_CHANNELS_LAST, Layout.SPECTRA]


def _runs_as(module: nn.Module, layout: Layout, n_bands: int) -> bool:
    """Whether `module` gives class scores (2, C) for two spectra laid out as `layout`."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *layout.spectrum_shape(n_bands)))
    except Exception:  # any failure means: not this layout
        return False
    return isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == 2


def _probe_bands(req: _Request) -> int | None:
    """The band count of the data given for the fidelity check, when its band axis is known
    or it holds spectra."""
    if req.probe is None:
        return None
    shape = req.probe.shape
    if req.probe_layout is not None:
        return int(shape[req.probe_layout.band_axis])
    if tuple(shape[2:]) == (1, 1):
        return int(shape[1])
    return int(shape[3]) if tuple(shape[1:3]) == (1, 1) else None


def own_copy(module: nn.Module) -> nn.Module:
    """A copy of the user's module for xband to change (eval mode, frozen weights, device), so
    that theirs keeps its mode, `requires_grad` flags, device and weights."""
    try:
        return copy.deepcopy(module)
    except Exception as err:
        raise XbandError(f"{type(module).__name__} module: cannot be copied ({_cause(err)}); "
                         "xband explains a copy so that your module keeps its mode, "
                         "requires_grad flags and device. Make it copyable (copy.deepcopy), or "
                         "save it with torch.export.save and give xband the file.") from None


class InDtype(nn.Module):
    """Runs a network whose weights are float64, float16 or bfloat16 on float32 images: the
    images are cast to its type, its outputs back to float32, so it computes in its own type."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, …) float32
        return self.inner(x.to(self.dtype)).float()


def in_float32(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """`module` taking and giving float32 (`InDtype` when its weights are another floating
    type), and the note that says so."""
    dtype = next((t.dtype for t in (*module.parameters(), *module.buffers())
                  if t.is_floating_point()), torch.float32)
    if dtype == torch.float32:
        return module, []
    rounding = ("" if dtype == torch.float64 else
                f"; its outputs and gradients carry {str(dtype)[len('torch.'):]} rounding")
    return InDtype(module, dtype).eval(), [
        f"weights in {dtype}: the network runs in {dtype} (images cast to it, outputs back to "
        f"float32){rounding}"]


@dataclass
class _Ending:
    """How a network ends, as its structure shows: `kind` ("softmax", "sigmoid", "log_softmax"
    or "none"), the network without that activation, and where it was seen."""

    kind: str
    logits: nn.Module | None
    seen: str


def _module_ending(module: nn.Module, probe: np.ndarray, out: np.ndarray,
                   segmentation: Layout | None = None) -> tuple[nn.Module, _Ending, list[str]]:
    """The module to keep, its ending and notes. The structure decides (`_strip_module`); a
    stripped activation is kept stripped when, applied to the stripped outputs, it gives the
    module's outputs (`out`, the classes on axis 1; `segmentation`: where a segmentation
    network's outputs hold them). A final log-softmax is stripped to logits and the module kept
    becomes their softmax (probabilities). Only where the structure cannot be seen do the
    outputs speak (`_final`)."""
    ending = _strip_module(module)
    if ending is None:
        kind, notes = _final("none", out)
        return module, _Ending(kind, None, "its structure cannot be seen: told from the "
                                           "outputs"), notes
    if ending.kind == "none":
        return module, ending, []
    if ending.logits is not None and _strip_holds(ending.logits, ending.kind, probe, out,
                                                  segmentation):
        if ending.kind == "log_softmax":
            class_axis = 1 if segmentation is None else segmentation.band_axis
            probabilities = nn.Sequential(ending.logits, nn.Softmax(dim=class_axis)).eval()
            seen = f"as log-probabilities: {ending.seen}"
            return probabilities, _Ending("softmax", ending.logits, seen), [
                f"final activation: a log-softmax ({ending.seen}): the network gives "
                "log-probabilities; stripped to explain logits, and its probabilities are "
                "their softmax"]
        return module, ending, []
    if ending.kind == "log_softmax":
        return module, _Ending("none", None, ending.seen), [
            f"final activation: a log-softmax ({ending.seen}) that cannot be stripped: the "
            "log-probabilities are explained as they are"]
    return module, _Ending(ending.kind, None, ending.seen), [
        f"final activation: a {ending.kind} ({ending.seen}) that cannot be stripped, so scores "
        "are for probabilities"]


def _strip_module(module: nn.Module) -> _Ending | None:
    """How the network ends, when its structure shows it: an nn.Sequential (nested ones too,
    and TorchScript's traced or scripted Sequential) by its last layer, a torch.export graph by
    its output op, another module by its forward traced with torch.fx. None when it cannot be
    seen (a forward torch.fx cannot trace, a TorchScript module other than a Sequential). The
    caller checks that the activation applied to the stripped outputs gives the outputs."""
    if isinstance(module, FixedBatch | InDtype):
        inner = _strip_module(module.inner)
        if inner is None or inner.logits is None:
            return inner
        wrapped = (FixedBatch(inner.logits, module.batch) if isinstance(module, FixedBatch)
                   else InDtype(inner.logits, module.dtype))
        return _Ending(inner.kind, wrapped.eval(), inner.seen)
    if isinstance(module, ExportedProgram):
        return _strip_exported(module)
    layers = _sequential_layers(module)
    if layers is None:
        return None if isinstance(module, torch.jit.ScriptModule) else _strip_traced(module)
    if not layers:
        return None
    last = layers[-1]
    kind = _activation_layer(last)
    if kind is not None:
        return _Ending(kind, nn.Sequential(*layers[:-1]).eval(),
                       f"{_layer_name(last)}, the nn.Sequential's last layer")
    if _plain_torch_layer(last):
        return _Ending("none", None, f"the nn.Sequential's last layer is {_layer_name(last)}")
    inner = _strip_module(last)
    if inner is None or inner.logits is None:
        return inner
    return _Ending(inner.kind, nn.Sequential(*layers[:-1], inner.logits).eval(), inner.seen)


def _layer_name(layer: nn.Module) -> str:
    return f"nn.{getattr(layer, 'original_name', None) or type(layer).__name__}"


def _plain_torch_layer(layer: nn.Module) -> bool:
    """A layer of torch.nn itself (Linear, Flatten, …) other than a container: what it
    computes is known, so nothing hides in it."""
    name = (getattr(layer, "original_name", None) if isinstance(layer, torch.jit.ScriptModule)
            else type(layer).__name__ if type(layer).__module__.startswith("torch.nn.")
            else None)
    return name is not None and isinstance(getattr(nn, name, None), type) and not issubclass(
        getattr(nn, name), nn.Sequential | nn.ModuleList | nn.ModuleDict)


def _sequential_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers of an nn.Sequential, or of a TorchScript module compiled from one."""
    if isinstance(module, nn.Sequential):
        return list(module)
    if isinstance(module, torch.jit.ScriptModule) and \
            getattr(module, "original_name", None) == "Sequential":
        # a traced module's layers refuse to be called on their own; their compiled forward,
        # wrapped as a script module, can be
        return [torch.jit._recursive.wrap_cpp_module(layer._c) for layer in module.children()]
    return None


_LAYER_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid", "LogSoftmax": "log_softmax"}


def _activation_layer(layer: nn.Module) -> str | None:
    """"softmax", "sigmoid" or "log_softmax" for such a final layer (torch or TorchScript),
    else None."""
    if isinstance(layer, nn.Softmax | nn.LogSoftmax):
        kind = "log_softmax" if isinstance(layer, nn.LogSoftmax) else "softmax"
        return kind if layer.dim in (1, -1) else None
    if isinstance(layer, nn.Sigmoid):
        return "sigmoid"
    if isinstance(layer, torch.jit.ScriptModule):
        return _LAYER_ACTIVATIONS.get(getattr(layer, "original_name", None))
    return None


_CALLED_ACTIVATIONS = {torch.softmax: "softmax", nn.functional.softmax: "softmax",
                       torch.sigmoid: "sigmoid", nn.functional.sigmoid: "sigmoid",
                       torch.log_softmax: "log_softmax", nn.functional.log_softmax: "log_softmax",
                       "softmax": "softmax", "sigmoid": "sigmoid", "log_softmax": "log_softmax"}


def _strip_traced(module: nn.Module) -> _Ending | None:
    """A module whose forward torch.fx traces: the op its output comes from, and when that is
    a softmax (over the classes), sigmoid or log-softmax, the traced module without it."""
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception:  # control flow on values, untraceable calls: the structure stays unseen
        return None
    output = next(n for n in traced.graph.nodes if n.op == "output")
    last = output.args[0]
    if not isinstance(last, torch.fx.Node):
        return None
    modules = dict(traced.named_modules())
    if last.op == "call_module":
        layer = modules[last.target]
        kind, name = _activation_layer(layer), _layer_name(layer)
    elif last.op in ("call_function", "call_method"):
        kind = _CALLED_ACTIVATIONS.get(last.target)
        name = (f"{getattr(last.target, '__name__', last.target)}()" if last.op ==
                "call_function" else f".{last.target}()")
        dim = last.kwargs.get("dim", last.args[1] if len(last.args) > 1 else None)
        if kind in ("softmax", "log_softmax") and dim not in (None, 1, -1):
            kind = None
    else:
        kind, name = None, last.op
    seen = f"{name} at the end of forward, traced with torch.fx"
    if kind is None:
        return _Ending("none", None, seen)
    output.args = (last.args[0],)
    traced.graph.erase_node(last)
    traced.recompile()
    return _Ending(kind, traced.eval(), seen)


_GRAPH_ACTIVATIONS = {"aten.softmax.int": "softmax", "aten._softmax.default": "softmax",
                      "aten.sigmoid.default": "sigmoid",
                      "aten.log_softmax.int": "log_softmax",
                      "aten._log_softmax.default": "log_softmax"}


def _strip_exported(module: ExportedProgram) -> _Ending | None:
    """A torch.export program by the op of its one output, and when that is a softmax, sigmoid
    or log-softmax, the program with the output taken before it."""
    graph_module = copy.deepcopy(module.program)
    output = next((n for n in graph_module.graph.nodes if n.op == "output"), None)
    values = None if output is None else output.args[0]
    if not isinstance(values, tuple | list) or len(values) != 1:
        return None
    last = values[0]
    if getattr(last, "op", None) != "call_function":
        return None
    kind = _GRAPH_ACTIVATIONS.get(str(last.target))
    seen = f"{last.target}, the torch.export graph's last op"
    if kind is None:
        return _Ending("none", None, seen)
    output.args = (type(values)([last.args[0]]),)
    graph_module.recompile()
    return _Ending(kind, ExportedProgram(graph_module, module.archive, stripped=True), seen)


def _strip_holds(logits: nn.Module, kind: str, probe: np.ndarray, out: np.ndarray,
                 segmentation: Layout | None = None) -> bool:
    """The activation applied to the stripped module's outputs gives the module's outputs
    (`out`, the classes on axis 1)."""
    z = torch.from_numpy(classes_first(torch_outputs(logits, probe), segmentation))
    activation = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}
    again = (activation[kind](z, dim=1) if kind in activation else torch.sigmoid(z)).numpy()
    return bool(np.allclose(again, out, rtol=1e-4, atol=1e-6))


@_user_errors
def write_onnx(model: LoadedModel, out: str | os.PathLike, opset: int = 17) -> Fidelity | None:
    """Write the model as an ONNX file at `out` (atomically). Torch sources are exported, and
    the file is checked against the module (onnxruntime, logits and gradient): returns those
    figures, or None for a converted source whose ONNX file is copied as it was checked."""
    out = Path(out)
    if model.onnx_path is not None:
        with atomic_path(out) as tmp:
            shutil.copyfile(model.onnx_path, tmp)
        return None
    req = _Request(model.layout, model.n_bands, model.spatial_size, None, opset, False, None)
    probe, probe_desc = _make_probe(req, model.layout, model.n_bands, model.spatial_size, str(out))
    spatial_axes = None if model.spatial_size else (
        (1, 2) if model.layout is Layout.CHANNELS_LAST else (2, 3))
    with atomic_path(out) as tmp:
        torch_to_onnx(model.module, torch.from_numpy(probe), tmp, opset, spatial_axes)
        graph, module = onnx.load(str(tmp)), model.module
        stripped = strip_final_activation(graph) if model.logits_module is not None else None
        if stripped is not None:
            graph, module = stripped[0], model.logits_module
        fid = onnx_fidelity(graph.SerializeToString(), module, probe,
                            reference="onnxruntime (written ONNX file)", probe_desc=probe_desc,
                            source=str(out))
        enforce(fid, str(out), False)
    return fid
