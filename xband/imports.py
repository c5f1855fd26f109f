"""Imports that must not crash a process in which TensorFlow is already loaded.

In a Jupyter notebook that trained the model, or an R session that loaded keras through
reticulate, TensorFlow is imported before xband. torchvision (which onnx2torch imports) pulls in
torch._dynamo, which imports triton, and triton's C library next to TensorFlow's kills the
process (`import tensorflow; import triton`: segmentation fault). xband never compiles, so in
such a process it keeps triton out: `import triton` then fails cleanly, and torch runs without it.
"""

from __future__ import annotations

import sys


def keep_triton_out() -> None:
    """Block `import triton` when TensorFlow is loaded and triton is not (yet)."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton → ImportError
