"""What the bands are: sensor presets (names, centre wavelengths, spectral groups) and band groups.

A group partitions the bands: group methods remove or shuffle a group's bands together (one
feature per group), the others sum their band scores over the group's bands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xband.data.wavelengths import read_wavelengths
from xband.errors import XbandError, option

OTHER = "other"  # the group of the bands that no user-defined group names


@dataclass(frozen=True)
class Band:
    name: str
    wavelength_nm: float  # centre wavelength
    group: str  # spectral region


@dataclass(frozen=True)
class Sensor:
    name: str
    title: str
    bands: tuple[Band, ...]

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def wavelengths(self) -> list[float]:
        return [b.wavelength_nm for b in self.bands]

    def groups(self) -> dict[str, list[str]]:
        """The sensor's spectral groups, in band order."""
        groups: dict[str, list[str]] = {}
        for band in self.bands:
            groups.setdefault(band.group, []).append(band.name)
        return groups


_VIS, _RE, _NIR, _SWIR, _ATM = "visible", "red edge", "NIR", "SWIR", "atmospheric"
# Sentinel-2A MSI centre wavelengths (ESA, S2 MSI user guide)
_S2 = {b.name: b for b in (
    Band("B01", 443, _ATM), Band("B02", 490, _VIS), Band("B03", 560, _VIS), Band("B04", 665, _VIS),
    Band("B05", 705, _RE), Band("B06", 740, _RE), Band("B07", 783, _RE), Band("B08", 842, _NIR),
    Band("B8A", 865, _NIR), Band("B09", 945, _ATM), Band("B10", 1375, _ATM),
    Band("B11", 1610, _SWIR), Band("B12", 2190, _SWIR),
)}
_S2_ESA = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
_S2_EUROSAT = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12",
               "B8A"]


def _s2(order: Sequence[str]) -> tuple[Band, ...]:
    return tuple(_S2[name] for name in order)


def _spectral_group(nm: float) -> str:
    if nm < 700:
        return _VIS
    if nm < 750:
        return _RE
    return _NIR if nm < 1300 else _SWIR


_ENMAP = tuple(Band(f"B{number}", nm, _spectral_group(nm)) for number, nm in enumerate(
    read_wavelengths(Path(__file__).with_name("sensor_data") / "enmap.txt"), start=1))
# the water-vapour bands HySpecNet-11k (and torchgeo's EnMAP defaults) leave out
_ENMAP_WATER_VAPOUR = {f"B{n}" for n in [*range(127, 142), *range(161, 168)]}

SENSORS: dict[str, Sensor] = {s.name: s for s in (
    Sensor("sentinel2", "Sentinel-2 MSI L1C, 13 bands, ESA order (B8A after B08)", _s2(_S2_ESA)),
    Sensor("eurosat", "Sentinel-2 MSI L1C, 13 bands, EuroSAT-MS order (B8A last)",
           _s2(_S2_EUROSAT)),
    Sensor("sentinel2-l2a", "Sentinel-2 MSI L2A, 12 bands (no B10), ESA order",
           _s2([b for b in _S2_ESA if b != "B10"])),
    Sensor("landsat8", "Landsat 8/9 OLI reflective bands B1-B7", (
        Band("B1", 443, _ATM), Band("B2", 482, _VIS), Band("B3", 561, _VIS), Band("B4", 655, _VIS),
        Band("B5", 865, _NIR), Band("B6", 1609, _SWIR), Band("B7", 2201, _SWIR))),
    Sensor("rgb", "red, green, blue", (
        Band("red", 650, _VIS), Band("green", 550, _VIS), Band("blue", 470, _VIS))),
    Sensor("rgbn", "red, green, blue, near infrared", (
        Band("red", 650, _VIS), Band("green", 550, _VIS), Band("blue", 470, _VIS),
        Band("nir", 842, _NIR))),
    Sensor("enmap", "EnMAP HSI, 224 bands 418-2445 nm (VNIR B1-B91, SWIR B92-B224)", _ENMAP),
    Sensor("enmap-hyspecnet", "EnMAP HSI without the water-vapour bands B127-B141 and "
           "B161-B167: 202 bands, as in HySpecNet-11k",
           tuple(b for b in _ENMAP if b.name not in _ENMAP_WATER_VAPOUR)),
)}


