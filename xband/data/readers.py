"""Images as users keep them: GeoTIFF class folders, CSV lists, HDF5, NumPy files, torch datasets.

Every reader returns an `ImageSet` (images read lazily, batch by batch) with the labels and what
the data says about its bands and classes; `explain` checks it against the model.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xband.data.images import BadImage, ImageSet, Preprocess, image_set
from xband.data.scenes import SCENE_SUFFIXES
from xband.data.sensors import SENSORS
from xband.data.wavelengths import raster_wavelengths
from xband.errors import XbandError, option
from xband.files import check_regular
from xband.layout import Layout

IMAGE_SUFFIXES = (".tif", ".tiff", ".jp2")  # GeoTIFF and JPEG2000 (Sentinel-2 band files)
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".tfw", ".j2w", ".prj")  # GDAL's, read with them
_SKIP_HINT = f"pass {option('skip_bad=True', '--skip-bad')} to leave it out"


_DESCRIPTION = ("bands", "classes", "layout", "sensor", "band_groups", "wavelengths", "preprocess",
                "nodata", "ignore_index")
MASKS_KEY = "masks"  # the array (HDF5 dataset) of segmentation masks in .npz and .h5 files


def read_data(path: str | os.PathLike, *, labels: str | os.PathLike | np.ndarray | None = None,
              x_key: str | None = None, y_key: str | None = None, skip_bad: bool = False,
              masks: str | os.PathLike | np.ndarray | None = None, scene: Mapping | None = None,
              **description) -> ImageSet:
    """Open `path` by what it is: a folder of class folders of GeoTIFFs, a .csv of (path, label)
    rows or a table of spectra (a row per pixel, a column per band and a label column), an
    .h5/.hdf5 file (`x_key`, `y_key`), .npz/.npy (with `labels`), or a hyperspectral scene (ENVI
    .hdr, a GeoTIFF cube, MATLAB .mat: `labels` its label map, `x_key`/`y_key` the .mat
    variables; `scene`: `read_scene`'s options, e.g. {"patch_size": 9, "held_out": 0.25}).

    Segmentation data: a .npz or .h5 holding 'masks' (a class per pixel, (N, H, W)) beside the
    images, .npy images with `masks` a .npy file, or a folder of GeoTIFF images with `masks` a
    folder of single-band GeoTIFF masks of the same file names; `ignore_index` (in
    `description`) is the mask value of unlabelled pixels.
    `description`: what `xband.image_set` takes to describe the images (bands, classes, layout,
    sensor, band_groups, wavelengths, preprocess, nodata, ignore_index); given values win over
    what the files say (band descriptions, nodata and wavelengths in GeoTIFF / ENVI band
    metadata; a mask file's nodata as the ignore index).
    """
    unknown = sorted(set(description) - set(_DESCRIPTION))
    if unknown:
        raise TypeError(f"read_data() got unexpected keyword argument(s) {', '.join(unknown)}")
    path = Path(path)
    if not path.exists():
        raise XbandError(f"{path}: no such file or folder.")
    check_regular({"data": path})
    if path.is_dir() and masks is not None:
        return read_mask_folders(path, Path(masks), skip_bad=skip_bad, **description)
    if masks is not None and path.suffix.lower() != ".npy":
        raise XbandError(f"{path}: masks= (--masks) is for .npy images or a folder of GeoTIFF "
                         f"images; a {path.suffix or 'file'} holds its masks as '{MASKS_KEY}'.")
    if path.is_dir():
        return read_class_folders(path, skip_bad=skip_bad, **description)
    suffix = path.suffix.lower()
    if suffix in SCENE_SUFFIXES:
        from xband.data.scenes import read_scene

        return read_scene(path, labels, cube_key=x_key, label_key=y_key, **(scene or {}),
                          **description)
    asked = [k for k, v in (scene or {}).items() if v not in (None, 1, 0)]
    if asked:
        raise XbandError(f"{path}: {', '.join(asked)} apply to a hyperspectral scene (an ENVI "
                         ".hdr, GeoTIFF cube or .mat with its label map), not to this file.")
    if suffix == ".csv":
        if is_spectra_table(path):
            return read_spectra_table(path, label_column=y_key, band_columns=x_key,
                                      **description)
        return read_csv_list(path, skip_bad=skip_bad, **description)
    if suffix in (".h5", ".hdf5", ".he5"):
        return read_hdf5(path, x_key=x_key or "x", y_key=y_key, labels=labels, **description)
    if suffix in (".npz", ".npy"):
        return read_numpy(path, x_key=x_key or "x", y_key=y_key or "y", labels=labels,
                          masks=masks, **description)
    raise XbandError(
        f"{path}: unknown data format '{path.suffix}'. Give a folder of class folders of GeoTIFFs, "
        "a .csv of (path, label) rows or of spectra, an .h5 file, a .npz/.npy file, or a scene "
        "(ENVI .hdr, GeoTIFF, .mat) with its label map."
    )


def _with_found(images, labels, *, source: str, found: dict, description: dict) -> ImageSet:
    """`image_set` with what the files say (`found`) under what the caller gave (`description`)."""
    merged = {k: v for k, v in found.items() if v is not None}
    merged.update({k: v for k, v in description.items() if v is not None})
    return image_set(images, labels, source=source, **merged)


def read_numpy(path: str | Path, *, x_key: str = "x", y_key: str = "y",
               labels: str | Path | np.ndarray | None = None,
               masks: str | Path | np.ndarray | None = None, **description) -> ImageSet:
    """Images (as stored) and labels from `.npz` (x, y or masks, optional band_names,
    class_names) or `.npy` (memory-mapped: read batch by batch; labels from `labels`, or
    segmentation masks from `masks`, an array or a .npy file)."""
    images, y, names = _numpy_arrays(path, x_key, y_key)
    if labels is not None:
        y = read_labels(labels)
    if masks is not None:
        names[MASKS_KEY] = masks if isinstance(masks, np.ndarray) else \
            _numpy_arrays(Path(masks), "x", "y")[0]
    found = {"bands": names.get("band_names"), "classes": names.get("class_names"),
             "masks": names.get(MASKS_KEY)}
    return _with_found(images, y, source=str(path), found=found, description=description)


def _numpy_arrays(path: str | Path, x_key: str, y_key: str
                  ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    path = Path(path)
    if not path.exists():
        raise XbandError(f"{path}: no such file. Give a .npz (with '{x_key}' and '{y_key}') or .npy.")
    if path.suffix not in (".npz", ".npy"):
        raise XbandError(f"{path}: unknown data format '{path.suffix}'. Use .npz or .npy.")
    _check_numpy_file(path)
    names: dict = {}
    y = None
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
                if MASKS_KEY in f.files:
                    names[MASKS_KEY] = f[MASKS_KEY]
        else:
            images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise XbandError(_numpy_problem(path, err)) from None
    return images, y, names


def _numpy_problem(path: Path, err: Exception) -> str:
    if "pickle" in str(err):
        return (f"{path}: holds Python objects (pickled data), which xband does not load: it "
                "could run code. Store plain arrays: numbers for images, numbers or text for "
                "labels and names.")
    return (f"{path}: cannot be read as a NumPy file ({type(err).__name__}: {str(err)[:200]}); "
            "it may be truncated or damaged. Save it again.")


def _check_numpy_file(path: Path) -> None:
    """Before NumPy reads anything: the file is a NumPy file, complete, and what it declares
    fits in memory (.npz is loaded whole; .npy is memory-mapped)."""
    with open(path, "rb") as f:
        head = f.read(6)
    if not head:
        raise XbandError(f"{path}: is empty (0 bytes). Save the data again.")
    if path.suffix == ".npy":
        if head != b"\x93NUMPY":
            raise XbandError(f"{path}: is not a NumPy .npy file (it does not start like one). "
                             "Save the images with np.save.")
        with open(path, "rb") as f:
            _check_declared(path, f, path.stat().st_size, loaded=False)
        return
    if not head.startswith(b"PK"):
        raise XbandError(f"{path}: is not a NumPy .npz file (it does not start like one, a zip "
                         "archive). Save the arrays with np.savez.")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as member:
                        _check_declared(f"{path} ({info.filename})", member, info.file_size,
                                        loaded=True)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise XbandError(f"{path}: is a damaged or truncated .npz file ({type(err).__name__}: "
                         f"{err}). Save the arrays again.") from None


def _check_declared(where, handle, stored: int, *, loaded: bool) -> None:
    """The array header in `handle`: its data fits in the `stored` bytes and, when it will be
    `loaded` whole, in the memory available."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(handle, max_header_size=1 << 20)
    except ValueError as err:
        raise XbandError(_numpy_problem(Path(str(where)), err)) from None
    if dtype.hasobject:
        raise XbandError(_numpy_problem(Path(str(where)), ValueError("pickle")))
    size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if size > stored:
        raise XbandError(f"{where}: declares an array of shape {shape} ({_gib(size)}) but holds "
                         f"only {_gib(stored)}: it is truncated or damaged. Save it again.")
    free = available_memory()
    if loaded and free is not None and size > 0.8 * free:
        raise XbandError(f"{where}: declares an array of shape {shape} ({_gib(size)}), more than "
                         f"the memory available ({_gib(free)}); a .npz is read whole. Save the "
                         "images as .npy (memory-mapped, read batch by batch) or HDF5.")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def load_images(path: str | Path, *, labels=None, x_key: str = "x", y_key: str = "y"):
    """Deprecated: (images, labels, names) from .npz/.npy; use `read_data`, which returns an
    ImageSet."""
    warnings.warn("xband.load_images is deprecated; use xband.read_data(path), which returns an "
                  "ImageSet", DeprecationWarning, stacklevel=2)
    images, y, names = _numpy_arrays(path, x_key, y_key)
    return images, (read_labels(labels) if labels is not None else y), names


def read_labels(labels: str | Path | np.ndarray) -> np.ndarray:
    """Labels from an array, a .npy file, or a text file with one label a line."""
    if isinstance(labels, np.ndarray):
        return labels
    path = Path(labels)
    if not path.exists():
        raise XbandError(f"{path}: no such labels file. Give a .npy or a text file, one label a line.")
    if path.suffix == ".npy":
        return _numpy_arrays(path, "x", "y")[0]
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:  # numbers written as text ("0.0", "nan") are numbers: a NaN is then named as one
        return np.array([float(v) for v in lines])
    except ValueError:
        return np.array(lines)


@dataclass(frozen=True)
class RasterInfo:
    """What a raster file says about its bands beside the pixels (GDAL metadata)."""

    band_names: list[str] | None  # band descriptions, when every band has one
    nodata: float | None  # the nodata value, when the bands share one
    scale: float | None  # a scale or offset other than 1 / 0, as "scale" (the note says which)
    offset: float | None
    wavelengths: tuple[float, ...] | None = None  # nm, from the band metadata when every band has one


def read_raster(path: Path) -> tuple[np.ndarray, RasterInfo]:
    """One patch as (bands, height, width) through GDAL, and what its metadata says. A TIFF of
    several single-band pages (as tifffile writes a (bands, height, width) array) gives one
    band per page."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            image = src.read()
            pages = src.subdatasets if src.count == 1 and src.driver == "GTiff" else []
            info = _raster_info(src)
        if len(pages) > 1:
            image = np.concatenate([_page(page) for page in pages])
    return image, info


def _page(name: str) -> np.ndarray:
    import rasterio

    with rasterio.open(name) as page:
        return page.read()


def _raster_info(src) -> RasterInfo:
    names = [str(d).strip() if d else "" for d in src.descriptions]
    nodata = {float(v) for v in src.nodatavals if v is not None}
    scales, offsets = set(src.scales), set(src.offsets)
    odd = scales != {1.0} or offsets != {0.0}
    return RasterInfo(band_names=names if all(names) else None,
                      nodata=nodata.pop() if len(nodata) == 1 else None,
                      scale=min(scales) if odd else None, offset=min(offsets) if odd else None,
                      wavelengths=raster_wavelengths(src))


def _cause(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).strip()[:200]}"


class RasterFiles:
    """GeoTIFF (or JPEG2000) patches as one `ImageSource`, channels-first; a read opens only the
    files asked for. A file that cannot be read, or whose band count or size differs from the
    first readable one's, raises `BadImage` naming it."""

    layout = Layout.CHANNELS_FIRST

    def __init__(self, paths: list[Path]):
        self.paths = paths
        if not paths:
            raise XbandError("no image files given.")
        first_error = None
        for i, path in enumerate(paths):
            try:
                image, self.info = read_raster(path)
            except Exception as err:  # a bad file is named when it is read
                first_error = first_error or (path, err)
                continue
            self.first, self.bands_hw = i, image.shape
            break
        else:
            path, err = first_error
            raise XbandError(f"none of the {len(paths)} files can be read as an image; the "
                             f"first, {path}: {_cause(err)}. Check that they are GeoTIFF "
                             "patches.")
        self.shape = (len(paths), *self.bands_hw)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.bands_hw), dtype=np.float32)
        for row, i in enumerate(indices):
            out[row] = self._one(int(i))
        return out

    def _one(self, i: int) -> np.ndarray:
        path = self.paths[i]
        image = _raster(i, path, "an image", "; it may be truncated or not a GeoTIFF. Replace "
                        f"it, or {_SKIP_HINT}")
        if image.shape != self.bands_hw:
            (b, h, w), (rb, rh, rw) = image.shape, self.bands_hw
            raise BadImage(i, str(path), f"has {b} bands of {h}×{w} pixels but the other images "
                           f"have {rb} bands of {rh}×{rw} (as {self.paths[self.first]}). Replace "
                           f"it with a patch like the others, or {_SKIP_HINT}")
        return image

    def notes(self) -> list[str]:
        """What the files' metadata says that xband does not apply by itself."""
        info = self.info
        if info.scale is None:
            return []
        return [f"{self.paths[self.first]}: GDAL metadata gives scale {info.scale:g} and offset "
                f"{info.offset:g}; xband uses the stored values (give scale if the model was "
                "trained on scaled values)"]


