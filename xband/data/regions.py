"""Spectral regions: contiguous wavelength windows that become the features of a hyperspectral
explanation.

`--regions auto` cuts the spectrum into fixed windows of `AUTO_WIDTH_NM` ([k·w, (k+1)·w), the
last one closed at its top), `--regions 50nm` into windows of another width, and
`--regions "VIS=400-700;…"` by named ranges. Neighbouring bands are so correlated that removing
one changes nothing; a region removed whole does, and the region count (not the band count) sets
what the perturbation methods cost.

No window spans a gap in the band centres (bands removed around the water-vapour absorptions
at ~1400 and ~1900 nm, say): the spectrum is cut at each gap first, a window's edge at a gap is
named by the band centre there ("1300-1388", "1445-1500"), and a sliver of a window at the
edge of a stretch (less than half a window of bands) joins its neighbour ("1700-1825").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xband.data.wavelengths import spectral_gaps
from xband.errors import XbandError, option

AUTO_WIDTH_NM = 100.0  # why 100 nm: README "Hyperspectral" (scripts/hyperspectral.py)
AUTO_ABOVE_BANDS = 30  # more bands than this, wavelengths known, no groups: regions by default
_EXAMPLE = '"VIS=400-700;RE=700-750;NIR=750-1300;SWIR1=1500-1800;SWIR2=2000-2500"'


@dataclass(frozen=True)
class RegionSpec:
    """How to cut the spectrum: windows of `width` nm, or named [low, high) ranges in nm."""

    text: str
    width: float | None = None
    ranges: Mapping[str, tuple[float, float]] | None = None

    @property
    def per_band(self) -> bool:
        """'none': explain band by band, whatever the band count."""
        return self.width is None and self.ranges is None


def parse_regions(text: str) -> RegionSpec:
    """'auto', '50nm' (windows of that width), 'VIS=400-700;NIR=750-1300' (named ranges), or
    'none' (band by band)."""
    spec = str(text).strip()
    if spec.lower() == "none":
        return RegionSpec(spec)
    if spec.lower() == "auto":
        return RegionSpec(spec, width=AUTO_WIDTH_NM)
    width = re.fullmatch(r"(\d+(?:\.\d*)?)\s*nm", spec, flags=re.I)
    if width:
        if float(width.group(1)) <= 0:
            raise XbandError(f"regions '{spec}': the window width must be above 0 nm.")
        return RegionSpec(spec, width=float(width.group(1)))
    ranges: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        found = re.fullmatch(r"([^=]+?)\s*=\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*(?:nm)?",
                             part, flags=re.I)
        if not found or float(found.group(2)) >= float(found.group(3)):
            raise XbandError(f"region '{part}' is not NAME=LOW-HIGH in nm with LOW below HIGH; "
                             f"write e.g. {option('regions=', '--regions ')}{_EXAMPLE}, or "
                             "'auto', or a window width such as '50nm'.")
        if found.group(1) in ranges:
            raise XbandError(f"region '{found.group(1)}' is named twice in '{spec}'.")
        ranges[found.group(1)] = (float(found.group(2)), float(found.group(3)))
    if not ranges:
        raise XbandError(f"regions '{spec}' names no region; write 'auto', a width such as "
                         f"'50nm', or {_EXAMPLE}.")
    return RegionSpec(spec, ranges=ranges)


def band_regions(spec: RegionSpec, wavelengths: Sequence[float],
                 band_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Band positions per region, regions in wavelength order. With named ranges, the bands
    outside every range form regions of their own, one per contiguous run, named by their
    wavelengths ("1310-1490")."""
    wavelength = np.asarray(wavelengths, dtype=np.float64)
    if spec.width is not None:
        return _windows(wavelength, spec.width)
    owner = np.full(len(wavelength), -1)
    names = list(spec.ranges)
    starts = [low for low, _ in spec.ranges.values()]
    for r, (low, high) in enumerate(spec.ranges.values()):  # a band at HIGH: here unless it starts one
        inside = (wavelength >= low) & ((wavelength < high) | (
            (wavelength == high) & (high not in starts)))
        if not inside.any():
            raise XbandError(f"region '{names[r]}' ({low:g}-{high:g} nm) holds no band: the bands "
                             f"run {wavelength.min():g}-{wavelength.max():g} nm. Change or drop "
                             "that range.")
        twice = np.flatnonzero(inside & (owner >= 0))
        if len(twice):
            b = twice[0]
            raise XbandError(f"band {band_names[b]} ({wavelength[b]:g} nm) is in regions "
                             f"'{names[owner[b]]}' and '{names[r]}'; ranges must not overlap "
                             "(each is LOW ≤ λ < HIGH, or ≤ HIGH where no range starts at HIGH).")
        owner[inside] = r
    return _in_wavelength_order(owner, names, wavelength)


