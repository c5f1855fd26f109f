"""Labelled multispectral images: one immutable `ImageSet`, whatever the source, checked once.

An `ImageSet` gives random access to images in channels-first order (K, B, H, W), whatever the
layout on disk and wherever they lie (an array, a memory map, an HDF5 dataset, a folder of
GeoTIFFs), so that the attribution engine can stream batches and draw donor images from anywhere
in the data set. Only the batches asked for are read; the preprocessing the model expects is
applied to each batch. It is built without the model (`image_set`, or any reader in
`xband.data.readers`) and checked against the model by `ImageSet.for_model`, inside `explain`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from xband.data import masks as class_masks
from xband.data.masks import MaskSource
from xband.data.sensors import SENSORS, get_sensor, partition
from xband.data.wavelengths import check_count, checked_wavelengths, read_wavelengths
from xband.errors import BadValue, XbandError, option, whole_number
from xband.layout import Layout


class ModelInput(Protocol):
    """What the data must fit in a model (`xband.models.load.LoadedModel` has it)."""

    n_bands: int
    n_classes: int
    layout: Layout
    spatial_size: tuple[int, int] | None


class ImageSource(Protocol):
    """Images as stored, read on demand: NumPy arrays, memory maps and h5py datasets qualify.

    `shape` is (N, …) with three more axes (bands first or last); `source[indices]` reads the
    images at a sorted array of distinct indices.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, indices: np.ndarray) -> np.ndarray: ...