def _tiff_set(paths: list[Path], labels: list[str], skipped: list[tuple[str, str]], *,
              source: str, classes: dict, description: dict) -> ImageSet:
    files = RasterFiles(paths)
    found = {"bands": files.info.band_names, "layout": files.layout,
             "nodata": files.info.nodata, **classes}
    if description.get("sensor") is None:  # a sensor preset names the wavelengths itself
        found["wavelengths"] = files.info.wavelengths
    notes = [*classes.get("notes", []), *files.notes(), *_number_type_notes(paths, labels)]
    return _with_found(files, np.array(labels), source=source, found={**found, "notes": notes},
                       description={**description, "item_names": [str(p) for p in paths],
                                    "skipped": skipped})


def _number_type_notes(paths: list[Path], labels: list) -> list[str]:
    """A note when a class's files store their pixels in another number type than the others'
    (one class as uint16 reflectance ×10000 among float32 patches, say): the model would see it
    on another scale. The first file of each class is opened (its header only)."""
    import rasterio

    first: dict = {}
    for path, label in zip(paths, labels, strict=True):
        first.setdefault(label, path)
    types = {}
    for label, path in first.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rasterio's: no georeference
            try:
                with rasterio.open(path) as src:
                    types[label] = src.dtypes[0]
            except Exception:  # noqa: BLE001 - a file that cannot be read is named when read
                continue
    if len(set(types.values())) < 2:
        return []
    usual = Counter(types.values()).most_common(1)[0][0]
    odd = [f"'{label}' as {kind} ({first[label]})" for label, kind in types.items()
           if kind != usual]
    return [f"class{'es' if len(odd) > 1 else ''} {', '.join(odd)} stored in another number type "
            f"than the other classes ({usual}): if the values are scaled differently "
            "(reflectance ×10000 as integers, say), the model sees that class on another scale. "
            "Store every class alike."]


