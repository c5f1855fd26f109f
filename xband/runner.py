"""The one batch runner: every method, batch by batch, under its own seed, with donors and maps.

`explain` and every check attribute images through `BatchRunner`, so the random draws of a
method on a batch depend only on the run's seed, the method and the batch (never on the order
of methods, a worker or the device), and donor images come from one seeded permutation of the
explained images per repeat.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from xband.methods import BandAttribution, Batch, Context, Method


def draw_seed(seed: int, method: str, key: int) -> int:
    """The seed of one method's draws on one batch (`key`: batch number × classes + target)."""
    return (seed * 1_000_003 + zlib.crc32(method.encode()) + key) % 2**32


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and NumPy's global generators (Captum draws from both), then restore them."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


class Donors:
    """Other images of the explained set: in repeat r, the donor of position p is position
    perm_r[p] of a seeded permutation of all n positions. Donors are real images of the data
    (GradientShap's baselines, permutation importance's shuffled bands)."""

    def __init__(self, n: int, seed: int, take: Callable[[np.ndarray], torch.Tensor]):
        self.n, self.seed, self.take = n, seed, take
        self._orders: dict[int, np.ndarray] = {}

    def order(self, repeat: int) -> np.ndarray:
        if repeat not in self._orders:
            self._orders[repeat] = np.random.default_rng([self.seed, 7, repeat]).permutation(self.n)
        return self._orders[repeat]

    def __call__(self, positions: np.ndarray, repeat: int) -> torch.Tensor:
        return self.take(self.order(repeat)[positions])


@dataclass
class MethodRun:
    """One method's per-image answers for the images it was given."""

    scores: np.ndarray  # (N, F), or (N, C, F) when every class is a target
    maps: dict[int, np.ndarray] | None  # position → (B, H, W) float32 maps; None: no maps
    seconds: float
    group_scores: np.ndarray | None = None  # like `scores`, per band group
    batches: int = 0


@dataclass(frozen=True)
class BandGroups:
    """Band groups as the runner uses them: the context whose features are the groups, and the
    (bands × groups) membership matrix that sums band scores into group scores."""

    context: Context
    membership: np.ndarray  # (B, G)

    @classmethod
    def of(cls, ctx: Context, groups: dict[str, tuple[int, ...]], n_bands: int) -> BandGroups:
        feature_of_band = np.empty(n_bands, dtype=np.int64)
        for g, members in enumerate(groups.values()):
            feature_of_band[list(members)] = g
        features = torch.from_numpy(feature_of_band).to(ctx.baseline.device)
        return cls(dataclasses.replace(ctx, features=features),
                   np.eye(len(groups))[feature_of_band])


class BatchRunner:
    """Runs configured methods over the explained images, `batch_size` images at a time.

    take: positions (into the explained images) → channels-first images on the device, in the
    network's memory format. ctx: the network, baseline, band spreads, donors and pass sizes.
    """

    def __init__(self, ctx: Context, take: Callable[[np.ndarray], torch.Tensor], *, seed: int,
                 batch_size: int, n_classes: int, groups: BandGroups | None = None):
        self.ctx, self.take, self.seed = ctx, take, seed
        self.batch_size, self.n_classes, self.groups = batch_size, n_classes, groups

    def attribute(self, method: Method, batch: Batch, ctx: Context, key: int) -> BandAttribution:
        """One method on one batch under the batch's own seed."""
        with seeded(draw_seed(self.seed, method.name, key)), warnings.catch_warnings():
            # Captum's notes on requires_grad and per-example surrogates are not the user's
            warnings.filterwarnings("ignore", category=UserWarning, module="captum")
            return method.attribute(batch, ctx)

    def run(self, method: Method, positions: np.ndarray, *, known: np.ndarray,
            targets: np.ndarray | None, keep_maps: np.ndarray, first_batch: int = 0,
            bar: tqdm | None = None) -> MethodRun:
        """Scores of `method` for the images at `positions`, rows in that order.

        known: the class each image counts as (its label, else its predicted class) and
        targets: the class explained per image (None: every class), both indexed by position;
        keep_maps: positions whose maps are kept (of the image's own class when every class is a
        target). Batches are numbered from `first_batch`: a run in rounds numbers them on, so
        that no two batches of a method share their random draws.
        """
        started = time.perf_counter()
        n, device = len(positions), self.ctx.baseline.device
        goals = range(self.n_classes) if targets is None else [None]
        scores = groups = None
        maps: dict[int, np.ndarray] = {}
        for batch_no, start in enumerate(range(0, n, self.batch_size), start=first_batch):
            rows = np.arange(start, min(start + self.batch_size, n))
            pos = positions[rows]
            x = self.take(pos)
            label = torch.from_numpy(known[pos]).to(device)
            for goal in goals:
                chosen = (torch.from_numpy(targets[pos]) if goal is None
                          else torch.full((len(pos),), goal, dtype=torch.long))
                batch = Batch(x=x, target=chosen.to(device), label=label, index=pos)
                key = batch_no * self.n_classes + (goal or 0)
                result = self.attribute(method, batch, self.ctx, key)
                where = rows if goal is None else (rows, goal)
                if scores is None:
                    scores = np.zeros((n, *([self.n_classes] if targets is None else []),
                                       result.scores.shape[1]))
                scores[where] = result.scores
                if self.groups is not None and method.grouped:
                    grouped = self.attribute(method, batch, self.groups.context, key).scores
                    if groups is None:
                        groups = np.zeros((*scores.shape[:-1], grouped.shape[1]))
                    groups[where] = grouped
                if result.maps is not None:
                    keep = np.isin(pos, keep_maps)
                    if goal is not None:  # every class a target: keep the map of its own class
                        keep &= known[pos] == goal
                    for row in np.flatnonzero(keep):
                        maps[int(pos[row])] = result.maps[row].cpu().numpy()
            if bar is not None:
                bar.update(len(pos))
        if self.groups is not None and not method.grouped:
            groups = scores @ self.groups.membership
        return MethodRun(scores, maps if method.has_maps else None,
                         time.perf_counter() - started, groups,
                         batches=-(-n // self.batch_size))