# hyperspectral sensors people name, for which xband ships no band-centre list: each flight's
# or product's own metadata holds the measured centres (no published nominal list could be
# included with its source and licence; docs/hyperspectral.md)
_CENTRES_FROM_PRODUCT = {
    "aviris": "AVIRIS-Classic (224 channels, 400-2500 nm): the centres are recalibrated every "
              "flight season and ship with each scene (its ENVI .hdr 'wavelength' field, or the "
              "flight's .spc file)",
    "aviris-classic": "see 'aviris'",
    "aviris-ng": "AVIRIS-NG (about 425 channels at 5 nm, 380-2510 nm): each flight line's ENVI "
                 ".hdr holds its 'wavelength' list",
    "prisma": "PRISMA (about 240 channels, 400-2505 nm): the centres are measured per product "
              "and listed in its HDF5 metadata",
    "desis": "DESIS (235 channels, 400-1000 nm): each product's metadata XML lists the centres",
    "hymap": "HyMap (126 channels, 450-2500 nm): the centres differ between instruments and "
             "seasons and ship with each scene's header",
}


def get_sensor(name: str) -> Sensor:
    """The preset `name`; for a hyperspectral sensor whose centres ship with each scene, a
    message saying where they are and how to give them."""
    key = name.lower()
    if key in _CENTRES_FROM_PRODUCT:
        detail = _CENTRES_FROM_PRODUCT[key]
        if detail.startswith("see "):
            detail = _CENTRES_FROM_PRODUCT["aviris"]
        raise XbandError(
            f"sensor '{name}': xband ships no band-centre list for {detail}. Give them with "
            f"{option('wavelengths=', '--wavelengths ')}FILE (the scene's ENVI .hdr, or a text "
            "file of one nm value a line); reading the scene's ENVI .hdr as the data takes them "
            "from it.")
    try:
        return SENSORS[key]
    except KeyError:
        raise XbandError(
            f"unknown sensor '{name}'. Known: {', '.join(SENSORS)} (`xband sensors` lists their "
            f"bands); or name the bands with {option('bands=', '--bands')}."
        ) from None


def sensor_table() -> str:
    """One paragraph per sensor: name, title, bands with centre wavelengths and groups."""
    lines = []
    for s in SENSORS.values():
        lines.append(f"{s.name}: {s.title}")
        many = len(s.bands) > 13
        shown = (*s.bands[:3], None, *s.bands[-2:]) if many else s.bands
        lines.append("  " + ", ".join("…" if b is None else f"{b.name} {b.wavelength_nm:g} nm"
                                      for b in shown))
        if many:
            lines.append(f"  ({len(s.bands)} bands: explained by spectral region, see --regions)")
        else:
            lines.append("  groups: " + "; ".join(f"{g}={','.join(m)}"
                                                  for g, m in s.groups().items()))
    lines.append("Band centres that ship with each scene (give --wavelengths the scene's ENVI "
                 ".hdr): " + ", ".join(k for k, v in _CENTRES_FROM_PRODUCT.items()
                                       if not v.startswith("see ")))
    return "\n".join(lines)


def parse_groups(text: str) -> dict[str, list[str]]:
    """'VIS=B02,B03,B04;NIR=B08,B8A' → {'VIS': [...], 'NIR': [...]}."""
    groups: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, members = part.partition("=")
        bands = [b.strip() for b in members.split(",") if b.strip()]
        if not sep or not name.strip() or not bands:
            raise XbandError(
                f"band group '{part}' is not NAME=BAND,BAND,…; write e.g. "
                + option("band_groups={'VIS': ['B02', 'B03', 'B04'], 'NIR': ['B08', 'B8A']}",
                         '--band-groups "VIS=B02,B03,B04;NIR=B08,B8A"') + "."
            )
        groups[name.strip()] = bands
    return groups


def partition(groups: Mapping[str, Sequence[str]], band_names: Sequence[str]) -> dict[str, list[int]]:
    """Band positions per group; bands no group names form the group 'other'.

    Raises `XbandError` for unknown bands and for a band in two groups.
    """
    position = {name: i for i, name in enumerate(band_names)}
    owner: dict[str, str] = {}
    out: dict[str, list[int]] = {}
    for group, members in groups.items():
        for band in members:
            if band not in position:
                raise XbandError(
                    f"band group '{group}' names band '{band}', which the images do not have "
                    f"(bands: {', '.join(band_names)})."
                )
            if band in owner and owner[band] != group:
                raise XbandError(
                    f"band {band} is in groups '{owner[band]}' and '{group}'; a band may belong "
                    "to one group only."
                )
            owner[band] = group
        out[group] = sorted({position[b] for b in members})
    rest = [i for i, name in enumerate(band_names) if name not in owner]
    if rest:
        out[OTHER] = rest
    return out
