"""The `xband` command line: convert, explain, evaluate, demo, sensors."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

import xband.cli.options as options
from xband import verbosity
from xband.data.sensors import sensor_table
from xband.errors import XbandError


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a model to ONNX and PyTorch and measure that it still computes the same "
        "function",
        description="Convert MODEL (Keras .keras/.h5, TensorFlow SavedModel folder, ONNX, "
        "TorchScript, .pt2) to PyTorch, measure output (and gradient) agreement with the "
        "original, print the figures and write the ONNX file. Keras conversions are cached by "
        "file hash in $XBAND_CACHE_DIR (default ~/.cache/xband).",
    )
    options.add_model_options(p, positional=True)
    group = p.add_argument_group("conversion")
    group.add_argument("-o", "--onnx", metavar="OUT.onnx",
                       help="ONNX file to write (default: MODEL with suffix .onnx; for an .onnx "
                       "MODEL nothing is written unless -o is given)")
    group.add_argument("--output", dest="onnx", action=options.Deprecated, new="-o/--onnx")
    group.add_argument("--layout", dest="model_layout", action=options.Deprecated,
                       new="--model-layout")
    group.add_argument("--data", metavar="SAMPLE",
                       help=f".npy or .npz file of images in the model's layout for the fidelity "
                       f"check (first {options.PROBE_MAX} used; default: 8 random uniform "
                       "[0, 1] images)")
    group.add_argument("--opset", type=int, default=17, metavar="N",
                       help="ONNX opset for Keras conversion and ONNX export (default 17)")
    group.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                       help="image size for the check when the model accepts any size (default "
                       "32 32)")
    p.set_defaults(run=_run_convert)


def _read_sample(path: str) -> np.ndarray:
    """Images from a .npy file, or from a .npz file's only array (or its 'x'/'images' array)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise XbandError(f"{path}: cannot read sample data ({err}); give a .npy or .npz file "
                         "of images.") from err
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = [k for k in ("x", "images") if k in data.files] or data.files
            if len(keys) != 1:
                raise XbandError(f"{path}: the .npz holds arrays {data.files}; name the images "
                                 "'x' or keep one array.")
            data = data[keys[0]]
    return data[:options.PROBE_MAX]


def _convert_output(args: argparse.Namespace) -> Path | None:
    """The ONNX file `convert` writes (default: MODEL with suffix .onnx; none for an ONNX
    MODEL), checked before any work: a file that can be written, and none of the inputs."""
    from xband.files import check_file_writable, check_regular
    from xband.models.load import detect_format

    inputs = options.input_paths(args, output="onnx")
    check_regular(inputs)
    model = Path(args.model)
    if args.onnx is None and detect_format(model) == "onnx":
        return None
    out = Path(args.onnx or model.with_suffix(".onnx"))
    check_file_writable(out, "-o/--onnx")
    for flag, path in inputs.items():
        if out.exists() and os.path.samefile(out, path):
            raise XbandError(f"-o/--onnx {out}: is {flag} {path}, which the ONNX file would "
                             "replace. Name another file for the ONNX model.")
    return out


def _run_convert(args: argparse.Namespace) -> None:
    from xband.models.load import load_model, write_onnx

    out = _convert_output(args)
    probe = _read_sample(args.data) if args.data else None
    loaded = load_model(args.model, layout=args.model_layout, input_size=args.input_size,
                        probe=probe, opset=args.opset, accept_mismatch=args.accept_mismatch,
                        trust_pickle=args.trust_pickle, trust_graph=args.trust_graph)
    if out is not None:
        checked = write_onnx(loaded, out, opset=args.opset)
        if checked is not None:
            print(checked.summary().replace("fidelity vs", "fidelity of the written file vs", 1))
        print(f"wrote {out}")


