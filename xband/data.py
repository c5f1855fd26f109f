"""Reading labelled multispectral images and checking them against the model.

An `ImageSet` gives random access to images in channels-first order (N, B, H, W), whatever the
layout on disk, so that the attribution engine can stream batches and draw donor images (for
permutation importance and GradientShap baselines) from anywhere in the data set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xband.errors import XbandError


@dataclass
class ImageSet:
    """Images (N, B, H, W) after layout conversion, with labels and names.

    `images` may be a memory map: only the batches asked for are read.
    """

    images: np.ndarray
    labels: np.ndarray | None
    band_names: list[str]
    class_names: list[str] | None
    source: str = "arrays"
    layout_on_disk: str = "channels_first"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_bands(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` as float32 (K, B, H, W)."""
        order = np.argsort(indices)
        block = np.asarray(self.images[np.asarray(indices)[order]], dtype=np.float32)
        out = np.empty_like(block)
        out[order] = block
        return out

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive chunks of `indices` of at most `batch_size`."""
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


def _channels_first(x: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(x, 3, 1) if layout == "channels_last" else x


def guess_layout(shape: Sequence[int], n_bands: int, preferred: str) -> str:
    """Layout of an (N, ?, ?, ?) array holding `n_bands` bands; `preferred` wins when both fit."""
    fits = {
        "channels_last": shape[3] == n_bands,
        "channels_first": shape[1] == n_bands,
    }
    if fits[preferred]:
        return preferred
    other = "channels_first" if preferred == "channels_last" else "channels_last"
    return other if fits[other] else preferred


def load_images(
    path: str | Path,
    *,
    labels: str | Path | np.ndarray | None = None,
    x_key: str = "x",
    y_key: str = "y",
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Read images (as stored) and labels from `.npz` (x, y, optional band/class names) or `.npy`.

    Returns the raw image array, the labels and a dict of names found in the file.
    """
    path = Path(path)
    if not path.exists():
        raise XbandError(f"{path}: no such file. Give a .npz (with '{x_key}' and '{y_key}') or .npy.")
    names: dict = {}
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if x_key not in f.files:
                    raise XbandError(
                        f"{path}: no array named '{x_key}' (found: {', '.join(f.files)}). "
                        f"Store the images as '{x_key}'."
                    )
                images = f[x_key]
                y = f[y_key] if y_key in f.files else None
                for key in ("band_names", "class_names"):
                    if key in f.files:
                        names[key] = [str(v) for v in f[key]]
        elif path.suffix == ".npy":
            images = np.load(path, mmap_mode="r", allow_pickle=False)
            y = None
        else:
            raise XbandError(f"{path}: unknown data format '{path.suffix}'. Use .npz or .npy.")
    except (ValueError, OSError) as err:
        raise XbandError(f"{path}: cannot read ({err}). Is it a valid NumPy file?") from None
    if labels is not None:
        y = _read_labels(labels)
    return images, y, names


def _read_labels(labels: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        return labels
    path = Path(labels)
    if not path.exists():
        raise XbandError(f"{path}: no such labels file. Give a .npy or a text file, one label a line.")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])


def image_set(
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    n_bands: int,
    n_classes: int,
    model_layout: str,
    spatial_size: tuple[int, int] | None,
    band_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    layout: str | None = None,
    source: str = "arrays",
) -> ImageSet:
    """Check images and labels against the model and wrap them channels-first.

    Every problem is an `XbandError` naming the data and what to do.
    """
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise XbandError(
            f"{source}: images have shape {images.shape}; expected 4 axes "
            "(images, height, width, bands) or (images, bands, height, width)."
        )
    if len(images) == 0:
        raise XbandError(f"{source}: holds no images.")
    layout = layout or guess_layout(images.shape, n_bands, model_layout)
    band_axis = 3 if layout == "channels_last" else 1
    if images.shape[band_axis] != n_bands:
        raise XbandError(
            f"{source}: images of shape {tuple(images.shape)} have {images.shape[band_axis]} bands on "
            f"axis {band_axis} ({layout}) but the model expects {n_bands}. Check that the file holds "
            "the bands the model was trained on, or set the layout (--data-layout)."
        )
    x = _channels_first(images, layout)
    if spatial_size is not None and tuple(x.shape[2:]) != tuple(spatial_size):
        raise XbandError(
            f"{source}: images are {x.shape[2]}×{x.shape[3]} pixels but the model takes "
            f"{spatial_size[0]}×{spatial_size[1]}. Crop or resample the patches to the model's size."
        )
    names = _band_names(band_names, n_bands, source)
    classes = _class_names(class_names, n_classes)
    y = None if labels is None else _labels(labels, len(x), n_classes, classes, source)
    return ImageSet(
        images=x,
        labels=y,
        band_names=names,
        class_names=classes,
        source=source,
        layout_on_disk=layout,
    )


