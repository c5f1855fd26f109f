"""Every method over the candidate images: all of them, or class by class in rounds until each
class's answer is settled (xband.run.sampling). Images are checked and predicted the first time a
method needs them, so a sampled run never reads the images it does not explain."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xband.data.images import ImageSet, batches, check_images
from xband.methods import Method
from xband.run import aggregate
from xband.run.runner import BatchRunner, MethodRun, Pairs, answer_name
from xband.run.sampling import ALL_IMAGES, ClassStop, StoppingRule, sample_until_settled


class Candidates:
    """The images a run may explain (positions into `indices`), with their labels, and their
    read checks and predictions made when first needed. pixel_shares: segmentation, a class is
    predicted where the share of its pixels predicted as it exceeds `threshold`
    (`xband.models.segmentation.ClassPixels`)."""

    def __init__(self, data: ImageSet, indices: np.ndarray, forward: nn.Module, take, *,
                 skip_bad: bool, checked: np.ndarray, chunk: int, threshold: float | None = None,
                 pixel_shares: bool = False):
        self.data, self.indices, self.forward, self.take = data, indices, forward, take
        self.skip_bad, self.chunk, self.threshold = skip_bad, chunk, threshold
        self.pixel_shares = pixel_shares
        self.labels = None if data.labels is None else data.labels[indices]
        # the predicted class (-1: not predicted yet), or multi-label (a threshold) the labels
        # predicted, (P, C) bools
        self.predictions = (np.full(len(indices), -1, dtype=np.int64) if threshold is None else
                            np.zeros((len(indices), len(data.class_names)), dtype=bool))
        self.predicted = np.zeros(len(indices), dtype=bool)
        self.checked = checked.copy()  # (P,) read and checked already
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def known(self) -> np.ndarray:
        """The class each image counts as: its label, else its predicted class."""
        return self.labels if self.labels is not None else self.predictions

    def prepare(self, positions: np.ndarray) -> np.ndarray:
        """The usable ones of `positions`, sorted, each checked and predicted once."""
        positions = np.sort(positions)
        unchecked = positions[~self.checked[positions]]
        if len(unchecked):
            kept, skipped = check_images(self.data, self.indices[unchecked],
                                         skip_bad=self.skip_bad)
            self.skipped += skipped
            good = np.isin(self.indices[unchecked], kept)
            self.checked[unchecked[good]] = True
            positions = positions[~np.isin(positions, unchecked[~good])]
        unknown = positions[~self.predicted[positions]]
        with torch.inference_mode():
            for part in batches(unknown, self.chunk):
                outputs = self.forward(self.take(part))
                if self.pixel_shares:  # the classes' scores, then their pixels' shares found
                    outputs = outputs[:, outputs.shape[1] // 2:]
                self.predictions[part] = (outputs.argmax(dim=1) if self.threshold is None
                                          else outputs > self.threshold).cpu().numpy()
        self.predicted[unknown] = True
        return positions


def first_round(orders: dict[int, np.ndarray], rule: StoppingRule, all_images: bool) -> np.ndarray:
    """The images every method explains first: each class's first images, or all of them."""
    take = None if all_images else rule.first_round
    return np.sort(np.concatenate([order[:take] for order in orders.values()]))


@dataclass
class MethodResult:
    """One method's scores over all candidate images (NaN rows where it explained none), or
    multi-label over every (image, label) pair, per feature set."""

    # feature set → (P, F) or (P, C, F); (pairs, F); the answer's feature set first
    scores: dict[str, np.ndarray]
    maps: dict[int, np.ndarray] | None  # example position (pair number) → (B, H, W)
    seconds: float
    # feature set → class → why the method stopped taking its images: the answer's, and those
    # of a feature set it removes whole that stopped on its own (its band groups)
    stops: dict[str, dict[int, ClassStop]]

    @property
    def answer(self) -> np.ndarray:
        """The scores on the answer's feature set (the bands, or the regions)."""
        return next(iter(self.scores.values()))

    @property
    def explained(self) -> np.ndarray:
        """(P,) whether each candidate image (each pair, multi-label) was explained."""
        return np.isfinite(self.answer.reshape(len(self.answer), -1)).all(axis=1)


