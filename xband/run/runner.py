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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xband.data.images import ImageSet
from xband.methods import BandAttribution, Batch, Context, Method, SharedOutputs
from xband.methods._base import PassSizes
from xband.run.plan import BANDS, FeatureSet


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
    (GradientShap's baselines, permutation importance's shuffled bands). The last few batches'
    donors are kept: every method of a batch, on bands and on band groups, asks for the same
    ones, which are then read once."""

    KEPT = 8  # (batch, repeat) donor sets kept

    def __init__(self, n: int, seed: int, take: Callable[[np.ndarray], torch.Tensor]):
        self.n, self.seed, self.take = n, seed, take
        self._orders: dict[int, np.ndarray] = {}
        self._recent: dict[tuple[int, bytes], torch.Tensor] = {}  # read-only: callers copy

    def order(self, repeat: int) -> np.ndarray:
        if repeat not in self._orders:
            self._orders[repeat] = np.random.default_rng([self.seed, 7, repeat]).permutation(self.n)
        return self._orders[repeat]

    def __call__(self, positions: np.ndarray, repeat: int) -> torch.Tensor:
        key = (repeat, np.asarray(positions, dtype=np.int64).tobytes())
        if key not in self._recent:
            if len(self._recent) >= self.KEPT:
                del self._recent[next(iter(self._recent))]
            self._recent[key] = self.take(self.order(repeat)[positions])
        return self._recent[key]


@dataclass
class MethodRun:
    """One method's answers for the images (or pairs) it was given, rows in their order."""

    # feature set → (N, F), or (N, C, F) when every class is a target; (P, F) for pairs; the
    # answer's feature set first
    scores: dict[str, np.ndarray]
    maps: dict[int, np.ndarray] | None  # position (pair number) → (B, H, W) float32; None: no maps
    seconds: float
    batches: int = 0  # batches run: a run in rounds numbers the next round's from here


@dataclass(frozen=True)
class FeatureContexts:
    """The run's feature sets as the runner uses them: the context in which a perturbation
    method removes each set's features whole, and the sets a gradient method's band scores are
    summed into (`FeatureSet.membership`)."""

    sets: tuple[FeatureSet, ...]  # the answer's first
    contexts: dict[str, Context]  # removed feature set → the context whose features it holds

    @classmethod
    def of(cls, ctx: Context, sets: tuple[FeatureSet, ...]) -> FeatureContexts:
        device = ctx.baseline.device
        contexts = {s.name: ctx if s.name == BANDS else dataclasses.replace(
            ctx, features=torch.from_numpy(s.feature_of_band()).to(device))
            for s in sets if s.removed}
        return cls(sets, contexts)

    @property
    def removed(self) -> tuple[FeatureSet, ...]:
        return tuple(s for s in self.sets if s.removed)

    @property
    def answer(self) -> str:
        return self.sets[0].name


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


def network_inputs(data: ImageSet, indices: np.ndarray, positions: np.ndarray,
                   masks: np.ndarray | None = None) -> np.ndarray:
    """(K, B, H, W) the candidate images at `positions` (`indices`: the candidates' positions
    in `data`) as the network takes them: preprocessed, and in a segmentation run with each
    image's class mask (`masks`, (P, H, W)) as one more channel, (K, B + 1, H, W)."""
    images = data.take(indices[positions])
    if masks is None:
        return images
    return np.concatenate([images, masks[positions][:, None].astype(images.dtype)], axis=1)


def image_feed(data: ImageSet, indices: np.ndarray, forward: nn.Module, device: str,
               masks: np.ndarray | None = None) -> Callable[[np.ndarray], torch.Tensor]:
    """Positions among the candidate images → their network inputs on `device`
    (`network_inputs`), in the memory format the network runs in: copied once per batch
    instead of once per pass."""
    def take(positions: np.ndarray) -> torch.Tensor:
        inputs = network_inputs(data, indices, positions, masks)
        return forward.prepare(torch.from_numpy(inputs).to(device))

    return take


