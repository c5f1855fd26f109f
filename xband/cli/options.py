"""The command line's options, in the groups `xband explain --help` shows, and their meaning
for the Python API: data options → `read_data`, run options → `RunConfig`, check options →
`evaluate`'s arguments. Every value is checked here, before a model is loaded."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from xband.errors import BadValue, XbandError
from xband.run.config import RunConfig
from xband.run.engine import RayEngine
from xband.settings import DATA, ENGINE, EXPLAIN, RUN, flag_of, help_of, settings_of

PROBE_MAX = 32  # images of --data used for the conversion's fidelity check
LAYOUTS = ("channels_last", "channels_first")
MODEL_LAYOUTS = (*LAYOUTS, "spectra", "spectra_channels_last", "spectra_channels_first")


class Deprecated(argparse.Action):
    """An old spelling that still works for one release: stores into the new option's `dest`
    and says on stderr what to write instead."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"xband: {option_string} is deprecated and will be removed; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_model_options(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """The model and what a user may accept about it."""
    group = p.add_argument_group("model")
    if positional:
        group.add_argument("model", help="path to the model file or SavedModel folder")
    else:
        group.add_argument("--model", required=True, help="model file (.keras, .h5, SavedModel "
                           "folder, .onnx, TorchScript, .pt2)")
    group.add_argument("--model-layout", choices=MODEL_LAYOUTS,
                       help="what the model takes: images with the bands last or first, or "
                       "spectra (N, bands), (N, bands, 1), (N, 1, bands) (default: read from "
                       "the graph or the first layer; channels_first for PyTorch CNNs)")
    group.add_argument("--accept-mismatch", action="store_true",
                       help="go on even if the converted model's outputs differ from the "
                       "original beyond tolerance (1e-4 absolute or 1e-3 x output range)")
    group.add_argument("--trust-pickle", action="store_true",
                       help="allow a full-pickle .pt file, or a .pt2 archive holding pickles "
                       "(unpickling can run code stored in it)")
    group.add_argument("--trust-graph", action="store_true",
                       help="run a TensorFlow SavedModel or TorchScript file whose code calls "
                       "operations an image classifier does not need (files, printing, Python, "
                       "custom operators; see docs/security.md)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data, how to read it, what its bands and classes are, and its preprocessing."""
    from xband.data.sensors import SENSORS

    data = p.add_argument_group(DATA)
    data.add_argument("--data", required=True,
                      help="a folder with one sub-folder of GeoTIFF patches per class (EuroSAT-MS "
                      "layout), a .csv of 'path,label' rows, an .h5 file (--x-key, --y-key), a "
                      ".npz with images 'x' and labels 'y' (optional 'band_names', "
                      "'class_names'), .npy images with --labels, a .csv of spectra (a row per "
                      "pixel, a column per band, a 'label' column), or a scene and its label map "
                      "(--labels): ENVI .hdr, GeoTIFF, MATLAB .mat (variables: --x-key, --y-key)")
    data.add_argument("--labels", help="labels for .npy or .h5 images (.npy, or text, one a "
                      "line), or a scene's label map (0 = unlabelled)")
    data.add_argument("--masks", metavar="PATH",
                      help="segmentation: each image's class per pixel, a .npy of (images, "
                      "height, width) for .npy images, or a folder of single-band GeoTIFF masks "
                      "named as the images when --data is a folder of GeoTIFFs (a .npz or .h5 "
                      "holds them as 'masks')")
    data.add_argument("--ignore-index", type=int, metavar="V",
                      help="segmentation: the mask value of unlabelled pixels, e.g. 255, or 0 "
                      "for nodata (default: a mask GeoTIFF's nodata value)")
    data.add_argument("--x-key", metavar="NAME", help="HDF5 dataset, .npz array or .mat variable "
                      "of the images (default x); in a .csv of spectra, band columns FIRST:LAST")
    data.add_argument("--y-key", metavar="NAME", help="the same of the labels (default y, when "
                      "present); in a .csv of spectra, the label column")
    data.add_argument("--data-layout", choices=LAYOUTS,
                      help="band axis of the images on disk (default: from the file, else the "
                      "model's, else guessed)")
    data.add_argument("--sensor", metavar="NAME",
                      help=f"band names, centre wavelengths and spectral groups from a preset: "
                      f"{', '.join(SENSORS)} (`xband sensors` lists them)")
    data.add_argument("--bands", metavar="B01,B02,…", help="band names in file order")
    data.add_argument("--band-names-file", metavar="FILE", help="band names, one a line")
    data.add_argument("--band-groups", metavar="G=B1,B2;…",
                      help="band groups scored as wholes, e.g. \"VIS=B02,B03,B04;NIR=B08,B8A\"; "
                      "bands no group names form 'other' (default with --sensor: its spectral "
                      "groups)")
    data.add_argument("--wavelengths", metavar="FILE",
                      help="centre wavelength of each band in nm: a text file of one value a line, "
                      "or an ENVI .hdr (its 'wavelength = {…}'); default: the GeoTIFF / ENVI "
                      "band metadata, where present")
    data.add_argument("--classes", metavar="NAME1,NAME2,…",
                      help="class names in the model's output order (default: from the file, or "
                      "the class folders' names sorted)")
    data.add_argument("--nodata", type=float, metavar="V",
                      help="value marking missing pixels: an image holding it is an error (or "
                      "left out with --skip-bad)")
    add_settings(data, RunConfig, DATA)
    prep = p.add_argument_group("preprocessing (what the model saw in training, in this order)")
    prep.add_argument("--scale", type=float, default=1.0, metavar="F",
                      help="multiply the images by F first (e.g. 0.0001 for reflectance stored "
                      "×10000)")
    prep.add_argument("--clip", metavar="LOW,HIGH", help="then clip the values to [LOW, HIGH]")
    prep.add_argument("--norm-stats", metavar="FILE.json",
                      help="then standardise each band, (x − mean) / std, with the statistics "
                      "in FILE ({\"bands\": […], \"mean\": […], \"std\": […]}); when FILE does "
                      "not exist they are computed from the images explained and saved there")


def add_scene_options(p: argparse.ArgumentParser) -> None:
    """How a hyperspectral scene (a cube and its label map) becomes the data explained."""
    scene = p.add_argument_group("hyperspectral scenes (--data a cube, --labels its label map)")
    scene.add_argument("--patch-size", type=int, default=1, metavar="P",
                       help="1: one spectrum per labelled pixel, for per-pixel models (default); "
                       "P (odd): the P×P patch around each labelled pixel, for patch models")
    scene.add_argument("--class-values", metavar="V1,V2,…",
                       help="label-map values of the model's outputs, in output order (default: "
                       "the values present, sorted, 0 = unlabelled left out)")
    scene.add_argument("--held-out", type=float, metavar="FRACTION",
                       help="explain only this fraction of each class's labelled pixels, drawn "
                       "with --split-seed (the same pixels every time)")
    scene.add_argument("--split-seed", type=int, default=0, metavar="N",
                       help="seed of the held-out split (default 0)")
    scene.add_argument("--part", choices=("held_out", "train", "all"),
                       help="which part of the split to explain (default: held_out)")


def scene_options(args: argparse.Namespace) -> dict:
    """`read_scene`'s options from the command line."""
    values = None
    if args.class_values:
        try:
            values = [int(v) for v in args.class_values.split(",")]
        except ValueError:
            raise XbandError(f"--class-values '{args.class_values}': give whole numbers, "
                             "e.g. --class-values 2,3,5,11.") from None
    return {"patch_size": args.patch_size, "class_values": values, "held_out": args.held_out,
            "split_seed": args.split_seed, "part": args.part}


def add_explain_options(p: argparse.ArgumentParser) -> None:
    """What to explain: methods and their options, target, output, baseline, which images."""
    from xband.methods import METHODS

    group = p.add_argument_group(EXPLAIN)
    group.add_argument("--methods", default="all", metavar="M1,M2,…",
                       help=f"attribution methods, comma-separated, or 'all' (default). Known: "
                       f"{', '.join(METHODS)}. A method too costly for the data (exact Shapley "
                       "for many bands) runs in its sampled form and the report says so")
    group.add_argument("--method-option", action="append", default=[],
                       metavar="METHOD.OPTION=VALUE",
                       help="set a method's option, e.g. integrated_gradients.n_steps=64 "
                       "(repeatable; the options are listed below)")
    add_settings(group, RunConfig, EXPLAIN)
    group.add_argument("--output", dest="output", action=Deprecated, new="--output-space")


def add_run_options(p: argparse.ArgumentParser, *, default_out: str | None = None) -> None:
    """Where the report goes and how the run computes."""
    group = p.add_argument_group(RUN)
    group.add_argument("--out", required=default_out is None, default=default_out, metavar="DIR",
                       help="folder for the report: new, empty, or one xband wrote (replaced as "
                       "a whole when the run finishes)"
                       + (f"; default {default_out}" if default_out else ""))
    group.add_argument("--overwrite", action="store_true",
                       help="replace --out even if it holds files xband did not write (they are "
                       "deleted)")
    group.add_argument("--no-figures", action="store_true",
                       help="write the tables, summary.json and a report without figures "
                       "(quicker, for scripted runs)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    add_settings(group, RunConfig, RUN)
    engine = p.add_argument_group(ENGINE)
    add_settings(engine, RunConfig, ENGINE)
    add_settings(engine, RayEngine, ENGINE)


def add_check_options(p: argparse.ArgumentParser, *, flag: bool) -> None:
    """Options of the trust checks; `flag` adds --evaluate (for explain and demo)."""
    from xband.checks import CHECKS, DELETION_BASELINES

    group = p.add_argument_group("checks (can the answer be trusted?)")
    if flag:
        group.add_argument("--evaluate", action="store_true",
                           help="also check the answer: model randomisation, band deletion and "
                           "insertion, agreement between methods, IG completeness (as `xband "
                           "evaluate`), added to the report")
    group.add_argument("--checks", default="all", metavar="C1,C2,…",
                       help=f"checks to run: {', '.join(CHECKS)} or 'all' (default)")
    group.add_argument("--eval-images", type=int, metavar="N",
                       help="at most N images (stratified, seeded) for the model-running checks "
                       "(default: each check takes images until its answer is settled, from "
                       "those every method explained)")
    group.add_argument("--deletion-baselines", default=",".join(DELETION_BASELINES),
                       metavar="B1,B2,…", help=f"what a deleted band becomes: "
                       f"{', '.join(DELETION_BASELINES)} (default all)")
    group.add_argument("--random-orders", type=int, default=10, metavar="N",
                       help="random band orders the deletion curves are compared with (default "
                       "10)")
    group.add_argument("--cascade-stages", type=int, default=4, metavar="N",
                       help="model randomisation stages, from the top layer to all (default 4)")


# API arguments → the options that set them, for messages
FLAGS = {"batch_size": "--batch-size", "max_images": "--max-images",
         "max_per_class": "--max-per-class", "examples_per_class": "--examples-per-class",
         "seed": "--seed", "scale": "--scale", "clip": "--clip", "nodata": "--nodata",
         "classes": "--classes", "bands": "--bands", "background_images": "--background-images",
         "ignore_index": "--ignore-index"}


def as_flags(err: XbandError) -> str:
    """The message of `err` as the command line says it: options in place of API arguments."""
    if err.cli is not None:
        return err.cli
    if isinstance(err, BadValue):
        name = FLAGS.get(err.name)
        if name is None and "." in err.name:
            name = f"--method-option {err.name}"
        return err.named(name or err.name)
    return str(err)


def input_paths(args: argparse.Namespace, output: str) -> dict[str, str]:
    """Every option value that names an existing file or folder, but the output's (`output`, a
    dest), by option: what the command reads, which its outputs must keep apart from. One rule
    for every option, so that no input is forgotten."""
    names = getattr(args, "option_names", {})
    return {names[dest]: value for dest, value in vars(args).items()
            if dest in names and dest != output and isinstance(value, str) and value.strip()
            and os.path.exists(value)}


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """How messages name each option of `parser`, by dest: its long flag, or its metavar."""
    return {action.dest: max(action.option_strings, key=len) if action.option_strings
            else action.metavar or action.dest.upper()
            for action in parser._actions if action.help != argparse.SUPPRESS}


def method_options_epilog() -> str:
    """Every method's options, for the end of `--help`."""
    from xband.methods import METHODS

    lines = ["method options (--method-option METHOD.OPTION=VALUE, repeatable; the default "
             "with --all-images, and [in rounds until settled] where that takes fewer draws):"]
    for name, cls in METHODS.items():
        for option, default, text in cls.option_help():
            settled = cls.until_settled.get(option)
            shown = f"{default}" if settled is None else f"{default} [{settled}]"
            lines.append(f"  {name}.{option}={shown}".ljust(40) + f" {text}")
    return "\n".join(lines)


def parse_method_options(items: list[str]) -> dict[str, dict[str, int]]:
    """['integrated_gradients.n_steps=64', …] → {'integrated_gradients': {'n_steps': 64}}."""
    options: dict[str, dict[str, int]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, option = key.strip().partition(".")
        if not sep or not dot or not method or not option:
            raise XbandError(f"--method-option '{item}': write METHOD.OPTION=VALUE, e.g. "
                             "--method-option integrated_gradients.n_steps=64.")
        try:
            number = float(value)
        except ValueError:
            raise XbandError(f"--method-option '{item}': {value!r} is not a number.") from None
        options.setdefault(method, {})[option] = int(number) if number.is_integer() else number
    return options


def add_settings(group, cls: type, name: str) -> None:
    """The options of the settings `cls` declares for the --help group `name`
    (`xband.settings.setting`): the flag, the help as the command line says it, the default."""
    for field in settings_of(cls):
        meta = field.metadata
        if not meta["cli"] or meta["group"] != name:
            continue
        flag, text = flag_of(field), help_of(field, cli=True).replace("%", "%%")  # argparse
        if meta["kind"] is bool:
            off = flag.startswith(("--no-", "--un"))
            group.add_argument(flag, dest=field.name, default=field.default, help=text,
                               action="store_false" if off else "store_true")
            continue
        shown = "" if field.default in (None, "") or "default" in text else \
            f" (default {field.default})"
        group.add_argument(flag, dest=field.name, default=field.default, type=meta["kind"],
                           choices=meta["choices"], metavar=meta["metavar"], help=text + shown)


def run_config(args: argparse.Namespace):
    """The `RunConfig` the options describe (every value checked): each declared setting from
    the option of the same name."""
    from xband.run.config import RunConfig

    given = {f.name: getattr(args, f.name) for f in settings_of(RunConfig)
             if f.metadata["cli"] and hasattr(args, f.name)}
    return RunConfig.build(args.methods, method_options=parse_method_options(args.method_option),
                           **{**given, "engine": engine(args)})


def engine(args: argparse.Namespace):
    """"single", or the `RayEngine` the Ray options describe; Ray options without
    --engine ray are refused rather than ignored."""
    given = [flag_of(f) for f in settings_of(RayEngine)
             if getattr(args, f.name) not in (None, f.default)]
    if args.engine != "ray":
        if given:
            raise XbandError(f"{', '.join(given)} need --engine ray.")
        return "single"
    try:
        return RayEngine(**{f.name: getattr(args, f.name) for f in settings_of(RayEngine)})
    except BadValue as err:
        raise XbandError(err.named("--workers")) from None


def check_arguments(args: argparse.Namespace) -> dict:
    """`evaluate`'s keyword arguments from the check options, checked now rather than after the
    explanation."""
    from xband.checks import CHECKS, DELETION_BASELINES, choices
    from xband.errors import whole_number
    from xband.methods.removal import ALIASES

    return {"checks": choices("check", args.checks, CHECKS),
            "baselines": choices("deletion baseline", args.deletion_baselines, DELETION_BASELINES,
                                 aliases=ALIASES),
            "max_images": None if args.eval_images is None
            else whole_number(args.eval_images, "--eval-images"),
            "random_orders": whole_number(args.random_orders, "--random-orders", minimum=2),
            "cascade_stages": whole_number(args.cascade_stages, "--cascade-stages")}


def names(text: str | None, file: str | None, what: str) -> list[str] | None:
    """Names from a comma-separated option or a file with one name a line."""
    if text and file:
        raise XbandError(f"give the {what} names either inline or as a file, not both.")
    if file:
        path = Path(file)
        if not path.is_file():
            raise XbandError(f"{path}: no such {what} names file (one name a line).")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if text is None:
        return None
    found = [name.strip() for name in text.split(",")]
    if not all(found):
        flag = {"band": "--bands", "class": "--classes"}.get(what, what)
        raise XbandError(f"{flag} '{text}': name {found.index('') + 1} is empty. Give every "
                         f"{what} a name.")
    return found


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


def preprocess(args: argparse.Namespace):
    """Scale and clip from the options; mean and std from --norm-stats when that file exists."""
    from xband.data.images import Preprocess, read_band_stats

    prep = Preprocess(scale=args.scale, clip=_clip(args.clip))
    if args.norm_stats and Path(args.norm_stats).exists():
        mean, std, bands = read_band_stats(args.norm_stats)
        prep = dataclasses.replace(prep, mean=mean, std=std, stats_file=args.norm_stats,
                                   stats_bands=bands)
    return prep


def read_images(args: argparse.Namespace):
    """The `ImageSet` the data options describe (read and checked; no model needed)."""
    from xband.data.readers import read_data
    from xband.data.sensors import parse_groups

    band_names = names(args.bands, args.band_names_file, "band")
    if band_names and args.sensor:
        raise XbandError("give the bands either as a sensor preset (--sensor) or by name "
                         "(--bands, --band-names-file), not both.")
    return read_data(
        args.data, labels=args.labels, masks=args.masks, x_key=args.x_key, y_key=args.y_key,
        skip_bad=args.skip_bad, ignore_index=args.ignore_index, bands=band_names,
        classes=names(args.classes, None, "class"), scene=scene_options(args),
        layout=args.data_layout, sensor=args.sensor,
        band_groups=parse_groups(args.band_groups) if args.band_groups else None,
        wavelengths=args.wavelengths, preprocess=preprocess(args), nodata=args.nodata)


def probe_images(data) -> tuple[np.ndarray | None, str | None]:
    """Up to PROBE_MAX usable images of `data` (readable, finite, without nodata pixels: the
    data checks name the others), preprocessed, bands first when the data's band axis is known
    ("channels_first"; None: as stored, the model's layout assumed): the fidelity check runs on
    the user's own inputs."""
    from xband.data.images import BadImage, guess_layout, likely_layout
    from xband.layout import Layout

    images = []
    for i in range(min(len(data), 4 * PROBE_MAX)):
        try:
            image = np.asarray(data.images[np.array([i])], dtype=np.float32)
        except BadImage:
            continue
        if not np.isfinite(image).all() or (data.nodata is not None
                                            and (image == data.nodata).any()):
            continue
        images.append(image)
        if len(images) == PROBE_MAX:
            break
    if not images:
        return None, None
    x = np.concatenate(images)
    layout = data.layout or likely_layout(x.shape)
    if data.preprocess.mean is not None and layout is None:
        layout = guess_layout(x.shape, len(data.preprocess.mean), Layout.CHANNELS_LAST)
    if layout is None:
        return data.preprocess(x), None
    if layout is Layout.CHANNELS_LAST:  # one layout for every source: one Keras reference
        x = np.ascontiguousarray(np.moveaxis(x, 3, 1))
    return data.preprocess(x, band_axis=1), str(Layout.CHANNELS_FIRST)
