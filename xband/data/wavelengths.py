"""Centre wavelengths of the bands, in nm: from a text file (one value per band), an ENVI header
(`wavelength = {...}`), or a raster's band metadata (GDAL's ENVI and GeoTIFF band tags).

Hyperspectral images name their bands by wavelength; regions (xband.data.regions) and the
importance-against-wavelength plots need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xband.errors import XbandError, option

_MICROMETRES = ("micrometers", "micrometres", "micrometer", "micrometre", "microns", "micron", "um",
                "µm")
_NANOMETRES = ("nanometers", "nanometres", "nanometer", "nanometre", "nm")
_FIX = ("give one centre wavelength in nm per band, in band order ("
        f"{option('wavelengths=', '--wavelengths')} with a .txt file of one value a line, or an "
        "ENVI .hdr)")


def read_wavelengths(path: str | os.PathLike) -> tuple[float, ...]:
    """Wavelengths (nm) from an ENVI header (`.hdr`, its `wavelength units` honoured) or a text
    file of numbers, one per band (lines or commas; `#` starts a comment)."""
    path = Path(path)
    if not path.is_file():
        raise XbandError(f"{path}: no such wavelength file; {_FIX}.")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise XbandError(f"{path}: cannot be read ({err.strerror}); {_FIX}.") from None
    if path.suffix.lower() == ".hdr" or text.lstrip().startswith("ENVI"):
        values, units = envi_wavelengths(text, str(path))
    else:
        values, units = _numbers(text, str(path)), "nm"
    return checked_wavelengths(values, str(path), units=units)


def envi_fields(text: str) -> dict[str, str]:
    """An ENVI header's fields: lower-case name → value as written (lists keep their braces)."""
    return {key.strip().lower(): value.strip() for key, value in re.findall(
        r"^\s*([A-Za-z][A-Za-z0-9 _]*?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, flags=re.M)}


def envi_wavelengths(text: str, source: str) -> tuple[list[float], str]:
    """The `wavelength` list and `wavelength units` of an ENVI header's text."""
    fields = envi_fields(text)
    if "wavelength" not in fields:
        raise XbandError(f"{source}: the ENVI header has no 'wavelength = {{...}}' field; {_FIX}.")
    values = _numbers(fields["wavelength"].strip("{}"), source)
    return values, fields.get("wavelength units", "nm").lower()


def _numbers(text: str, source: str) -> list[float]:
    values = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        for item in filter(None, re.split(r"[\s,;]+", line.split("#")[0].strip())):
            try:
                values.append(float(item))
            except ValueError:
                raise XbandError(f"{source}, line {line_no}: '{item}' is not a wavelength; "
                                 f"{_FIX}.") from None
    return values


def checked_wavelengths(values: Sequence[float], source: str, *, units: str = "nm",
                        n_bands: int | None = None) -> tuple[float, ...]:
    """`values` in nm, checked: finite, above 0, one per band when `n_bands` is known.
    Micrometre units are converted; values that look like micrometres under nm are refused."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if units in _MICROMETRES:
        array = array * 1000.0
    elif units not in _NANOMETRES:
        raise XbandError(f"{source}: wavelength units '{units}' are not nm or micrometres; {_FIX}.")
    if not len(array):
        raise XbandError(f"{source}: holds no wavelengths; {_FIX}.")
    bad = np.flatnonzero(~np.isfinite(array) | (array <= 0))
    if len(bad):
        raise XbandError(f"{source}: wavelength {bad[0] + 1} is {array[bad[0]]:g}; every "
                         f"wavelength must be a number above 0 nm.")
    if array.max() < 30:
        raise XbandError(f"{source}: the wavelengths run {array.min():g}–{array.max():g}, which "
                         "look like micrometres; give nanometres (multiply by 1000), or an ENVI "
                         "header with 'wavelength units = Micrometers'.")
    if n_bands is not None:
        check_count(array, n_bands, source)
    return tuple(float(v) for v in array)


def check_count(wavelengths: Sequence[float], n_bands: int, source: str) -> None:
    """One wavelength per band, else an error that says both counts."""
    if len(wavelengths) != n_bands:
        raise XbandError(f"{source} gives {len(wavelengths)} wavelengths but the images have "
                         f"{n_bands} bands; {_FIX}.")


def raster_wavelengths(src) -> tuple[float, ...] | None:
    """Wavelengths (nm) from an open rasterio dataset's band metadata, when every band has one:
    GDAL's `wavelength` (+ `wavelength_units`) band items (ENVI files, GeoTIFFs written from
    them) or the IMAGERY domain's `CENTRAL_WAVELENGTH_UM`."""
    values = []
    for band in range(1, src.count + 1):
        tags = {k.lower(): v for k, v in src.tags(band).items()}
        imagery = src.tags(band, ns="IMAGERY")
        if "wavelength" in tags:
            units = tags.get("wavelength_units", "nm").strip().lower()
            value = _number(tags["wavelength"]) * (1000.0 if units in _MICROMETRES else 1.0)
        elif "CENTRAL_WAVELENGTH_UM" in imagery:
            value = _number(imagery["CENTRAL_WAVELENGTH_UM"]) * 1000.0
        else:
            return None
        values.append(value)
    good = all(np.isfinite(values)) and min(values) > 0
    return tuple(values) if good and max(values) >= 30 else None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


GAP_RATIO = 1.6  # a step this many times the usual band spacing marks removed bands
# the strong atmospheric water-vapour absorptions, nm, where reflectance products are noisy or
# removed (the "corrected" AVIRIS scenes drop their bands): bands within WATER_VAPOUR_MARGIN_NM of
# one sit on its shoulder
WATER_VAPOUR_NM = {"~1400 nm": (1350.0, 1450.0), "~1900 nm": (1800.0, 1950.0)}
WATER_VAPOUR_MARGIN_NM = 50.0


def spectral_gaps(wavelengths: Sequence[float]) -> list[tuple[float, float]]:
    """(last centre before, first centre after) of each gap in the band centres, in wavelength
    order: a step between neighbouring centres above GAP_RATIO times the usual spacing there
    (the larger of the median step over the neighbouring steps and over all steps), as where
    water-vapour bands were removed. Two detectors' overlap (EnMAP near 950 nm) is no gap."""
    centres = np.unique(np.asarray(wavelengths, dtype=np.float64))
    if len(centres) < 3:
        return []
    steps = np.diff(centres)
    overall = np.median(steps)
    gaps = []
    for i, step in enumerate(steps):
        near = np.concatenate([steps[max(0, i - 3):i], steps[i + 1:i + 4]])
        usual = max(float(np.median(near)) if len(near) else overall, overall)
        if step > GAP_RATIO * usual:
            gaps.append((float(centres[i]), float(centres[i + 1])))
    return gaps


def near_water_vapour(low: float, high: float) -> str | None:
    """The water-vapour absorption ("~1400 nm") whose window, widened by
    WATER_VAPOUR_MARGIN_NM, overlaps [low, high] nm; None when none does."""
    for name, (start, end) in WATER_VAPOUR_NM.items():
        if low <= end + WATER_VAPOUR_MARGIN_NM and high >= start - WATER_VAPOUR_MARGIN_NM:
            return name
    return None
