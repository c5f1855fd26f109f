"""Images as users keep them: GeoTIFF class folders, CSV lists, HDF5, NumPy files, torch datasets.

Every reader returns an `ImageSet` (images read lazily, batch by batch) with the labels and what
the data says about its bands and classes; `explain` checks it against the model.
"""

from __future__ import annotations

import csv
import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xband.data.images import BadImage, ImageSet, image_set
from xband.data.wavelengths import raster_wavelengths
from xband.errors import XbandError, option
from xband.layout import Layout

IMAGE_SUFFIXES = (".tif", ".tiff", ".jp2")  # GeoTIFF and JPEG2000 (Sentinel-2 band files)
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".tfw", ".j2w", ".prj")  # GDAL's, read with them
_SKIP_HINT = f"pass {option('skip_bad=True', '--skip-bad')} to leave it out"


_DESCRIPTION = ("bands", "classes", "layout", "sensor", "band_groups", "wavelengths", "preprocess",
                "nodata", "ignore_index")
MASKS_KEY = "masks"  # the array (HDF5 dataset) of segmentation masks in .npz and .h5 files


def read_data(path: str | os.PathLike, *, labels: str | os.PathLike | np.ndarray | None = None,
              x_key: str | None = None, y_key: str | None = None, skip_bad: bool = False,
              masks: str | os.PathLike | np.ndarray | None = None, **description) -> ImageSet:
    """Open `path` by what it is: a folder of class folders of GeoTIFFs, a .csv of (path, label)
    rows, an .h5/.hdf5 file (`x_key`, `y_key`), or .npz/.npy (with `labels`).

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
    if path.is_dir() and masks is not None:
        return read_mask_folders(path, Path(masks), skip_bad=skip_bad, **description)
    if masks is not None and path.suffix.lower() != ".npy":
        raise XbandError(f"{path}: masks= (--masks) is for .npy images or a folder of GeoTIFF "
                         f"images; a {path.suffix or 'file'} holds its masks as '{MASKS_KEY}'.")
    if path.is_dir():
        return read_class_folders(path, skip_bad=skip_bad, **description)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_list(path, skip_bad=skip_bad, **description)
    if suffix in (".h5", ".hdf5", ".he5"):
        return read_hdf5(path, x_key=x_key or "x", y_key=y_key, labels=labels, **description)
    if suffix in (".npz", ".npy"):
        return read_numpy(path, x_key=x_key or "x", y_key=y_key or "y", labels=labels,
                          masks=masks, **description)
    raise XbandError(
        f"{path}: unknown data format '{path.suffix}'. Give a folder of class folders of GeoTIFFs, "
        "a .csv of (path, label) rows, an .h5 file, or a .npz/.npy file."
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
        try:
            image = read_raster(path)[0]
        except Exception as err:  # GDAL raises many kinds of errors on damaged files
            raise BadImage(i, str(path), f"cannot be read as an image ({_cause(err)}); it may "
                           f"be truncated or not a GeoTIFF. Replace it, or {_SKIP_HINT}") from None
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
    notes = [*classes.get("notes", []), *files.notes()]
    return _with_found(files, np.array(labels), source=source, found={**found, "notes": notes},
                       description={**description, "item_names": [str(p) for p in paths],
                                    "skipped": skipped})


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
        try:
            mask = read_raster(path)[0]
        except Exception as err:  # GDAL raises many kinds of errors on damaged files
            raise BadImage(i, str(path), f"cannot be read as a mask ({_cause(err)}). Replace "
                           "it.") from None
        if mask.shape != (1, *self.shape[1:]):
            raise BadImage(i, str(path), f"is a mask of shape {mask.shape} (bands, height, "
                           f"width); masks are one band of {self.shape[1]}×{self.shape[2]} "
                           "pixels, a class per pixel. Replace it.")
        return mask[0]


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
    """A map-style torch `Dataset` as an `ImageSource`: items (image, label, …) tuples, or dicts
    (torchgeo's {"image": …, "label": …}) whose image is `image_key`. With a dict's `mask_key`,
    its segmentation masks as a `MaskSource` (`masks`)."""

    def __init__(self, dataset, image_key: str = "image"):
        self.dataset, self.image_key = dataset, image_key
        self.shape = (len(dataset), *np.asarray(self.image(0)).shape)

    def image(self, i: int):
        sample = self.dataset[i]
        return sample[self.image_key] if isinstance(sample, Mapping) else sample[0]

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self.image(int(i)), dtype=np.float32) for i in indices])

    def masks(self, mask_key: str) -> TorchImages:
        """The items' masks (`mask_key`), a source of its own."""
        return TorchImages(self.dataset, mask_key)


def from_torch(data, *, image_key: str = "image", label_key: str = "label",
               mask_key: str = "mask", **description) -> ImageSet:
    """The images and labels of a torch `Dataset` or `DataLoader` (its dataset: read by index, so
    the engine can stream and draw donors). Items are (image, label) tuples or dicts, as
    torchgeo's classification data sets give ({"image": …, "label": …}; other keys with
    `image_key`, `label_key`). A label is a class number, or a multi-hot vector (multi-label).
    Segmentation: dicts with a mask and no label ({"image": …, "mask": …}, as torchgeo's
    segmentation data sets give; `mask_key`), a class per pixel; `ignore_index` (in
    `description`) marks unlabelled pixels.
    Labels come from `dataset.targets` when it has them, else from every item; class and band
    names from `dataset.classes` and `dataset.bands` (torchgeo) unless given.
    `description`: what `xband.image_set` takes (bands, classes, preprocess, …)."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    dataset = data.dataset if isinstance(data, DataLoader) else data
    source = f"torch {type(dataset).__name__}"
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
        raise XbandError("xband needs a map-style torch Dataset (items by index); an iterable "
                         "dataset cannot be read by index. Save the images to a file instead.")
    if len(dataset) == 0:
        raise XbandError(f"{source}: holds no images.")
    labelled = _check_sample(dataset[0], image_key, label_key, source)
    masked = not labelled and isinstance(dataset[0], Mapping) and mask_key in dataset[0]
    targets = None if masked else getattr(dataset, "targets", None)
    if targets is None and labelled:
        targets = [_label_of(dataset[i], label_key) for i in range(len(dataset))]
    images = TorchImages(dataset, image_key)
    found: dict = {}
    classes = _names(getattr(dataset, "classes", None))
    if classes and description.get("classes") is None:
        found.update(classes=classes, class_origin="from the dataset's classes")
    bands = _names(getattr(dataset, "bands", None))
    if bands and len(bands) in (images.shape[1], images.shape[3]):
        found["bands"] = bands  # checked against a sensor preset when one is given
    if masked:
        found["masks"] = images.masks(mask_key)
    return _with_found(images,
                       None if targets is None else np.stack([np.asarray(t) for t in targets]),
                       source=source, found=found, description=description)


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