def read_class_folders(root: Path, *, skip_bad: bool = False, **description) -> ImageSet:
    """A folder with one sub-folder of GeoTIFF patches per class (the EuroSAT-MS layout).

    Class names are the folder names, sorted (the order Keras' `image_dataset_from_directory`
    gives the classes). Hidden files are ignored; other non-TIFF files are errors, or skipped.
    """
    folders = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise XbandError(
            f"{root}: no class folders. Put the patches in one sub-folder per class "
            f"({root}/Forest/Forest_1.tif, …), or list them in a CSV of (path, label) rows."
        )
    paths: list[Path] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder in map(Path, folders):
        images = []
        for e in sorted(os.scandir(folder), key=lambda e: e.name):
            if e.name.startswith(".") or e.name.lower().endswith(SIDECAR_SUFFIXES):
                continue
            if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES):
                images.append(Path(e.path))
            elif skip_bad:
                skipped.append((e.path, "not a .tif/.tiff/.jp2 image"))
            else:
                raise XbandError(
                    f"{e.path}: not a .tif/.tiff/.jp2 image, in class folder '{folder.name}'. Class "
                    f"folders must hold only GeoTIFF patches: move it out, or {_SKIP_HINT}."
                )
        if not images:
            raise XbandError(
                f"{folder}: class folder '{folder.name}' holds no .tif/.tiff/.jp2 images. Add the "
                "class's patches or remove the folder (then give the model's classes with "
                "--classes)."
            )
        paths += images
        labels += [folder.name] * len(images)
    names = sorted(set(labels))
    note = (f"classes from the folder names, sorted: {', '.join(names)} (give --classes if the "
            "model's outputs are in another order)")
    classes = {"classes": names, "class_origin": "from the folder names, sorted",
               "notes": [note]}
    if description.get("classes") is not None:
        classes = {}
    return _tiff_set(paths, labels, skipped, source=str(root), classes=classes,
                     description=description)


