"""Versions of everything that can change a result, for the report."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("xband", "torch", "captum", "numpy", "onnx", "onnx2torch", "onnxruntime", "pandas",
            "tensorflow-cpu", "tensorflow", "keras", "tf2onnx")


def versions() -> dict[str, str]:
    """Installed versions of the packages xband's results depend on, plus Python's."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
