"""Settings that must be made before a library loads: triton kept out next to TensorFlow, and
torch's worker threads told to spin only a moment while they wait.

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


def short_spinning_threads() -> None:
    """Let torch's OpenMP threads spin a moment (`GOMP_SPINCOUNT`, 10,000 turns: microseconds)
    before they sleep while they wait for work, unless the user chose a wait policy or spin
    count or torch is loaded already (OpenMP reads them once, on loading).

    OpenMP's own default spins 30 times longer, which on a machine whose cores other processes
    also use makes a pass wait at every layer for a thread the system has put aside while its
    partner spins on the core that thread needs; sleeping at once (`OMP_WAIT_POLICY=PASSIVE`)
    avoids that but wakes each thread anew for every layer. A short spin is as fast as the
    default on a quiet machine; a busy one is met by `xband.run.threads` with fewer threads
    (docs/benchmark/vs-tensorflow.md has the measurements).
    """
    if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        os.environ["GOMP_SPINCOUNT"] = "10000"
