"""The command line's data options: where the images are, what their bands are, how the model
wants them preprocessed; and opening model and data together (`xband explain`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from xband.errors import XbandError

PROBE_MAX = 32  # images of --data used for the conversion's fidelity check


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data and every option about reading, naming and preprocessing the images."""
    from xband.bands import SENSORS

    p.add_argument("--data", required=True,
                   help="a folder with one sub-folder of GeoTIFF patches per class (EuroSAT-MS "
                   "layout), a .csv of 'path,label' rows, an .h5 file (--x-key, --y-key), a .npz "
                   "with images 'x' and labels 'y' (optional 'band_names', 'class_names'), or .npy "
                   "images with --labels")
    p.add_argument("--labels", help="labels for .npy or .h5 images: .npy, or text with one label a "
                   "line")
    p.add_argument("--x-key", metavar="NAME", help="HDF5 dataset (or .npz array) of the images "
                   "(default x)")
    p.add_argument("--y-key", metavar="NAME", help="HDF5 dataset (or .npz array) of the labels "
                   "(default y, when present)")
    p.add_argument("--sensor", metavar="NAME",
                   help=f"band names, centre wavelengths and spectral groups from a preset: "
                   f"{', '.join(SENSORS)} (`xband sensors` lists them)")
    p.add_argument("--bands", metavar="B01,B02,…", help="band names in file order")
    p.add_argument("--band-names-file", metavar="FILE", help="band names, one a line")
    p.add_argument("--band-groups", metavar="G=B1,B2;…",
                   help="band groups scored as wholes, e.g. \"VIS=B02,B03,B04;NIR=B08,B8A\"; bands "
                   "no group names form 'other' (default with --sensor: its spectral groups)")
    p.add_argument("--classes", metavar="NAME1,NAME2,…",
                   help="class names in the model's output order (default: from the file, or "
                   "the class folders' names sorted)")
    p.add_argument("--data-layout", choices=["channels_last", "channels_first"],
                   help="band axis of the images on disk (default: from the file, else the "
                   "model's, else guessed)")
    p.add_argument("--scale", type=float, default=1.0, metavar="F",
                   help="multiply the images by F first, as in training (e.g. 0.0001 for "
                   "reflectance stored ×10000)")
    p.add_argument("--clip", metavar="LOW,HIGH", help="then clip the values to [LOW, HIGH]")
    p.add_argument("--norm-stats", metavar="FILE.json",
                   help="then standardise each band, (x − mean) / std, with the statistics in "
                   "FILE ({\"bands\": […], \"mean\": […], \"std\": […]}); when FILE does not exist "
                   "they are computed from the images explained and saved there")
    p.add_argument("--nodata", type=float, metavar="V",
                   help="value marking missing pixels: an image holding it is an error (or left "
                   "out with --skip-bad)")
    p.add_argument("--max-per-class", type=int, metavar="N",
                   help="explain at most N images per class, drawn with --seed")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable files, non-image files and images with NaN, "
                   "infinite or nodata values, and list them in the report, instead of stopping")


def names(text: str | None, file: str | None, what: str) -> list[str] | None:
    """Names from a comma-separated option or a file with one name a line."""
    if text and file:
        raise XbandError(f"give the {what} names either inline or as a file, not both.")
    if file:
        path = Path(file)
        if not path.is_file():
            raise XbandError(f"{path}: no such {what} names file (one name a line).")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in text.split(",")] if text else None


def _clip(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise XbandError(f"--clip '{text}': give LOW,HIGH, e.g. --clip 0,1.") from None
    if not low < high:
        raise XbandError(f"--clip '{text}': LOW must be below HIGH.")
    return low, high


def _preprocess(args: argparse.Namespace):
    """Scale and clip from the options; mean and std from --norm-stats when that file exists."""
    from xband.data import Preprocess, read_band_stats

    prep = Preprocess(scale=args.scale, clip=_clip(args.clip))
    if args.norm_stats and Path(args.norm_stats).exists():
        mean, std, bands = read_band_stats(args.norm_stats)
        prep = dataclasses.replace(prep, mean=mean, std=std, stats_file=args.norm_stats,
                                   stats_bands=bands)
    return prep


def _probe(found, preprocess, layout: str | None) -> np.ndarray | None:
    """Up to PROBE_MAX readable images, preprocessed, in their stored layout: the fidelity check
    runs on the user's own inputs."""
    from xband.data import BadImage, guess_layout

    images = []
    for i in range(min(found.images.shape[0], 4 * PROBE_MAX)):
        try:
            images.append(np.asarray(found.images[np.array([i])], dtype=np.float32))
        except BadImage:
            continue
        if len(images) == PROBE_MAX:
            break
    if not images:
        return None
    x = np.concatenate(images)
    if preprocess.mean is not None and layout is None:
        layout = guess_layout(x.shape, len(preprocess.mean), "channels_last")
    return preprocess(x, band_axis=3 if layout == "channels_last" else 1)


def open_model_and_data(args: argparse.Namespace):
    """The model (converted, fidelity checked on the user's images) and the checked `ImageSet`."""
    from xband.bands import parse_groups
    from xband.data import image_set, scan, stratified_subset, write_band_stats
    from xband.models import load_model
    from xband.readers import read_data

    band_names = names(args.bands, args.band_names_file, "band")
    if band_names and args.sensor:
        raise XbandError("give the bands either as a sensor preset (--sensor) or by name "
                         "(--bands, --band-names-file), not both.")
    found = read_data(args.data, labels=args.labels, x_key=args.x_key, y_key=args.y_key,
                      skip_bad=args.skip_bad)
    preprocess = _preprocess(args)
    layout = args.data_layout or found.layout
    model = load_model(args.model, layout=args.model_layout,
                       probe=_probe(found, preprocess, layout),
                       accept_mismatch=args.accept_mismatch, trust_pickle=args.trust_pickle)
    data = image_set(
        found.images, found.labels, n_bands=model.n_bands, n_classes=model.n_classes,
        model_layout=model.layout, spatial_size=model.spatial_size,
        band_names=band_names or found.band_names, sensor=args.sensor,
        band_groups=parse_groups(args.band_groups) if args.band_groups else None,
        class_names=names(args.classes, None, "class") or found.class_names,
        layout=layout, source=str(args.data), preprocess=preprocess, nodata=args.nodata,
        item_names=found.item_names, skipped=found.skipped,
    )
    data.notes += found.notes
    if args.norm_stats and preprocess.mean is None:
        indices = stratified_subset(data.labels, len(data), args.max_images, args.seed,
                                    args.max_per_class)
        stats = scan(data, indices, skip_bad=args.skip_bad).stats
        write_band_stats(args.norm_stats, data.band_names, stats)
        data.preprocess = dataclasses.replace(preprocess, mean=stats.mean, std=stats.std,
                                              stats_file=f"{args.norm_stats}, computed from these "
                                              "images")
        print(f"wrote per-band mean and std of {len(indices)} images to {args.norm_stats}")
    return model, data
