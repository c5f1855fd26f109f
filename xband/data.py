"""Reading labelled multispectral images and checking them against the model.

An `ImageSet` gives random access to images in channels-first order (N, B, H, W), whatever the
layout on disk and wherever they lie (an array, a memory map, an HDF5 dataset, a folder of
GeoTIFFs), so that the attribution engine can stream batches and draw donor images (for
permutation importance and GradientShap baselines) from anywhere in the data set. Only the
batches asked for are read; the preprocessing the model expects is applied to each batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from xband.bands import SENSORS, get_sensor, partition
from xband.errors import XbandError


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
    [low, high], then (x − mean) / std per band."""

    scale: float = 1.0
    clip: tuple[float, float] | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    stats_file: str | None = None  # where mean and std came from
    stats_bands: list[str] | None = None  # the bands the statistics are for, when known

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
        steps = [f"× {self.scale:g}"] if self.scale != 1.0 else []
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


def write_band_stats(path: str | Path, band_names: Sequence[str], stats: BandStats) -> None:
    """Save per-band mean and std as JSON (atomically), for `read_band_stats`."""
    from xband.report import write_text_atomic

    if (stats.std <= 0).any():
        flat = [b for b, s in zip(band_names, stats.std, strict=True) if s <= 0]
        raise XbandError(
            f"bands {', '.join(flat)} are constant over the data: they cannot be standardised. "
            "Give statistics from the training data instead."
        )
    text = json.dumps({"bands": list(band_names), "mean": stats.mean.tolist(),
                       "std": stats.std.tolist()}, indent=2)
    write_text_atomic(path, text)


@dataclass
class ImageSet:
    """Labelled images read batch by batch as float32 (K, B, H, W) in the model's input space.

    `images` holds them as stored (`layout_on_disk`); `take` converts and preprocesses.
    `item_names` (file paths, say) name the images in messages.
    """

    images: ImageSource
    labels: np.ndarray | None
    band_names: list[str]
    class_names: list[str] | None
    source: str = "arrays"
    layout_on_disk: str = "channels_first"
    notes: list[str] = field(default_factory=list)
    wavelengths: list[float] | None = None  # centre wavelength of each band, nm
    groups: dict[str, list[int]] | None = None  # band positions per group
    preprocess: Preprocess = field(default_factory=Preprocess)
    nodata: float | None = None
    item_names: Sequence[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out on reading

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def _band_axis(self) -> int:
        return 3 if self.layout_on_disk == "channels_last" else 1

    @property
    def n_bands(self) -> int:
        return int(self.images.shape[self._band_axis])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = (self.images.shape[1:3] if self._band_axis == 3 else self.images.shape[2:4])
        return int(h), int(w)

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
        return np.moveaxis(block, 3, 1) if self._band_axis == 3 else block

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Images at `indices` as float32 (K, B, H, W), preprocessed for the model."""
        return self.preprocess(self.read(indices))

    def batches(self, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive chunks of `indices` of at most `batch_size`."""
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]

    def group_bands(self) -> dict[str, list[str]]:
        """Band names per group ({} without groups)."""
        return {g: [self.band_names[b] for b in members] for g, members in (self.groups or {}).items()}