class BadImage(XbandError):
    """One stored image cannot be used; `index` says which, the message why and what to do."""

    def __init__(self, index: int, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.index, self.item, self.reason = index, item, reason


@dataclass(frozen=True)
class Preprocess:
    """What the model saw in training, applied before attribution: x × scale, then clipped to
    [low, high], then (x − mean) / std per band. `by_source` says what the data source itself
    applies as it reads, before these (a DataLoader's collate_fn, a DataModule's augmentation)."""

    scale: float = 1.0
    clip: tuple[float, float] | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    stats_file: str | None = None  # where mean and std came from
    stats_bands: list[str] | None = None  # the bands the statistics are for, when known
    by_source: str | None = None  # applied by the source as it reads, in words

    def __post_init__(self) -> None:
        try:
            scale = float(self.scale)
        except (TypeError, ValueError):
            scale = float("nan")
        if not (np.isfinite(scale) and scale > 0):
            raise BadValue("scale", self.scale, "a finite number above 0 (e.g. 0.0001 for "
                           "reflectance stored ×10000)")
        if self.clip is not None and not (len(self.clip) == 2 and np.isfinite(self.clip).all()
                                          and self.clip[0] < self.clip[1]):
            raise BadValue("clip", self.clip, "two finite numbers (low, high), low below high")

    def __call__(self, x: np.ndarray, band_axis: int = 1) -> np.ndarray:
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        if self.clip is not None:
            x = np.clip(x, *self.clip)
        if self.mean is not None:
            shape = [1] * x.ndim
            shape[band_axis] = -1
            x = (x - self.mean.reshape(shape)) / self.std.reshape(shape)
        return x.astype(np.float32, copy=False)

    def describe(self) -> str:
        steps = [self.by_source] if self.by_source else []
        if self.scale != 1.0:
            steps.append(f"× {self.scale:g}")
        if self.clip is not None:
            steps.append(f"clipped to [{self.clip[0]:g}, {self.clip[1]:g}]")
        if self.mean is not None:
            steps.append(f"(x − mean) / std per band, from {self.stats_file or 'given values'}")
        return ", then ".join(steps) or "none: images used as stored"


def read_band_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Per-band mean, std and (when given) band names from JSON
    {"bands": [...], "mean": [...], "std": [...]}."""
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
        mean = np.asarray(stats["mean"], dtype=np.float32)
        std = np.asarray(stats["std"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise XbandError(
            f"{path}: cannot read band statistics ({type(err).__name__}: {err}). Give JSON with "
            '"mean" and "std" lists, one value per band (and optionally "bands").'
        ) from None
    bands = stats.get("bands")
    if mean.ndim != 1 or std.shape != mean.shape or (bands is not None and len(bands) != len(mean)):
        raise XbandError(f"{path}: give as many means, stds (and band names) as there are bands.")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise XbandError(f"{path}: every mean must be finite and every std positive.")
    return mean, std, None if bands is None else [str(b) for b in bands]


def band_stats_json(band_names: Sequence[str], stats: BandStats) -> str:
    """Per-band mean and std as the JSON that `read_band_stats` reads; refused when a band is
    constant (it cannot be standardised)."""
    if (stats.std <= 0).any():
        flat = [b for b, s in zip(band_names, stats.std, strict=True) if s <= 0]
        raise XbandError(
            f"bands {', '.join(flat)} are constant over the data: they cannot be standardised. "
            "Give statistics from the training data instead."
        )
    return json.dumps({"bands": list(band_names), "mean": stats.mean.tolist(),
                       "std": stats.std.tolist()}, indent=2)


@dataclass(frozen=True)
class ImageSet:
    """Labelled images read batch by batch as float32 (K, B, H, W) in the model's input space.

    `images` holds them as stored; `take` converts and preprocesses. Built by `image_set` (or a
    reader); what only the model can decide (the band axis when the shape leaves it open, default
    band and class names) is settled by `for_model`, which every run calls first.
    `item_names` (file paths, say) name the images in messages.
    """

    images: ImageSource
    # (N,) class positions in `class_names` order, or (N, C) bools: the labels present in each
    # image (multi-label)
    labels: np.ndarray | None
    band_names: tuple[str, ...] | None  # None: not given; defaults once the band count is known
    class_names: tuple[str, ...] | None  # None: not given; "class i" for each model output
    layout: Layout | None  # band axis of `images`; None: decided with the model
    source: str = "arrays"
    sensor: str | None = None  # a preset in xband.data.sensors.SENSORS: names, wavelengths, groups
    band_groups_by_name: Mapping[str, tuple[str, ...]] | None = None  # user-defined band groups
    preprocess: Preprocess = field(default_factory=Preprocess)
    nodata: float | None = None
    item_names: Sequence[str] | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) left out on reading
    notes: tuple[str, ...] = ()
    class_origin: str = "given"  # where the class names came from, for messages
    wavelengths: tuple[float, ...] | None = None  # centre wavelength of each band, nm
    wavelengths_from: str = "the wavelengths"  # where given wavelengths came from, for messages
    band_groups: Mapping[str, tuple[int, ...]] | None = None  # band positions per group
    # segmentation: each image's class per pixel, (N, H, W) in the model's output order
    masks: MaskSource | None = None
    ignore_index: int | None = None  # the mask value of pixels of no class (unlabelled, nodata)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def segmentation(self) -> bool:
        """Whether the images come with class masks (a label per pixel)."""
        return self.masks is not None

    def read_masks(self, indices: np.ndarray, n_classes: int) -> np.ndarray:
        """(K, H, W) int16 masks of the images at `indices`: each pixel's class among
        `n_classes`, `xband.data.masks.IGNORED` for the ignore index; checked."""
        unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        raw = np.asarray(self.masks[unique])[inverse]
        return class_masks.checked(raw, indices, n_classes, self.ignore_index, self.describe)

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot: several classes per image."""
        return self.labels is not None and self.labels.ndim == 2

    def as_multi_label(self, n_classes: int) -> ImageSet:
        """This set with its labels multi-hot (N, C): one label per image becomes one column;
        a segmentation set's labels are the classes each image's mask has pixels of (one pass
        over the masks, each checked)."""
        if self.segmentation:
            labels = np.zeros((len(self), n_classes), dtype=bool)
            for part in class_masks.chunks(len(self)):
                labels[part] = class_masks.present(self.read_masks(part, n_classes), n_classes)
            return dataclasses.replace(self, labels=labels)
        if self.labels is None or self.multi_label:
            return self
        return dataclasses.replace(self, labels=np.eye(n_classes, dtype=bool)[self.labels])

    @property
    def n_bands(self) -> int:
        return int(self._layout.n_bands(self.images.shape))

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self._layout.image_size(self.images.shape)
        return int(h), int(w)

    @property
    def _layout(self) -> Layout:
        layout = self.layout or likely_layout(self.images.shape)
        if layout is None:
            raise XbandError(f"{self.source}: images of shape {tuple(self.images.shape)} could hold "
                             "their bands on axis 1 or 3; give the layout (layout=, "
                             "--data-layout).")
        return layout

    def describe(self, index: int) -> str:
        """How messages name image `index`: its file, or its position."""
        if self.item_names is not None:
            return str(self.item_names[index])
        return f"{self.source}: image {index}"

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` as stored on disk but channels-first float32 (K, B, H, W).

        Images stored bands-last stay bands-last in memory (a (K, B, H, W) view), which is the
        channels-last memory the tuned network runs in: no copy there and back.
        """
        unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        block = np.asarray(self.images[unique], dtype=np.float32)[inverse]
        return np.moveaxis(block, 3, 1) if self._layout is Layout.CHANNELS_LAST else block

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` as float32 (K, B, H, W), preprocessed for the model."""
        return self.preprocess(self.read(indices))

    def group_bands(self) -> dict[str, list[str]]:
        """Band names per group ({} without groups)."""
        return {g: [self.band_names[b] for b in members]
                for g, members in (self.band_groups or {}).items()}

    def fitted(self, n_bands: int, spatial_size: tuple[int, int] | None,
               preferred: Layout) -> ImageSet:
        """This set with its band axis settled for a model taking `n_bands` bands (`preferred`
        when both axes fit) and its size checked."""
        shape = tuple(self.images.shape)
        layout = self.layout or guess_layout(shape, n_bands, Layout(preferred).images)
        if shape[layout.band_axis] != n_bands:
            raise XbandError(f"{self.source}: {self._band_mismatch(n_bands, layout)}")
        size = layout.image_size(shape)
        if self.masks is not None and tuple(self.masks.shape[1:]) != tuple(size):
            raise XbandError(f"{self.source}: masks of {self.masks.shape[1]}×{self.masks.shape[2]} "
                             f"pixels for images of {size[0]}×{size[1]}. Give each image a mask "
                             "of its own size.")
        if spatial_size is not None and tuple(size) != tuple(spatial_size):
            _check_spectra_or_patches(self.source, size, spatial_size, Layout(preferred))
            raise XbandError(
                f"{self.source}: images are {size[0]}×{size[1]} pixels but the model takes "
                f"{spatial_size[0]}×{spatial_size[1]}. Crop or resample the patches to the "
                "model's size."
            )
        return _described(dataclasses.replace(self, layout=layout), n_bands)

    def _band_mismatch(self, n_bands: int, layout: Layout) -> str:
        """What is wrong when the images do not hold `n_bands` bands on the `layout` axis, and
        what to do: the axis given, or both axes when the layout was left open."""
        shape = tuple(self.images.shape)
        if isinstance(self.images, SingleBand):
            return (f"images of shape {tuple(self.images.source.shape)} have no band axis (read "
                    f"as single-band images) but the model expects {n_bands} bands. Store the "
                    "images with their bands: (images, height, width, bands).")
        if self.layout is not None:
            found = (f"have {shape[layout.band_axis]} bands on axis {layout.band_axis} "
                     f"({layout})")
        else:
            found = (f"have {shape[1]} bands on axis 1 (bands first) or {shape[3]} on axis 3 "
                     "(bands last)")
        if n_bands in (shape[0], shape[2]):
            return (f"images of shape {shape} {found} but the model expects {n_bands}. The "
                    f"{_REVERSED}: write aperm(x, 4:1) in R, or x.transpose() in NumPy.")
        if shape[layout.band_axis] == 1:
            return (f"images of shape {shape} {found} but the model expects {n_bands}: images "
                    "stored without a band axis (images, height, width) are read as single-band "
                    "images. Store them with their bands: (images, height, width, bands).")
        return (f"images of shape {shape} {found} but the model expects {n_bands}. Check that "
                "the file holds the bands the model was trained on, or set the layout "
                f"({option('layout=', '--data-layout')}).")

    def for_model(self, model: ModelInput) -> ImageSet:
        """This set checked against `model`: band axis, band count and size, class names and
        labels; defaults filled in (band names, "class i" names)."""
        data = self.fitted(model.n_bands, model.spatial_size, model.layout)
        names = data.class_names
        if names is None:
            names = tuple(f"class {i}" for i in range(model.n_classes))
        elif len(names) != model.n_classes:
            raise XbandError(
                f"{len(names)} class names {data.class_origin} ({', '.join(names)}) but the model "
                f"has {model.n_classes} outputs. Give one name per model output, in output order "
                "(classes= in Python, --classes on the command line)."
            )
        if data.multi_label and data.labels.shape[1] != model.n_classes:
            raise XbandError(
                f"{data.source}: the multi-hot labels have {data.labels.shape[1]} columns but the "
                f"model has {model.n_classes} outputs. Give one column per model output, in "
                "output order."
            )
        if data.labels is not None and not data.multi_label:
            bad = np.flatnonzero(data.labels >= model.n_classes)
            if len(bad):
                raise XbandError(
                    f"{data.source}: label {data.labels[bad[0]]} (image {bad[0]}; {len(bad)} such "
                    f"images) is outside the model's {model.n_classes} classes "
                    f"(0–{model.n_classes - 1}). Map labels to the model's output order (0-based)."
                )
        return dataclasses.replace(data, class_names=names)


def _check_spectra_or_patches(source: str, size: tuple[int, int], spatial_size: tuple[int, int],
                              model_layout: Layout) -> None:
    """Say what to do when a per-pixel model gets patches, or a patch model single spectra."""
    if model_layout.spectra:
        raise XbandError(
            f"{source}: images of {size[0]}×{size[1]} pixels, but the model classifies single "
            f"spectra ({model_layout.describe()}). Give one spectrum per pixel: an (N, bands) "
            "array or table, or a scene read with patch size 1 (patch_size=1, --patch-size 1).")
    if tuple(size) == (1, 1):
        raise XbandError(
            f"{source}: single spectra (1×1 pixels), but the model takes "
            f"{spatial_size[0]}×{spatial_size[1]}-pixel patches. Read the scene as patches "
            f"around each labelled pixel (patch_size={spatial_size[0]}, --patch-size "
            f"{spatial_size[0]}), or give patches of that size.")


def likely_layout(shape: Sequence[int]) -> Layout | None:
    """The band axis a 4-axis shape suggests: the odd one out of square images, else None."""
    _, a, b, c = shape
    if a == b != c:
        return Layout.CHANNELS_LAST
    if b == c != a:
        return Layout.CHANNELS_FIRST
    return None


def guess_layout(shape: Sequence[int], n_bands: int, preferred: Layout) -> Layout:
    """Layout of an (N, ?, ?, ?) array holding `n_bands` bands; `preferred` wins when both fit."""
    if shape[preferred.band_axis] == n_bands:
        return preferred
    return preferred.other if shape[preferred.other.band_axis] == n_bands else preferred


def skip_notes(skipped: Sequence[tuple[str, str]], shown: int = 20) -> list[str]:
    """Report lines for images left out with skip-bad: the first `shown`, then how many more."""
    notes = [f"skipped {item}: {reason}" for item, reason in skipped[:shown]]
    if len(skipped) > shown:
        notes.append(f"skipped {len(skipped) - shown} more images (all listed in summary.json, "
                     "'skipped')")
    return notes


_LEGACY = ("n_bands", "n_classes", "model_layout", "spatial_size")


def image_set(
    images: np.ndarray | ImageSource,
    labels: np.ndarray | Sequence | None = None,
    *,
    bands: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    layout: str | Layout | None = None,
    sensor: str | None = None,
    band_groups: Mapping[str, Sequence[str]] | None = None,
    wavelengths: Sequence[float] | str | os.PathLike | None = None,
    preprocess: Preprocess | None = None,
    nodata: float | None = None,
    source: str = "arrays",
    item_names: Sequence[str] | None = None,
    skipped: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    class_origin: str = "given",
    masks: np.ndarray | MaskSource | None = None,
    ignore_index: int | None = None,
    **legacy,
) -> ImageSet:
    """Images and labels as one checked `ImageSet`; no model needed.

    images: (N, H, W, B) or (N, B, H, W), an array or any `ImageSource` (read lazily); one image
    of 3 axes is a set of one; (N, B) is one spectrum a row (held as 1×1 images). labels: class
    positions (whole numbers from 0), class names, or, several per image (multi-label), class
    names joined by ';' or an (N, C) 0/1 matrix.
    bands: band names in file order; sensor: a preset name (band names, wavelengths, spectral
    groups; `xband sensors` lists them); band_groups: {group: [band names]}, the bands no group
    names forming 'other'; wavelengths: each band's centre wavelength in nm, or a file (one
    value a line, or an ENVI .hdr). classes: class names in the model's output order (default:
    sorted label names for text labels, else "class i"). layout: "channels_last" or "channels_first"
    (default: from the shape, else from the model). preprocess: applied to every batch read;
    nodata: a value that marks an image as unusable; item_names: what messages call each image.
    masks: segmentation, each image's class per pixel (N, H, W), in place of labels;
    ignore_index: the mask value of pixels of no class (255, say, or 0 as nodata).
    Every problem is an `XbandError` naming the data and what to do."""
    bands, classes = _legacy_arguments(legacy, bands, classes)
    images, layout = _checked_images(images, labels, item_names, source, layout)
    class_names = None if classes is None else _class_names(classes)
    masks, ignore_index = _masks(masks, ignore_index, labels, images.shape[0], source)
    y, class_names, class_origin, label_notes = _labels(labels, images.shape[0], class_names,
                                                       source, class_origin)
    data = ImageSet(
        images=images, labels=y,
        band_names=None if bands is None else tuple(str(b) for b in bands),
        class_names=class_names, layout=None if layout is None else Layout.parse(layout).images,
        source=source, sensor=sensor,
        band_groups_by_name=None if not band_groups else {
            str(g): tuple(str(b) for b in m) for g, m in band_groups.items()},
        preprocess=preprocess or Preprocess(), nodata=nodata, item_names=item_names,
        skipped=tuple(skipped), notes=tuple(notes) + tuple(label_notes), class_origin=class_origin,
        wavelengths=_given_wavelengths(wavelengths, source, sensor),
        wavelengths_from=_wavelength_source(wavelengths, source),
        masks=masks, ignore_index=ignore_index,
    )
    if sensor is not None:
        get_sensor(sensor)  # an unknown name fails now
    n_bands = _band_count(data)
    return data if n_bands is None else _described(data, n_bands)


def _checked_images(images, labels, item_names: Sequence[str] | None, source: str,
                    layout: str | Layout | None):
    """`images` with four axes, holding numbers, at least one image, every one named, and their
    layout (`_four_axes`)."""
    images = _real_numbers(images, source)
    images, layout = _four_axes(images, labels, source, layout)
    if images.shape[0] == 0:
        raise XbandError(f"{source}: holds no images.")
    if item_names is not None and len(item_names) != images.shape[0]:
        raise ValueError("item_names must name every image")
    return images, layout


def _masks(masks, ignore_index, labels, n_images: int, source: str
           ) -> tuple[MaskSource | None, int | None]:
    """Segmentation masks and their ignore index, checked; labels then come from the masks."""
    if masks is None:
        if ignore_index is not None:
            raise XbandError(f"{source}: an ignore index ({ignore_index}) is for class masks; "
                             "give the masks (masks=, --masks) or leave it out.")
        return None, None
    if labels is not None:
        raise XbandError(f"{source}: give either labels (one or several classes per image) or "
                         "masks (a class per pixel), not both: a segmentation run takes each "
                         "image's classes from its mask.")
    return (class_masks.mask_source(masks, n_images, source),
            None if ignore_index is None else whole_number(ignore_index, "ignore_index",
                                                           minimum=0))


class Spectra:
    """(N, B) spectra as an `ImageSource` of N 1×1 images (N, B, 1, 1), channels-first."""

    layout = Layout.CHANNELS_FIRST

    def __init__(self, source: ImageSource):
        self.source = source
        n, b = source.shape
        self.shape = (n, b, 1, 1)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.source[indices])[:, :, None, None]


class SingleBand:
    """(N, H, W) images as an `ImageSource` of N single-band images (N, 1, H, W)."""

    def __init__(self, source: ImageSource):
        self.source = source
        n, h, w = source.shape
        self.shape = (n, 1, h, w)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.source[indices])[:, None]


_REVERSED = "axes look reversed (written from R or MATLAB?)"


def _four_axes(images, labels, source: str, layout: str | Layout | None):
    """`images` with 4 axes, and their layout: an array of 2 axes is spectra (N, B), held as
    1×1 images (N, B, 1, 1), channels-first; one of 3 axes is one image (H, W, B) or, when there
    is a label per entry of its first axis, that many single-band images (N, H, W)."""
    shape = tuple(images.shape)
    n_labels = None if labels is None else len(np.asarray(labels).reshape(-1))
    if n_labels is not None and shape and n_labels != shape[0] and n_labels == shape[-1]:
        raise XbandError(
            f"{source}: images of shape {shape} but {n_labels} labels, as many as the last axis: "
            f"the {_REVERSED}: R and MATLAB write arrays column-major; in R write aperm(x, "
            f"{len(shape)}:1) instead of x, or in NumPy use x.transpose().")
    if len(shape) == 2:
        spectra = images[:, :, None, None] if isinstance(images, np.ndarray) else Spectra(images)
        return spectra, Layout.CHANNELS_FIRST
    return _image_axes(images, n_labels, source), layout


def _image_axes(images, n_labels: int | None, source: str):
    """`_four_axes` for images: 3 or 4 axes."""
    shape = tuple(images.shape)
    if len(shape) == 3:
        if n_labels is not None and n_labels == shape[0] > 1:
            return images[:, None] if isinstance(images, np.ndarray) else SingleBand(images)
        if isinstance(images, np.ndarray) and n_labels in (None, 1):
            return images[None]
        raise XbandError(f"{source}: images have 3 axes {shape}: give one label per image to "
                         "read them as single-band images (images, height, width), or store 4 "
                         "axes (images, height, width, bands).")
    if len(shape) != 4:
        raise XbandError(f"{source}: images have shape {shape}; expected 4 axes "
                         "(images, height, width, bands) or (images, bands, height, width), or "
                         "2 axes (spectra, bands).")
    return images


def _real_numbers(images, source: str):
    """`images` (a torch tensor as the NumPy array of its values), checked to hold real numbers:
    text, Python objects and complex values are refused."""
    if type(images).__module__.startswith("torch") and hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    dtype = getattr(images, "dtype", None)
    if dtype is None or np.dtype(dtype).kind in "biuf":
        return images
    kind = np.dtype(dtype).kind
    if kind == "c":
        raise XbandError(f"{source}: images hold complex numbers ({dtype}); xband would drop the "
                         "imaginary part. Store real bands: amplitude (np.abs), phase, or the "
                         "real and imaginary parts as separate bands.")
    what = {"U": "text", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans"}
    raise XbandError(f"{source}: images hold {what.get(kind, 'values')} ({dtype}), not numbers. "
                     "Store the pixel values as numbers.")


def _legacy_arguments(legacy: dict, bands, classes):
    """The spellings of xband 0.1 (band_names=, class_names=, and the model's n_bands, n_classes,
    model_layout, spatial_size, now read from the model inside explain): accepted with a warning."""
    names = {"band_names": "bands", "class_names": "classes"}
    unknown = sorted(set(legacy) - set(names) - set(_LEGACY))
    if unknown:
        raise TypeError(f"image_set() got unexpected keyword argument(s) {', '.join(unknown)}")
    for old, new in names.items():
        if old in legacy:
            warnings.warn(f"image_set({old}=...) is deprecated; use {new}=", DeprecationWarning,
                          stacklevel=3)
    ignored = [k for k in _LEGACY if k in legacy]
    if ignored:
        warnings.warn(f"image_set({', '.join(ignored)}) is no longer needed and is ignored: the "
                      "model checks the images inside explain", DeprecationWarning, stacklevel=3)
    return (bands if bands is not None else legacy.get("band_names"),
            classes if classes is not None else legacy.get("class_names"))


def _band_count(data: ImageSet) -> int | None:
    """The band count when the layout is stated or evident, or when the given band names (or
    the sensor, or the statistics) fit exactly one of the two possible axes; else None."""
    shape = data.images.shape
    layout = data.layout or likely_layout(shape)
    if layout is not None:
        return int(shape[layout.band_axis])
    hints = [len(data.band_names)] if data.band_names is not None else []
    if data.sensor is not None:
        hints.append(len(get_sensor(data.sensor).bands))
    if data.preprocess.mean is not None:
        hints.append(len(data.preprocess.mean))
    for hint in hints:
        fits = [shape[axis] for axis in (1, 3) if shape[axis] == hint]
        if len(fits) == 1:
            return fits[0]
    return None


def _given_wavelengths(wavelengths: Sequence[float] | str | os.PathLike | None, source: str,
                       sensor: str | None) -> tuple[float, ...] | None:
    """Wavelengths given as values or as a file, in nm, checked (their count comes later)."""
    if wavelengths is None:
        return None
    if sensor is not None:
        raise XbandError(f"sensor '{sensor}' gives the band wavelengths already; give "
                         f"{option('sensor', '--sensor')} or "
                         f"{option('wavelengths', '--wavelengths')}, not both.")
    if isinstance(wavelengths, str | os.PathLike):
        return read_wavelengths(wavelengths)
    return checked_wavelengths(wavelengths, f"{source}: wavelengths")


def _wavelength_source(wavelengths, source: str) -> str:
    if isinstance(wavelengths, str | os.PathLike):
        return str(wavelengths)
    return f"{source}: wavelengths"


def _described(data: ImageSet, n_bands: int) -> ImageSet:
    """`data` with band names, wavelengths and groups for `n_bands` bands, checked."""
    names, wavelengths, groups = _bands(data.band_names, data.sensor, data.band_groups_by_name,
                                        n_bands, data.source)
    if data.wavelengths is not None:
        check_count(data.wavelengths, n_bands, data.wavelengths_from)
        wavelengths = data.wavelengths
    _check_stats(data.preprocess, names)
    return dataclasses.replace(data, band_names=tuple(names), wavelengths=wavelengths,
                               band_groups=groups)


def _bands(
    band_names: Sequence[str] | None,
    sensor: str | None,
    band_groups: Mapping[str, Sequence[str]] | None,
    n_bands: int,
    source: str,
) -> tuple[list[str], tuple[float, ...] | None, dict[str, tuple[int, ...]] | None]:
    """Band names, centre wavelengths and groups from the names given and the sensor preset."""
    if sensor is None:
        names = _band_names(band_names, n_bands, source)
        return names, None, _positions(partition(band_groups, names)) if band_groups else None
    preset = get_sensor(sensor)
    if len(preset.bands) != n_bands:
        fitting = [name for name, s in SENSORS.items() if len(s.bands) == n_bands]
        raise XbandError(
            f"sensor '{preset.name}' has {len(preset.bands)} bands but the images have {n_bands}. "
            + (f"Presets with {n_bands} bands: {', '.join(fitting)}." if fitting
               else "Name the bands with bands= (--bands) instead.")
        )
    if band_names is not None and [str(b) for b in band_names] != preset.band_names:
        raise XbandError(
            f"{source} names its bands {', '.join(map(str, band_names))} but sensor "
            f"'{preset.name}' has {', '.join(preset.band_names)}. Check which order the file "
            "holds and choose the matching preset (eurosat puts B8A last)."
        )
    positions = partition(band_groups or preset.groups(), preset.band_names)
    return (preset.band_names, tuple(preset.wavelengths),
            _positions(positions) if len(positions) > 1 else None)


def _positions(groups: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    return {g: tuple(members) for g, members in groups.items()}


def _check_stats(preprocess: Preprocess, band_names: list[str]) -> None:
    """Standardisation statistics fit the bands: one per band, for these bands in this order."""
    where = preprocess.stats_file or "the band statistics"
    if preprocess.mean is not None and len(preprocess.mean) != len(band_names):
        raise XbandError(f"{where}: {len(preprocess.mean)} means for {len(band_names)} bands. Give "
                         "one mean and std per band.")
    if preprocess.stats_bands is not None and preprocess.stats_bands != band_names:
        raise XbandError(
            f"{where}: statistics are for bands {', '.join(preprocess.stats_bands)} but the images "
            f"have {', '.join(band_names)}. Use statistics of these bands, in this order."
        )


def default_band_names(n_bands: int) -> list[str]:
    """Sentinel-2 L1C names for 13 bands (the sentinel2 preset), else B1…Bn."""
    if n_bands == 13:
        return SENSORS["sentinel2"].band_names
    return [f"B{i + 1}" for i in range(n_bands)]


def _band_names(names: Sequence[str] | None, n_bands: int, source: str) -> list[str]:
    if names is None:
        return default_band_names(n_bands)
    names = [str(n) for n in names]
    if not all(n.strip() for n in names):
        raise XbandError(f"band names {','.join(names)}: one is empty. Give every band a name.")
    if len(names) != n_bands:
        raise XbandError(
            f"{len(names)} band names given ({', '.join(names)}) but the images of {source} have "
            f"{n_bands} bands. Give one name per band, in the order of the bands in the file."
        )
    if len(set(names)) != len(names):
        raise XbandError(f"band names repeat: {', '.join(names)}. Give each band its own name.")
    return names


def _class_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(n) for n in names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated or not all(n.strip() for n in names):
        raise XbandError(f"class names {', '.join(names)}: "
                         + (f"{', '.join(repeated)} repeated" if repeated else "one is empty")
                         + ". Give each model output its own name, in output order.")
    return names


LabelInfo = tuple[np.ndarray | None, tuple[str, ...] | None, str, list[str]]


def _labels(labels, n_images: int, class_names: tuple[str, ...] | None, source: str,
            origin: str) -> LabelInfo:
    """Labels as class positions (N,) or as a multi-hot (N, C) bool matrix, the class names
    (from text labels when not given), where the names came from, and a note when xband chose
    the class order."""
    if labels is None:
        return None, class_names, origin, []
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[0] == n_images and labels.shape[1] > 1:
        return _multi_hot(labels, class_names, source), class_names, origin, []
    labels = labels.reshape(-1)
    if len(labels) != n_images:
        raise XbandError(f"{source}: {n_images} images but {len(labels)} labels. Give one label "
                         "per image.")
    if labels.dtype.kind in "USO":
        return _text_labels(labels.astype(str), class_names, source, origin)
    if labels.dtype.kind not in "biuf":
        raise XbandError(f"{source}: labels of type {labels.dtype} are neither class numbers nor "
                         "class names.")
    return _class_numbers(labels, source), class_names, origin, []


def _class_numbers(labels: np.ndarray, source: str) -> np.ndarray:
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (np.mod(labels, 1) != 0))
        if len(bad):
            raise XbandError(f"{source}: labels must be whole class numbers; image {bad[0]} has "
                             f"label {labels[bad[0]]} ({len(bad)} such images).")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero(labels < 0)
    if len(bad):
        raise XbandError(f"{source}: label {labels[bad[0]]} (image {bad[0]}) is negative. Map "
                         "labels to the model's output order (0-based).")
    return labels


def _multi_hot(labels: np.ndarray, class_names: tuple[str, ...] | None,
               source: str) -> np.ndarray:
    """An (N, C) matrix of 0/1 (labels present) as bools, checked."""
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise XbandError(f"{source}: labels of shape {labels.shape} are read as multi-hot (one "
                         "column per class, 1 where the label is present) but hold values other "
                         "than 0 and 1. Give 0/1 columns, or one class per image.")
    if class_names is not None and len(class_names) != labels.shape[1]:
        raise XbandError(f"{source}: the multi-hot labels have {labels.shape[1]} columns but "
                         f"{len(class_names)} class names are given. Give one name per column.")
    return labels.astype(bool)


def _text_labels(labels: np.ndarray, class_names: tuple[str, ...] | None, source: str,
                 origin: str) -> LabelInfo:
    """Class names, one per image or several joined by ';' (multi-label), as positions or as a
    multi-hot matrix."""
    multi = any(";" in text for text in labels.tolist())
    sets = [[name.strip() for name in text.split(";") if name.strip()] if multi else [text]
            for text in labels.tolist()]
    notes = []
    if class_names is None:
        class_names = tuple(sorted({name for names in sets for name in names}))
        origin = "from the labels, sorted" if origin == "given" else origin
        if origin == "from the labels, sorted":
            notes.append(f"classes from the labels, sorted: {', '.join(class_names)} (give "
                         "classes= / --classes if the model's outputs are in another order)")
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({name for names in sets for name in names} - set(lookup))
    if unknown:
        first = next(i for i, names in enumerate(sets) if unknown[0] in names)
        also = f"; also {', '.join(map(repr, unknown[1:5]))}" if len(unknown) > 1 else ""
        head = (f"{source}: label {unknown[0]!r} (image {first}{also}) is not among the class "
                f"names ({', '.join(class_names)}). Give the class names in the model's "
                "output order")
        raise XbandError(head + " (classes=).", cli=head + " with --classes.")
    if not multi:
        return np.array([lookup[names[0]] for names in sets], dtype=np.int64), class_names, \
            origin, notes
    present = np.zeros((len(sets), len(class_names)), dtype=bool)
    for row, names in enumerate(sets):
        present[row, [lookup[name] for name in names]] = True
    return present, class_names, origin, notes


@dataclass
class BandStats:
    """Per-band mean and standard deviation over the data (the default baseline, and the
    scale used for scale-aware saliency)."""

    mean: np.ndarray
    std: np.ndarray
    # (C, B) per class, of the images as stored (before preprocessing): the class-mean spectra
    # the report draws; NaN for a class without images; None without single labels
    class_mean: np.ndarray | None = None


@dataclass
class Scan:
    """What one pass over the data found: band statistics, the usable images, the left-out ones."""

    stats: BandStats
    kept: np.ndarray
    skipped: list[tuple[str, str]]  # (image, reason)


def batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive chunks of `indices` of at most `batch_size`."""
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


