"""What every check shares: a seeded subset of the explained images in memory, the explanation's
configuration and network, and rank statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

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
    """The images the checks run on (a stratified, seeded subset of the explained ones), the
    explanation's configuration, and its network as it ran: every check measures the same
    methods with the same settings, through the same batch runner."""

    model: LoadedModel
    explanation: Explanation
    x: torch.Tensor  # (n, B, H, W) channels-first, on device
    image_class: np.ndarray  # (n,) class each image counts as: its label, else its predicted class
    target: np.ndarray  # (n,) class whose output is explained
    positions: np.ndarray  # (n,) rows of the explanation's per-image arrays
    baseline: torch.Tensor  # (1, B, 1, 1) the explanation's (the band means, for the data one)
    batch_size: int
    # explained by spectral region: the bands of each region, the features every check ranks,
    # deletes and compares (None: the bands)
    regions: dict[str, tuple[int, ...]] | None = None
    _reference: dict = field(default_factory=dict)

    @classmethod
    def of(cls, model: LoadedModel, data: ImageSet, explanation: Explanation, *,
           max_images: int | None, batch_size: int | None = None) -> Setup:
        """The subset the checks use, taken from `explanation` (made from `model` and `data`)."""
        if explanation.pairs is not None:
            kind = ("of a segmentation network (per (image, class) pair)"
                    if explanation.plan.segmentation else "multi-label")
            raise XbandError("the trust checks (model randomisation, deletion curves, agreement, "
                             "completeness) are written for single-label models; this "
                             f"explanation is {kind}. Explain it without --evaluate.")
        config, record = explanation.config, explanation.record
        data = data.for_model(model)
        if len(data) <= int(explanation.indices.max()):
            raise XbandError(f"{data.source}: the explanation refers to image "
                             f"{explanation.indices.max()} but the data holds {len(data)}; give "
                             "the data that was explained.")
        image_class = known_classes(explanation)
        positions = stratified_subset(image_class, len(image_class), max_images, config.seed)
        target = explanation.predictions if explanation.plan.target == "predicted" \
            else image_class
        device = check_device(config.device)
        x = torch.from_numpy(data.take(explanation.indices[positions])).to(device)
        return cls(model=model, explanation=explanation, x=x, image_class=image_class[positions],
                   target=target[positions], positions=positions,
                   baseline=torch.from_numpy(record.baseline).view(1, -1, 1, 1).to(device),
                   batch_size=batch_size or config.batch_size, regions=region_bands(explanation))

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
        return int(self.x.shape[1])

    @property
    def n_features(self) -> int:
        """What the methods rank: the regions, or the bands."""
        return len(self.regions) if self.regions is not None else self.n_bands

    def band_mask(self, features: frozenset) -> list[int]:
        """The bands of a set of features (regions, or bands)."""
        if self.regions is None:
            return list(features)
        members = list(self.regions.values())
        return [b for f in features for b in members[f]]

    @property
    def plain_forward(self) -> nn.Module:
        """The explained network, channels-first, as given."""
        return forward_module(self.model.network(self.config.output), self.model.layout,
                              self.device)

    def fast(self, forward: nn.Module) -> nn.Module:
        """`forward` with the explanation's speed-ups (same numbers), if it used them."""
        return tune(forward, self.x[:2])[0] if self._sped_up else forward

    @property
    def _sped_up(self) -> bool:
        """Whether the explanation ran the network with speed-ups (a short run is not tuned)."""
        return bool(self.explanation.record.speed_ups)

    @cached_property
    def _networks(self) -> Networks:
        """The explained network as the explanation ran it."""
        return prepare_networks(self.model.network(self.config.output), self.model.layout,
                                self.device, self.x[:2], tuned=self._sped_up)

    @property
    def forward(self) -> nn.Module:
        return self._networks.forward

    def context(self, forward: nn.Module, baseline: torch.Tensor | None = None) -> Context:
        """A method context over this subset; donor images are seeded permutations of it."""
        return Context(
            forward=forward,
            baseline=self.baseline if baseline is None else baseline,
            band_std=torch.from_numpy(self.explanation.record.band_std).to(self.device),
            donors=Donors(len(self.positions), self.seed, self._take),
            passes=self.passes,
            background=self.explanation.plan.donor_backgrounds if baseline is None else 0,
        )

    def _take(self, positions: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(np.asarray(positions))]

    def attribute(self, method: Method, ctx: Context, *, keep_maps: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-image scores (n, F) of `method` on the subset, per band or per region as in
        the explanation, and its maps (n, B, H, W) when asked and the method has them. Random
        draws depend only on the run's seed, the method and the batch, so two models see the
        same draws."""
        plan = self.explanation.plan
        sets = plan.features if plan.by_region else plan.features[:1]  # regions, or the bands
        runner = BatchRunner(ctx, self._take, seed=self.seed, batch_size=self.batch_size,
                             n_classes=self.model.n_classes,
                             features=FeatureContexts.of(ctx, sets))
        everyone = np.arange(len(self.positions))
        run = runner.run(method, everyone, known=self.image_class, targets=self.target,
                         keep_maps=everyone if keep_maps else everyone[:0])
        scores = run.scores[plan.answer.name]
        if not keep_maps or run.maps is None:
            return scores, None
        return scores, np.stack([run.maps[p] for p in everyone])

    def reference(self, method: Method) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and maps of the trained model on the subset with the explanation's settings."""
        if method.name not in self._reference:
            self._reference[method.name] = self.attribute(method, self.context(self.forward),
                                                          keep_maps=True)
        return self._reference[method.name]


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


def class_means(scores: np.ndarray, group: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, B) mean share per class (NaN rows for classes without images)."""
    share = aggregate.shares(scores)
    out = np.full((n_classes, scores.shape[1]), np.nan)
    for c in range(n_classes):
        if (group == c).any():
            out[c] = share[group == c].mean(axis=0)
    return out


def class_order(explanation: Explanation, method: str, class_name: str) -> np.ndarray:
    """Band (region) indices in the order `method` ranks them for a class, most important first."""
    rows = aggregate.class_rows(explanation.importance_of())
    rows = rows[(rows["method"] == method) & (rows["class"] == class_name)]
    return rows.sort_values(["share", "band_index"], ascending=[False, True],
                            kind="stable")["band_index"].to_numpy()


def nan_mean(values: np.ndarray | pd.Series) -> float:
    """Mean of the finite values, NaN when there are none (and no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")
