"""Segmentation networks (one class score per pixel) as networks with one score per class.

A segmentation network gives (N, C, H, W) or (N, H, W, C) outputs. The question xband answers
for it is per class: which bands do the pixels of class c rely on? `ClassPixels` turns the
network into what every attribution method needs, one score per class and image: it takes the
image with its class mask as one more channel (after the bands; the mask fixed per image: the
label mask, or the network's own prediction on the unperturbed image) and gives, per class, the
mean of the class's output over the pixels the mask gives the class. Removing, shuffling or
differentiating the bands then asks how the class's own pixels' output depends on each band.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xband.errors import XbandError
from xband.layout import Layout


def output_layout(shape: tuple[int, ...], image_size: tuple[int, int], preferred: Layout,
                  source: str) -> Layout | None:
    """Where the classes are in a network's outputs of `shape` on images of `image_size`:
    None for a classifier's (N, C); the class axis of a segmentation network's outputs at the
    images' size, (N, C, H, W) or (N, H, W, C) (`preferred`, the input's layout, when both
    fit). Any other shape is refused, saying why."""
    if len(shape) == 2:
        return None
    if len(shape) == 4:
        fits = [layout for layout in (preferred, preferred.other)
                if tuple(layout.image_size(shape)) == tuple(image_size)]
        if fits:
            return fits[0]
        raise XbandError(
            f"{source}: the model gives outputs of shape {tuple(shape)} for images of "
            f"{image_size[0]}×{image_size[1]} pixels: a segmentation network's outputs must "
            "have the images' size, (batch, classes, height, width) or (batch, height, width, "
            "classes). Upsample the outputs to the input size inside the model.")
    raise XbandError(f"{source}: the model output has shape {tuple(shape)}; xband needs class "
                     "scores of shape (batch, classes), or per pixel (batch, classes, height, "
                     "width) for segmentation.")


def classes_first(outputs: np.ndarray, layout: Layout | None) -> np.ndarray:
    """A network's outputs with the classes on axis 1 (a classifier's as they are)."""
    return outputs if layout in (None, Layout.CHANNELS_FIRST) else np.moveaxis(outputs, 3, 1)


class ClassPixels(nn.Module):
    """A segmentation network as a network of one score per class. The input is the image in
    the network's own layout with the class mask as one more channel after the bands (each
    pixel's class; -1, `xband.data.masks.IGNORED`, for none). The output, (N, 2C), is for each
    class the mean of its output over its pixels, then for each class the share of its pixels
    whose largest output is the class (0 for a class without pixels)."""

    def __init__(self, network: nn.Module, layout: Layout, outputs: Layout, n_classes: int):
        super().__init__()
        self.network = network
        self.band_axis = Layout(layout).band_axis  # where the bands and the mask are
        self.class_axis = Layout(outputs).band_axis  # where the classes are in the outputs
        self.register_buffer("classes", torch.arange(n_classes).view(1, -1, 1, 1),
                             persistent=False)  # (1, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands, mask = x.split([x.shape[self.band_axis] - 1, 1], dim=self.band_axis)
        out = self.network(bands)
        if self.class_axis == 3:
            out = out.permute(0, 3, 1, 2)  # (N, C, H, W)
        if self.band_axis == 3:
            mask = mask.permute(0, 3, 1, 2)  # (N, 1, H, W)
        member = mask == self.classes  # (N, C, H, W) each class's pixels
        count = member.sum(dim=(2, 3)).clamp(min=1)  # (N, C)
        pooled = torch.where(member, out, 0).sum(dim=(2, 3)) / count
        found = (out.argmax(dim=1, keepdim=True) == self.classes) & member
        return torch.cat([pooled, (found.sum(dim=(2, 3)) / count).to(pooled.dtype)], dim=1)