@dataclass(frozen=True)
class RunnerSpec:
    """What makes a run's batch runner besides the network and the image feed: picklable, so
    that Ray workers build the same runner as the driver."""

    indices: np.ndarray  # (P,) the candidate images' positions in the data source
    baseline: np.ndarray  # (B,) a removed band's constant value
    band_std: np.ndarray  # (B,)
    passes: PassSizes
    seed: int
    batch_size: int
    n_classes: int
    background: int  # donor images per image with the data baseline (0: the constant)
    device: str
    feature_sets: tuple[FeatureSet, ...]  # the answer's first (xband.run.plan)
    threshold: float | None = None  # multi-label: the output above which a label is predicted
    # segmentation: (P, H, W) each candidate's class per pixel, the network's last input channel
    masks: np.ndarray | None = None

    def build(self, forward: nn.Module, take: Callable[[np.ndarray], torch.Tensor]
              ) -> BatchRunner:
        """The batch runner over the candidate images (`take`: their network inputs)."""
        n_bands = len(self.baseline)
        ctx = Context(
            forward=forward,
            baseline=torch.from_numpy(self.baseline).view(1, -1, 1, 1).to(self.device),
            band_std=torch.from_numpy(self.band_std).to(self.device),
            donors=Donors(len(self.indices), self.seed, take if self.masks is None else
                          lambda positions: take(positions)[:, :n_bands]),  # their bands
            passes=self.passes,
            threshold=self.threshold,
            background=self.background,
            pixel_shares=self.masks is not None,
        )
        return BatchRunner(ctx, take, seed=self.seed, batch_size=self.batch_size,
                           n_classes=self.n_classes,
                           features=FeatureContexts.of(ctx, self.feature_sets))


@dataclass(frozen=True)
class Job:
    """One call of every method: a batch of images with the class to explain for each."""

    key: int  # seeds the method's draws: batch number × classes + target class
    positions: np.ndarray  # the images, among the explained ones
    target: np.ndarray  # the class explained, per image
    label: np.ndarray  # the class each image counts as (its target, for pairs)
    rows: object  # where its scores go: rows of the run, or (rows, class)
    items: np.ndarray  # what keep_maps lists and the maps are keyed by: positions, pair numbers
    keep: np.ndarray  # whether each image's maps are kept (an example, of its own class)
    done: int = 0  # images (pairs) the job completes, for the progress bar

    @property
    def row_numbers(self) -> np.ndarray:
        """The job's rows of the run, without the class (every class a target)."""
        return self.rows[0] if isinstance(self.rows, tuple) else self.rows


