"""Keras / TensorFlow model → ONNX, plus reference outputs and input gradients, in its own process.

Run as ``python -m converters.keras_export SOURCE --format FMT --result RESULT.json ...``.
TensorFlow is imported only inside this process: importing torch after TensorFlow in one process
crashes, so the torch side (`converters.cache`) runs this as a subprocess. Every outcome is
written to RESULT.json: ``{"ok": true, ...}`` or ``{"ok": false, "kind": ..., "message": ...}``.
Nothing here executes code stored in a model file: Lambda layers and custom classes are refused.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.files import atomic_path, write_text

PROBE_N = 8
PROBE_SEED = 0
DEFAULT_SPATIAL = 32
KERAS_EXTRA = 'pip install -c constraints.txt -e ".[keras]"'
_MODEL_CLASSES = {"Functional", "Sequential", "Model"}


class ExportError(Exception):
    """A failure reported to the parent as JSON: `kind` plus a user-facing message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def default_probe(shape: tuple[int, ...], n: int = PROBE_N, seed: int = PROBE_SEED) -> np.ndarray:
    """Seeded uniform [0, 1) float32 images of `shape` (without batch axis), `n` of them."""
    return np.random.default_rng(seed).uniform(0, 1, size=(n, *shape)).astype(np.float32)


