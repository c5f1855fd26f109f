"""ONNX operations onnx2torch 1.5.15 lacks but Keras models produce; importing registers them."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn


class GlobalMaxPool(nn.Module):
    """ONNX GlobalMaxPool: max over every spatial axis, kept as size-1 axes (Keras
    GlobalMaxPooling2D). Taken over channels-first memory: torch's max over the spatial axes of
    a channels-last tensor is tens of times slower than a copy to channels-first and the max
    there (the same values; its gradient goes back the same way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x.contiguous(), dim=tuple(range(2, x.dim())), keepdim=True)


@add_converter(operation_type="GlobalMaxPool", version=1)
def _global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(),
                                    onnx_mapping=onnx_mapping_from_node(node=node))
