"""Hyperspectral scenes as their users hold them: a cube and a label map, read into the set a
per-pixel model classifies (one spectrum per labelled pixel) or the set a patch model does (a
square patch around each labelled pixel), unlabelled pixels (label 0) left out, with a
reproducible held-out split.

Cubes: ENVI (.hdr + its data file; memory-mapped, read pixel by pixel), GeoTIFF, MATLAB .mat
as the classic benchmarks ship (Indian Pines: 'indian_pines_corrected' and 'indian_pines_gt';
v7.3 files are HDF5), or arrays (H, W, B). Label maps: the same formats with one band, or an
(H, W) array. Band centres and names come from the ENVI header (or GeoTIFF band metadata),
class names from an ENVI classification header.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xband.data.images import ImageSet, image_set
from xband.data.wavelengths import checked_wavelengths, envi_fields, raster_wavelengths
from xband.errors import BadValue, XbandError, option, whole_number
from xband.layout import Layout

ENVI_SUFFIXES = (".hdr", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")
SCENE_SUFFIXES = (*ENVI_SUFFIXES, ".mat", ".tif", ".tiff")
UNLABELLED = 0  # the label-map value of pixels without a class, left out
# ENVI 'data type' codes → NumPy types
_ENVI_TYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8",
               15: "u8"}
_INTERLEAVE = {"bsq": ("bands", "lines", "samples"), "bil": ("lines", "bands", "samples"),
               "bip": ("lines", "samples", "bands")}
PARTS = ("held_out", "train", "all")


@dataclass(frozen=True)
class Raster:
    """A cube (H, W, B) or a label map (H, W, 1) as read, and what its file says beside."""

    values: np.ndarray  # (H, W, B), in memory or memory-mapped
    source: str
    band_names: list[str] | None = None
    wavelengths: tuple[float, ...] | None = None
    nodata: float | None = None
    class_names: list[str] | None = None  # an ENVI classification's names, by label value
    notes: list[str] = field(default_factory=list)


def read_raster_file(path: str | os.PathLike, key: str | None = None, *,
                     what: str = "cube") -> Raster:
    """The cube or label map (`what`) in `path`: ENVI, GeoTIFF, .mat (`key`: the variable) or
    .npy."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ENVI_SUFFIXES or (not suffix and _envi_header(path).is_file()):
        return read_envi(path)
    if suffix in (".tif", ".tiff"):
        return _read_geotiff(path)
    if suffix == ".mat":
        return _read_mat(path, key, what)
    if suffix == ".npy":
        return Raster(np.load(path, mmap_mode="r", allow_pickle=False), str(path))
    raise XbandError(f"{path}: unknown {what} format '{path.suffix}'. Give an ENVI .hdr (with "
                     "its data file), a GeoTIFF, a MATLAB .mat or a .npy file.")


def _envi_header(path: Path) -> Path:
    """The ENVI header of `path`: itself, NAME.hdr beside NAME.img, or NAME.img.hdr."""
    if path.suffix.lower() == ".hdr":
        return path
    beside = path.with_suffix(".hdr")
    return beside if beside.is_file() else path.with_name(path.name + ".hdr")


def _envi_data(header: Path) -> Path:
    """The data file an ENVI header describes: the same name without .hdr, or with one of the
    usual suffixes."""
    stem = header.with_suffix("")
    for candidate in (stem, *(stem.with_suffix(s) for s in ENVI_SUFFIXES[1:])):
        if candidate.is_file() and candidate != header:
            return candidate
    raise XbandError(f"{header}: no data file beside this ENVI header (looked for "
                     f"{stem.name} and {stem.name}.img/.dat/.raw/.bsq/.bil/.bip/.bin). Put the "
                     "header and its data file in one folder, with the same name.")


