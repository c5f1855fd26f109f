"""What a run does, resolved once from the user's settings, the model and the data.

`RunConfig` is what the user asked for, checked and frozen; a `Plan` is what it comes to on this
model and data: the class each image is explained for, whether labels are multi-label (or the
model segments images: each image explained for each class its mask has pixels of), whether
every image is explained or classes are taken in rounds until settled (and so which forms of
the methods run), how many background images a removed band is drawn from, and the feature
sets: named partitions of the bands that the methods answer for (`FeatureSet`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xband.data.images import ImageSet
from xband.data.regions import (
    AUTO_ABOVE_BANDS,
    AUTO_WIDTH_NM,
    RegionSpec,
    band_regions,
    check_regions_possible,
    parse_regions,
)
from xband.errors import XbandError, option
from xband.methods import Method
from xband.run.config import RunConfig
from xband.run.cost import fit_budget
from xband.run.tuning import PassTiming

BANDS, GROUPS, REGIONS = "bands", "band groups", "regions"  # the feature sets' names
BACKGROUND_UNTIL_SETTLED = 1  # background images per image in rounds until settled
BACKGROUND_EVERY_IMAGE = 8  # and with every image


@dataclass(frozen=True)
class FeatureSet:
    """A named partition of the bands: what a method removes whole (perturbation methods), or
    over which it sums its band scores (gradient methods)."""

    name: str  # BANDS, GROUPS or REGIONS
    names: tuple[str, ...]  # (F,) each feature's name
    members: tuple[tuple[int, ...], ...]  # (F,) each feature's band positions
    removed: bool = True  # perturbation methods remove these features; False: gradient detail

    @classmethod
    def of(cls, name: str, groups: dict[str, tuple[int, ...]], *,
           removed: bool = True) -> FeatureSet:
        return cls(name, tuple(groups), tuple(tuple(m) for m in groups.values()), removed)

    @classmethod
    def bands(cls, band_names: tuple[str, ...], *, removed: bool = True) -> FeatureSet:
        return cls(BANDS, tuple(band_names), tuple((b,) for b in range(len(band_names))), removed)

    def __len__(self) -> int:
        return len(self.names)

    def feature_of_band(self) -> np.ndarray:
        """(B,) the feature each band belongs to."""
        owner = np.empty(sum(len(m) for m in self.members), dtype=np.int64)
        for f, members in enumerate(self.members):
            owner[list(members)] = f
        return owner

    def membership(self) -> np.ndarray:
        """(B, F) 1 where a band belongs to a feature: band scores @ membership = feature scores."""
        return np.eye(len(self))[self.feature_of_band()]

    def as_dict(self, band_names: tuple[str, ...]) -> dict[str, list[str]]:
        """Feature → the names of its bands."""
        return {name: [band_names[b] for b in members]
                for name, members in zip(self.names, self.members, strict=True)}


@dataclass(frozen=True)
class Plan:
    """What a run does on this model and data (`resolve_plan`), beside the user's settings."""

    config: RunConfig
    methods: tuple[Method, ...]  # in the forms the run takes (few draws until settled; budget)
    target: str  # "true", "predicted" or "all": the class each image is explained for
    multi_label: bool  # each image explained for each of its labels
    all_images: bool  # every image explained (else each class until its answer is settled)
    few_draws: bool  # each image takes few random draws, a class its precision from more images
    background_images: int  # images a removed band is drawn from, per image (data baseline)
    regions: RegionSpec | None  # spectral regions asked for or chosen ("auto"); None: none
    features: tuple[FeatureSet, ...]  # the answer's feature set first (bands or regions)
    notes: tuple[str, ...] = ()
    # a segmentation network: each (image, class present) pair explained for the class's mean
    # output over its pixels (xband.run.segmentation), a multi-label run over those pairs
    segmentation: bool = False

    @property
    def answer(self) -> FeatureSet:
        """The feature set the answer ranks: the bands, or the spectral regions."""
        return self.features[0]

    @property
    def by_region(self) -> bool:
        return self.answer.name == REGIONS

    @property
    def removed(self) -> tuple[FeatureSet, ...]:
        """The feature sets perturbation methods remove, the answer's first."""
        return tuple(f for f in self.features if f.removed)

    @property
    def feature_counts(self) -> tuple[int, ...]:
        """Features per removed set: what a perturbation method's passes follow (xband.run.cost)."""
        return tuple(len(f) for f in self.removed)

    @property
    def donor_backgrounds(self) -> int:
        """Other images a removed band is taken from, per image, with the data baseline; 0 with
        a constant baseline."""
        return self.background_images if self.config.baseline == "data" else 0

    @property
    def n_background(self) -> int:
        """Evaluations per removal: the donor backgrounds, or 1 for a constant baseline."""
        return max(1, self.donor_backgrounds)

    def method(self, name: str) -> Method:
        return next(m for m in self.methods if m.name == name)

    def fitted_to_budget(self, timing: PassTiming, n_classes: int) -> tuple[Plan, list[str]]:
        """With a time budget, the plan whose methods take the forms an equal share of it
        affords at the measured pass speed (the one step that needs the network timed)."""
        if self.config.budget is None:
            return self, []
        methods, notes = fit_budget(self.methods, self.feature_counts, timing.seconds_per_image,
                                    self.config.budget, n_classes,
                                    self.config.stopping.min_images, self.n_background)
        return dataclasses.replace(self, methods=methods), notes

    def settings(self) -> dict:
        """The settings as summary.json records them, as they were resolved."""
        config = self.config
        return {
            "target": self.target,
            "output": config.output,
            "baseline": config.baseline if isinstance(config.baseline, str) else "user-given",
            "background_images": self.donor_backgrounds or None,
            "batch_size": config.batch_size,
            "max_images": config.max_images,
            "max_per_class": config.max_per_class,
            "examples_per_class": config.examples_per_class,
            "device": config.device,
            "tuned": config.tuned,
            "skip_bad": config.skip_bad,
            "bootstrap_resamples": config.n_boot,
            "all_images": self.all_images,
            "few_draws_per_image": self.few_draws,
            "budget_s": config.budget,
            "accept_low_accuracy": config.accept_low_accuracy,
            "multi_label": self.multi_label,
            "segmentation": self.segmentation,
            "engine": "single" if config.engine is None else config.engine.settings(),
            "regions": None if self.regions is None else self.regions.text,
        }


