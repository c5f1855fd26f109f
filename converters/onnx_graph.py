"""ONNX graph checks and edits that need neither TensorFlow nor torch."""

from __future__ import annotations

import copy

import onnx
from onnx import helper

ONNX_DOMAINS = ("", "ai.onnx")
# Ops that keep the layout of their input: followed when looking for the first layout-bound op.
_LAYOUT_NEUTRAL = {
    "Identity", "Cast", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "Tanh", "Neg",
    "Abs", "Sqrt", "Pow", "Exp", "Log", "Max", "Min", "LeakyRelu", "HardSwish", "HardSigmoid",
}
_CHANNELS_FIRST_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
    "InstanceNormalization", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
}


def _nodes(graph: onnx.GraphProto):
    """All nodes of a graph, including those of subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def foreign_ops(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(op type, domain, node name) of every node that is not a standard ONNX operator.

    tf2onnx leaves ops it cannot convert (e.g. `StatefulPartitionedCall`) in the default domain,
    so the op type is checked against the ONNX operator set too.
    """
    return [(n.op_type, n.domain, n.name) for n in _nodes(model.graph)
            if n.domain not in ONNX_DOMAINS or not onnx.defs.has(n.op_type)]


def describe_foreign_ops(ops: list[tuple[str, str, str]], limit: int = 5) -> str:
    """Short listing of foreign ops: their types, and the first few nodes (which name the layer)."""
    types = sorted({f"{op} (domain '{dom}')" for op, dom, _ in ops})
    nodes = ", ".join(name for _, _, name in ops[:limit])
    more = f" and {len(ops) - limit} more" if len(ops) > limit else ""
    return f"{'; '.join(types)} at node(s) {nodes}{more}"


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs (not initializers listed as inputs, as old exporters do)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _shape(value: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def input_shape(model: onnx.ModelProto) -> list[int | None] | None:
    """Shape of the single input, None for unknown dimensions (or None if rank unknown)."""
    return _shape(graph_inputs(model)[0])


def output_shape(model: onnx.ModelProto) -> list[int | None] | None:
    """Shape of the first output, None for unknown dimensions."""
    return _shape(model.graph.output[0])


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` whose input and output declare a symbolic batch dimension."""
    model = copy.deepcopy(model)
    for value in [*graph_inputs(model), *model.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and len(tensor.shape.dim) > 0:
            dim = tensor.shape.dim[0]
            dim.Clear()
            dim.dim_param = "batch"
    return model


def inline_constant_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` in which Identity nodes that only rename an initializer are replaced by a
    copy of it under the new name. torch.onnx.export shares equal weights (the zero biases of an
    untrained timm ResNet) that way, and onnx2torch needs convolution weights as initializers."""
    inits = {i.name: i for i in model.graph.initializer}
    renames = [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    if not renames:
        return model
    model = copy.deepcopy(model)
    for node in renames:
        tensor = copy.deepcopy(inits[node.input[0]])
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
    names = {n.name for n in renames}
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.name in names)]
    model.graph.ClearField("node")
    model.graph.node.extend(kept)
    return model


FINAL_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid"}


def strip_final_activation(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str] | None:
    """Copy of `model` without its final Softmax (over the class axis) or Sigmoid, and which of
    the two it was ("softmax" or "sigmoid"); None if the graph ends in neither.

    Follows Identity nodes back from the single output; only a (batch, classes) output, or a
    segmentation network's (batch, height, width, classes), is stripped, a Softmax only when it
    runs over the last axis, and neither when its output feeds another node too. A segmentation
    graph may end in a Transpose after the activation (tf2onnx's NCHW → NHWC): the Transpose is
    kept, fed the activation's input.
    """
    if len(model.graph.output) != 1:
        return None
    shape = output_shape(model)
    if shape is not None and len(shape) not in (2, 4):
        return None
    nodes = list(model.graph.node)
    producers = {out: i for i, node in enumerate(nodes) for out in node.output}
    chain, name = [], model.graph.output[0].name
    while name in producers and nodes[producers[name]].op_type == "Identity":
        chain.append(producers[name])
        name = nodes[producers[name]].input[0]
    if name not in producers:
        return None
    transpose, last_axis = _final_transpose(nodes, producers, name)
    if transpose is not None:
        name = transpose.input[0]
    node = nodes[producers[name]]
    kind = FINAL_ACTIVATIONS.get(node.op_type)
    if kind is None or node.domain not in ONNX_DOMAINS:
        return None
    rank = len(shape or (0, 0))
    class_axis = rank - 1 if last_axis is None else last_axis  # where the outputs' last axis is
    if kind == "softmax" and _softmax_axis(model, node) % rank != class_axis:
        return None
    drop = {producers[name], *([] if transpose is not None else chain)}
    produced = {out for i in drop for out in nodes[i].output}
    if any(set(n.input) & produced for i, n in enumerate(nodes)
           if i not in drop and n is not transpose):
        return None  # the activation's output feeds something else too
    stripped = copy.deepcopy(model)
    stripped.graph.ClearField("node")
    stripped.graph.node.extend(n for i, n in enumerate(nodes) if i not in drop)
    if transpose is None:
        stripped.graph.output[0].name = node.input[0]
    else:
        kept = next(n for n in stripped.graph.node if list(n.output) == list(transpose.output))
        kept.input[0] = node.input[0]
    return stripped, kind


def _final_transpose(nodes: list[onnx.NodeProto], producers: dict[str, int], name: str
                     ) -> tuple[onnx.NodeProto | None, int | None]:
    """The rank-4 Transpose producing `name`, if it is one, and the axis of its input that
    becomes its last axis; (None, None) otherwise."""
    node = nodes[producers[name]]
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    if node.op_type != "Transpose" or perm is None or len(perm) != 4:
        return None, None
    return node, perm[-1]


def _softmax_axis(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 13)
    return axis if axis is not None else (-1 if opset >= 13 else 1)


def detect_layout(model: onnx.ModelProto) -> str | None:
    """'channels_last' or 'channels_first' from the graph, or None if it cannot tell.

    ONNX convolutions are channels-first, so a graph fed NHWC starts with a Transpose
    (perm 0,3,1,2) before its first convolution; one fed NCHW reaches it directly.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier, seen = [graph_inputs(model)[0].name], set()
    while frontier:
        name = frontier.pop(0)
        for node in consumers.get(name, []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                if perm == [0, 3, 1, 2]:
                    return "channels_last"
            elif node.op_type in _CHANNELS_FIRST_OPS:
                return "channels_first"
            elif node.op_type in _LAYOUT_NEUTRAL:
                frontier.extend(node.output)
    shape = input_shape(model)
    if shape and len(shape) == 4 and None not in shape[1:]:
        _, a, b, c = shape
        if c < min(a, b):
            return "channels_last"
        if a < min(b, c):
            return "channels_first"
    return None