def read_envi(path: str | os.PathLike) -> Raster:
    """An ENVI image, memory-mapped as (lines, samples, bands), with its header's band centres,
    band names, data ignore value and class names."""
    header = _envi_header(Path(path))
    if not header.is_file():
        raise XbandError(f"{path}: no ENVI header ({header.name}) beside it.")
    fields = envi_fields(header.read_text(encoding="utf-8", errors="replace"))
    data = _envi_data(header) if Path(path).suffix.lower() == ".hdr" else Path(path)
    values = _envi_memmap(data, fields, str(header))
    wavelengths = None
    if "wavelength" in fields:
        numbers = [float(v) for v in _list(fields["wavelength"])]
        wavelengths = checked_wavelengths(numbers, str(header),
                                          units=fields.get("wavelength units", "nm").lower(),
                                          n_bands=values.shape[2])
    names = _list(fields["band names"]) if "band names" in fields else None
    ignore = fields.get("data ignore value")
    notes = []
    if "bbl" in fields:
        bad = [i + 1 for i, v in enumerate(_list(fields["bbl"])) if float(v) == 0]
        if bad:
            notes.append(f"{header}: the header marks {len(bad)} bands bad (bbl = 0: bands "
                         f"{_ranges(bad)}); xband uses every band the file holds")
    return Raster(values, str(data),
                  band_names=names if names and len(names) == values.shape[2] else None,
                  wavelengths=wavelengths, nodata=None if ignore is None else float(ignore),
                  class_names=_list(fields["class names"]) if "class names" in fields else None,
                  notes=notes)


def _envi_memmap(data: Path, fields: dict[str, str], header: str) -> np.ndarray:
    """The data file memory-mapped and viewed as (lines, samples, bands)."""
    try:
        dims = {k: int(fields[k]) for k in ("samples", "lines", "bands")}
        code = int(fields.get("data type", "4"))
        offset = int(fields.get("header offset", "0"))
        big = int(fields.get("byte order", "0")) == 1
    except (KeyError, ValueError) as err:
        raise XbandError(f"{header}: the ENVI header lacks or garbles {err}; it needs samples, "
                         "lines, bands and data type.") from None
    interleave = fields.get("interleave", "bsq").lower()
    if code not in _ENVI_TYPES or interleave not in _INTERLEAVE:
        raise XbandError(f"{header}: data type {code} / interleave '{interleave}' is not "
                         "supported; xband reads data types 1-5, 12-15 and bsq, bil, bip.")
    dtype = np.dtype(_ENVI_TYPES[code]).newbyteorder(">" if big else "<")
    order = _INTERLEAVE[interleave]
    shape = tuple(dims[axis] for axis in order)
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    if data.stat().st_size < needed:
        raise XbandError(f"{data}: holds {data.stat().st_size} bytes but its header {header} "
                         f"describes {needed} ({' × '.join(map(str, shape))} {dtype.name}); the "
                         "file is truncated or the header is not its own.")
    stored = np.memmap(data, dtype=dtype, mode="r", offset=offset, shape=shape)
    return stored.transpose([order.index(a) for a in ("lines", "samples", "bands")])


def _list(value: str) -> list[str]:
    """The items of an ENVI list value '{a, b, c}'."""
    return [item.strip() for item in value.strip().strip("{}").split(",") if item.strip()]


def _ranges(numbers: Sequence[int]) -> str:
    """1,2,3,7 → '1-3, 7'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def _read_geotiff(path: Path) -> Raster:
    """A GeoTIFF read whole (GDAL), with its band descriptions, nodata and band centres."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                values = np.moveaxis(src.read(), 0, 2)
                names = [str(d).strip() if d else "" for d in src.descriptions]
                nodata = {float(v) for v in src.nodatavals if v is not None}
                wavelengths = raster_wavelengths(src)
    except rasterio.errors.RasterioIOError as err:
        raise XbandError(f"{path}: cannot be read as a GeoTIFF ({err}).") from None
    return Raster(values, str(path), band_names=names if all(names) else None,
                  wavelengths=wavelengths, nodata=nodata.pop() if len(nodata) == 1 else None)


def _read_mat(path: Path, key: str | None, what: str) -> Raster:
    """A variable of a MATLAB file (v5 through scipy; v7.3 is HDF5, its axes reversed)."""
    arrays = _mat_arrays(path)
    if key is None:
        rank = 3 if what == "cube" else 2
        fitting = [k for k, v in arrays.items() if len(v.shape) == rank]
        if len(fitting) != 1:
            flag = (option("cube_key= (read_data: x_key=)", "--x-key") if what == "cube"
                    else option("label_key= (read_data: y_key=)", "--y-key"))
            raise XbandError(f"{path}: holds {_listing(arrays)}; {len(fitting)} of them have "
                             f"{rank} axes. Name the {what} with {flag}.")
        key = fitting[0]
    if key not in arrays:
        raise XbandError(f"{path}: no variable '{key}' (variables: {_listing(arrays)}).")
    return Raster(np.asarray(arrays[key]), f"{path} ('{key}')")