class BatchRunner:
    """Runs configured methods over the explained images, `batch_size` images at a time.

    take: positions (into the explained images) → channels-first images on the device, in the
    network's memory format. ctx: the network, baseline, band spreads, donors and pass sizes.
    features: the feature sets the methods answer for (default: the bands alone).
    """

    def __init__(self, ctx: Context, take: Callable[[np.ndarray], torch.Tensor], *, seed: int,
                 batch_size: int, n_classes: int, features: FeatureContexts | None = None):
        self.ctx, self.take, self.seed = ctx, take, seed
        self.batch_size, self.n_classes = batch_size, n_classes
        self.features = features or FeatureContexts.of(ctx, (FeatureSet.bands(
            tuple(str(b) for b in range(ctx.baseline.shape[1]))),))
        # masked copies of images through the network, and those one method reused from another
        self.copies_evaluated = self.copies_reused = 0

    def attribute(self, method: Method, batch: Batch, ctx: Context, key: int) -> BandAttribution:
        """One method on one batch under the batch's own seed."""
        with seeded(draw_seed(self.seed, method.name, key)), warnings.catch_warnings():
            # Captum's notes on requires_grad and per-example surrogates are not the user's
            warnings.filterwarnings("ignore", category=UserWarning, module="captum")
            return method.attribute(batch, ctx)

    def jobs(self, positions: np.ndarray, known: np.ndarray, targets: np.ndarray | Pairs | None,
             first_batch: int = 0, keep_maps: np.ndarray | None = None) -> Iterator[Job]:
        """The method calls of a run over `positions` (pair numbers, for `Pairs`), batch by
        batch (and class by class), batches numbered from `first_batch`; `keep_maps`: the
        positions (pair numbers) whose maps are kept."""
        size, classes = self.batch_size, self.n_classes
        examples = np.empty(0, dtype=np.int64) if keep_maps is None else keep_maps
        for batch_no, start in enumerate(range(0, len(positions), size), start=first_batch):
            rows = np.arange(start, min(start + size, len(positions)))
            chosen = positions[rows]
            keep = np.isin(chosen, examples)
            if isinstance(targets, Pairs):
                target = targets.target[chosen]
                yield Job(batch_no * classes, targets.image[chosen], target, target, rows,
                           chosen, keep, done=len(rows))
            elif targets is not None:
                yield Job(batch_no * classes, chosen, targets[chosen], known[chosen], rows,
                           chosen, keep, done=len(rows))
            else:  # every class a target: keep the map of each image's own class
                for goal in range(classes):
                    yield Job(batch_no * classes + goal, chosen, np.full(len(rows), goal),
                               known[chosen], (rows, goal), chosen, keep & (known[chosen] == goal),
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
        return self.run_many((method,), positions, known=known, targets=targets,
                             keep_maps=keep_maps, first_batch=first_batch, bar=bar)[method.name]

    def run_many(self, methods: Sequence[Method], positions: np.ndarray, *, known: np.ndarray,
                 targets: np.ndarray | Pairs | None, keep_maps: np.ndarray, first_batch: int = 0,
                 bar: tqdm | None = None,
                 takes: Mapping[str, np.ndarray] | None = None) -> dict[str, MethodRun]:
        """`run` for several methods over the same images: each batch is read once and given to
        every method (each under its own seed), which share the network's outputs for the
        masked copies they have in common (`SharedOutputs`). takes: per answer (`answer_name`:
        a method on a feature set), which of `positions` it explains ((len(positions),) bools;
        default: all, a method's other feature sets those of its answer); rows it leaves are NaN.
        """
        outputs = self.outputs(methods, len(positions), targets)
        x, last, shared = None, None, SharedOutputs()
        for job in self.jobs(positions, known, targets, first_batch, keep_maps):
            if job.positions is not last:  # every class of a batch reuses its images
                self._count(shared)
                x, last, shared = self.take(job.positions), job.positions, SharedOutputs()
            chosen = None if takes is None else {
                name: rows[job.row_numbers] for name, rows in takes.items()}
            for name, done in self.attribute_job(methods, job, x, shared, chosen).items():
                outputs[name].add(job, done)
            if bar is not None and job.done:
                bar.update(job.done)
        self._count(shared)
        return self.finish(methods, outputs)

    def finish(self, methods: Sequence[Method], outputs: Mapping[str, _Outputs]
               ) -> dict[str, MethodRun]:
        """Each method's run from what its jobs collected."""
        return {m.name: outputs[m.name].finish(m, self.features.sets, self.batch_size)
                for m in methods}

    def _count(self, shared: SharedOutputs) -> None:
        self.copies_evaluated += shared.evaluated
        self.copies_reused += shared.reused

    def outputs(self, methods: Sequence[Method], n: int,
                targets: np.ndarray | Pairs | None) -> dict[str, _Outputs]:
        """Empty collectors, one per method, for a run over `n` images (pairs)."""
        classes = self.n_classes if targets is None else None
        return {m.name: _Outputs(n, classes) for m in methods}

    def attribute_job(self, methods: Sequence[Method], job: Job, x: torch.Tensor,
                      shared: SharedOutputs | None = None,
                      chosen: Mapping[str, np.ndarray] | None = None) -> dict[str, JobResult]:
        """Every method on one job's images `x` (network inputs): its scores on each feature set
        it answers, and the maps to keep. shared: outputs of masked copies of these images
        computed before; chosen: per answer (`answer_name`), the job's rows it explains (default:
        all; a method whose answer has none is left out; its other feature sets default to its
        answer's). Input channels beyond the bands (a class mask) are the batch's `fixed`."""
        device, n_bands = self.ctx.baseline.device, self.ctx.baseline.shape[1]
        batch = Batch(x=x[:, :n_bands], target=torch.from_numpy(job.target).to(device),
                      label=torch.from_numpy(job.label).to(device), index=job.positions,
                      shared=shared if shared is not None else SharedOutputs(),
                      fixed=x[:, n_bands:] if x.shape[1] > n_bands else None)
        done = {}
        for method in methods:
            rows = None if chosen is None else chosen[method.name]
            if rows is not None and not rows.any():
                continue
            started = time.perf_counter()
            scores, answered, maps = {}, {}, None
            for name, ctx in self._contexts(method):
                own = rows if chosen is None else chosen.get(
                    answer_name(method.name, name, self.features.answer), rows)
                if own is not None and not own.any():
                    continue
                result = self.attribute(method, _part(batch, own), ctx, job.key)
                scores[name], answered[name] = result.scores, own
                if result.maps is not None:
                    maps = self._kept_maps(job, result.maps, rows)
            done[method.name] = JobResult(scores, maps, time.perf_counter() - started, answered)
        return done

    def _contexts(self, method: Method) -> list[tuple[str, Context]]:
        """(feature set, context) of each call a method makes on a batch: a perturbation method
        removes each removed feature set's features whole; a gradient method scores the bands
        (summed into the feature sets when the run finishes, `_Outputs.finish`)."""
        if method.grouped:
            return list(self.features.contexts.items())
        return [(BANDS, self.ctx)]

    @staticmethod
    def _kept_maps(job: Job, maps: torch.Tensor, rows: np.ndarray | None) -> dict[int, np.ndarray]:
        """The maps of the job's examples among its answered `rows` (None: all), by item."""
        keep = job.keep if rows is None else job.keep & rows
        kept = np.flatnonzero(keep if rows is None else keep[rows])
        items = job.items if rows is None else job.items[rows]
        return {int(items[row]): maps[row].cpu().numpy() for row in kept}


def answer_name(method: str, feature_set: str, answer: str) -> str:
    """What the sampler calls a method's answer on a feature set: the method's name for the run's
    answer (bands, or regions), "method (band groups)" for another set it removes whole."""
    return method if feature_set == answer else f"{method} ({feature_set})"


@dataclass
class JobResult:
    """One method's answer for one job: scores by row per feature set, the maps kept."""

    scores: dict[str, np.ndarray]  # feature set → (job rows answered, F)
    maps: dict[int, np.ndarray] | None  # position (pair number) → (B, H, W)
    seconds: float
    rows: dict[str, np.ndarray | None]  # feature set → (job rows,) bools answered; None: all


@dataclass
class _Outputs:
    """What a run of one method collects: scores by row per feature set, the kept maps."""

    n: int
    classes: int | None  # every class a target: the scores' second axis
    scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    maps: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) if self.classes is None else (self.n, self.classes)

    def add(self, job: Job, done: JobResult) -> None:
        """One job's answer, written at its rows (those it answered)."""
        for name, values in done.scores.items():
            self.scores[name] = _put(self.scores.get(name), self.shape,
                                     _answered(job.rows, done.rows[name]), values)
        self.maps.update(done.maps or {})
        self.seconds += done.seconds

    def finish(self, method: Method, sets: tuple[FeatureSet, ...], batch_size: int) -> MethodRun:
        """The method's run, the answer's feature set first. A method that does not remove a
        set's features whole (a gradient method) has its band scores summed per feature."""
        if method.grouped:
            scores = {s.name: self.scores[s.name] for s in sets if s.name in self.scores}
        else:
            bands = self.scores[BANDS]
            scores = {s.name: bands if s.name == BANDS else bands @ s.membership() for s in sets}
        return MethodRun(scores, self.maps if method.has_maps else None, self.seconds,
                         batches=-(-self.n // batch_size))


def _part(batch: Batch, rows: np.ndarray | None) -> Batch:
    """The batch's `rows` ((N,) bools; None: all), itself when that is all of them."""
    return batch if rows is None or rows.all() else batch.rows(rows)


def _answered(rows, answered: np.ndarray | None):
    """The job's `rows` (of the run, or (rows, class)) that `answered` marks (None: all)."""
    if answered is None:
        return rows
    return (rows[0][answered], rows[1]) if isinstance(rows, tuple) else rows[answered]


def _put(into: np.ndarray | None, shape: tuple[int, ...], rows, values: np.ndarray) -> np.ndarray:
    """`values` written at `rows` of `into`, made (shape + features) of NaN on first use."""
    if into is None:
        into = np.full((*shape, values.shape[1]), np.nan)
    into[rows] = values
    return into
