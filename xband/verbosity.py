"""Whether the libraries xband runs may talk to the terminal.

onnxruntime's log lines, TensorFlow's start-up lines and other packages' Python warnings say
nothing the user can act on, so they are kept out unless asked for: `xband --verbose`, or the
environment variable XBAND_VERBOSE=1 (which the Keras conversion process inherits).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

ENVIRONMENT = "XBAND_VERBOSE"


def verbose() -> bool:
    """Whether third-party log lines and warnings may reach the terminal."""
    return os.environ.get(ENVIRONMENT, "") not in ("", "0")


@contextmanager
def libraries_quiet() -> Iterator[None]:
    """Other packages' Python warnings hidden while the block runs (xband's own shown), unless
    verbose."""
    with warnings.catch_warnings():
        if not verbose():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"xband(\.|$)")
        yield