def _listing(arrays: dict) -> str:
    return ", ".join(f"'{k}' {tuple(v.shape)}" for k, v in arrays.items()) or "no arrays"


def _mat_arrays(path: Path) -> dict:
    """A .mat file's numeric arrays by name: loaded (v5), or HDF5 datasets with their axes
    put back in MATLAB's order (v7.3)."""
    import h5py
    import scipy.io

    try:
        loaded = scipy.io.loadmat(path)
    except (NotImplementedError, OSError, ValueError) as err:
        if not h5py.is_hdf5(path):
            raise XbandError(f"{path}: cannot be read as a MATLAB file ({err}).") from None
        with h5py.File(path, "r") as f:  # v7.3: HDF5, column-major: h5py sees the axes reversed
            return {k: np.asarray(v).T for k, v in f.items()
                    if isinstance(v, h5py.Dataset) and v.dtype.kind in "biuf"}
    return {k: v for k, v in loaded.items()
            if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}


class PixelNames(Sequence):
    """What messages call each pixel of a scene set: 'SOURCE, pixel (row r, column c)'."""

    def __init__(self, source: str, rows: np.ndarray, cols: np.ndarray):
        self.source, self.rows, self.cols = source, rows, cols

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return f"{self.source}, pixel (row {self.rows[i]}, column {self.cols[i]})"