def resolve_plan(config: RunConfig, data: ImageSet, n_classes: int,
                 final_activation: str, segmentation: bool = False) -> Plan:
    """What `config` comes to on data checked against the model (`ImageSet.for_model`), a model
    with `n_classes` outputs ending in `final_activation`; `segmentation`: per pixel."""
    regions, notes = _regions(config, data)
    _check_segmentation(config, data, segmentation)
    target = _target(config, data.labels is not None or data.segmentation)
    multi_label = segmentation or _multi_label(config, target, final_activation, data.multi_label)
    all_images = config.all_images or multi_label
    settled = not all_images and _beyond_first_round(data, config, n_classes)
    methods = config.methods_until_settled if settled and config.methods_until_settled else \
        config.methods
    background = config.background_images or (
        BACKGROUND_UNTIL_SETTLED if settled else BACKGROUND_EVERY_IMAGE)
    return Plan(config, methods, target, multi_label, all_images, settled, background, regions,
                _feature_sets(data, regions), notes, segmentation)


def _check_segmentation(config: RunConfig, data: ImageSet, segmentation: bool) -> None:
    """A segmentation network is explained on class masks, as (image, class) pairs; masks are
    for a segmentation network."""
    if data.segmentation and not segmentation:
        raise XbandError(f"{data.source}: the images come with class masks (a class per pixel), "
                         "but the model gives one score per class and image: explain a "
                         "classifier on labels per image, or give the segmentation network.")
    if not segmentation:
        return
    if data.labels is not None:
        raise XbandError(f"{data.source}: the model segments images (a score per class and "
                         "pixel), but the data has labels per image: give class masks "
                         f"({option('masks=', '--masks')}), or no labels to explain the "
                         "network's own predicted masks.")
    if config.multi_label is False or config.target == "all" or config.budget is not None:
        raise XbandError(
            "a segmentation run explains each image for each class its mask has pixels of "
            "(the label mask, target 'true', or the predicted one, target 'predicted'), every "
            f"(image, class) pair: leave out {option('multi_label=False, ', '')}target 'all' and "
            f"{option('budget', '--budget')}; limit the images with "
            f"{option('max_images', '--max-images')}.")