# ---------------------------------------------------------------- model config (no code run)
def _read_config(path: Path, fmt: str) -> dict | None:
    """The model's JSON config, read without building the model; None if the file has none."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ExportError("corrupt", f"{path}: cannot read the Keras model ({err}); "
                          "is the file complete and a Keras model?") from err
    if raw is None:
        raise ExportError("corrupt", f"{path}: this HDF5 file holds no model config (weights "
                          "only?); save the whole model (model.save('model.keras')) and retry.")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _layers(config: dict):
    """(layer name, class name, module) for every layer, nested models included."""
    for layer in config.get("config", {}).get("layers", []) if isinstance(config, dict) else []:
        cfg = layer.get("config", {})
        name = cfg.get("name", layer.get("name", "?"))
        yield name, layer.get("class_name", "?"), layer.get("module")
        if layer.get("class_name") in _MODEL_CLASSES:
            yield from _layers(layer)


def _needs_code(config: dict, known) -> list[tuple[str, str]]:
    """(layer, class) pairs that need Python code: Lambda layers and classes Keras does not know."""
    bad = []
    for name, cls, module in _layers(config):
        if cls == "Lambda":
            bad.append((name, "Lambda"))
        elif (not str(module).startswith("keras")) if module is not None else not known(cls):
            bad.append((name, cls))
    return bad


def _code_message(path: Path, what: str) -> str:
    return (f"{path}: {what}; xband does not run code from model files. Either replace them "
            "with built-in Keras layers and re-save, or, where the code is available, save a "
            "TensorFlow SavedModel folder (model.export('folder')) or export to ONNX yourself "
            "(tf2onnx.convert.from_keras) and pass that instead.")


def _bad_layers(bad: list[tuple[str, str]]) -> str:
    listing = ", ".join(f"'{name}' ({cls})" for name, cls in bad)
    kind = "Lambda layers hold" if any(c == "Lambda" for _, c in bad) else "custom classes need"
    return f"layer(s) {listing} need Python code to load ({kind} code)"


# ---------------------------------------------------------------- loading and calling
def _from_function(call, signature, opset):
    """ONNX graph of `call` traced as a tf.function, with captured constants frozen in.

    tf2onnx turns constant tensors that the function captures (a Keras Normalization layer's
    mean and variance, for one) into extra graph inputs with no value; they become initializers.
    """
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    fn = tf.function(call)
    proto = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)[0]
    captured = {
        internal.name: external
        for external, internal in fn.get_concrete_function(*signature).graph.captures
        if external.dtype != tf.resource
    }
    for graph_input in list(proto.graph.input)[1:]:
        if graph_input.name in captured:
            value = captured[graph_input.name].numpy()
            proto.graph.initializer.append(numpy_helper.from_array(value, graph_input.name))
            proto.graph.input.remove(graph_input)
    return proto


@dataclass
class _Model:
    """A loaded TensorFlow model: its call, input shape (with batch axis) and ONNX converter, and
    what it ends in: "softmax" or "sigmoid" with `logits` the call without it, "none" (its
    outputs are the logits), or None when that cannot be told (a SavedModel's signature).
    `float64` builds the model's float64 twin and returns its (call, logits); None where no twin
    can be built (a SavedModel)."""

    call: Callable
    shape: tuple
    convert: Callable
    final_activation: str | None
    logits: Callable | None
    float64: Callable[[], tuple[Callable, Callable]] | None = None


def _load(path: Path, fmt: str, trust_graph: bool = False) -> _Model:
    """The model at `path`, loaded without running code stored in it (Keras files; a SavedModel
    whose graph calls operations a classifier does not need only when trusted)."""
    if fmt == "savedmodel":
        return _load_savedmodel(path, trust_graph)
    return _load_keras(path, fmt)


def _final_activation(model, call: Callable) -> tuple[str, Callable]:
    """What a Keras model ends in, and the call that gives its logits (the values before a final
    softmax or sigmoid: the output layer's activation switched off while it runs)."""
    import keras

    layer = model.outputs[0]._keras_history.operation
    kind = getattr(getattr(layer, "activation", None), "__name__", None)
    if kind in ("softmax", "sigmoid"):
        def logits(x):
            activation, layer.activation = layer.activation, keras.activations.linear
            try:
                return model(x, training=False)
            finally:
                layer.activation = activation

        return kind, logits
    if isinstance(layer, keras.layers.Softmax) and layer.axis in (-1, 1, [-1], [1]):
        before = keras.Model(model.inputs, layer.input)
        return "softmax", lambda x: before(x, training=False)
    return "none", call


# The operations a classifier's serving graph needs, as Keras and tf.saved_model write them
# (Keras Applications and Keras layers, measured): the function-call and variable plumbing,
# tensor shapes, arithmetic and the layers. Nothing here reads or writes files, prints, or
# calls Python; any other operation (PrintV2, WriteFile, PyFunc, a dataset reader, a custom
# kernel) is refused unless the user trusts the graph.
_SERVING_OPS = frozenset("""
    Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault StatefulPartitionedCall
    PartitionedCall If StatelessIf While StatelessWhile VarHandleOp ReadVariableOp
    AssignVariableOp VarIsInitializedOp DisableCopyOnRead StopGradient EnsureShape
    Cast Shape ShapeN Size Rank Fill ZerosLike OnesLike Range Pack Unpack Reshape Squeeze
    ExpandDims Transpose ConcatV2 Split SplitV Slice StridedSlice GatherV2 Tile Pad PadV2
    MirrorPad BroadcastTo BroadcastArgs Select SelectV2 Cumsum OneHot DepthToSpace SpaceToDepth
    MatMul BatchMatMulV2 BatchMatMulV3 Einsum Conv2D Conv3D DepthwiseConv2dNative
    Conv2DBackpropInput Conv3DBackpropInputV2 BiasAdd AvgPool AvgPool3D MaxPool MaxPoolV2
    MaxPool3D FusedBatchNorm FusedBatchNormV3 ResizeBilinear ResizeNearestNeighbor ResizeBicubic
    ResizeArea Relu Relu6 Elu Selu LeakyRelu Softplus Softsign Sigmoid Tanh Softmax LogSoftmax
    Erf Erfc Exp Log Log1p Sqrt Rsqrt Square Pow Abs Neg Sign Floor Ceil Round Reciprocal Cos
    Sin AddV2 Add AddN Sub Mul RealDiv Div DivNoNan FloorDiv FloorMod Maximum Minimum
    SquaredDifference ClipByValue Mean Sum Prod Max Min ArgMax ArgMin All Any Equal NotEqual
    Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot IsNan IsFinite
""".split())
# what the functions that save and restore the variables (the saver's) add: checkpoint files
_SAVER_OPS = _SERVING_OPS | {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                             "StringJoin", "StaticRegexFullMatch"}
_CALLS = ("f", "then_branch", "else_branch", "body", "cond", "branches")


def unscreened_ops(path: Path) -> list[str]:
    """Operations in the SavedModel at `path` outside what a classifier's serving graph needs,
    as 'op (in function)', read from saved_model.pb without loading or running anything.
    Checkpoint operations count only outside the functions that save and restore variables."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString((path / "saved_model.pb").read_bytes())
    found = []
    for graph in model.meta_graphs:
        functions = {f.signature.name: f for f in graph.graph_def.library.function}
        saver = {graph.saver_def.save_tensor_name.split(":")[0], graph.saver_def.restore_op_name}
        saving = _reachable([n for n in graph.graph_def.node if n.name in saver], functions)
        others = [n for n in graph.graph_def.node if n.name not in saver]
        free = {name for name in functions if name not in saving}
        running = free | _reachable(others + [n for name in free
                                              for n in functions[name].node_def], functions)
        places = [("graph", n) for n in graph.graph_def.node]
        places += [(name, n) for name, f in functions.items() for n in f.node_def]
        for where, node in places:
            saver_only = (node.name in saver if where == "graph" else where not in running)
            if node.op not in (_SAVER_OPS if saver_only else _SERVING_OPS):
                found.append(f"{node.op} (in {where})")
    return sorted(set(found))


def _reachable(nodes, functions: dict) -> set[str]:
    """Names of the functions that `nodes` call, directly or through other functions."""
    seen: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        for key in _CALLS:
            if key not in node.attr:
                continue
            value = node.attr[key]
            names = [value.func.name] + [f.name for f in value.list.func]
            for name in names:
                if name and name not in seen and name in functions:
                    seen.add(name)
                    stack += list(functions[name].node_def)
    return seen


def _load_savedmodel(path: Path, trust_graph: bool = False):
    """`_load` for a TensorFlow SavedModel folder: its serving signature. A graph that calls
    operations a classifier does not need (`_SERVING_OPS`) is refused before TensorFlow loads
    it, unless trusted."""
    import tensorflow as tf

    unknown = [] if trust_graph else unscreened_ops(path)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ExportError("io_ops", f"{path}: this SavedModel is a program whose graph calls "
                          "operations an image classifier does not need "
                          f"({', '.join(unknown[:5])}{more}): they can read or write files or "
                          "call Python, and would run during conversion. If you trust its "
                          "source, pass --trust-graph (trust_graph=True); better, save the "
                          "model as .keras and pass that.")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:
        raise ExportError("corrupt", f"{path}: TensorFlow cannot load this SavedModel "
                          f"folder ({type(err).__name__}: {err})") from err
    if "serving_default" not in loaded.signatures:
        raise ExportError("unsupported", f"{path}: the SavedModel has no 'serving_default' "
                          f"signature (it has {sorted(loaded.signatures)}); re-export it "
                          "with model.export(folder).")
    sig = loaded.signatures["serving_default"]
    inputs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError("unsupported", f"{path}: the serving signature has inputs "
                          f"{sorted(inputs)} and outputs {sorted(outputs)}; xband needs one "
                          "image input and one class-score output.")
    (in_name, spec), = inputs.items()
    out_name, = outputs

    def call(x):  # through `loaded`, which must stay alive: it owns the variables
        return loaded.signatures["serving_default"](**{in_name: x})[out_name]

    def convert(signature, opset):
        return _from_function(call, signature, opset)

    return _Model(call, tuple(spec.shape), convert, None, None)


def _load_keras(path: Path, fmt: str):
    """`_load` for a .keras or .h5 file, refusing layers that need code before loading."""
    import keras
    import tf2onnx

    def known(cls: str) -> bool:
        return hasattr(keras.layers, cls) or cls in _MODEL_CLASSES

    config = _read_config(path, fmt)
    bad = _needs_code(config, known)
    if bad:
        raise ExportError("needs_code", _code_message(path, _bad_layers(bad)))
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as err:
        msg = str(err)
        if "Lambda" in msg or "Unknown layer" in msg or "could not be deserialized" in msg:
            raise ExportError("needs_code", _code_message(
                path, f"Keras cannot rebuild the model without code ({msg[:200]})")) from err
        raise ExportError("corrupt", f"{path}: Keras cannot load this model "
                          f"({type(err).__name__}: {msg[:300]})") from err
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("unsupported", f"{path}: the model has {len(model.inputs)} inputs and "
                          f"{len(model.outputs)} outputs; xband needs one image input and one "
                          "class-score output.")

    def call(x):
        return model(x, training=False)

    def convert(signature, opset):
        try:
            return tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)[0]
        except KeyError:
            # tf2onnx 1.17 loses track of Keras 3 tensor names in some Sequential models loaded
            # from disk (KeyError: 'keras_tensor_NN'); tracing the call as a tf.function works
            return _from_function(call, signature, opset)

    def float64():
        twin = _float64_twin(model)

        def twin_call(x):
            return twin(x, training=False)

        return twin_call, _final_activation(twin, twin_call)[1]

    kind, logits = _final_activation(model, call)
    return _Model(call, tuple(model.inputs[0].shape), convert, kind, logits, float64)


def _float64_twin(model):
    """A copy of the Keras `model` whose layers hold and compute in float64, with the same
    weights: what the model computes without float32 rounding."""
    import keras

    def retyped(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype="float64")
    twin = keras.models.clone_model(model, input_tensors=inputs, clone_function=retyped,
                                    recursive=True)
    twin.set_weights([w.astype(np.float64) if np.issubdtype(w.dtype, np.floating) else w
                      for w in model.get_weights()])
    return twin


def _fits(probe: np.ndarray, want: tuple) -> bool:
    return probe.ndim == 4 and all(w is None or w == p
                                   for w, p in zip(want, probe.shape[1:], strict=True))


def _spectra_probe(args, shape: tuple) -> np.ndarray:
    """For a model of spectra ((N, B), (N, B, 1) or (N, 1, B)): the user's spectra (`--probe`,
    as (N, B) or 1×1 images (N, B, 1, 1) / (N, 1, 1, B)) reshaped to what it takes, or the
    default probe."""
    want = tuple(shape[1:])
    if not args.probe:
        if None in want:
            raise ExportError("bad_probe", f"{args.source}: the model takes spectra of any "
                              f"length {want}; give data (--data) so that the check runs on "
                              "spectra of the right length.")
        return default_probe(want)
    probe = np.load(args.probe).astype(np.float32)
    per_item = int(np.prod(probe.shape[1:]))
    bands = [d for d in want if d != 1]
    if sum(d > 1 for d in probe.shape[1:]) > 1 or (bands and None not in bands
                                                  and per_item != bands[0]):
        raise ExportError("bad_probe", f"{args.source}: the data given with --data have shape "
                          f"{probe.shape[1:]} but the model takes spectra of shape "
                          f"{tuple('any' if d is None else d for d in want)}. Give one "
                          "spectrum per pixel, with the model's bands.")
    return probe.reshape(len(probe), *(per_item if d is None else d for d in want))


def _probe(args, shape: tuple) -> np.ndarray:
    """The user's images (`--probe`) laid out as the model takes them, or the default probe.
    Images whose bands are known to be on axis 1 (`--probe-layout channels_first`, as GeoTIFFs
    are read) are moved bands last when that is what the model takes."""
    if len(shape) in (2, 3):
        return _spectra_probe(args, shape)
    if args.probe:
        probe = np.load(args.probe).astype(np.float32)
        want = tuple(shape[1:])
        if args.probe_layout == "channels_first" and probe.ndim == 4:
            last = np.ascontiguousarray(np.moveaxis(probe, 1, 3))
            probe = last if _fits(last, want) or not _fits(probe, want) else probe
        if not _fits(probe, want):
            stored = ("bands, height, width" if args.probe_layout == "channels_first"
                      else "height, width, bands")
            raise ExportError("bad_probe", f"{args.source}: the images given with --data have "
                              f"shape {probe.shape[1:]} ({stored}) but the model takes images of "
                              f"shape {tuple('any' if d is None else d for d in want)} (height, "
                              "width, bands). Give images with the model's size and bands.")
        return probe
    h, w, c = shape[1:]
    size = args.input_size or (DEFAULT_SPATIAL, DEFAULT_SPATIAL)
    return default_probe((h or size[0], w or size[1], c))


def run(args) -> dict:
    """Convert (unless the ONNX file exists) and compute the reference; return the report."""
    try:
        import tensorflow as tf
        import tf2onnx  # noqa: F401
    except ImportError as err:
        raise ExportError("missing_dependency", f"{args.source}: reading Keras/TensorFlow models "
                          f"needs TensorFlow and tf2onnx ({err}); install them with: "
                          f"{KERAS_EXTRA}") from err
    import onnx

    from converters.onnx_graph import describe_foreign_ops, foreign_ops

    source = Path(args.source)
    model = _load(source, args.format, args.trust_graph)
    shape = model.shape
    if len(shape) not in (2, 3, 4):
        raise ExportError("unsupported", f"{source}: the model input has shape {shape}; xband "
                          "needs images (batch, height, width, bands) or spectra (batch, bands) "
                          "or (batch, bands, 1).")
    report: dict = {"ok": True, "input_shape": [None, *shape[1:]]}
    onnx_path = Path(args.onnx)
    if not onnx_path.exists():
        signature = (tf.TensorSpec((None, *shape[1:]), tf.float32, name="input"),)
        start = time.perf_counter()
        try:
            proto = model.convert(signature, args.opset)
        except Exception as err:
            raise ExportError("conversion_failed", f"{source}: tf2onnx could not convert the "
                              f"model at opset {args.opset} ({type(err).__name__}: "
                              f"{str(err)[:300]}); try another --opset, or export to ONNX "
                              "yourself and pass the .onnx file.") from err
        report["convert_seconds"] = time.perf_counter() - start
        foreign = foreign_ops(proto)
        if foreign:
            raise ExportError("non_onnx_ops", f"{source}: tf2onnx left TensorFlow operations "
                              f"that are not ONNX operators in the graph: "
                              f"{describe_foreign_ops(foreign)}. These layers cannot be run "
                              "outside TensorFlow; try another --opset, or replace the layers "
                              "(e.g. grouped/depthwise convolutions) and re-save.")
        with atomic_path(onnx_path) as tmp:
            onnx.save(proto, str(tmp))
    if args.reference:
        start = time.perf_counter()
        _write_reference(model, _probe(args, shape), Path(args.reference), source, args.float64)
        report["reference_seconds"] = time.perf_counter() - start
    return report


def _write_reference(model: _Model, probe: np.ndarray, path: Path, source: Path,
                     float64: bool = False) -> None:
    """TensorFlow's outputs on the probe, its logits when the final activation is known, and
    the input gradient of the explained output (the logits, else the outputs) for one class;
    with `float64`, the same from the model's float64 twin too (where it can be built)."""
    import tensorflow as tf

    x = tf.constant(probe)
    out = model.call(x).numpy()
    if out.ndim not in (2, 4):
        raise ExportError("unsupported", f"{source}: the model output has shape {out.shape}; "
                          "xband needs class scores of shape (batch, classes), or per pixel "
                          "(batch, height, width, classes) for segmentation.")
    explained = model.logits or model.call
    logits = model.logits(x).numpy() if model.logits else np.empty(0, np.float32)
    target = int(np.argmax(out.reshape(-1, out.shape[-1]).mean(axis=0)))  # last axis
    grad = _input_gradient(explained, x, target)
    exact = _float64_reference(model, probe, target) if float64 else {}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, probe=probe, outputs=out, logits=logits, grad=grad, target=target,
                 final_activation=model.final_activation or "unknown", **exact)


