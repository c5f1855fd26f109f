"""The `xband` command line: convert, explain, demo."""

from __future__ import annotations

import argparse
import sys

from xband.errors import XbandError


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a model to ONNX and PyTorch and measure that it still computes the same function",
        description="Convert MODEL (Keras .keras/.h5, TensorFlow SavedModel folder, ONNX, TorchScript, "
        ".pt2) to PyTorch, measure output (and gradient) agreement with the original, print the "
        "figures and write the ONNX file.",
    )
    p.add_argument("model", help="path to the model file or SavedModel folder")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> None:
    raise XbandError("convert is not implemented yet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xband",
        description="Which input bands of a multispectral image does a CNN classifier rely on, "
        "and for which class?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(sub)
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