class MaskFiles:
    """Single-band GeoTIFF masks as one `MaskSource` (N, H, W); a read opens only the files asked
    for, and a file that cannot be read, or is not one band of `size`, raises `BadImage`."""

    def __init__(self, paths: list[Path], size: tuple[int, int]):
        self.paths, self.shape = paths, (len(paths), *size)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self._one(int(i)) for i in indices])

    def _one(self, i: int) -> np.ndarray:
        path = self.paths[i]
        mask = _raster(i, path, "a mask", ". Replace it.")
        if mask.shape != (1, *self.shape[1:]):
            raise BadImage(i, str(path), f"is a mask of shape {mask.shape} (bands, height, "
                           f"width); masks are one band of {self.shape[1]}×{self.shape[2]} "
                           "pixels, a class per pixel. Replace it.")
        return mask[0]


def _raster(i: int, path: Path, what: str, fix: str) -> np.ndarray:
    """(B, H, W) values of the raster file at `path`, image `i`; `BadImage` saying it cannot be
    read as `what`, then `fix`, when GDAL cannot read it."""
    try:
        return read_raster(path)[0]
    except Exception as err:  # GDAL raises many kinds of errors on damaged files
        raise BadImage(i, str(path), f"cannot be read as {what} ({_cause(err)}){fix}") from None


def _files(folder: Path, what: str, skipped: list[tuple[str, str]] | None) -> dict[str, Path]:
    """The .tif/.tiff/.jp2 files of `folder` by name (hidden files and GDAL's side files left
    out); anything else is refused, or listed in `skipped` when given (skip-bad)."""
    if not folder.is_dir():
        raise XbandError(f"{folder}: no such folder of {what}.")
    found = {}
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        if e.name.startswith(".") or e.name.lower().endswith(SIDECAR_SUFFIXES):
            continue
        if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES):
            found[e.name] = Path(e.path)
        elif skipped is not None:
            skipped.append((e.path, "not a .tif/.tiff/.jp2 file"))
        else:
            raise XbandError(f"{e.path}: not a .tif/.tiff/.jp2 file, in the folder of {what}. "
                             f"Move it out, or {_SKIP_HINT}.")
    if not found:
        raise XbandError(f"{folder}: holds no .tif/.tiff/.jp2 {what}.")
    return found


def read_mask_folders(images: Path, masks: Path, *, skip_bad: bool = False,
                      **description) -> ImageSet:
    """Segmentation data: a folder of GeoTIFF images and a folder of single-band GeoTIFF masks
    (a class per pixel) of the same file names. A mask file's nodata value is the ignore index
    unless one is given."""
    skipped: list[tuple[str, str]] | None = [] if skip_bad else None
    image_files, mask_files = _files(images, "images", skipped), _files(masks, "masks", skipped)
    missing = sorted(set(image_files) - set(mask_files))
    if missing:
        raise XbandError(f"{images / missing[0]}: no mask of that name in {masks} ({len(missing)} "
                         "images without a mask). Give every image a mask file of its name.")
    names = sorted(image_files)
    files = RasterFiles([image_files[n] for n in names])
    mask_source = MaskFiles([mask_files[n] for n in names], tuple(files.bands_hw[1:]))
    nodata = read_raster(mask_source.paths[files.first])[1].nodata
    found = {"bands": files.info.band_names, "layout": files.layout, "nodata": files.info.nodata,
             "masks": mask_source, "notes": files.notes(),
             "ignore_index": None if nodata is None or not float(nodata).is_integer() or nodata < 0
             else int(nodata)}
    if description.get("sensor") is None:
        found["wavelengths"] = files.info.wavelengths
    return _with_found(files, None, source=str(images), found=found,
                       description={**description, "item_names": [str(p) for p in files.paths],
                                    "skipped": skipped or []})