def skip_notes(skipped: Sequence[tuple[str, str]], shown: int = 20) -> list[str]:
    """Report lines for images left out with skip-bad: the first `shown`, then how many more."""
    notes = [f"skipped {item}: {reason}" for item, reason in skipped[:shown]]
    if len(skipped) > shown:
        notes.append(f"skipped {len(skipped) - shown} more images (all listed in summary.json, "
                     "'skipped')")
    return notes


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
    """Read images (as stored) and labels from `.npz` (x, y, optional band/class names) or `.npy`
    (memory-mapped: read batch by batch).

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
        y = read_labels(labels)
    return images, y, names


def read_labels(labels: str | Path | np.ndarray) -> np.ndarray:
    """Labels from an array, a .npy file, or a text file with one label a line."""
    if isinstance(labels, np.ndarray):
        return labels
    path = Path(labels)
    if not path.exists():
        raise XbandError(f"{path}: no such labels file. Give a .npy or a text file, one label a line.")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return np.array([line.strip() for line in path.read_text().splitlines() if line.strip()])


def image_set(
    images: np.ndarray | ImageSource,
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
    sensor: str | None = None,
    band_groups: Mapping[str, Sequence[str]] | None = None,
    preprocess: Preprocess | None = None,
    nodata: float | None = None,
    item_names: Sequence[str] | None = None,
    skipped: Sequence[tuple[str, str]] = (),
) -> ImageSet:
    """Check images and labels against the model and wrap them for channels-first reading.

    `images`: an array or any `ImageSource` (read lazily). `sensor`: a preset name (band names,
    wavelengths and spectral groups); `band_groups`: {group: [band names]}, the bands no group
    names forming 'other'. `preprocess`: applied to every batch read; `nodata`: a value that
    marks an image as unusable; `item_names`: what messages call each image (file paths);
    `skipped`: (file, reason) left out by the reader. Every problem is an `XbandError` naming
    the data and what to do.
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise XbandError(
            f"{source}: images have shape {shape}; expected 4 axes "
            "(images, height, width, bands) or (images, bands, height, width)."
        )
    if shape[0] == 0:
        raise XbandError(f"{source}: holds no images.")
    layout = layout or guess_layout(shape, n_bands, model_layout)
    band_axis = 3 if layout == "channels_last" else 1
    if shape[band_axis] != n_bands:
        raise XbandError(
            f"{source}: images of shape {shape} have {shape[band_axis]} bands on "
            f"axis {band_axis} ({layout}) but the model expects {n_bands}. Check that the file holds "
            "the bands the model was trained on, or set the layout (--data-layout)."
        )
    size = shape[1:3] if band_axis == 3 else shape[2:4]
    if spatial_size is not None and tuple(size) != tuple(spatial_size):
        raise XbandError(
            f"{source}: images are {size[0]}×{size[1]} pixels but the model takes "
            f"{spatial_size[0]}×{spatial_size[1]}. Crop or resample the patches to the model's size."
        )
    names, wavelengths, groups = _bands(band_names, sensor, band_groups, n_bands, source)
    preprocess = preprocess or Preprocess()
    _check_stats(preprocess, names)
    classes = _class_names(class_names, n_classes)
    y = None if labels is None else _labels(labels, shape[0], n_classes, classes, source)
    if item_names is not None and len(item_names) != shape[0]:
        raise ValueError("item_names must name every image")
    return ImageSet(
        images=images,
        labels=y,
        band_names=names,
        class_names=classes,
        source=source,
        layout_on_disk=layout,
        wavelengths=wavelengths,
        groups=groups,
        preprocess=preprocess,
        nodata=nodata,
        item_names=item_names,
        skipped=list(skipped),
    )


def _bands(
    band_names: Sequence[str] | None,
    sensor: str | None,
    band_groups: Mapping[str, Sequence[str]] | None,
    n_bands: int,
    source: str,
) -> tuple[list[str], list[float] | None, dict[str, list[int]] | None]:
    """Band names, centre wavelengths and groups from the names given and the sensor preset."""
    if sensor is None:
        names = _band_names(band_names, n_bands, source)
        return names, None, partition(band_groups, names) if band_groups else None
    preset = get_sensor(sensor)
    if len(preset.bands) != n_bands:
        fitting = [name for name, s in SENSORS.items() if len(s.bands) == n_bands]
        raise XbandError(
            f"sensor '{preset.name}' has {len(preset.bands)} bands but the images have {n_bands}. "
            + (f"Presets with {n_bands} bands: {', '.join(fitting)}." if fitting
               else "Name the bands with --bands instead.")
        )
    if band_names is not None and [str(b) for b in band_names] != preset.band_names:
        raise XbandError(
            f"{source} names its bands {', '.join(map(str, band_names))} but sensor "
            f"'{preset.name}' has {', '.join(preset.band_names)}. Check which order the file "
            "holds and choose the matching preset (eurosat puts B8A last)."
        )
    groups = band_groups or preset.groups()
    positions = partition(groups, preset.band_names)
    return preset.band_names, preset.wavelengths, positions if len(positions) > 1 else None


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
            "outputs. Give one name per model output, in output order (--classes)."
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


@dataclass
class Scan:
    """What one pass over the data found: band statistics, the usable images, the left-out ones."""

    stats: BandStats
    kept: np.ndarray
    skipped: list[tuple[str, str]]  # (image, reason)


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
    for chunk in data.batches(indices, batch_size):
        good, raw, bad = _read_checked(data, chunk, skip_bad)
        kept.append(good)
        skipped += bad
        if not len(good):
            continue
        x = data.preprocess(raw).astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        total_sq += (x**2).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        raise XbandError(f"{data.source}: none of the {len(indices)} images could be used; "
                         f"first: {skipped[0][0]}: {skipped[0][1]}")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    stats = BandStats(mean=mean.astype(np.float32), std=std.astype(np.float32))
    return Scan(stats, np.concatenate(kept), skipped)


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
                             "(nodata) before explaining, or pass --skip-bad to leave them out.")
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
    drawn per class in proportion; sorted."""
    rng = np.random.default_rng(seed)
    pool = np.arange(n_images)
    if max_per_class is not None:
        if labels is None:
            raise XbandError("--max-per-class needs labels; use --max-images for unlabelled images.")
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
