"""Settings that must be made before a library loads: triton kept out next to TensorFlow, and
torch's worker threads told to sleep rather than spin while they wait.

In a Jupyter notebook that trained the model, or an R session that loaded keras through
reticulate, TensorFlow is imported before xband. torchvision (which onnx2torch imports) pulls in
torch._dynamo, which imports triton, and triton's C library next to TensorFlow's kills the
process (`import tensorflow; import triton`: segmentation fault). xband never compiles, so in
such a process it keeps triton out: `import triton` then fails cleanly, and torch runs without it.
"""

from __future__ import annotations

import os
import sys


def keep_triton_out() -> None:
    """Block `import triton` when TensorFlow is loaded and triton is not (yet)."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton → ImportError


def passive_threads() -> None:
    """Let torch's OpenMP threads sleep while they wait for work (`OMP_WAIT_POLICY=PASSIVE`),
    unless the user chose a policy or torch is loaded already (OpenMP reads it once, on loading).

    By default a waiting thread spins: on a machine whose cores other processes also use, a pass
    then waits at every layer for a thread that the system has put aside, while its partner
    spins on the core that thread needs (docs/benchmark/vs-tensorflow.md has the measurements).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