def read_csv_list(path: Path, *, skip_bad: bool = False, **description) -> ImageSet:
    """A CSV of (path, label) rows, an optional 'path,label' header; relative paths are relative
    to the CSV's folder. Labels are class names, or class numbers when all are whole numbers."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise XbandError(f"{path}: cannot read the CSV ({err}).") from None
    paths: list[Path] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    for number, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or (number == 1 and [c.lower() for c in cells[:2]] == ["path", "label"]):
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise XbandError(f"{path}, row {number}: expected 'path,label', found {','.join(row)!r}. "
                             "Give one image path and its label per row.")
        file = path.parent / cells[0]
        problem = (None if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
                   else "no such file" if not file.is_file() else "not a .tif/.tiff/.jp2 image")
        if problem:
            if not skip_bad:
                raise XbandError(f"{path}, row {number}: {file}: {problem}. Fix the row (relative "
                                 f"paths start at the CSV's folder), or {_SKIP_HINT}.")
            skipped.append((f"{file} (row {number})", problem))
            continue
        paths.append(file)
        labels.append(cells[1])
    if not paths:
        raise XbandError(f"{path}: lists no usable images. Give rows of 'path,label'.")
    numbers = all(label.lstrip("-").isdigit() for label in labels)
    return _tiff_set(paths, [int(v) for v in labels] if numbers else labels, skipped,
                     source=str(path), classes={}, description=description)


def read_hdf5(path: Path, *, x_key: str = "x", y_key: str | None = None,
              labels: str | os.PathLike | np.ndarray | None = None, **description) -> ImageSet:
    """Images from dataset `x_key` (read batch by batch), labels from `y_key` (default 'y' when it
    exists) or a labels file."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise XbandError(f"{path}: cannot read as HDF5 ({err}).") from None
    found: list[str] = []
    h5.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)

    def dataset(key: str, name: str):
        if key not in h5 or not isinstance(h5[key], h5py.Dataset):
            raise XbandError(f"{path}: no dataset '{key}' (datasets: {', '.join(found) or 'none'}). "
                             f"Name the right one with {option(name + '=', '--' + name.replace('_', '-'))}.")
        return h5[key]

    images = dataset(x_key, "x_key")
    found = {"masks": h5[MASKS_KEY] if MASKS_KEY in h5 else None}
    if labels is not None:
        y = read_labels(labels)
    elif y_key is not None or ("y" in h5 and found["masks"] is None):
        y = dataset(y_key or "y", "y_key")[()]
        y = y.astype(str) if y.dtype.kind in "OS" else y
    else:
        y = None
    return _with_found(images, y, source=str(path), found=found, description=description)


class TorchImages:
    """A map-style torch `Dataset` as an `ImageSource`, read as its DataLoader would give it:
    items (image, label, …) tuples, or dicts (torchgeo's {"image": …, "label": …}) whose image
    is `image_key`; `positions` (P,), the dataset indices the loader's sampler gives (None:
    all); the items of a read collated by `collate` (the loader's collate_fn; one by one when
    the loader does not batch, `per_item`) and the batch then passed through `batch_transform`
    (a DataModule's augmentation). With a dict's `mask_key`, its segmentation masks as a
    `MaskSource` (`masks`)."""

    def __init__(self, dataset, image_key: str = "image", positions: np.ndarray | None = None,
                 collate: Callable | None = None, batch_transform: Callable | None = None,
                 per_item: bool = False):
        self.dataset, self.image_key, self.positions = dataset, image_key, positions
        self.collate, self.batch_transform, self.per_item = collate, batch_transform, per_item
        n = len(dataset) if positions is None else len(positions)
        self.shape = (n,)  # the image shape is read next, from the first item
        self.shape = (n, *self[np.array([0])].shape[1:])

    def image(self, i: int):
        return _image_of(self.dataset[i], self.image_key)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        rows = [int(i) if self.positions is None else int(self.positions[i]) for i in indices]
        if self.collate is None:
            return np.stack([self._one(p, i) for p, i in zip(indices, rows, strict=True)])
        items = [self.dataset[i] for i in rows]
        if self.per_item:
            return np.stack([_as_float32(_image_of(self.collate(item), self.image_key))
                             for item in items])
        batch = self.collate(items)
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        return _as_float32(_image_of(batch, self.image_key))

    def _one(self, position: int, i: int) -> np.ndarray:
        """Item `i`'s image (at `position` in the set), checked to have the first item's shape."""
        image = _as_float32(self.image(i))
        if len(self.shape) > 1 and image.shape != self.shape[1:]:
            raise BadImage(int(position), f"torch {type(self.dataset).__name__}, item {i}",
                           f"has an image of shape {image.shape} but item 0 has "
                           f"{self.shape[1:]}. Give items of one size (crop or resize them in "
                           f"the dataset's transform), or {_SKIP_HINT}")
        return image

    def masks(self, mask_key: str) -> TorchImages:
        """The items' masks (`mask_key`), a source of its own, read as the images are (the same
        sampler, collate_fn and batch augmentation)."""
        return TorchImages(self.dataset, mask_key, self.positions, self.collate,
                           self.batch_transform, self.per_item)


def _image_of(sample, image_key: str):
    """The image of an item or a batch: its `image_key` entry, its first entry, or itself."""
    if isinstance(sample, Mapping):
        return sample[image_key]
    return sample[0] if isinstance(sample, tuple | list) else sample


def _as_float32(image) -> np.ndarray:
    if hasattr(image, "detach"):  # a torch tensor, perhaps on a GPU or in bfloat16
        image = image.detach().cpu().float().numpy()
    return np.asarray(image, dtype=np.float32)