def explain_until_settled(methods: tuple[Method, ...], runner: BatchRunner,
                          candidates: Candidates, *, target: str, orders: dict[int, np.ndarray],
                          rule: StoppingRule, examples: np.ndarray, seed: int,
                          seconds_per_image: dict[str, float], deadline: float | None,
                          progress: bool) -> dict[str, MethodResult]:
    """Every method's scores, class by class in rounds until each method's answer for each class
    is settled (xband.run.sampling): a round's images are read once and given to every method still
    going on their class, which share the network's outputs for the masked copies they have in
    common."""
    collected = {m.name: _Collected() for m in methods}
    answer = runner.features.answer
    followers = {m.name: {s.name: answer_name(m.name, s.name, answer)
                          for s in runner.features.removed[1:]} for m in methods if m.grouped}
    batches_done = rounds = 0
    targets = {"true": candidates.labels, "predicted": candidates.predictions, "all": None}[target]
    bar = tqdm(total=0, desc=f"{len(methods)} methods", unit="img", disable=not progress,
               leave=True, dynamic_ncols=True)

    def attribute(positions: np.ndarray, active: Mapping[str, set[int]]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        nonlocal batches_done, rounds
        positions = candidates.prepare(positions)
        going = [m for m in methods if active[m.name]]
        known = candidates.known[positions]
        takes = {name: np.isin(known, list(active[name])) for m in going
                 for name in (m.name, *followers.get(m.name, {}).values())}
        rounds += 1  # the bar runs to the end of this round: its time left is true
        bar.total = bar.n + len(positions)
        bar.set_postfix_str(f"round {rounds}, {len(going)} methods until settled", refresh=True)
        runs = runner.run_many(going, positions, known=candidates.known, targets=targets,
                               keep_maps=examples, first_batch=batches_done, bar=bar,
                               takes=takes) if len(positions) else {}
        batches_done += -(-len(positions) // runner.batch_size)
        done = {}
        for method in going:
            mine = takes[method.name]
            if method.name in runs:
                collected[method.name].add(runs[method.name], positions, mine, len(candidates))
            run = runs.get(method.name)
            done[method.name] = _answer(None if run is None else run.scores[answer], mine,
                                        positions, known)
            for feature_set, name in followers.get(method.name, {}).items():
                done[name] = _answer(None if run is None else run.scores.get(feature_set),
                                     takes[name], positions, known)
        return done

    follows = {name: m for m, names in followers.items() for name in names.values()}
    stops = sample_until_settled(attribute, [m.name for m in methods] + list(follows), orders,
                                 rule, class_of=candidates.known, seed=seed,
                                 seconds_per_image=seconds_per_image, deadline=deadline,
                                 follows=follows)
    bar.close()
    return {m.name: collected[m.name].result(m, {answer: stops[m.name], **{
        feature_set: stops[name] for feature_set, name in followers.get(m.name, {}).items()}})
        for m in methods}


def _answer(scores: np.ndarray | None, mine: np.ndarray, positions: np.ndarray,
            known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images a method answered of a round's `positions` (`mine` marks them) and their
    shares for their own class, as the sampler takes them."""
    if scores is None or not mine.any():
        return positions[mine][:0], np.empty((0, 0))
    return positions[mine], aggregate.shares(_own_class(scores[mine], known[mine]))


@dataclass
class _Collected:
    """One method's answers gathered over the rounds, at the candidates' positions."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)  # feature set → (P, ...)
    maps: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, run: MethodRun, positions: np.ndarray, mine: np.ndarray, n: int) -> None:
        """A round's run over `positions`, of which the method explained those `mine` marks."""
        for name, values in run.scores.items():
            self.scores.setdefault(name, np.full((n, *values.shape[1:]), np.nan))
            self.scores[name][positions[mine]] = values[mine]
        self.maps.update(run.maps or {})
        self.seconds += run.seconds

    def result(self, method: Method, stops: dict[str, dict[int, ClassStop]]) -> MethodResult:
        """The method's result; its seconds are those of its own calls (a pass it shares is
        counted by the method that made it first)."""
        return MethodResult(self.scores, self.maps if method.has_maps else None, self.seconds,
                            stops)


def explain_every_image(methods: tuple[Method, ...], runner: BatchRunner, candidates: Candidates,
                        *, target: str, orders: dict[int, np.ndarray], examples: np.ndarray,
                        progress: bool) -> dict[str, MethodResult]:
    """Every method's scores for every candidate image in one pass of the runner, each batch
    read once and given to every method (each under its own seed), with one progress bar."""
    positions = candidates.prepare(np.concatenate(list(orders.values())))
    targets = {"true": candidates.labels, "predicted": candidates.predictions, "all": None}[target]
    with tqdm(total=len(positions), desc=f"{len(methods)} methods", unit="img",
              disable=not progress, leave=True, dynamic_ncols=True) as bar:
        runs = runner.run_many(methods, positions, known=candidates.known, targets=targets,
                               keep_maps=examples, bar=bar)
    counts = np.bincount(candidates.known[positions], minlength=max(orders) + 1)
    stops = {c: ClassStop(int(counts[c]), ALL_IMAGES, np.nan) for c in orders}
    n = len(candidates)
    return {name: MethodResult({s: _at(v, positions, n) for s, v in run.scores.items()},
                               run.maps, run.seconds, {runner.features.answer: stops})
            for name, run in runs.items()}


def _at(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """(n, ...) rows: `values` at `positions`, NaN elsewhere."""
    out = np.full((n, *values.shape[1:]), np.nan)
    out[positions] = values
    return out


def explain_pairs(method: Method, runner: BatchRunner, candidates: Candidates, pairs: Pairs, *,
                  examples: np.ndarray, progress: bool) -> MethodResult:
    """`method`'s scores for every (image, label) pair of a multi-label run, in pair order: a
    batch of pairs is one call. Every pair is explained (the rounds until settled are for
    single-label runs); `examples` are pair numbers."""
    started = time.perf_counter()
    with tqdm(total=len(pairs), desc=f"{method.label:<28}", unit="pair", disable=not progress,
              leave=True, dynamic_ncols=True) as bar:
        run = runner.run(method, np.arange(len(pairs)), known=candidates.known, targets=pairs,
                         keep_maps=examples, bar=bar)
    counts = np.bincount(pairs.target, minlength=len(candidates.data.class_names))
    stops = {int(c): ClassStop(int(counts[c]), ALL_IMAGES, np.nan) for c in np.flatnonzero(counts)}
    return MethodResult(run.scores, run.maps, time.perf_counter() - started,
                        {runner.features.answer: stops})


def _own_class(scores: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(N, F) scores of each image's own class (when every class was a target)."""
    return scores[np.arange(len(scores)), known] if scores.ndim == 3 else scores