def _windows(wavelength: np.ndarray, width: float) -> dict[str, tuple[int, ...]]:
    """Band positions per window of `width` nm, in wavelength order, cut at every gap in the
    band centres; a window's edge at a gap or a merged sliver is named by its band centre."""
    order = np.argsort(wavelength, kind="stable")
    centres = wavelength[order]
    window = np.floor(centres / width).astype(np.int64)
    top = centres == centres.max()  # the last window is closed at its top
    window[top & (window * width == centres) & (window > window.min())] -= 1
    regions: dict[str, tuple[int, ...]] = {}
    for stretch, (after_gap, before_gap) in _stretches(centres):
        runs = np.split(stretch, np.flatnonzero(np.diff(window[stretch])) + 1)
        edges = [[window[r[0]] * width, (window[r[0]] + 1) * width] for r in runs]
        if after_gap:
            edges[0][0] = centres[runs[0][0]]
        if before_gap:
            edges[-1][1] = centres[runs[-1][-1]]
        for end in (0, -1):  # a sliver at either end of the stretch joins its neighbour
            if len(runs) > 1 and np.ptp(centres[runs[end]]) < width / 2:
                inner = 1 if end == 0 else -2
                runs[inner] = np.sort(np.concatenate([runs[end], runs[inner]]))
                edges[inner][end] = centres[runs[end][end]]
                del runs[end], edges[end]
        for run, (low, high) in zip(runs, edges, strict=True):
            name = _span(low, high)
            regions[name] = tuple(sorted(regions.get(name, ()) + tuple(int(b) for b in order[run])))
    return regions


def _stretches(centres: np.ndarray) -> list[tuple[np.ndarray, tuple[bool, bool]]]:
    """Positions into sorted `centres` of each stretch between gaps, with whether a gap lies
    before and after it."""
    gaps = spectral_gaps(centres)
    before = np.array([low for low, _ in gaps])
    cuts = np.flatnonzero(np.isin(centres[:-1], before) & (centres[1:] > centres[:-1])) + 1
    stretches = np.split(np.arange(len(centres)), cuts)
    return [(s, (i > 0, i < len(stretches) - 1)) for i, s in enumerate(stretches)]


def _in_wavelength_order(owner: np.ndarray, names: list[str],
                         wavelength: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Regions from each band's range (-1: none), the unowned bands in runs of their own, cut
    at gaps in the band centres."""
    runs: list[tuple[int, list[int]]] = []  # (range or -1, bands), in wavelength order
    gap_starts = {low for low, _ in spectral_gaps(wavelength)}
    for b in np.argsort(wavelength, kind="stable"):
        last = runs[-1][1][-1] if runs else None
        across_gap = (last is not None and owner[b] < 0 and wavelength[last] in gap_starts
                      and wavelength[b] > wavelength[last])
        if runs and runs[-1][0] == owner[b] and not across_gap:
            runs[-1][1].append(int(b))
        else:
            runs.append((int(owner[b]), [int(b)]))
    regions: dict[str, tuple[int, ...]] = {}
    for r, members in runs:
        name = names[r] if r >= 0 else _span(wavelength[members].min(), wavelength[members].max())
        regions[name] = tuple(sorted(regions.get(name, ()) + tuple(members)))
    return regions


def _span(low: float, high: float) -> str:
    return f"{low:.0f}-{high:.0f}"


def region_bounds(regions: Mapping[str, Sequence[int]],
                  wavelengths: Sequence[float]) -> dict[str, tuple[float, float]]:
    """Each region's first and last band wavelength (nm), for plots and tables."""
    wavelength = np.asarray(wavelengths, dtype=np.float64)
    return {name: (float(wavelength[list(m)].min()), float(wavelength[list(m)].max()))
            for name, m in regions.items()}


def region_centres(regions: Mapping[str, Sequence[int]],
                   wavelengths: Sequence[float]) -> list[float]:
    """Each region's mean band wavelength (nm)."""
    wavelength = np.asarray(wavelengths, dtype=np.float64)
    return [float(wavelength[list(m)].mean()) for m in regions.values()]


def check_regions_possible(wavelengths: Sequence[float] | None, band_groups_given: bool) -> None:
    """Regions need wavelengths and replace band groups: say what to do otherwise."""
    if wavelengths is None:
        raise XbandError(f"{option('regions', '--regions')} needs each band's wavelength: give "
                         f"{option('wavelengths=', '--wavelengths ')}FILE (one nm value a line, "
                         "or an ENVI .hdr), or images whose GeoTIFF / ENVI metadata carries them.")
    if band_groups_given:
        raise XbandError(f"give {option('band_groups', '--band-groups')} or "
                         f"{option('regions', '--regions')}, not both: regions are band groups "
                         "by wavelength.")