@dataclass
class TorchReading:
    """How a torch source gives its images: what `TorchImages` takes beyond the dataset, what
    is applied to the stored values (for the preprocessing description) and notes."""

    dataset: object
    positions: np.ndarray | None = None  # (P,) dataset indices the sampler gives; None: all
    collate: Callable | None = None
    batch_transform: Callable | None = None
    per_item: bool = False
    applied: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def from_torch(data, *, image_key: str = "image", label_key: str = "label",
               mask_key: str = "mask", split: str = "test", **description) -> ImageSet:
    """The images and labels of a torch `Dataset`, `DataLoader`, or a Lightning / torchgeo
    DataModule (its `split` loader: "test", "val", "train" or "predict"), read by index so the
    engine can stream and draw donors, and as the model sees them: a loader's sampler picks the
    images (a SubsetRandomSampler's, say), its collate_fn and a DataModule's batch augmentation
    (torchgeo's `aug`, its normalisation) apply to every batch read. A sampler that draws other
    images on each pass is refused; a random transform is named in a note. Items are (image,
    label) tuples or dicts ({"image": …, "label": …}; other keys with `image_key`, `label_key`).
    A label is a class number, or a multi-hot vector (multi-label). Segmentation: dicts with a
    mask and no label ({"image": …, "mask": …}, as torchgeo's segmentation data sets give;
    `mask_key`), a class per pixel; `ignore_index` (in `description`) marks unlabelled pixels.
    Labels come from the dataset's `targets` when it has them (through any Subset), else from
    every item; class and band names from its `classes` and `bands` (torchgeo), and for
    torchgeo data sets whose sensor is known their wavelengths and band groups, unless given.
    `description`: what `xband.image_set` takes (bands, classes, sensor, preprocess, …)."""
    reading = _torch_reading(data, split)
    dataset = reading.dataset
    source = f"torch {type(dataset).__name__}"
    if len(dataset) == 0:
        raise XbandError(f"{source}: holds no images.")
    first = dataset[0 if reading.positions is None else int(reading.positions[0])]
    labelled = _check_sample(first, image_key, label_key, source)
    masked = not labelled and isinstance(first, Mapping) and mask_key in first
    base, to_base = _base_dataset(dataset)
    images = TorchImages(dataset, image_key, reading.positions, reading.collate,
                         reading.batch_transform, reading.per_item)
    found: dict = {"notes": [*reading.notes, *_random_reads(images, source)],
                   "masks": images.masks(mask_key) if masked else None}
    classes = _names(getattr(base, "classes", None))
    if classes and description.get("classes") is None:
        found.update(classes=classes, class_origin="from the dataset's classes")
    band_info = _dataset_bands(base, images.shape, description)
    found["notes"] += band_info.pop("notes", [])
    found.update(band_info)
    if reading.applied:
        given = description.get("preprocess") or Preprocess()
        description = {**description, "preprocess": dataclasses.replace(
            given, by_source=", then ".join(reading.applied))}
    targets = None if masked else _targets(dataset, base, to_base, reading.positions, labelled,
                                           label_key)
    return _with_found(images, targets, source=source, found=found, description=description)


def _torch_reading(data, split: str) -> TorchReading:
    """What honouring `data` takes: a DataModule's loader and augmentation, a loader's sampler
    and collate function; a Dataset as it is."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    batch_transform, applied = None, []
    if is_datamodule(data):
        data, batch_transform, applied = _datamodule_loader(data, split)
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
        raise XbandError("xband needs a map-style torch Dataset (items by index); an iterable "
                         "dataset cannot be read by index. Save the images to a file instead.")
    if not isinstance(data, DataLoader):
        return TorchReading(dataset)
    positions, notes = _loader_positions(data, len(dataset))
    collate = data.collate_fn
    if not _default_collate(collate):
        applied.insert(0, f"the DataLoader's collate_fn ({_callable_name(collate)})")
    elif batch_transform is None:
        collate = None  # torch's own only stacks: items are read one by one, as from a Dataset
    return TorchReading(dataset, positions, collate, batch_transform,
                        per_item=data.batch_size is None and data.batch_sampler is None,
                        applied=tuple(applied), notes=tuple(notes))


def _default_collate(collate: Callable) -> bool:
    """Whether `collate` is torch's own, which only stacks items into a batch."""
    from torch.utils.data import default_collate, default_convert

    return collate in (default_collate, default_convert)


def _callable_name(function) -> str:
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{getattr(function, '__module__', None) or type(function).__module__}.{name}"


def _loader_positions(loader, n: int) -> tuple[np.ndarray | None, list[str]]:
    """The dataset indices a DataLoader's sampler gives, sorted (None: all `n`), and a note.
    Batching only groups the sampler's images (its drop_last is ignored: every image is read);
    a sampler that gives other images on each pass is refused."""
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    if isinstance(sampler, BatchSampler):
        sampler = sampler.sampler
    name = type(sampler).__name__
    if isinstance(sampler, SequentialSampler) or (
            isinstance(sampler, RandomSampler) and not sampler.replacement
            and sampler.num_samples == n):
        return None, []
    if hasattr(sampler, "indices"):  # SubsetRandomSampler, and samplers like it
        picked = np.unique(np.asarray(list(sampler.indices), dtype=np.int64))
    else:
        try:
            picked, again = (np.unique(np.fromiter(_flat(sampler), dtype=np.int64))
                             for _ in range(2))
        except (TypeError, ValueError):
            raise XbandError(f"torch DataLoader: its {name} gives other things than image "
                             "indices (a geospatial sampler's regions, say); xband reads images "
                             "by index: save the patches as files, or give a dataset of patches."
                             ) from None
        if not np.array_equal(picked, again):
            raise XbandError(f"torch DataLoader: its {name} gives other images on each pass, "
                             "which xband cannot explain reproducibly. Give a DataLoader whose "
                             "sampler picks fixed images (a SubsetRandomSampler, or a Subset of "
                             "the dataset), or the dataset itself.")
    if len(picked) and (picked[0] < 0 or picked[-1] >= n):
        raise XbandError(f"torch DataLoader: its {name} gives index {picked[-1]}, beyond the "
                         f"dataset's {n} items.")
    if len(picked) == n:
        return None, []
    return picked, [f"the DataLoader's {name} picks {len(picked)} of the dataset's {n} images: "
                    "those are the images explained"]


def _flat(sampler) -> Iterator[int]:
    for entry in sampler:
        yield from (entry if isinstance(entry, list | tuple) else [entry])