def default_band_names(n_bands: int) -> list[str]:
    """Sentinel-2 L1C names for 13 bands, else B1…Bn."""
    if n_bands == 13:
        return ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
                "B12"]
    return [f"B{i + 1}" for i in range(n_bands)]


def _band_names(names: Sequence[str] | None, n_bands: int, source: str) -> list[str]:
    if names is None:
        return default_band_names(n_bands)
    names = [str(n) for n in names]
    if len(names) != n_bands:
        raise XbandError(
            f"{len(names)} band names given ({', '.join(names)}) but the images of {source} have "
            f"{n_bands} bands. Give one name per band, in the order of the bands in the file."
        )
    if len(set(names)) != len(names):
        raise XbandError(f"band names repeat: {', '.join(names)}. Give each band its own name.")
    return names


def _class_names(names: Sequence[str] | None, n_classes: int) -> list[str]:
    if names is None:
        return [f"class {i}" for i in range(n_classes)]
    names = [str(n) for n in names]
    if len(names) != n_classes:
        raise XbandError(
            f"{len(names)} class names given ({', '.join(names)}) but the model has {n_classes} "
            "outputs. Give one name per model output, in output order."
        )
    return names


def _labels(
    labels: np.ndarray, n_images: int, n_classes: int, class_names: list[str], source: str
) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n_images:
        raise XbandError(
            f"{source}: {n_images} images but {len(labels)} labels. Give one label per image."
        )
    if labels.dtype.kind in "US":
        lookup = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({str(v) for v in labels} - set(lookup))
        if unknown:
            raise XbandError(
                f"{source}: labels {', '.join(unknown[:5])} are not among the class names "
                f"({', '.join(class_names)}). Pass --classes in the model's output order."
            )
        return np.array([lookup[str(v)] for v in labels], dtype=np.int64)
    if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
        raise XbandError(f"{source}: labels must be whole class numbers, found {labels[:5]}.")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if len(bad):
        raise XbandError(
            f"{source}: label {labels[bad[0]]} (image {bad[0]}; {len(bad)} such images) is outside "
            f"the model's {n_classes} classes (0–{n_classes - 1}). Map labels to the model's output "
            "order (0-based)."
        )
    return labels


@dataclass
class BandStats:
    """Per-band mean and standard deviation over the data (the default baseline, and the
    scale used for scale-aware saliency)."""

    mean: np.ndarray
    std: np.ndarray


def scan(data: ImageSet, indices: np.ndarray, batch_size: int = 256) -> BandStats:
    """One streaming pass: reject NaN/Inf and compute per-band mean and std."""
    n = 0
    total = np.zeros(data.n_bands)
    total_sq = np.zeros(data.n_bands)
    for chunk in data.batches(indices, batch_size):
        x = data.take(chunk).astype(np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            img, band = np.argwhere(~finite.all(axis=(2, 3)))[0]
            raise XbandError(
                f"{data.source}: image {chunk[img]} has NaN or infinite values in band "
                f"{data.band_names[band]}. Fill or drop such images (nodata) before explaining."
            )
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        total += x.sum(axis=(0, 2, 3))
        total_sq += (x**2).sum(axis=(0, 2, 3))
        n += pixels
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return BandStats(mean=mean.astype(np.float32), std=std.astype(np.float32))


def stratified_subset(labels: np.ndarray | None, n_images: int, max_images: int | None,
                      seed: int) -> np.ndarray:
    """Indices of at most `max_images` images, drawn per class in proportion (seeded), sorted."""
    if max_images is None or max_images >= n_images:
        return np.arange(n_images)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_images, max_images, replace=False))
    picked = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts / n_images * max_images)).astype(int)
    for cls, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        picked.append(rng.choice(members, min(q, len(members)), replace=False))
    return np.sort(np.concatenate(picked))