def _input_gradient(explained: Callable, x, target: int) -> np.ndarray:
    """d(sum over the batch of explained(x)[..., target]) / dx: the class `target` on the last
    axis, summed over the pixels of a segmentation output (as `converters.fidelity`)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.reduce_sum(explained(x)[..., target])
    return tape.gradient(score, x).numpy()


def _float64_reference(model: _Model, probe: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """`exact_outputs`, `exact_logits` and `exact_grad`: the reference computed by the model's
    float64 twin; {} when it has none, or when one of its layers cannot be rebuilt or run in
    float64."""
    import tensorflow as tf

    if model.float64 is None:
        return {}
    x = tf.constant(probe.astype(np.float64))
    try:
        call, logits = model.float64()
        return {"exact_outputs": call(x).numpy(), "exact_logits": logits(x).numpy(),
                "exact_grad": _input_gradient(logits, x, target)}
    except Exception:  # noqa: BLE001 - a layer the twin cannot rebuild or run: no float64 values
        return {}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m converters.keras_export", description=__doc__)
    p.add_argument("source", help=".keras/.h5 file or SavedModel folder")
    p.add_argument("--format", required=True, choices=["keras", "h5", "savedmodel"])
    p.add_argument("--onnx", required=True, help="ONNX file to write (kept if it exists)")
    p.add_argument("--reference", help="npz file for probe, outputs, logits, input gradient, "
                   "target, final activation")
    p.add_argument("--probe", help=".npy images (N, H, W, C); default: seeded uniform [0, 1)")
    p.add_argument("--probe-layout", choices=["channels_first", "channels_last"],
                   help="band axis of the --probe images (default: the model's)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="probe size when the model accepts any size (default 32 32)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--result", required=True, help="JSON report to write")
    p.add_argument("--trust-graph", action="store_true",
                   help="run a SavedModel whose graph calls operations a classifier does "
                   "not need (files, printing, Python)")
    p.add_argument("--float64", action="store_true",
                   help="add the reference computed by the model's float64 twin")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped by the parent: clean up like Ctrl-C
    try:
        report = run(args)
    except ExportError as err:
        report = {"ok": False, "kind": err.kind, "message": str(err)}
    except Exception as err:  # noqa: BLE001 - anything unforeseen still reaches the user
        report = {"ok": False, "kind": "conversion_failed",
                  "message": f"{args.source}: conversion failed ({type(err).__name__}: {err})"}
    write_text(args.result, json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
