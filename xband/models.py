"""Loading classifiers into PyTorch: one `LoadedModel` whatever the source format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

Layout = Literal["channels_last", "channels_first"]
Output = Literal["logits", "probabilities"]


@dataclass
class Fidelity:
    """Measured agreement between the original model and its PyTorch form on a probe batch."""

    reference: str  # what computed the original outputs: "tensorflow", "onnxruntime" or "none"
    probe: str  # "user data (N images)" or "random uniform [lo, hi] (N images)"
    n_probe: int
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    output_range: float | None = None
    grad_rel_diff: float | None = None  # ||g_torch - g_ref|| / ||g_ref||, one target class
    grad_target: int | None = None
    tolerance_abs: float = 1e-4
    tolerance_rel: float = 1e-3
    passed: bool = True
    accepted_mismatch: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoadedModel:
    """A classifier as a torch module in eval mode, with what xband needs to know about it."""

    module: nn.Module  # computes what the source computes (probabilities if it ends in softmax)
    logits_module: nn.Module | None  # same network without its final softmax; None if not strippable
    layout: Layout
    n_bands: int
    n_classes: int
    spatial_size: tuple[int, int] | None
    ends_with_softmax: bool
    source_format: str  # "keras", "h5", "savedmodel", "onnx", "torch-module", "torchscript", "torch-export", "torch-pickle"
    source_path: str | None = None
    sha256: str | None = None
    fidelity: Fidelity | None = None
    onnx_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def band_axis(self) -> int:
        """Axis of the bands in a batch laid out as the model expects."""
        return 3 if self.layout == "channels_last" else 1

    def network(self, output: Output = "logits") -> nn.Module:
        """The module giving `output`; logits fall back to probabilities if no softmax can be stripped."""
        if output == "logits" and self.logits_module is not None:
            return self.logits_module
        return self.module

    def __call__(self, x: torch.Tensor, output: Output = "logits") -> torch.Tensor:
        return self.network(output)(x)
