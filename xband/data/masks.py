"""Class masks of segmentation data: each image's class per pixel, read with its image.

A mask source holds (N, H, W) whole numbers, the class of each pixel in the model's output order,
or an ignore index for pixels of no class (unlabelled, nodata). Masks come from an array, a
folder of single-band GeoTIFFs named as the images (`MaskFiles`), or torch samples' "mask"
(`xband.data.readers`). Reads are checked: a value that is neither a class nor the ignore index
names the image and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from xband.errors import XbandError

IGNORED = -1  # a checked mask's value for pixels of no class
CHUNK = 256  # masks read at a time when every mask is scanned


class MaskSource(Protocol):
    """Masks as stored, read on demand: `shape` is (N, H, W); `source[indices]` reads the masks
    at a sorted array of distinct indices."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, indices: np.ndarray) -> np.ndarray: ...


class SqueezedMasks:
    """(N, 1, H, W) or (N, H, W, 1) stored masks as a `MaskSource` of (N, H, W)."""

    def __init__(self, source, axis: int):
        self.source, self.axis = source, axis
        self.shape = tuple(d for i, d in enumerate(source.shape) if i != axis)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.source[indices]).squeeze(self.axis)


def mask_source(masks, n_images: int, source: str) -> MaskSource:
    """`masks` as an (N, H, W) source: an array or any source of (N, H, W), (N, 1, H, W) or
    (N, H, W, 1), one mask per image, holding numbers."""
    shape = tuple(masks.shape)
    if len(shape) == 4 and 1 in (shape[1], shape[3]):
        masks = SqueezedMasks(masks, 1 if shape[1] == 1 else 3)
        shape = masks.shape
    if len(shape) != 3:
        raise XbandError(f"{source}: masks of shape {shape}; expected one class per pixel, "
                         "(images, height, width).")
    if shape[0] != n_images:
        raise XbandError(f"{source}: {n_images} images but {shape[0]} masks. Give one mask per "
                         "image, in the images' order.")
    kind = np.dtype(getattr(masks, "dtype", np.int64)).kind
    if kind not in "biuf":
        raise XbandError(f"{source}: masks hold {getattr(masks, 'dtype', 'values')}, not class "
                         "numbers. Store each pixel's class as a whole number.")
    return masks


def checked(raw: np.ndarray, indices: np.ndarray, n_classes: int, ignore_index: int | None,
            describe: Callable[[int], str]) -> np.ndarray:
    """(K, H, W) int16 masks read at `indices`: each pixel's class, `IGNORED` where the mask
    holds `ignore_index`. A value that is neither names its image (`describe`) and what to do."""
    raw = np.asarray(raw)
    ignored = np.zeros(raw.shape, dtype=bool) if ignore_index is None else raw == ignore_index
    bad = ~ignored & ((raw < 0) | (raw >= n_classes) | (raw != np.round(raw)))
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        value = raw[row][bad[row]][0]
        hint = ("" if ignore_index is None else f" or the ignore index {ignore_index}")
        raise XbandError(
            f"{describe(int(indices[row]))}: its mask has the value {value:g}, which is not one of "
            f"the model's {n_classes} classes (0–{n_classes - 1}){hint}. Map the mask to the "
            "model's output order, or give the value that marks unlabelled pixels as the "
            "ignore index (ignore_index=, --ignore-index).")
    return np.where(ignored, IGNORED, raw.astype(np.int64)).astype(np.int16)


def chunks(n: int, size: int = CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def present(masks: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, C) whether each class has pixels in each of the checked masks (K, H, W)."""
    flat = masks.reshape(len(masks), -1)
    out = np.zeros((len(masks), n_classes), dtype=bool)
    rows, pixels = np.nonzero(flat >= 0)
    out[rows, flat[rows, pixels]] = True
    return out
