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
    """One method's answers for the images (or pairs) it was given, rows in their order."""

    scores: np.ndarray  # (N, F), or (N, C, F) when every class is a target; (P, F) for pairs
    maps: dict[int, np.ndarray] | None  # position (pair number) → (B, H, W) float32; None: no maps
    seconds: float
    group_scores: np.ndarray | None = None  # like `scores`, per band group
    batches: int = 0  # batches run: a run in rounds numbers the next round's from here
    band_scores: np.ndarray | None = None  # regions as features: a gradient method's per band


@dataclass(frozen=True)
class BandGroups:
    """Band groups as the runner uses them: the context whose features are the groups, and the
    (bands × groups) membership matrix that sums band scores into group scores.

    As regions (`regions`), the groups are the run's features: perturbation methods run on them
    only (their cost follows the group count, not the band count), gradient methods' band
    scores are summed into them and kept per band as detail."""

    context: Context
    membership: np.ndarray  # (B, G)
    regions: bool = False

    @classmethod
    def of(cls, ctx: Context, groups: dict[str, tuple[int, ...]], n_bands: int, *,
           regions: bool = False) -> BandGroups:
        feature_of_band = np.empty(n_bands, dtype=np.int64)
        for g, members in enumerate(groups.values()):
            feature_of_band[list(members)] = g
        features = torch.from_numpy(feature_of_band).to(ctx.baseline.device)
        return cls(dataclasses.replace(ctx, features=features),
                   np.eye(len(groups))[feature_of_band], regions)


@dataclass(frozen=True)
class Pairs:
    """(image, class) pairs explained one by one: each image of a multi-label set with each of
    its positive labels, image by image."""

    image: np.ndarray  # (P,) positions among the explained images
    target: np.ndarray  # (P,) the class explained

    @classmethod
    def of(cls, present: np.ndarray, images: np.ndarray | None = None) -> Pairs:
        """The pairs of an (N, C) 0/1 matrix of labels present; `images`: the positions its rows
        stand for (default 0…N−1)."""
        image, target = np.nonzero(present)
        if images is not None:
            image = np.asarray(images)[image]
        return cls(image.astype(np.int64), target.astype(np.int64))

    def __len__(self) -> int:
        return len(self.image)


@dataclass(frozen=True)
class _Job:
    """One call of a method: a batch of images with the class to explain for each."""

    key: int  # seeds the method's draws: batch number × classes + target class
    positions: np.ndarray  # the images, among the explained ones
    target: np.ndarray  # the class explained, per image
    label: np.ndarray  # the class each image counts as (its target, for pairs)
    rows: object  # where its scores go: rows of the run, or (rows, class)
    items: np.ndarray  # what keep_maps lists and the maps are keyed by: positions, pair numbers
    own: np.ndarray | None = None  # every class a target: whether it is the image's own class
    done: int = 0  # images (pairs) the job completes, for the progress bar


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

    def jobs(self, positions: np.ndarray, known: np.ndarray, targets: np.ndarray | Pairs | None,
             first_batch: int = 0) -> Iterator[_Job]:
        """The method calls of a run over `positions` (pair numbers, for `Pairs`), batch by
        batch (and class by class), batches numbered from `first_batch`."""
        size, classes = self.batch_size, self.n_classes
        for batch_no, start in enumerate(range(0, len(positions), size), start=first_batch):
            rows = np.arange(start, min(start + size, len(positions)))
            chosen = positions[rows]
            if isinstance(targets, Pairs):
                target = targets.target[chosen]
                yield _Job(batch_no * classes, targets.image[chosen], target, target, rows,
                           chosen, done=len(rows))
            elif targets is not None:
                yield _Job(batch_no * classes, chosen, targets[chosen], known[chosen], rows,
                           chosen, done=len(rows))
            else:
                for goal in range(classes):
                    yield _Job(batch_no * classes + goal, chosen, np.full(len(rows), goal),
                               known[chosen], (rows, goal), chosen, known[chosen] == goal,
                               done=len(rows) if goal == classes - 1 else 0)

    def run(self, method: Method, positions: np.ndarray, *, known: np.ndarray,
            targets: np.ndarray | Pairs | None, keep_maps: np.ndarray, first_batch: int = 0,
            bar: tqdm | None = None) -> MethodRun:
        """Scores of `method` for the images at `positions`, rows in that order.

        known: the class each image counts as (its label, else its predicted class) and
        targets: the class explained per image (None: every class, scores (N, C, F), maps of
        each image's own class), both indexed by position; or `Pairs`, each (image, class) pair
        explained, `positions` and `keep_maps` then being pair numbers. keep_maps: positions
        (pair numbers) whose maps are kept. Batches are numbered from `first_batch`: a run in
        rounds numbers them on, so that no two batches of a method share their random draws.
        """
        started = time.perf_counter()
        device = self.ctx.baseline.device
        out = _Outputs(len(positions), self.n_classes if targets is None else None, keep_maps)
        regions_only = self.groups is not None and self.groups.regions and method.grouped
        ctx = self.groups.context if regions_only else self.ctx
        x, last = None, None
        for job in self.jobs(positions, known, targets, first_batch):
            if job.positions is not last:  # every class of a batch reuses its images
                x, last = self.take(job.positions), job.positions
            batch = Batch(x=x, target=torch.from_numpy(job.target).to(device),
                          label=torch.from_numpy(job.label).to(device), index=job.positions)
            result = self.attribute(method, batch, ctx, job.key)
            out.scores = _put(out.scores, out.shape, job.rows, result.scores)
            if self.groups is not None and method.grouped and not regions_only:
                grouped = self.attribute(method, batch, self.groups.context, job.key).scores
                out.groups = _put(out.groups, out.shape, job.rows, grouped)
            if result.maps is not None:
                out.keep(job, result.maps)
            if bar is not None and job.done:
                bar.update(job.done)
        run = MethodRun(out.scores, out.maps if method.has_maps else None,
                        time.perf_counter() - started, out.groups,
                        batches=-(-len(positions) // self.batch_size))
        return self._grouped(run, method)

    def _grouped(self, run: MethodRun, method: Method) -> MethodRun:
        """`run` with its group scores: a band-by-band method's band scores summed per group;
        as regions, the region scores become the scores and the band scores the detail."""
        if self.groups is None or method.grouped:
            return run
        summed = run.scores @ self.groups.membership
        if self.groups.regions:
            return dataclasses.replace(run, scores=summed, band_scores=run.scores)
        return dataclasses.replace(run, group_scores=summed)


@dataclass
class _Outputs:
    """What a run collects: scores (and group scores) by row, and the kept maps."""

    n: int
    classes: int | None  # every class a target: the scores' second axis
    keep_maps: np.ndarray
    scores: np.ndarray | None = None
    groups: np.ndarray | None = None
    maps: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) if self.classes is None else (self.n, self.classes)

    def keep(self, job: _Job, maps: torch.Tensor) -> None:
        keep = np.isin(job.items, self.keep_maps)
        if job.own is not None:  # every class a target: keep the map of its own class
            keep &= job.own
        for row in np.flatnonzero(keep):
            self.maps[int(job.items[row])] = maps[row].cpu().numpy()


def _put(into: np.ndarray | None, shape: tuple[int, ...], rows, values: np.ndarray) -> np.ndarray:
    """`values` written at `rows` of `into`, made (shape + features) on first use."""
    if into is None:
        into = np.zeros((*shape, values.shape[1]))
    into[rows] = values
    return into