def is_datamodule(data) -> bool:
    """A Lightning DataModule (torchgeo's among them), told without importing Lightning."""
    return all(hasattr(data, name) for name in
               ("setup", "test_dataloader", "on_after_batch_transfer", "on_before_batch_transfer"))


_STAGES = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}


def _datamodule_loader(module, split: str) -> tuple[object, Callable | None, list[str]]:
    """A DataModule's `split` loader (set up first when needed), the batch transform its
    training would apply after loading, and that transform in words."""
    if split not in _STAGES:
        raise XbandError(f"split '{split}': a DataModule's split is one of "
                         f"{', '.join(_STAGES)}.")
    name = type(module).__name__
    try:
        loader = getattr(module, f"{split}_dataloader")()
    except Exception:  # not set up yet: Lightning sets up a stage before asking its loaders
        module.setup(_STAGES[split])
        try:
            loader = getattr(module, f"{split}_dataloader")()
        except Exception as err:
            raise XbandError(f"{name}: has no {split} loader ({type(err).__name__}: {err}); "
                             "give split= one it has (test, val, train, predict).") from None
    if hasattr(module, "_valid_attribute") and hasattr(module, "aug"):  # torchgeo's
        attribute = f"{split}_aug" if getattr(module, f"{split}_aug", None) is not None else "aug"
        aug = getattr(module, attribute)
        return loader, aug, [f"the {name}'s {attribute} ({_transform_steps(aug)})"]
    hooks = [hook for hook in ("on_before_batch_transfer", "on_after_batch_transfer")
             if not getattr(type(module), hook).__module__.startswith(
                 ("lightning", "pytorch_lightning"))]  # Lightning's own return the batch
    if not hooks:
        return loader, None, []

    def transfer_hooks(batch):
        for hook in hooks:
            batch = getattr(module, hook)(batch, 0)
        return batch

    return loader, transfer_hooks, [f"the {name}'s {' and '.join(hooks)} (without a Trainer)"]


def _transform_steps(transform) -> str:
    """The steps of a transform in words: a kornia/torchvision sequence's step names."""
    steps = [type(step).__name__ for step in getattr(transform, "children", lambda: [])()]
    return ", ".join(steps) or type(transform).__name__


def _random_reads(images: TorchImages, source: str) -> list[str]:
    """A note when reading the first image twice gives different values (a random transform)."""
    first = np.array([0])
    if np.array_equal(images[first], images[first], equal_nan=True):
        return []
    return [f"{source}: the first image read twice gave different values: a transform is "
            "random (augmentation), so every read of an image differs and the scores mix the "
            "model with the augmentation; give the data without random transforms (an "
            "evaluation loader) to explain the model alone"]


def _base_dataset(dataset) -> tuple[object, np.ndarray | None]:
    """The dataset under any `Subset`s, and the index map into it (None: no Subset)."""
    from torch.utils.data import Subset

    to_base = None
    while isinstance(dataset, Subset):
        indices = np.asarray(list(dataset.indices), dtype=np.int64)
        to_base = indices if to_base is None else indices[to_base]
        dataset = dataset.dataset
    return dataset, to_base


def _targets(dataset, base, to_base: np.ndarray | None, positions: np.ndarray | None,
             labelled: bool, label_key: str) -> np.ndarray | None:
    """Labels of the images read: the base dataset's `targets` through the Subsets and the
    sampler, else every item's label."""
    rows = np.arange(len(dataset)) if positions is None else positions
    targets = getattr(base, "targets", None)
    if targets is not None:
        targets = [targets[int(i)] for i in (rows if to_base is None else to_base[rows])]
    elif labelled:
        targets = [_label_of(dataset[int(i)], label_key) for i in rows]
    return None if targets is None else np.stack([np.asarray(t) for t in targets])


# torchgeo data sets of Sentinel-2 bands (by class name; subclasses too) → the prefix of their
# band names (So2Sat names its bands S2_B02, …)
_TORCHGEO_SENTINEL2 = {"EuroSAT": "", "So2Sat": "S2_"}
_S2_BANDS = {band.name: band for band in SENSORS["sentinel2"].bands}


def _dataset_bands(dataset, shape: tuple[int, ...], description: dict) -> dict:
    """What a dataset says about its bands, unless the caller describes them: their names
    (`bands`), and for a torchgeo data set of known sensor (EuroSAT, So2Sat: Sentinel-2) or
    with per-band `wavelengths` (torchgeo's are in micrometres) their wavelengths and groups:
    an xband sensor preset when the bands are exactly its bands."""
    names = _names(getattr(dataset, "bands", None))
    if not names or len(names) not in (shape[1], shape[3]):
        return {}
    if any(description.get(k) is not None for k in ("bands", "sensor", "wavelengths")):
        return {"bands": names}  # checked against a sensor preset when one is given
    origin = f"the {type(dataset).__name__} data set"
    prefix = next((p for cls in type(dataset).__mro__
                   if (p := _TORCHGEO_SENTINEL2.get(cls.__name__)) is not None
                   and cls.__module__.startswith("torchgeo.")), None)
    if prefix is not None and all(n.startswith(prefix) and n[len(prefix):] in _S2_BANDS
                                  for n in names):
        return _sentinel2_bands(names, prefix, origin)
    given = getattr(dataset, "wavelengths", None)
    if given is None:
        return {"bands": names}
    values = ([given.get(n) for n in names] if isinstance(given, Mapping)
              else list(_as_float32(given).reshape(-1)))
    if len(values) != len(names) or None in values:
        return {"bands": names}
    nm = [float(v) * (1000 if max(values) < 100 else 1) for v in values]  # μm → nm
    preset = next((s for s in SENSORS.values() if s.band_names == names
                   and np.allclose(s.wavelengths, nm, atol=20)), None)
    if preset is not None:
        return {"sensor": preset.name,
                "notes": [f"bands: {preset.title}, as {origin} says (its band wavelengths)"]}
    return {"bands": names, "wavelengths": nm,
            "notes": [f"band wavelengths from {origin}"]}