def _regions(config: RunConfig, data: ImageSet) -> tuple[RegionSpec | None, tuple[str, ...]]:
    """The spectral regions to explain by: those asked for, or "auto" for many bands with
    wavelengths known and no band groups; None (band by band) otherwise or for 'none'."""
    regions = config.regions
    many = data.n_bands > AUTO_ABOVE_BANDS and data.wavelengths is not None
    notes: tuple[str, ...] = ()
    if regions is None and many and data.band_groups_by_name is None:
        regions = parse_regions("auto")
        notes = (f"regions: {data.n_bands} bands with known wavelengths are explained by "
                 f"spectral region ({AUTO_WIDTH_NM:g} nm windows; regions 'none' explains band "
                 "by band).",)
    if regions is not None and not regions.per_band:
        check_regions_possible(data.wavelengths, data.band_groups_by_name is not None)
    return regions, notes


def _feature_sets(data: ImageSet, regions: RegionSpec | None) -> tuple[FeatureSet, ...]:
    """By region: the regions, then the bands as the gradient methods' detail; else the bands,
    then the band groups when the data has them (each group also removed whole)."""
    bands = data.band_names
    if regions is not None and not regions.per_band:
        spans = band_regions(regions, data.wavelengths, bands)
        return FeatureSet.of(REGIONS, spans), FeatureSet.bands(bands, removed=False)
    if data.band_groups:
        return FeatureSet.bands(bands), FeatureSet.of(GROUPS, dict(data.band_groups))
    return (FeatureSet.bands(bands),)


def _target(config: RunConfig, has_labels: bool) -> str:
    """The class explained: as asked, else the label when known, else the prediction."""
    if config.target is None:
        return "true" if has_labels else "predicted"
    if config.target == "true" and not has_labels:
        raise XbandError(f"target 'true' needs labels: give them ({option('labels', '--labels')}"
                         ", or 'y' in the .npz) or explain the predicted class (target "
                         "'predicted').")
    return config.target


def _multi_label(config: RunConfig, target: str, final_activation: str,
                 multi_hot: bool) -> bool:
    """Multi-label: asked for, or a final sigmoid, or labels with several classes per image. A
    multi-label run explains every (image, label) pair: the rounds until settled, and so the
    budget, are per single class."""
    multi = config.multi_label
    if multi is None:
        multi = final_activation == "sigmoid" or multi_hot
    elif not multi and multi_hot:
        raise XbandError("the labels name several classes per image, but multi_label is "
                         "False: give one label per image, or explain as multi-label.")
    if multi and target == "all":
        raise XbandError("target 'all' (every class for every image) is for single-label "
                         "models; a multi-label model is explained for each image's labels "
                         "(target 'true') or its predicted labels (target 'predicted').")
    if multi and config.budget is not None:
        raise XbandError(
            f"{option('budget', '--budget')} applies to single-label runs, whose classes take "
            "images in rounds until their top bands are settled; a multi-label run explains "
            "every (image, label) pair. Leave out the budget and limit the images with "
            f"{option('max_images', '--max-images')} or "
            f"{option('max_per_class', '--max-per-class')}.")
    return bool(multi)


def _beyond_first_round(data: ImageSet, config: RunConfig, n_classes: int) -> bool:
    """Whether rounds until settled could take more images than their first round takes: only
    then do few draws per image pay (with every image in the first round, fewer draws would only
    lose precision)."""
    at_most = min(len(data), config.max_images or len(data),
                  (config.max_per_class or len(data)) * n_classes)
    return at_most > config.stopping.first_round * n_classes
