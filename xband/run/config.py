"""The settings of one explanation run, validated once, frozen, and carried by its result.

`explain` builds a `RunConfig` from its arguments; the checks re-run methods with the run's own
configuration, and summary.json records it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xband.data.regions import RegionSpec, parse_regions
from xband.errors import XbandError, option, whole_number
from xband.methods import Method, resolve_methods
from xband.run.cost import parse_budget
from xband.run.engine import ON_RAY, RayEngine, import_ray
from xband.run.sampling import StoppingRule

TARGETS = ("true", "predicted", "all")
OUTPUTS = ("logits", "probabilities")
BASELINES = ("data", "mean", "zero")


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise XbandError(f"{name} '{value}' is not one of: {', '.join(choices)}.")
    return value


def _engine(engine) -> RayEngine | None:
    """None for one machine ("single"), a `RayEngine` for Ray ("ray" or a configured one)."""
    if engine is None or engine == "single":
        return None
    if engine == "ray" or isinstance(engine, RayEngine):
        import_ray()  # missing, it is said now, before any work
        return RayEngine() if engine == "ray" else engine
    raise XbandError(f"engine {engine!r} is not one of: single, ray (or an xband.RayEngine).")


def _optional_count(value, name: str, minimum: int = 1) -> int | None:
    return None if value is None else whole_number(value, name, minimum=minimum)


BACKGROUND_UNTIL_SETTLED = 1  # background images per image in rounds until settled
BACKGROUND_EVERY_IMAGE = 8  # and with every image (`RunConfig.for_mode`)


@dataclass(frozen=True)
class RunConfig:
    """What to explain and how; every field is checked when the object is made.

    methods: the configured methods, in report order. target: the class whose output is explained:
    "true" (the label), "predicted", "all" (every class), or None (the label when labels are known,
    else the predicted class). output: "logits" (a final softmax or sigmoid stripped when possible)
    or "probabilities". baseline: what a removed band becomes: "data" (that band of each of
    `background_images` other images of the data per image, the score being the mean over them;
    None: 1 in rounds until settled, 8 with every image, `for_mode`),
    "mean" (its mean over the data), "zero", or one value per band. max_images / max_per_class:
    explain a seeded, stratified subset. examples_per_class: images kept whole for per-band maps.
    tuned: run the speed-ups that keep the numbers (xband.run.forward). skip_bad: leave out unreadable
    images and images with NaN/Inf/nodata values instead of stopping. n_boot: bootstrap resamples of
    the per-class intervals. all_images: explain every image; otherwise (the default) each class's
    images are taken in rounds until its top bands are settled (`stopping`; xband.run.sampling). budget:
    seconds the methods may take together ("5m" and the like in `build`), shared equally, unused
    time passing on. accept_low_accuracy: go on when the predictions fit the labels far better under
    another class order (otherwise the run stops naming that order). multi_label: explain each image
    for each of its positive labels (a final sigmoid, several labels per image); None decides from
    the model and the labels. A multi-label run explains every (image, label) pair (all_images): the
    sampling and the budget are single-label. engine: None (one machine) or a `RayEngine`
    (`xband.run.ray_engine`; "ray" in `build`), which explains every image (all_images) on Ray.
    regions: explain by spectral region (xband.data.regions: "auto", "50nm", "VIS=400-700;…",
    "none"): the regions are the features, perturbation methods run on them only, gradient
    methods add per-band detail; None: "auto" for more than 30 bands with known wavelengths and
    no band groups, else band by band.
    """

    methods: tuple[Method, ...]
    target: str | None = None
    output: str = "logits"
    baseline: str | tuple[float, ...] = "data"
    background_images: int | None = None
    batch_size: int = 64
    max_images: int | None = None
    max_per_class: int | None = None
    examples_per_class: int = 2
    seed: int = 0
    device: str = "cpu"
    tuned: bool = True
    skip_bad: bool = False
    n_boot: int = 1000
    all_images: bool = False
    budget: float | None = None
    stopping: StoppingRule = StoppingRule()
    accept_low_accuracy: bool = False
    multi_label: bool | None = None
    engine: RayEngine | None = None
    regions: RegionSpec | None = None
    # the methods in their few-draws forms, for rounds until settled (`build`); None: `methods`
    methods_until_settled: tuple[Method, ...] | None = None
    few_draws: bool = False  # each image takes few draws (`for_mode` decides)

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "engine", _engine(self.engine))
        if self.engine is not None:
            if self.budget is not None:
                raise XbandError(
                    f"{ON_RAY} explains every image; "
                    f"{option('budget', '--budget')} is for the rounds until settled, which run "
                    "on one machine. Leave out one of them.")
            fix(self, "all_images", True)
        if self.target is not None:
            _choice("target", self.target, TARGETS)
        _choice("output", self.output, OUTPUTS)
        if isinstance(self.baseline, str):
            _choice("baseline", self.baseline, BASELINES)
        else:
            values = np.asarray(self.baseline, dtype=np.float64).reshape(-1)
            if not np.isfinite(values).all():
                raise XbandError("baseline values must be finite numbers, one per band.")
            fix(self, "baseline", tuple(float(v) for v in values))
        fix(self, "background_images", _optional_count(self.background_images,
                                                        "background_images"))
        fix(self, "batch_size", whole_number(self.batch_size, "batch_size"))
        fix(self, "max_images", _optional_count(self.max_images, "max_images"))
        fix(self, "max_per_class", _optional_count(self.max_per_class, "max_per_class"))
        fix(self, "examples_per_class", whole_number(self.examples_per_class,
                                                     "examples_per_class", minimum=0))
        fix(self, "seed", whole_number(self.seed, "seed", minimum=0))
        fix(self, "n_boot", whole_number(self.n_boot, "n_boot"))
        fix(self, "budget", parse_budget(self.budget))
        if self.multi_label is not None and not isinstance(self.multi_label, bool | np.bool_):
            raise XbandError(f"multi_label must be True, False or None, not {self.multi_label!r}.")
        if not self.methods:
            raise XbandError("no method given.")
        if self.regions is not None and not isinstance(self.regions, RegionSpec):
            fix(self, "regions", parse_regions(self.regions))

    @classmethod
    def build(cls, methods: str | Method | Sequence[str | Method] = "all", *,
              method_options: Mapping[str, Mapping] | None = None, **settings) -> RunConfig:
        """A configuration from method names or objects, per-method options and settings."""
        return cls(methods=resolve_methods(methods, method_options),
                   methods_until_settled=resolve_methods(methods, method_options,
                                                         until_settled=True), **settings)

    def with_target_for(self, has_labels: bool) -> RunConfig:
        """The configuration with the target decided: the label when known, else the prediction."""
        if self.target is None:
            return dataclasses.replace(self, target="true" if has_labels else "predicted")
        if self.target == "true" and not has_labels:
            raise XbandError(f"target 'true' needs labels: give them ({option('labels', '--labels')}"
                             ", or 'y' in the .npz) or explain the predicted class (target "
                             "'predicted').")
        return self

    def with_multi_label_for(self, final_activation: str, multi_hot: bool) -> RunConfig:
        """The configuration with multi-label decided: asked for, or a final sigmoid, or labels
        with several classes per image. A multi-label run explains every (image, label) pair
        (`all_images`): the rounds until settled, and so the budget, are per single class."""
        multi = self.multi_label
        if multi is None:
            multi = final_activation == "sigmoid" or multi_hot
        elif not multi and multi_hot:
            raise XbandError("the labels name several classes per image, but multi_label is "
                             "False: give one label per image, or explain as multi-label.")
        if multi and self.target == "all":
            raise XbandError("target 'all' (every class for every image) is for single-label "
                             "models; a multi-label model is explained for each image's labels "
                             "(target 'true') or its predicted labels (target 'predicted').")
        if multi and self.budget is not None:
            raise XbandError(
                f"{option('budget', '--budget')} applies to single-label runs, whose classes take "
                "images in rounds until their top bands are settled; a multi-label run explains "
                "every (image, label) pair. Leave out the budget and limit the images with "
                f"{option('max_images', '--max-images')} or "
                f"{option('max_per_class', '--max-per-class')}.")
        return dataclasses.replace(self, multi_label=bool(multi),
                                   all_images=self.all_images or bool(multi))

    def for_mode(self, more_images: bool = True) -> RunConfig:
        """The configuration once its mode is decided (after `with_multi_label_for`). In rounds
        until settled each image gets few random draws — the methods' `until_settled` forms
        and one background image — and a class's answer its precision from more images, which
        costs less for the same precision (README, "Few draws per image"); with every image, or
        when the first round takes every image (`more_images` False: fewer draws would only
        lose precision), each image's scores are precise on their own: the methods' own options
        and 8 background images. What the user set is kept."""
        settled = not self.all_images and more_images
        methods = self.methods_until_settled if settled and self.methods_until_settled else \
            self.methods
        background = self.background_images or (
            BACKGROUND_UNTIL_SETTLED if settled else BACKGROUND_EVERY_IMAGE)
        return dataclasses.replace(self, methods=methods, background_images=background,
                                   methods_until_settled=None, few_draws=settled)

    @property
    def by_region(self) -> bool:
        """Whether the spectral regions are the run's features (`regions`, not 'none')."""
        return self.regions is not None and not self.regions.per_band

    def method(self, name: str) -> Method:
        return next(m for m in self.methods if m.name == name)

    @property
    def donor_backgrounds(self) -> int:
        """Other images a removed band is taken from, per image, with the data baseline; 0 with
        a constant baseline (`Context.background`)."""
        return self.background_images if self.baseline == "data" else 0

    @property
    def n_background(self) -> int:
        """Evaluations per removal: the donor backgrounds, or 1 for a constant baseline."""
        return max(1, self.donor_backgrounds)

    def settings(self) -> dict:
        """The settings as summary.json records them (methods are listed on their own)."""
        return {
            "target": self.target,
            "output": self.output,
            "baseline": self.baseline if isinstance(self.baseline, str) else "user-given",
            "background_images": self.donor_backgrounds or None,
            "batch_size": self.batch_size,
            "max_images": self.max_images,
            "max_per_class": self.max_per_class,
            "examples_per_class": self.examples_per_class,
            "device": self.device,
            "tuned": self.tuned,
            "skip_bad": self.skip_bad,
            "bootstrap_resamples": self.n_boot,
            "all_images": self.all_images,
            "few_draws_per_image": self.few_draws,
            "budget_s": self.budget,
            "accept_low_accuracy": self.accept_low_accuracy,
            "multi_label": self.multi_label,
            "engine": "single" if self.engine is None else self.engine.settings(),
            "regions": None if self.regions is None else self.regions.text,
        }
