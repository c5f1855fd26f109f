"""What every check shares: the explained images it may take (those every method explained), in
the order it takes them, the explanation's configuration, network and per-image scores, and
rank statistics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from xband.checks.rounds import CheckRule
from xband.data.images import ImageSet, stratified_subset
from xband.errors import XbandError
from xband.methods import Context, Method
from xband.methods._base import PassSizes
from xband.models.load import LoadedModel
from xband.run import aggregate
from xband.run.config import RunConfig
from xband.run.forward import Networks, check_device, forward_module, prepare_networks, tune
from xband.run.result import Explanation
from xband.run.runner import BatchRunner, Donors, FeatureContexts


@dataclass
class Setup:
    """The images the checks may take and the order they take them in, the explanation's
    configuration, and its network as it ran: every check measures the same methods with the
    same settings, through the same batch runner.

    The pool is the explained images that every method explained (so that the trained model's
    scores of each are the explanation's own), at most `max_images` of them (stratified,
    seeded); each class takes its example images first (their maps are kept), then the rest in
    a seeded order. Positions number the pool; images are read when a check first takes them.
    """

    model: LoadedModel
    explanation: Explanation
    data: ImageSet  # the explained data, for the model
    rows: np.ndarray  # (P,) rows of the explanation's per-image arrays, ascending
    image_class: np.ndarray  # (P,) class each image counts as: its label, else its prediction
    target: np.ndarray  # (P,) class whose output is explained
    orders: dict[int, np.ndarray]  # class → its positions, in the order the checks take them
    examples: dict[int, int]  # position → row of the explanation's example images (maps kept)
    baseline: torch.Tensor  # (1, B, 1, 1) the explanation's (the band means, for the data one)
    batch_size: int
    # explained by spectral region: the bands of each region, the features every check ranks,
    # deletes and compares (None: the bands)
    regions: dict[str, tuple[int, ...]] | None = None
    rule: CheckRule = CheckRule()  # when a check has taken enough images
    _kept: dict[int, torch.Tensor] = field(default_factory=dict)  # position → (B, H, W)

    @classmethod
    def of(cls, model: LoadedModel, data: ImageSet, explanation: Explanation, *,
           max_images: int | None, batch_size: int | None = None,
           rule: CheckRule | None = None) -> Setup:
        """The pool the checks take images from, out of `explanation` (made from `model` and
        `data`)."""
        if explanation.pairs is not None:
            kind = ("of a segmentation network (per (image, class) pair)"
                    if explanation.plan.segmentation else "multi-label")
            raise XbandError("the trust checks (model randomisation, deletion curves, agreement, "
                             "completeness) are written for single-label models; this "
                             f"explanation is {kind}. Explain it without --evaluate.")
        data = data.for_model(model)
        if len(data) <= int(explanation.indices.max()):
            raise XbandError(f"{data.source}: the explanation refers to image "
                             f"{explanation.indices.max()} but the data holds {len(data)}; give "
                             "the data that was explained.")
        config = explanation.config
        known = known_classes(explanation)
        every = np.flatnonzero(explained_by_every_method(explanation))
        rows = every[stratified_subset(known[every], len(every), max_images, config.seed)]
        target = explanation.predictions if explanation.plan.target == "predicted" else known
        examples = {int(p): int(k) for p, k in _example_rows(explanation, rows)}
        check_device(config.device)
        return cls(model=model, explanation=explanation, data=data, rows=rows,
                   image_class=known[rows], target=target[rows],
                   orders=take_orders(known[rows], set(examples), config.seed),
                   examples=examples,
                   baseline=torch.from_numpy(explanation.record.baseline).view(
                       1, -1, 1, 1).to(config.device),
                   batch_size=batch_size or config.batch_size, regions=region_bands(explanation),
                   rule=rule or CheckRule())

    @property
    def config(self) -> RunConfig:
        return self.explanation.config

    @property
    def methods(self) -> tuple[Method, ...]:
        return self.explanation.plan.methods

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def passes(self) -> PassSizes:
        """The explanation's pass sizes: the same speed, and the same rounding."""
        return self.explanation.record.passes

    @property
    def n_bands(self) -> int:
        return int(self.explanation.record.band_mean.shape[0])

    @property
    def n_features(self) -> int:
        """What the methods rank: the regions, or the bands."""
        return len(self.regions) if self.regions is not None else self.n_bands

    @property
    def n_classes(self) -> int:
        return self.model.n_classes

    @cached_property
    def class_shares(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(method, class) → the mean share of each band (region) and its index, from the
        explanation's importance table (read once for every check)."""
        rows = aggregate.class_rows(self.explanation.importance_of())
        return {(str(method), str(cls)): (group["share"].to_numpy(), group["band_index"].to_numpy())
                for (method, cls), group in rows.groupby(["method", "class"], sort=False)}

    def band_mask(self, features: frozenset) -> list[int]:
        """The bands of a set of features (regions, or bands)."""
        if self.regions is None:
            return list(features)
        members = list(self.regions.values())
        return [b for f in features for b in members[f]]

    def keep(self, positions: np.ndarray) -> None:
        """Read the images a check takes and keep them while the checks run."""
        missing = [int(p) for p in positions if int(p) not in self._kept]
        if missing:
            images = self._read(np.asarray(missing))
            self._kept.update(zip(missing, images, strict=True))

    def images(self, positions: np.ndarray) -> torch.Tensor:
        """(n, B, H, W) the pool's images at `positions`, channels-first on the device: those
        taken from memory, others (donor images) read."""
        positions = np.asarray(positions)
        if all(int(p) in self._kept for p in positions):
            return torch.stack([self._kept[int(p)] for p in positions])
        return self._read(positions)

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        indices = self.explanation.indices[self.rows[positions]]
        return torch.from_numpy(self.data.take(indices)).to(self.device)

    @property
    def plain_forward(self) -> nn.Module:
        """The explained network, channels-first, as given."""
        return forward_module(self.model.network(self.config.output), self.model.layout,
                              self.device)

    def fast(self, forward: nn.Module) -> nn.Module:
        """`forward` with the explanation's speed-ups (same numbers), if it used them."""
        if not self._sped_up:
            return forward
        with _gradients_on():  # tuning compares gradients, whatever mode the caller is in
            return tune(forward, self.images(self._first_two))[0]

    @property
    def _first_two(self) -> np.ndarray:
        return np.concatenate(list(self.orders.values()))[:2]

    @property
    def _sped_up(self) -> bool:
        """Whether the explanation ran the network with speed-ups (a short run is not tuned)."""
        return bool(self.explanation.record.speed_ups)

    @cached_property
    def _networks(self) -> Networks:
        """The explained network as the explanation ran it (built on first use, which may be
        under inference mode)."""
        with _gradients_on():
            return prepare_networks(self.model.network(self.config.output), self.model.layout,
                                    self.device, self.images(self._first_two),
                                    tuned=self._sped_up)

    @property
    def forward(self) -> nn.Module:
        return self._networks.forward

    def context(self, forward: nn.Module, baseline: torch.Tensor | None = None) -> Context:
        """A method context over the pool; donor images are seeded permutations of it."""
        return Context(
            forward=forward,
            baseline=self.baseline if baseline is None else baseline,
            band_std=torch.from_numpy(self.explanation.record.band_std).to(self.device),
            donors=Donors(len(self.rows), self.seed, self.images),
            passes=self.passes,
            background=self.explanation.plan.donor_backgrounds if baseline is None else 0,
        )

    def attribute(self, methods: Sequence[Method], ctx: Context, positions: np.ndarray, *,
                  first_batch: int = 0, keep_maps: bool = False) -> dict[str, Attributed]:
        """Per method, its scores (n, F) of the images at `positions`, per band or per region as
        in the explanation's answer (no other feature set), and (`keep_maps`) the maps of the
        example images among them. Random draws depend only on the run's seed, the method and
        the batch number (from `first_batch`), so two models given the same batches see the
        same draws."""
        plan = self.explanation.plan
        runner = BatchRunner(ctx, self.images, seed=self.seed, batch_size=self.batch_size,
                             n_classes=self.n_classes,
                             features=FeatureContexts.of(ctx, (plan.answer,)))
        examples = np.array([p for p in positions if int(p) in self.examples], dtype=np.int64)
        runs = runner.run_many(methods, positions, known=self.image_class, targets=self.target,
                               keep_maps=examples if keep_maps else examples[:0],
                               first_batch=first_batch)
        return {name: Attributed(run.scores[plan.answer.name], run.maps or {})
                for name, run in runs.items()}

    def reference(self, method: str, positions: np.ndarray) -> np.ndarray:
        """(n, F) the explanation's own scores of `method` for the images at `positions`: the
        trained model's, for the class each image is explained for."""
        scores = self.explanation.scores[method][self.rows[positions]]
        if scores.ndim == 3:  # every class a target: each image's own
            scores = scores[np.arange(len(scores)), self.target[positions]]
        return scores

    def reference_maps(self, method: str) -> dict[int, np.ndarray]:
        """Position → (B, H, W) the explanation's map of `method` for each example image in
        the pool ({} for a method without maps)."""
        maps = self.explanation.examples.maps.get(method)
        if maps is None:
            return {}
        return {p: maps[k] for p, k in self.examples.items()}


@dataclass(frozen=True)
class Attributed:
    """One method's answer on a check's images: scores, and maps of the examples among them."""

    scores: np.ndarray  # (n, F)
    maps: dict[int, np.ndarray]  # position → (B, H, W)


def explained_by_every_method(explanation: Explanation) -> np.ndarray:
    """(N,) whether every method explained each row (a run until settled stops each method at
    its own number of images per class)."""
    return np.all([np.isfinite(s.reshape(len(s), -1)).all(axis=1)
                   for s in explanation.scores.values()], axis=0)


def take_orders(image_class: np.ndarray, first: set[int], seed: int) -> dict[int, np.ndarray]:
    """Per class, its positions in the order the checks take them: those in `first` (the
    example images), then the others in a seeded random order."""
    rng = np.random.default_rng([seed, 43])
    orders = {}
    for c in np.unique(image_class):
        members = rng.permutation(np.flatnonzero(image_class == c))
        ahead = np.isin(members, list(first))
        orders[int(c)] = np.concatenate([members[ahead], members[~ahead]])
    return orders


def _example_rows(explanation: Explanation, rows: np.ndarray) -> list[tuple[int, int]]:
    """(position in the pool, example number) of the explanation's example images in it."""
    where = {int(i): k for k, i in enumerate(explanation.examples.index)}
    return [(p, where[int(i)]) for p, i in enumerate(explanation.indices[rows])
            if int(i) in where]


def region_bands(explanation: Explanation) -> dict[str, tuple[int, ...]] | None:
    """Band positions per spectral region of a region explanation (None: band by band)."""
    answer = explanation.plan.answer
    return dict(zip(answer.names, answer.members, strict=True)) if \
        explanation.plan.by_region else None


def feature_names(explanation: Explanation) -> list[str]:
    """What the explanation ranks: its spectral regions, or its bands."""
    return list(explanation.plan.answer.names)


def known_classes(explanation: Explanation) -> np.ndarray:
    """The class each explained image is grouped under: its label, else its predicted class."""
    return explanation.labels if explanation.labels is not None else explanation.predictions


def per_image_shares(explanation: Explanation, method: str) -> np.ndarray:
    """(N, B) shares of the explained class (the image's own class when every class was a target)."""
    scores = explanation.scores[method]
    if scores.ndim == 3:
        scores = scores[np.arange(len(scores)), known_classes(explanation)]
    return aggregate.shares(scores)


def class_order(shares: np.ndarray, features: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray | None:
    """Feature indices in the order of a class's mean `shares`, most important first;
    features with equal shares in a random order (`rng`), since a tie carries no order; None
    when every feature ties: the method gives no ranking."""
    if aggregate.all_tied(shares):
        return None
    return features[np.lexsort((rng.permutation(len(shares)), -shares))]


@contextmanager
def _gradients_on() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


def nan_mean(values: np.ndarray | pd.Series) -> float:
    """Mean of the finite values, NaN when there are none (and no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def nan_min(values: np.ndarray | pd.Series) -> float:
    """Smallest finite value, NaN when there is none (and no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.min()) if finite.size else float("nan")