class ScenePixels:
    """The labelled pixels of a cube (H, W, B) as an `ImageSource`: (N, B, p, p), channels-first,
    a pixel's spectrum (p = 1) or the p × p patch centred on it, read on demand. Patches reach
    past the scene's edge mirrored ('reflect': row -1 is row 1) or as zeros ('zero')."""

    layout = Layout.CHANNELS_FIRST

    def __init__(self, cube: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int = 1,
                 border: str = "reflect"):
        self.cube, self.rows, self.cols = cube, rows, cols  # rows, cols: (N,) pixel positions
        self.offsets = np.arange(patch) - patch // 2
        self.border = border
        self.shape = (len(rows), cube.shape[2], patch, patch)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        height, width = self.cube.shape[:2]
        rr = self.rows[indices][:, None] + self.offsets  # (K, p)
        cc = self.cols[indices][:, None] + self.offsets
        inside = ((rr >= 0) & (rr < height))[:, :, None] & ((cc >= 0) & (cc < width))[:, None, :]
        rr, cc = _reflect(rr, height), _reflect(cc, width)
        block = np.asarray(self.cube[rr[:, :, None], cc[:, None, :]], dtype=np.float32)
        if self.border == "zero":
            block[~inside] = 0
        return np.ascontiguousarray(block.transpose(0, 3, 1, 2))  # (K, B, p, p)


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Positions past either end mirrored back inside (-1 → 1, size → size - 2)."""
    index = np.abs(index)
    return np.where(index >= size, 2 * (size - 1) - index, index)


def held_out_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: `fraction` of each class's pixels (rounded, at least one of a class with two or
    more), drawn with `seed`; the same labels, fraction and seed give the same pixels."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        count = int(round(fraction * len(members)))
        count = max(count, 1) if len(members) > 1 else count
        held[rng.permutation(members)[:count]] = True
    return held


def read_scene(cube: str | os.PathLike | np.ndarray, labels: str | os.PathLike | np.ndarray
               | None = None, *, cube_key: str | None = None, label_key: str | None = None,
               patch_size: int = 1, class_values: Sequence[int] | None = None,
               held_out: float | None = None, part: str | None = None, split_seed: int = 0,
               border: str = "reflect", **description) -> ImageSet:
    """The labelled pixels of a scene as an ImageSet: spectra (patch_size 1, for per-pixel
    models) or patch_size × patch_size patches around them (for patch models).

    cube: a file (ENVI .hdr, GeoTIFF, .mat with `cube_key`, .npy) or an (H, W, B) array;
    labels: the label map, a file (a .mat with `label_key`; default: the cube's own .mat) or an
    (H, W) array. Pixels labelled 0 are left out. class_values: the label-map values of the
    model's outputs, in output order (default: the values present, sorted); pixels of other
    values are left out. held_out: the fraction of each class's pixels held out, drawn with
    `split_seed` (the same every time); part: "held_out" (the default with held_out), "train"
    or "all". border: patches past the edge "reflect" (mirrored) or "zero". `description`: what
    `image_set` takes (bands, classes, wavelengths, preprocess, …), winning over the files.
    """
    patch, part = _patch_size(patch_size), _part(held_out, part)
    if border not in ("reflect", "zero"):
        raise BadValue("border", border, "'reflect' or 'zero'")
    cube_raster = _raster(cube, cube_key, "cube")
    label_raster = _label_raster(labels, cube, label_key)
    label_map = _label_values(label_raster)
    values = _cube_axes(cube_raster, label_map.shape, label_raster.source)
    if patch > min(values.shape[:2]):
        raise XbandError(f"{cube_raster.source}: patch size {patch} is larger than the scene "
                         f"({values.shape[0]}×{values.shape[1]} pixels).")
    values_used = class_values if class_values is not None else _present(label_map)
    rows, cols, classes, notes = _pixels(label_map, values_used, class_values is None,
                                         label_raster.source)
    if held_out is not None:
        keep = held_out_mask(classes, held_out, split_seed)
        keep = {"held_out": keep, "train": ~keep}.get(part, np.ones_like(keep))
        rows, cols, classes = rows[keep], cols[keep], classes[keep]
        notes.append(_split_note(held_out, split_seed, part, int(keep.sum())))
    if patch > 1:
        notes.append(f"{patch}×{patch}-pixel patches around each labelled pixel; past the "
                     f"scene's edge {'mirrored' if border == 'reflect' else 'zeros'}")
    found = {"bands": cube_raster.band_names, "nodata": cube_raster.nodata,
             "wavelengths": None if description.get("sensor") else cube_raster.wavelengths,
             "classes": _class_names(label_raster.class_names, values_used),
             "notes": [*cube_raster.notes, *notes]}
    merged = {k: v for k, v in found.items() if v is not None}
    merged.update({k: v for k, v in description.items() if v is not None})
    return image_set(ScenePixels(values, rows, cols, patch, border), classes,
                     source=cube_raster.source,
                     item_names=PixelNames(cube_raster.source, rows, cols), **merged)


def _patch_size(value) -> int:
    patch = whole_number(value, "patch_size")
    if patch % 2 == 0:
        raise BadValue("patch_size", value, "an odd whole number (the labelled pixel in the "
                       "middle): 1 for spectra, 9 for 9×9 patches")
    return patch


def _part(held_out: float | None, part: str | None) -> str:
    """The part of the split to read: "held_out" by default with a split, "all" without."""
    if held_out is not None:
        try:
            fraction = float(held_out)
        except (TypeError, ValueError):
            fraction = float("nan")
        if not 0 < fraction < 1:
            raise BadValue("held_out", held_out, "a fraction between 0 and 1 (0.25 holds out a "
                           "quarter of each class's pixels)")
    part = part or ("held_out" if held_out is not None else "all")
    if part not in PARTS:
        raise BadValue("part", part, f"one of {', '.join(PARTS)}")
    if part != "all" and held_out is None:
        raise XbandError(f"part '{part}' needs a split: give held_out= (--held-out), the "
                         "fraction of each class's pixels held out.")
    return part


def _raster(given, key: str | None, what: str) -> Raster:
    """A file read as a Raster, or an array taken as one ((H, W, B); a label map (H, W))."""
    if isinstance(given, Raster):
        return given
    if isinstance(given, str | os.PathLike):
        if not Path(given).exists():
            raise XbandError(f"{given}: no such {what} file.")
        return read_raster_file(given, key, what=what)
    array = np.asarray(given)
    return Raster(array if array.ndim != 2 else array[:, :, None], f"{what} array")


def _label_raster(labels, cube, label_key: str | None) -> Raster:
    """The label map: given, or the label variable of the cube's own .mat file."""
    if labels is not None:
        return _raster(labels, label_key, "label map")
    if isinstance(cube, str | os.PathLike) and Path(cube).suffix.lower() == ".mat":
        return read_raster_file(cube, label_key, what="label map")
    raise XbandError(f"{cube if isinstance(cube, str | os.PathLike) else 'the cube'}: give the "
                     f"label map with {option('labels=', '--labels')} (a file of the same "
                     "height and width, 0 where a pixel has no class).")


def _label_values(raster: Raster) -> np.ndarray:
    """The label map (H, W) as whole numbers, checked."""
    values = np.asarray(raster.values)
    values = values[:, :, 0] if values.ndim == 3 and values.shape[2] == 1 else values
    if values.ndim != 2:
        raise XbandError(f"{raster.source}: a label map has one value per pixel (height, "
                         f"width); this holds shape {values.shape}.")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (np.mod(values, 1) != 0)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise XbandError(f"{raster.source}: label {values[r, c]} at pixel (row {r}, column "
                             f"{c}) is not a whole class number ({int(bad.sum())} such pixels).")
    return values.astype(np.int64)


def _cube_axes(cube: Raster, size: tuple[int, int], labels: str) -> np.ndarray:
    """The cube as (H, W, B) for a label map of `size`: as stored, or bands first (B, H, W)."""
    values = cube.values
    if values.ndim == 3 and tuple(values.shape[:2]) == tuple(size):
        return values
    if values.ndim == 3 and tuple(values.shape[1:]) == tuple(size):
        return values.transpose(1, 2, 0)
    raise XbandError(f"{cube.source}: the cube has shape {tuple(values.shape)} but the label "
                     f"map {labels} is {size[0]}×{size[1]} pixels; give the label map of this "
                     "scene (a cube is (height, width, bands) or (bands, height, width)).")


def _present(label_map: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(label_map) if v != UNLABELLED]


def _pixels(label_map: np.ndarray, class_values: Sequence[int], default: bool,
            source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Rows, columns and class positions (in `class_values` order) of the labelled pixels of
    those values, in row-major order, and notes on what was left out."""
    lookup = {int(v): i for i, v in enumerate(class_values)}
    if len(lookup) != len(class_values) or UNLABELLED in lookup:
        raise BadValue("class_values", list(class_values), "distinct label-map values other "
                       f"than {UNLABELLED} (unlabelled), in the model's output order")
    rows, cols = np.nonzero(label_map != UNLABELLED)
    values = label_map[rows, cols]
    chosen = np.isin(values, list(lookup))
    if not chosen.any():
        raise XbandError(f"{source}: no pixel has a label among {list(class_values)}.")
    origin = ("the values present, sorted; give class_values / --class-values in the model's "
              "output order otherwise" if default else "as given")
    notes = [f"classes: label-map values {', '.join(map(str, lookup))} → model outputs "
             f"0-{len(lookup) - 1} ({origin}); {int((label_map == UNLABELLED).sum())} pixels "
             f"labelled {UNLABELLED} (unlabelled) left out"]
    if not chosen.all():
        other = sorted(set(np.unique(values[~chosen]).tolist()))
        notes.append(f"{int((~chosen).sum())} labelled pixels of values {other} left out (not "
                     "among the class values)")
    classes = np.array([lookup[int(v)] for v in values[chosen]], dtype=np.int64)
    return rows[chosen], cols[chosen], classes, notes


def _class_names(names: list[str] | None, class_values: Sequence[int]) -> list[str]:
    """An ENVI classification's names of the class values, else "class V" by label value."""
    if names is not None and max(class_values) < len(names):
        return [names[v] for v in class_values]
    return [f"class {v}" for v in class_values]


def _split_note(held_out: float, seed: int, part: str, n: int) -> str:
    share = {"held_out": f"the held-out {held_out:.0%}", "train": f"the other {1 - held_out:.0%}",
             "all": "all"}[part]
    return (f"split: {share} of each class's labelled pixels ({n} pixels), drawn with seed "
            f"{seed} (the same pixels every time with this seed and fraction)")
