"""ONNX → PyTorch with onnx2torch: output and logits modules, final activation, layout, sizes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import defs
from onnx2torch import convert
from onnx2torch.node_converters.registry import get_converter
from torch import nn

import converters.extra_ops  # noqa: F401  (registers converters onnx2torch lacks)
from converters.errors import ConversionError
from converters.onnx_graph import (
    describe_foreign_ops,
    detect_layout,
    foreign_ops,
    graph_inputs,
    inline_constant_identities,
    input_shape,
    make_batch_dynamic,
    strip_final_activation,
)


@dataclass
class TorchFromOnnx:
    """Converted modules and what the ONNX graph says about the input."""

    module: nn.Module  # same function as the ONNX graph
    logits_module: nn.Module | None  # without the final Softmax or Sigmoid, when there is one
    final_activation: str  # "softmax", "sigmoid" (stripped into logits_module) or "none"
    logits_graph: onnx.ModelProto  # the graph `logits_module` (or `module`) was converted from
    layout: str | None  # "channels_last" or "channels_first"; None when the graph does not tell
    input_shape: list[int | None]  # with batch axis; None for dynamic dimensions


def read_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file, refusing corrupt files and graphs with non-ONNX operators."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise ConversionError(f"{path}: not a valid ONNX model ({type(err).__name__}: "
                         f"{str(err).strip()[:300]}); is the file complete?") from err
    foreign = foreign_ops(model)
    if foreign:
        raise ConversionError(f"{path}: the graph holds operations that are not ONNX operators: "
                         f"{describe_foreign_ops(foreign)}. Re-export the model without them "
                         "(another opset, or built-in layers instead of these).")
    if len(graph_inputs(model)) != 1:
        raise ConversionError(f"{path}: the graph has {len(graph_inputs(model))} inputs; xband needs "
                         "one image input.")
    return model


def _check_converters(model: onnx.ModelProto, path: Path) -> None:
    versions = {o.domain or "": o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx", 17))
    missing = {}
    for node in model.graph.node:
        try:
            get_converter(node.op_type, version, node.domain or defs.ONNX_DOMAIN)
        except NotImplementedError:
            missing.setdefault(f"{node.op_type} (opset {version})", node.name)
    if missing:
        listing = "; ".join(f"{op} at node '{name}'" for op, name in missing.items())
        raise ConversionError(f"{path}: onnx2torch has no converter for {listing}. Try exporting "
                         "with another opset (--opset), or replace the layer(s) behind these "
                         "nodes.")


def onnx_to_torch(model: onnx.ModelProto, path: Path) -> TorchFromOnnx:
    """Convert `model` (checked by `read_onnx`) to eval-mode torch modules for any batch size."""
    _check_converters(model, path)
    dynamic = inline_constant_identities(make_batch_dynamic(model))
    stripped = strip_final_activation(dynamic)
    graph, kind = stripped or (dynamic, "none")
    try:
        net = convert(graph).eval()
    except Exception as err:
        raise ConversionError(f"{path}: onnx2torch failed to convert the graph ({type(err).__name__}: "
                         f"{str(err)[:300]}). Try exporting with another opset (--opset).") from err
    if stripped is None:
        module, logits = net, None
    else:
        activation = nn.Softmax(dim=-1) if kind == "softmax" else nn.Sigmoid()
        module, logits = nn.Sequential(net, activation).eval(), net
    shape = input_shape(model) or [None] * 4
    layout = detect_layout(model)
    return TorchFromOnnx(module, logits, kind, graph, layout,
                         [None, *shape[1:]])


def torch_to_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int,
                  spatial_axes: tuple[int, int] | None = None) -> None:
    """Export `module` to ONNX at `path` (TorchScript exporter) with a dynamic batch axis, and
    dynamic `spatial_axes` (height, width) when given."""
    axes = {0: "batch", **({spatial_axes[0]: "height", spatial_axes[1]: "width"}
                           if spatial_axes else {})}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns it is deprecated
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": axes, "output": {0: "batch"}})
    except Exception as err:
        raise ConversionError(f"torch.onnx.export could not export the model to ONNX "
                         f"({type(err).__name__}: {str(err)[:300]}); export it yourself or use "
                         "the model directly without writing an ONNX file.") from err
