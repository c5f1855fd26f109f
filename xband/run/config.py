"""The settings of one explanation run, validated once, frozen, and carried by its result.

`explain` builds a `RunConfig` from its arguments; the checks re-run methods with the run's own
configuration, and summary.json records it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xband.data.regions import RegionSpec, parse_regions
from xband.errors import XbandError, option, whole_number
from xband.methods import Method, resolve_methods
from xband.methods.removal import RUN_BASELINES
from xband.run.cost import parse_budget
from xband.run.engine import ON_RAY, RayEngine, import_ray
from xband.run.sampling import StoppingRule
from xband.settings import DATA, ENGINE, RUN, setting

TARGETS = ("true", "predicted", "all")
OUTPUTS = ("logits", "probabilities")


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


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for, every setting checked when the object is made and never
    changed (what it comes to on a model and data is the run's `xband.run.plan.Plan`). Each
    field is declared once with its default and help (`xband.settings.setting`): `explain`'s
    keyword arguments and `xband explain`'s options are these settings; `build` resolves the
    method names."""

    methods: tuple[Method, ...]  # the configured methods, in report order
    target: str | None = setting(
        None, "class whose output is explained: the true label (default with labels), the "
        "predicted class (default without), or every class (class × class view)",
        choices=TARGETS)
    output: str = setting(
        "logits", "explain logits (default; a final softmax or sigmoid is stripped, a network "
        "that ends in neither gives logits) or probabilities", flag="--output-space",
        choices=OUTPUTS)
    multi_label: bool | None = setting(
        None, "explain each image for each of its labels, with per-label precision, recall and "
        "F1 (default when the network ends in a sigmoid or the labels name several classes per "
        "image: ';'-separated names in the CSV, or a multi-hot 'y')", kind=bool)
    baseline: str | tuple[float, ...] = setting(
        "data", "what a removed band becomes: that band of each of a few images drawn from the "
        "data in turn, scores being the mean over them (data, the default), its mean over the "
        "data, or zero (or, in Python, one value per band)", choices=RUN_BASELINES)
    background_images: int | None = setting(
        None, "background images of the data baseline per image (default: 1 in rounds until "
        f"settled, 8 with {option('all_images=True', '--all-images')}; each costs band "
        "ablation and exact band Shapley their passes once more)", kind=int, metavar="K")
    max_images: int | None = setting(
        None, "use at most N images, sampled per class in proportion (seeded)", kind=int,
        metavar="N")
    max_per_class: int | None = setting(
        None, f"use at most N images per class, drawn with {option('seed', '--seed')}",
        kind=int, metavar="N")
    all_images: bool = setting(
        False, "explain every image; by default each class's images are explained in rounds, "
        "in a seeded random order, until its top 3 bands are settled (a bootstrap chance below "
        "5% that they change, at least 30 images); a multi-label run explains every (image, "
        "label) pair", kind=bool)
    budget: float | None = setting(
        None, "time for the methods together, e.g. 90s, 5m, 1.5h: each method takes the form "
        "an equal share affords (sampled Shapley values); the methods take their rounds "
        "together, shrunk to end when the budget is spent (single-label runs)", metavar="TIME")
    examples_per_class: int = setting(
        2, "images per class kept whole for per-band maps", kind=int, metavar="K")
    accept_low_accuracy: bool = setting(
        False, "go on when the predictions match the labels far better under another class "
        "order than under the one given", kind=bool)
    skip_bad: bool = setting(
        False, "leave out unreadable files, non-image files and images with NaN, infinite or "
        "nodata values, and list them in the report, instead of stopping", group=DATA,
        kind=bool)
    regions: RegionSpec | None = setting(
        None, "explain by spectral region (needs wavelengths): 'auto' (100 nm windows), "
        "'50nm' (windows of that width), \"VIS=400-700;NIR=750-1300\" (bands outside every "
        "range form regions of their own), or 'none' (band by band; the default below 31 "
        "bands or without wavelengths, 'auto' above). Perturbation methods then run on the "
        "regions only; gradient methods also give per-band detail", group=DATA,
        metavar="auto|WIDTHnm|R=LO-HI;…")
    seed: int = setting(0, "seed for every random draw", group=RUN, kind=int)
    batch_size: int = setting(64, "images per batch", group=RUN, kind=int, metavar="N")
    device: str = setting("cpu", "where to compute (cuda: an NVIDIA GPU)", group=RUN,
                          choices=("cpu", "cuda"))
    tuned: bool = setting(
        True, "run the network with the speed-ups that keep its numbers (BatchNorm folding, "
        f"channels-last memory, measured pass sizes); {option('tuned=False', '--untuned')} "
        "runs it exactly as given",
        group=RUN, flag="--untuned", kind=bool)
    n_boot: int = setting(1000, "bootstrap resamples of the per-class intervals", group=RUN,
                          kind=int, metavar="N", cli=False)
    engine: RayEngine | None = setting(
        None, "single: this process (default); ray: every image explained by Ray actors, with "
        f"the same numbers (implies {option('all_images=True', '--all-images')}); in Python "
        "also an xband.RayEngine", group=ENGINE, choices=("single", "ray"))
    stopping: StoppingRule = StoppingRule()  # when a class's answer counts as settled
    # the methods in their few-draws forms, for rounds until settled (`build`); None: `methods`
    methods_until_settled: tuple[Method, ...] | None = None

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
            _choice("baseline", self.baseline, RUN_BASELINES)
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
