"""The engine a run explains on: this process, or Ray (`RayEngine`: where and how wide).

Kept apart from `xband.run.ray_engine`, which does the work, so that settings can name the engine
without importing Ray or the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from xband.errors import XbandError, option, whole_number
from xband.settings import ENGINE, setting

INSTALL = 'pip install -c constraints.txt -e ".[ray]"  (or: pip install "ray[data]")'
ON_RAY = option('engine="ray"', "--engine ray")  # how messages name the engine


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide to run: `address` of a running Ray cluster (None: `RAY_ADDRESS`, else
    a local Ray on this machine), `workers` actors (None: one per CPU the cluster offers, or per
    `gpus_per_worker` GPUs), each holding the network, with `gpus_per_worker` GPUs each."""

    address: str | None = setting(
        None, "a running Ray cluster (default: $RAY_ADDRESS, else a local Ray)", group=ENGINE,
        flag="--ray-address", metavar="ADDRESS")
    workers: int | None = setting(
        None, "Ray actors, each holding the network (default: one per CPU, or per "
        f"{option('gpus_per_worker', '--gpus-per-worker')} GPUs, of the cluster)",
        group=ENGINE, kind=int, metavar="N")
    gpus_per_worker: float = setting(0.0, "GPUs per Ray actor (default 0: CPU)", group=ENGINE,
                                     kind=float, metavar="G")

    def __post_init__(self) -> None:
        if self.workers is not None:
            object.__setattr__(self, "workers", whole_number(self.workers, "workers"))
        gpus = self.gpus_per_worker
        if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not gpus >= 0:
            raise XbandError(f"gpus_per_worker must be a number of at least 0, not {gpus!r}.",
                             cli=f"--gpus-per-worker must be a number of at least 0, not {gpus!r}.")

    def settings(self) -> dict:
        return {"engine": "ray", "address": self.address or os.environ.get("RAY_ADDRESS"),
                "workers": self.workers, "gpus_per_worker": self.gpus_per_worker}


def import_ray():
    """The `ray` module with Ray Data, or a message that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is what the engine runs on
    except ImportError as err:
        raise XbandError(f"{ON_RAY} needs Ray Data, which is not "
                         f"installed here ({err}). Install it: {INSTALL}") from None
    return ray