def _explain_parser(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=options.method_options_epilog(),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = _explain_parser(
        sub, "explain",
        help="per-band, per-class importance of a model on labelled images",
        description="Explain MODEL on the images of --data by every method asked for: per-band "
        "scores per image, aggregated per class, with plots and one HTML report in --out.",
    )
    _add_model_data_and_run(p)
    options.add_check_options(p, flag=True)
    p.set_defaults(run=_run_explain)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _explain_parser(
        sub, "evaluate",
        help="can the answer be trusted? sanity, faithfulness, agreement and completeness checks",
        description="Explain MODEL on --data (same options as explain), then check the answer: "
        "model randomisation, band deletion and insertion curves against random orders under "
        "several baselines, agreement between methods per class with a bootstrap consensus, and "
        "Integrated Gradients' completeness. Writes the checks' tables, figures and report to "
        "--out.",
    )
    _add_model_data_and_run(p)
    options.add_check_options(p, flag=False)
    p.set_defaults(run=_run_explain, evaluate=True)


def _add_model_data_and_run(p: argparse.ArgumentParser) -> None:
    options.add_model_options(p)
    options.add_data_options(p)
    options.add_scene_options(p)
    options.add_explain_options(p)
    options.add_run_options(p)


def _check_run(args: argparse.Namespace):
    """Everything that can fail before a model is loaded or converted: the output folder (and
    the statistics file), the device, the run's and the checks' options. Returns the run
    configuration."""
    from xband.files import check_file_writable, check_output_folder, check_regular
    from xband.run.forward import check_device

    inputs = options.input_paths(args, output="out")
    check_regular(inputs)
    check_output_folder(args.out, overwrite=args.overwrite, inputs=inputs)
    if getattr(args, "norm_stats", None) and not Path(args.norm_stats).exists():
        check_file_writable(args.norm_stats, "--norm-stats")  # it will be written
    check_device(args.device)
    config = options.run_config(args)
    args.check_arguments = options.check_arguments(args) if args.evaluate else None
    return config


def _run_explain(args: argparse.Namespace) -> None:
    from xband.data.images import band_stats_json, scan, stratified_subset
    from xband.files import write_text
    from xband.models.load import load_model

    config = _check_run(args)
    data = options.read_images(args)
    probe, probe_layout = options.probe_images(data)
    model = load_model(args.model, layout=args.model_layout, probe=probe,
                       probe_layout=probe_layout, probe_source=data.source,
                       accept_mismatch=args.accept_mismatch,
                       trust_pickle=args.trust_pickle, trust_graph=args.trust_graph)
    data = data.for_model(model)
    stats_text = None
    if args.norm_stats and data.preprocess.mean is None:
        indices = stratified_subset(data.labels, len(data), config.max_images, config.seed,
                                    config.max_per_class)
        stats = scan(data, indices, skip_bad=config.skip_bad).stats
        stats_text = band_stats_json(data.band_names, stats)
        data = _with_stats(data, stats, f"{args.norm_stats}, computed from these images")
        stats_note = f"wrote per-band mean and std of {len(indices)} images to {args.norm_stats}"
    _explain_and_save(model, data, config, args)
    if stats_text is not None:  # written with the report, never without it
        write_text(args.norm_stats, stats_text)
        print(stats_note)


def _with_stats(data, stats, origin: str):
    prep = dataclasses.replace(data.preprocess, mean=stats.mean, std=stats.std, stats_file=origin)
    return dataclasses.replace(data, preprocess=prep)


def _explain_and_save(model, data, config, args: argparse.Namespace) -> None:
    from xband.report.writer import save_report
    from xband.run.pipeline import run_explanation

    result = run_explanation(model, data, config, progress=not args.quiet, announce=print)
    if args.evaluate:
        from xband.checks import evaluate

        result.evaluation = evaluate(model, data, result, **args.check_arguments,
                                     progress=not args.quiet, announce=print)
    verdict = result.verdict()
    out = save_report(result, args.out, overwrite=args.overwrite, figures=not args.no_figures,
                      checks_only=args.command == "evaluate")
    args.written = out
    print("\n" + verdict.text() + "\n")
    for note in result.summary["notes"]:
        print(f"note: {note}")
    _print_accuracy(result.summary["accuracy"], len(result.indices))
    print("\n" + result.sampling_text())
    print(f"\nTop {result.feature}s per class (consensus = mean rank over methods; then each "
          f"method's top {result.feature}):")
    print(result.top_bands().to_string())
    if result.evaluation is not None and result.evaluation.flagged:
        print("\nmodel randomisation: the band ranking barely changes with every layer random "
              f"for {', '.join(result.evaluation.flagged)}: these do not explain the model.")
    print(f"\nreport: {out / 'report.html'}")


def _print_accuracy(accuracy: dict, n_images: int) -> None:
    """Accuracy, per-label precision, recall and F1 (multi-label), or per-class pixel accuracy
    and IoU (segmentation), when labels are known."""
    if accuracy.get("segmentation") and accuracy["per_class"]:
        import pandas as pd

        print(f"per-class pixel scores on these {n_images} images (pixel accuracy "
              f"{accuracy['overall']:.3f}, mean IoU {accuracy['mean_iou']:.3f}):")
        table = pd.DataFrame(accuracy["per_class"]).T
        table["pixels"] = table["pixels"].astype(int)
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    elif accuracy.get("multi_label") and accuracy["per_class"]:
        import pandas as pd

        table = pd.DataFrame({**accuracy["per_class"], "micro average": accuracy["micro"]}).T
        table["support"] = table["support"].astype(int)
        print(f"per-label scores on these {n_images} images (exact match "
              f"{accuracy['exact_match']:.3f}):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    elif accuracy["overall"] is not None:
        print(f"accuracy on these {n_images} images: {accuracy['overall']:.3f}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _explain_parser(
        sub, "demo",
        help="explain the built-in demo: synthetic Sentinel-2 patches with planted bands",
        description="Convert the shipped Keras demo model (Keras → ONNX → PyTorch, with its "
        "fidelity measured) and explain it on synthetic 13-band Sentinel-2 patches in which each "
        "class's signal sits in known bands: Water B02, Crop B05, Forest B08, Bare soil B11, "
        "Urban B04+B12.",
    )
    options.add_explain_options(p)
    options.add_run_options(p, default_out="xband-demo")
    options.add_check_options(p, flag=True)
    p.add_argument("--images-per-class", type=int, default=20, metavar="N",
                   help="synthetic images per class (default 20)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from xband import demo
    from xband.data.images import image_set
    from xband.errors import whole_number
    from xband.models.load import load_model

    config = _check_run(args)
    per_class = whole_number(args.images_per_class, "--images-per-class")
    images, labels = demo.demo_data(n_per_class=per_class, seed=1)
    print("planted bands: " + "; ".join(f"{c} {'+'.join(b)}" for c, b in demo.PLANTED.items()))
    data = image_set(images, labels, bands=demo.BAND_NAMES, classes=demo.CLASS_NAMES,
                     source="xband demo (synthetic Sentinel-2 patches, seed 1)")
    model = load_model(demo.MODEL_PATH, probe=images[:options.PROBE_MAX])
    _explain_and_save(model, data, config, args)


def _add_sensors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensors", help="list the sensor presets for --sensor",
                       description="Sensor presets: band names in file order, centre wavelengths "
                       "and the spectral groups used for band-group importance.")
    p.set_defaults(run=lambda args: print(sensor_table()))


R_PACKAGE = Path(__file__).resolve().parents[2] / "r" / "xband"


def r_package_path() -> Path:
    """The R package's source folder, r/xband in the repository checkout xband runs from."""
    if not (R_PACKAGE / "DESCRIPTION").is_file():
        raise XbandError(
            f"the R package's source is not beside this xband ({R_PACKAGE} does not exist): it "
            "lives in the xband repository, folder r/xband. Install xband from a checkout "
            "(pip install -e .), then in R: install.packages(\"r/xband\", repos = NULL, "
            "type = \"source\").")
    return R_PACKAGE


def _print_r_path(args: argparse.Namespace) -> None:
    path = r_package_path()
    print(path)
    print(f"note: the R package (xband_explain, xband_read; it replaces xband.R, which was "
          f"source()d) installs with R CMD INSTALL {path}; then library(xband) in R.",
          file=sys.stderr)


def _add_r_path(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("r-path", help="print the folder of the R package's source",
                       description="Print the folder of the xband R package's source (r/xband "
                       "in the repository), to install it: R CMD INSTALL \"$(xband r-path)\"; "
                       "then library(xband) in R.")
    p.set_defaults(run=_print_r_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xband",
        description="Which input bands of a multispectral image does a CNN classifier rely on, "
        "and for which class?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_convert, _add_explain, _add_evaluate, _add_demo, _add_sensors, _add_r_path):
        add(sub)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="let the libraries xband runs (onnxruntime, TensorFlow, torch, "
                             "…) print their log lines and warnings")
        command.set_defaults(option_names=options.option_names(command))
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every temporary file and folder is cleaned up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    was_verbose = os.environ.get(verbosity.ENVIRONMENT)
    if getattr(args, "verbose", False):  # for this run and its processes, not after it
        os.environ[verbosity.ENVIRONMENT] = "1"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with verbosity.libraries_quiet():
            args.run(args)
    except XbandError as err:
        print(f"xband: error: {options.as_flags(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        written = getattr(args, "written", None)
        print("xband: interrupted; " + (f"the report had been written to {written}" if written
                                        else "nothing written"), file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if was_verbose is None:
            os.environ.pop(verbosity.ENVIRONMENT, None)
        else:
            os.environ[verbosity.ENVIRONMENT] = was_verbose
    return 0


if __name__ == "__main__":
    sys.exit(main())