def scan(data: ImageSet, indices: np.ndarray, batch_size: int = 256, *,
         skip_bad: bool = False) -> Scan:
    """One streaming pass: check every image and compute per-band mean and std.

    An image that cannot be read, or holds NaN, infinite or nodata values, raises `XbandError`
    naming it, or with `skip_bad` is left out and listed. Statistics are of the preprocessed
    images.
    """
    n = 0
    total = np.zeros(data.n_bands)
    total_sq = np.zeros(data.n_bands)
    kept, skipped = [], []
    classes = _ClassSums(data.labels, data.n_bands)
    for good, raw, bad in _checked_chunks(data, indices, batch_size, skip_bad):
        kept.append(good)
        skipped += bad
        if not len(good):
            continue
        classes.add(good, raw)
        x = data.preprocess(raw).astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        total_sq += (x**2).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        raise XbandError(f"{data.source}: none of the {len(indices)} images could be used; "
                         f"first: {skipped[0][0]}: {skipped[0][1]}")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    stats = BandStats(mean=mean.astype(np.float32), std=std.astype(np.float32),
                      class_mean=classes.means())
    return Scan(stats, np.concatenate(kept), skipped)


class _ClassSums:
    """Per-class sums of the images' band means, for the class-mean spectra (single labels)."""

    def __init__(self, labels: np.ndarray | None, n_bands: int):
        self.labels = labels if labels is not None and labels.ndim == 1 else None
        n_classes = 0 if self.labels is None or not len(labels) else int(labels.max()) + 1
        self.total = np.zeros((n_classes, n_bands))
        self.count = np.zeros(n_classes)

    def add(self, indices: np.ndarray, raw: np.ndarray) -> None:
        if self.labels is None:
            return
        classes = self.labels[indices]
        np.add.at(self.total, classes, raw.astype(np.float64).mean(axis=(2, 3)))
        np.add.at(self.count, classes, 1)

    def means(self) -> np.ndarray | None:
        if self.labels is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.total / self.count[:, None]).astype(np.float32)