def _sentinel2_bands(names: list[str], prefix: str, origin: str) -> dict:
    """Sentinel-2 bands by name: a preset when they are exactly its bands, else the names with
    their wavelengths and spectral groups."""
    bare = [n[len(prefix):] for n in names]
    preset = next((s for s in SENSORS.values() if s.band_names == bare), None)
    if preset is not None and not prefix:
        return {"sensor": preset.name,
                "notes": [f"bands: {preset.title} ({origin}'s sensor): sensor '{preset.name}'"]}
    groups: dict[str, list[str]] = {}
    for name, band in zip(names, bare, strict=True):
        groups.setdefault(_S2_BANDS[band].group, []).append(name)
    return {"bands": names, "wavelengths": [_S2_BANDS[b].wavelength_nm for b in bare],
            "band_groups": groups if len(groups) > 1 else None,
            "notes": [f"bands: Sentinel-2 ({origin}'s sensor): wavelengths and spectral groups "
                      "of the sentinel2 preset"]}


def _check_sample(sample, image_key: str, label_key: str, source: str) -> bool:
    """Whether items carry labels; refuses items xband cannot read, saying why."""
    if not isinstance(sample, Mapping):
        if isinstance(sample, tuple | list) and len(sample) >= 2:
            return True
        raise XbandError(f"{source}: items are {type(sample).__name__}s; xband reads (image, "
                         "label) tuples or dicts with an image and a label.")
    keys = ", ".join(map(str, sample))
    if image_key not in sample:
        raise XbandError(f"{source}: items are dicts with keys {keys} and no '{image_key}'; "
                         "name the image's key with image_key= (and the label's with label_key=).")
    return label_key in sample


def _label_of(sample, label_key: str):
    """An item's label as a number, or a multi-hot vector."""
    label = sample[label_key] if isinstance(sample, Mapping) else sample[1]
    label = np.asarray(label)
    return label.item() if label.size == 1 else label


def _names(value) -> list[str] | None:
    """A dataset's list of class or band names, when it is one."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


LABEL_COLUMNS = ("label", "labels", "class", "y")  # label column names a spectra table may use
_NM_HEADER = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:nm)?\s*", flags=re.I)


def is_spectra_table(path: Path) -> bool:
    """Whether a CSV is a table of spectra (3 or more columns) rather than (path, label) rows."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            first = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # read_csv_list says what is wrong
    return len(first) >= 3


def read_spectra_table(path: str | os.PathLike, *, label_column: str | None = None,
                       band_columns: str | None = None, **description) -> ImageSet:
    """A CSV table of spectra: a header row, one row per pixel, one column per band and a label
    column (`label_column`; default: one named label, class or y; none: unlabelled). Band
    columns: every other column, or `band_columns` "FIRST:LAST" (both included). Headers that
    are numbers (400.5, "400.5 nm") are the bands' centre wavelengths."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise XbandError(f"{path}: cannot read the CSV ({err}).") from None
    table.columns = [str(c).strip() for c in table.columns]
    label = _label_column(table.columns, label_column, path)
    bands = _band_columns(table.columns, label, band_columns, path)
    spectra = np.empty((len(table), len(bands)), dtype=np.float32)
    for j, column in enumerate(bands):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(values.isna() & table[column].notna())
        if len(bad):
            raise XbandError(f"{path}: column '{column}' holds '{table[column].iloc[bad[0]]}' (row "
                             f"{bad[0] + 2}), not a number. Drop columns that are not bands, or "
                             f"name the band columns FIRST:LAST with "
                             f"{option('band_columns=', '--x-key')}.")
        spectra[:, j] = values.to_numpy(dtype=np.float32)
    wavelengths = [_NM_HEADER.fullmatch(c) for c in bands]
    found = {"bands": bands, "wavelengths": None if not all(wavelengths) or description.get(
        "sensor") else [float(m.group(1)) for m in wavelengths]}
    notes = [] if label else [f"{path}: no label column ({', '.join(LABEL_COLUMNS)}; or name it "
                              f"with {option('label_column=', '--y-key')}): every spectrum is "
                              "explained for its predicted class"]
    y = None if label is None else _table_labels(table[label])
    return _with_found(spectra, y, source=str(path), found={**found, "notes": notes},
                       description=description)


def _label_column(columns: list[str], given: str | None, path: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise XbandError(f"{path}: no column '{given}' (columns: {', '.join(columns[:8])}"
                             f"{', …' if len(columns) > 8 else ''}).")
        return given
    return next((c for c in columns if c.lower() in LABEL_COLUMNS), None)


def _band_columns(columns: list[str], label: str | None, span: str | None,
                  path: Path) -> list[str]:
    """The band columns: every column but the label's, or those from FIRST to LAST."""
    if span is None:
        return [c for c in columns if c != label]
    first, sep, last = span.partition(":")
    if not sep or first.strip() not in columns or last.strip() not in columns:
        raise XbandError(f"{path}: band columns '{span}' are not FIRST:LAST naming two of the "
                         f"columns ({', '.join(columns[:4])}, …).")
    start, stop = columns.index(first.strip()), columns.index(last.strip())
    return [c for c in columns[start:stop + 1] if c != label]


def _table_labels(column) -> np.ndarray:
    """Labels as class numbers when every one is a whole number, else as class names."""
    values = column.to_numpy()
    if values.dtype.kind in "iuf":
        return values
    return values.astype(str)
