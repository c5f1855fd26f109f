"""The `xband` command line: convert, explain, demo, sensors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from xband.bands import sensor_table
from xband.cli_data import PROBE_MAX as _PROBE_MAX
from xband.cli_data import add_data_options, open_model_and_data
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
    p.add_argument("model", help="path to the model file or SavedModel folder")
    p.add_argument("-o", "--output", metavar="OUT.onnx",
                   help="ONNX file to write (default: MODEL with suffix .onnx; for an .onnx "
                   "MODEL nothing is written unless -o is given)")
    p.add_argument("--data", metavar="SAMPLE",
                   help=f".npy or .npz file of images in the model's layout for the fidelity "
                   f"check (first {_PROBE_MAX} used; default: 8 random uniform [0, 1] images)")
    p.add_argument("--opset", type=int, default=17, metavar="N",
                   help="ONNX opset for Keras conversion and ONNX export (default 17)")
    p.add_argument("--layout", choices=["channels_last", "channels_first"],
                   help="band axis of the model input (default: read from the graph; "
                   "channels_first for PyTorch files)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="image size for the check when the model accepts any size (default 32 32)")
    _add_trust_options(p)
    p.set_defaults(run=_run_convert)


def _add_trust_options(p: argparse.ArgumentParser) -> None:
    """What a user may accept about a model: a fidelity mismatch, an unpickled file."""
    p.add_argument("--accept-mismatch", action="store_true",
                   help="go on even if the converted model's outputs differ from the original "
                   "beyond tolerance (1e-4 absolute or 1e-3 x output range)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a full-pickle .pt file (unpickling can run code stored in it)")


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
    return data[:_PROBE_MAX]


def _run_convert(args: argparse.Namespace) -> None:
    from xband.models import load_model, write_onnx

    model_path = Path(args.model)
    probe = _read_sample(args.data) if args.data else None
    loaded = load_model(model_path, layout=args.layout, input_size=args.input_size, probe=probe,
                        opset=args.opset, accept_mismatch=args.accept_mismatch,
                        trust_pickle=args.trust_pickle)
    out = args.output or (None if loaded.source_format == "onnx"
                          else model_path.with_suffix(".onnx"))
    if out is not None:
        print(f"wrote {write_onnx(loaded, out, opset=args.opset)}")


def _add_run_options(p: argparse.ArgumentParser, *, default_out: str | None = None) -> None:
    """Options shared by `explain` and `demo`: what to compute and where to write it."""
    from xband.explain import BASELINES, OUTPUTS, TARGETS
    from xband.methods import METHODS

    p.add_argument("--methods", default="all", metavar="M1,M2,…",
                   help=f"attribution methods, comma-separated, or 'all' (default). Known: "
                   f"{', '.join(METHODS)}. A method too costly for the data (exact Shapley for "
                   "many bands) runs in its sampled form and the report says so")
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="class whose output is explained: the true label (default with labels), "
                   "the predicted class (default without), or every class (class × class view)")
    p.add_argument("--output", choices=OUTPUTS, default="logits",
                   help="explain logits (default; a final softmax is stripped) or probabilities")
    p.add_argument("--baseline", choices=BASELINES, default="mean",
                   help="value of a removed band: its mean over the data (default) or zero")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="images per batch (default 64)")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="explain at most N images, sampled per class in proportion (seeded)")
    p.add_argument("--examples-per-class", type=int, default=2, metavar="K",
                   help="images per class kept whole for per-band maps (default 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where to compute (default cpu; cuda: an NVIDIA GPU)")
    p.add_argument("--untuned", action="store_true",
                   help="run the network exactly as given, without the speed-ups that keep its "
                   "numbers (BatchNorm folding, channels-last memory, a TorchScript copy for "
                   "forward passes, measured pass sizes)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=default_out is None, default=default_out, metavar="DIR",
                   help="folder for the report, replaced as a whole when the run finishes"
                   + (f" (default {default_out})" if default_out else ""))


def _add_evaluate_options(p: argparse.ArgumentParser, *, flag: bool) -> None:
    """Options of the trust checks; `flag` adds --evaluate (for explain and demo)."""
    from xband.checks import BASELINES, CHECKS

    if flag:
        p.add_argument("--evaluate", action="store_true",
                       help="also check the answer: model randomisation, band deletion and "
                       "insertion, agreement between methods, IG completeness (as `xband "
                       "evaluate`), added to the report")
    p.add_argument("--checks", default="all", metavar="C1,C2,…",
                   help=f"checks to run with --evaluate / evaluate: {', '.join(CHECKS)} or 'all' "
                   "(default)")
    p.add_argument("--eval-images", type=int, default=128, metavar="N",
                   help="images (stratified, seeded) the model-running checks use (default 128)")
    p.add_argument("--deletion-baselines", default=",".join(BASELINES), metavar="B1,B2,…",
                   help=f"what a deleted band becomes: {', '.join(BASELINES)} (default all)")
    p.add_argument("--random-orders", type=int, default=10, metavar="N",
                   help="random band orders the deletion curves are compared with (default 10)")
    p.add_argument("--cascade-stages", type=int, default=4, metavar="N",
                   help="model randomisation stages, from the top layer to all (default 4)")


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="per-band, per-class importance of a model on labelled images",
        description="Explain MODEL on the images of --data by every method asked for: per-band "
        "scores per image, aggregated per class, with plots and one HTML report in --out.",
    )
    _add_model_options(p)
    _add_evaluate_options(p, flag=True)
    p.set_defaults(run=_run_explain)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="can the answer be trusted? sanity, faithfulness, agreement and completeness checks",
        description="Explain MODEL on --data (same options as explain), then check the answer: "
        "model randomisation, band deletion and insertion curves against random orders under "
        "several baselines, agreement between methods per class with a bootstrap consensus, and "
        "Integrated Gradients' completeness. Writes the checks' tables, figures and report to "
        "--out.",
    )
    _add_model_options(p)
    _add_evaluate_options(p, flag=False)
    p.set_defaults(run=_run_explain, evaluate=True)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Model, data and run options of explain and evaluate."""
    p.add_argument("--model", required=True,
                   help="model file (.keras, .h5, SavedModel folder, .onnx, TorchScript, .pt2)")
    add_data_options(p)
    p.add_argument("--model-layout", choices=["channels_last", "channels_first"],
                   help="band axis of the model input (default: read from the model)")
    _add_trust_options(p)
    _add_run_options(p)


