"""ONNX operations onnx2torch 1.5.15 lacks but Keras models produce; importing registers them."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn


class _GlobalMax2d(torch.autograd.Function):
    """The largest value of each image's channel over its pixels, (N, C, H, W) → (N, C, 1, 1),
    by max-pooling's kernel in whatever memory layout the input has; its gradient shared
    equally among tied maxima, as torch.amax's and TensorFlow's reduce_max's are (max-pooling's
    own backward would give it all to the first)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, x.shape[2:])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, top = ctx.saved_tensors
        hit = (x == top).to(x.dtype)
        return hit.mul_(grad / hit.sum(dim=(2, 3), keepdim=True))  # amax's backward, same bits


class GlobalMaxPool(nn.Module):
    """ONNX GlobalMaxPool: max over every spatial axis, kept as size-1 axes (Keras
    GlobalMaxPooling2D). torch.amax is fast over channels-first memory, but over the pixels of
    a channels-last tensor it copies the tensor to channels-first first, which took longer than
    the convolutions around it: channels-last images go through `_GlobalMax2d` instead, in their
    own layout, with the same values and gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous():
            return _GlobalMax2d.apply(x)
        return torch.amax(x.contiguous(), dim=tuple(range(2, x.dim())), keepdim=True)


@add_converter(operation_type="GlobalMaxPool", version=1)
def _global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=GlobalMaxPool(),
                                    onnx_mapping=onnx_mapping_from_node(node=node))
