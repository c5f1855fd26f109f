"""What every check shares: a seeded subset of the explained images in memory, the explanation's
settings, and rank statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from xband import aggregate
from xband.data import ImageSet, stratified_subset
from xband.errors import XbandError
from xband.explain import run_method, seed_for
from xband.forward import PassSizes, check_device, fast_networks, forward_module, tune
from xband.methods import BandAttribution, Batch, Context, Method, get_method
from xband.models import LoadedModel
from xband.result import Explanation


@dataclass
class Setup:
    """The images the checks run on (a stratified, seeded subset of the explained ones) and the
    settings of the run that explained them, so that every check measures the same methods."""

    model: LoadedModel
    explanation: Explanation
    methods: list[Method]
    x: torch.Tensor  # (n, B, H, W) channels-first, on device
    group: np.ndarray  # (n,) class each image counts for: true label, else predicted class
    target: torch.Tensor  # (n,) class whose output is explained
    positions: np.ndarray  # (n,) rows of the explanation's per-image arrays
    baseline: torch.Tensor  # (1, B, 1, 1) the explanation's baseline
    settings: dict  # per-method options of the explanation
    output: str
    batch_size: int
    seed: int
    device: str
    tuned: bool = True
    passes: PassSizes = field(default_factory=PassSizes)  # as the explanation measured them
    _reference: dict = field(default_factory=dict)

    @property
    def n_bands(self) -> int:
        return int(self.x.shape[1])

    @property
    def plain_forward(self) -> nn.Module:
        """The explained network, channels-first, as given."""
        return forward_module(self.model.network(self.output), self.model.layout, self.device)

    def fast(self, forward: nn.Module) -> nn.Module:
        """`forward` with the explanation's speed-ups (same numbers), if it used them."""
        return tune(forward, self.x[:2])[0] if self.tuned else forward

    @cached_property
    def _networks(self) -> tuple[nn.Module, nn.Module]:
        """The explained network as the explanation ran it: for gradients, and for forward-only
        passes (its inference copy)."""
        plain = self.plain_forward
        return fast_networks(plain, self.x[:2])[:2] if self.tuned else (plain, plain)

    @property
    def forward(self) -> nn.Module:
        return self._networks[0]

    @property
    def inference(self) -> nn.Module:
        return self._networks[1]

    def context(self, forward: nn.Module, baseline: torch.Tensor | None = None,
                settings: dict | None = None) -> Context:
        """A method context over this subset; donor images are seeded permutations of it."""
        n = len(self.positions)

        def donors(pos: np.ndarray, repeat: int) -> torch.Tensor:
            order = np.random.default_rng([self.seed, 7, repeat]).permutation(n)
            return self.x[torch.from_numpy(order[pos])]

        std = torch.from_numpy(self.explanation.band_std).to(self.device)
        return Context(
            forward=forward,
            baseline=self.baseline if baseline is None else baseline,
            band_std=std,
            donors=donors,
            settings=self.settings if settings is None else settings,
            passes=self.passes,
            # the inference copy belongs to the explained network, not to a randomised one
            inference=self.inference if forward is self.forward else None,
        )

    def attribute(self, method: Method, ctx: Context, *, keep_maps: bool = False
                  ) -> tuple[np.ndarray, torch.Tensor | None]:
        """Per-image band scores (n, B) of `method` on the subset, and its maps (on the CPU) when
        asked and the method has them. Batch seeds depend only on the run's seed and the batch, so
        two models see the same random draws."""
        n = len(self.positions)
        scores = np.zeros((n, self.n_bands))
        maps = []
        for batch_no, start in enumerate(range(0, n, self.batch_size)):
            pos = np.arange(start, min(start + self.batch_size, n))
            batch = Batch(x=self.x[pos], target=self.target[pos],
                          label=torch.from_numpy(self.group[pos]).to(self.device), index=pos)
            result: BandAttribution = run_method(method, batch, ctx,
                                                 seed_for(self.seed, method.name, batch_no))
            scores[pos] = result.scores
            if keep_maps and result.maps is not None:
                maps.append(result.maps.float().cpu())
        return scores, (torch.cat(maps) if maps else None)

    def reference(self, method: Method) -> tuple[np.ndarray, torch.Tensor | None]:
        """Scores and maps of the trained model on the subset with the explanation's settings."""
        if method.name not in self._reference:
            self._reference[method.name] = self.attribute(method, self.context(self.forward),
                                                          keep_maps=True)
        return self._reference[method.name]


def make_setup(model: LoadedModel, data: ImageSet, explanation: Explanation, *, max_images: int,
               batch_size: int, device: str) -> Setup:
    """The subset and settings every check uses, taken from `explanation`."""
    if len(data) <= int(explanation.indices.max()):
        raise XbandError(f"{data.source}: the explanation refers to image {explanation.indices.max()} "
                         f"but the data holds {len(data)}; give the data that was explained.")
    summary = explanation.summary
    run = summary["settings"]
    seed = int(summary["seed"])
    group = known_classes(explanation)
    positions = stratified_subset(group, len(group), max_images, seed)
    target = explanation.predictions if explanation.target_mode == "predicted" else group
    methods = [get_method(m) for m in explanation.methods]
    settings = {m.name: {k: summary["methods"][m.name][k] for k in m.defaults} for m in methods}
    x = torch.from_numpy(data.take(explanation.indices[positions])).to(check_device(device))
    baseline = torch.tensor(run["baseline_values"], dtype=torch.float32).view(1, -1, 1, 1)
    return Setup(
        model=model, explanation=explanation, methods=methods, x=x, group=group[positions],
        target=torch.from_numpy(target[positions]).to(device), positions=positions,
        baseline=baseline.to(device), settings=settings, output=run["output"],
        batch_size=batch_size, seed=seed, device=device, tuned=run.get("tuned", True),
        passes=PassSizes(**run.get("images_per_pass", {"forward": batch_size,
                                                        "gradient": batch_size})),
    )


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
    """Band indices in the order `method` ranks them for a class, most important first."""
    rows = aggregate.class_rows(explanation.importance)
    rows = rows[(rows["method"] == method) & (rows["class"] == class_name)]
    return rows.sort_values(["share", "band_index"], ascending=[False, True],
                            kind="stable")["band_index"].to_numpy()


def nan_mean(values: np.ndarray | pd.Series) -> float:
    """Mean of the finite values, NaN when there are none (and no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else float("nan")