def check_images(data: ImageSet, indices: np.ndarray, batch_size: int = 256, *,
                 skip_bad: bool = False) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """`scan`'s checks without its statistics: the usable indices, and (image, reason) for the
    images left out (with `skip_bad`; else the first bad image raises `XbandError`)."""
    kept, skipped = [np.empty(0, dtype=np.int64)], []
    for good, _, bad in _checked_chunks(data, indices, batch_size, skip_bad):
        kept.append(good)
        skipped += bad
    return np.concatenate(kept), skipped


def _checked_chunks(data: ImageSet, indices: np.ndarray, batch_size: int, skip_bad: bool
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]]:
    for chunk in batches(indices, batch_size):
        yield _read_checked(data, chunk, skip_bad)


def _read_checked(data: ImageSet, chunk: np.ndarray, skip_bad: bool
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """The usable indices of `chunk`, their images as read, and (image, reason) for the rest."""
    bad: list[tuple[str, str]] = []
    try:
        raw, good = data.read(chunk), chunk
    except BadImage:
        if not skip_bad:
            raise
        blocks, good = [], []
        for i in chunk:  # find the bad ones one image at a time
            try:
                blocks.append(data.read(np.array([i])))
                good.append(i)
            except BadImage as err:
                bad.append((err.item, err.reason))
        raw = np.concatenate(blocks) if blocks else np.empty((0, data.n_bands, *data.image_size))
        good = np.array(good, dtype=np.int64)
    problems = _value_problems(data, raw)
    for row, reason in problems.items():
        if not skip_bad:
            raise XbandError(f"{data.describe(good[row])}: {reason}. Fill or drop such images "
                             f"(nodata) before explaining, or pass {option('skip_bad=True', '--skip-bad')}"
                             " to leave them out.")
        bad.append((data.describe(good[row]), reason))
    ok = np.array([row not in problems for row in range(len(good))], dtype=bool)
    return good[ok], raw[ok], bad


def _value_problems(data: ImageSet, raw: np.ndarray) -> dict[int, str]:
    """Row → what is wrong with its values: NaN/infinite values, or nodata pixels."""
    problems = {}
    finite = np.isfinite(raw).all(axis=(2, 3))
    for row, band in np.argwhere(~finite):
        problems.setdefault(int(row), f"has NaN or infinite values in band {data.band_names[band]}")
    if data.nodata is not None:
        for row, band in np.argwhere((raw == data.nodata).any(axis=(2, 3))):
            problems.setdefault(
                int(row), f"has nodata pixels (value {data.nodata:g}) in band {data.band_names[band]}")
    return problems


def stratified_subset(labels: np.ndarray | None, n_images: int, max_images: int | None,
                      seed: int, max_per_class: int | None = None) -> np.ndarray:
    """Indices of at most `max_per_class` images per class (seeded), then of at most `max_images`
    drawn per class in proportion; sorted. Multi-hot labels: a class's images are those with
    its label, and each image counts once."""
    if labels is not None and labels.ndim == 2:
        return _multi_label_subset(labels, n_images, max_images, seed, max_per_class)
    rng = np.random.default_rng(seed)
    pool = np.arange(n_images)
    if max_per_class is not None:
        if labels is None:
            raise XbandError("max_per_class needs labels; use max_images for unlabelled images.")
        pool = np.sort(np.concatenate([
            rng.choice(members, min(max_per_class, len(members)), replace=False)
            for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
        ]))
    if max_images is None or max_images >= len(pool):
        return pool
    if labels is None:
        return np.sort(rng.choice(pool, max_images, replace=False))
    picked = []
    classes, counts = np.unique(labels[pool], return_counts=True)
    quota = np.maximum(1, np.floor(counts / len(pool) * max_images)).astype(int)
    for cls, q in zip(classes, quota, strict=True):
        members = pool[labels[pool] == cls]
        picked.append(rng.choice(members, min(q, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def _multi_label_subset(present: np.ndarray, n_images: int, max_images: int | None, seed: int,
                        max_per_class: int | None) -> np.ndarray:
    """`stratified_subset` for multi-hot labels: rarest class first, each class's images drawn
    (seeded) until it has `max_per_class` of them among those picked; then at most `max_images`
    of those, one image of every class first, the rest drawn at random."""
    rng = np.random.default_rng(seed)
    pool = np.arange(n_images)
    if max_per_class is not None:
        chosen = np.zeros(n_images, dtype=bool)
        for c in np.argsort(present.sum(axis=0), kind="stable"):
            members = rng.permutation(np.flatnonzero(present[:, c] & ~chosen))
            missing = max(0, max_per_class - int((present[:, c] & chosen).sum()))
            chosen[members[:missing]] = True
        pool = np.flatnonzero(chosen)
    if max_images is None or max_images >= len(pool):
        return pool
    first = [rng.choice(pool[present[pool, c]]) for c in range(present.shape[1])
             if present[pool, c].any()]
    first = np.unique(first)[:max_images]
    rest = rng.permutation(np.setdiff1d(pool, first))[:max_images - len(first)]
    return np.sort(np.concatenate([first, rest]).astype(np.int64))