def _check_run(args: argparse.Namespace) -> None:
    """Fail before a model is loaded or converted: the output folder and the device."""
    from xband.forward import check_device
    from xband.result import check_writable

    check_writable(args.out)
    check_device(args.device)


def _run_explain(args: argparse.Namespace) -> None:
    _check_run(args)
    model, data = open_model_and_data(args)
    _explain_and_save(model, data, args, max_per_class=args.max_per_class,
                      skip_bad=args.skip_bad)


def _explain_and_save(model, data, args: argparse.Namespace, **data_options) -> None:
    from xband.explain import explain

    target = args.target or ("true" if data.labels is not None else "predicted")
    result = explain(model, data, methods=args.methods, target=target, output=args.output,
                     baseline=args.baseline, batch_size=args.batch_size,
                     max_images=args.max_images, examples_per_class=args.examples_per_class,
                     seed=args.seed, device=args.device, progress=not args.quiet,
                     tuned=not args.untuned, **data_options)
    if args.evaluate:
        from xband.checks import evaluate

        result.evaluation = evaluate(
            model, data, result, checks=args.checks, max_images=args.eval_images,
            baselines=args.deletion_baselines, random_orders=args.random_orders,
            cascade_stages=args.cascade_stages)
    if args.command == "evaluate":
        out = result.evaluation.save(args.out, result.summary)
    else:
        out = result.save(args.out)
    for note in result.summary["notes"]:
        print(f"note: {note}")
    accuracy = result.summary["accuracy"]["overall"]
    if accuracy is not None:
        print(f"accuracy on these {len(result.indices)} images: {accuracy:.3f}")
    print("\nTop bands per class (consensus = mean rank over methods; then each method's top band):")
    print(result.top_bands().to_string())
    if result.evaluation is not None and result.evaluation.flagged:
        print("\nmodel randomisation: the band ranking barely changes with every layer random "
              f"for {', '.join(result.evaluation.flagged)}: these do not explain the model.")
    print(f"\nreport: {out / 'report.html'}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="explain the built-in demo: synthetic Sentinel-2 patches with planted bands",
        description="Convert the shipped Keras demo model (Keras → ONNX → PyTorch, with its "
        "fidelity measured) and explain it on synthetic 13-band Sentinel-2 patches in which each "
        "class's signal sits in known bands: Water B02, Crop B05, Forest B08, Bare soil B11, "
        "Urban B04+B12.",
    )
    _add_run_options(p, default_out="xband-demo")
    _add_evaluate_options(p, flag=True)
    p.add_argument("--images-per-class", type=int, default=20, metavar="N",
                   help="synthetic images per class (default 20)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from xband import demo
    from xband.data import image_set
    from xband.models import load_model

    _check_run(args)
    images, labels = demo.demo_data(n_per_class=args.images_per_class, seed=1)
    print("planted bands: " + "; ".join(f"{c} {'+'.join(b)}" for c, b in demo.PLANTED.items()))
    model = load_model(demo.MODEL_PATH, probe=images[:_PROBE_MAX])
    data = image_set(images, labels, n_bands=model.n_bands, n_classes=model.n_classes,
                     model_layout=model.layout, spatial_size=model.spatial_size,
                     band_names=demo.BAND_NAMES, class_names=demo.CLASS_NAMES,
                     source="xband demo (synthetic Sentinel-2 patches, seed 1)")
    _explain_and_save(model, data, args)


def _add_sensors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensors", help="list the sensor presets for --sensor",
                       description="Sensor presets: band names in file order, centre wavelengths "
                       "and the spectral groups used for band-group importance.")
    p.set_defaults(run=lambda args: print(sensor_table()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xband",
        description="Which input bands of a multispectral image does a CNN classifier rely on, "
        "and for which class?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(sub)
    _add_explain(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_sensors(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except XbandError as err:
        print(f"xband: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
