"""The attribution run: stream the images through every method, keep per-image band scores.

Data flows one way: data → model → methods → per-image scores → tables (aggregate) → result.
Memory holds the per-image band scores and full maps only for a few example images per class.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from converters.cache import cache_root
from xband.data.images import BandStats, ImageSet, image_set, scan, skip_notes, stratified_subset
from xband.data.regions import region_centres
from xband.errors import XbandError, option
from xband.methods import Method
from xband.methods._base import PassSizes
from xband.methods.removal import constant_values
from xband.models.load import LoadedModel, load_model
from xband.run import aggregate
from xband.run.attribution import (
    Candidates,
    MethodResult,
    explain_every_image,
    explain_pairs,
    explain_until_settled,
    first_round,
)
from xband.run.config import RunConfig
from xband.run.cost import estimate_lines, method_cost, pass_kind, passes_by_kind
from xband.run.engine import RayEngine
from xband.run.forward import Networks, check_device, prepare_networks, speed_up
from xband.run.memory import freed_memory_kept
from xband.run.plan import GROUPS, FeatureSet, Plan, resolve_plan
from xband.run.result import Examples, Explanation, RunRecord, build_summary
from xband.run.runner import BatchRunner, Pairs, RunnerSpec, image_feed, network_inputs
from xband.run.sampling import ALL_IMAGES, ClassStop, class_orders
from xband.run.segmentation import SHARE_FOUND, ClassMasks, class_masks, class_pixels
from xband.run.threads import threads_for_the_load
from xband.run.tuning import (
    SPEED_UP_COST_S,
    TUNING_SHARE,
    PassTiming,
    cache_file,
    module_id,
    pass_timing,
    plain_timing,
    recall_speed_ups,
    remember_speed_ups,
    run_seconds,
    speed_ups_pay,
    timing_size,
)
from xband.settings import settings_doc, settings_of


def explain(
    model: LoadedModel,
    data,
    methods: str | Method | Sequence[str | Method] = "all",
    *,
    method_options: Mapping[str, Mapping] | None = None,
    bands: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    sensor: str | None = None,
    wavelengths: Sequence[float] | str | None = None,
    progress: bool = True,
    target: str | None = None,
    output: str = "logits",
    multi_label: bool | None = None,
    baseline: str | Sequence[float] = "data",
    background_images: int | None = None,
    max_images: int | None = None,
    max_per_class: int | None = None,
    all_images: bool = False,
    budget: str | float | None = None,
    examples_per_class: int = 2,
    accept_low_accuracy: bool = False,
    skip_bad: bool = False,
    regions: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    tuned: bool = True,
    n_boot: int = 1000,
    engine: str | RayEngine | None = None,
    settings: Mapping[str, Mapping] | None = None,
) -> Explanation:
    """Per-band, per-class importance of `model` on `data` by every method asked for.

    Args:
        model: the classifier, as `xband.load_model` loads it.
        data: an `ImageSet` (`xband.image_set`, `xband.read_data`), an (images, labels) pair or
            an image array, a path that `xband.read_data` opens, or a torch Dataset/DataLoader.
        methods: "all", names ("saliency,shapley" or a list), or configured methods
            (`xband.methods.IntegratedGradients(n_steps=64)`).
        method_options: {method: {option: value}} on top of the methods' own (unset, named
            methods take few draws per image until settled: `xband.run.plan`).
        bands: band names in file order, for data that is not an ImageSet yet.
        classes: class names in the model's output order, likewise.
        sensor: a sensor preset (band names, wavelengths, spectral groups), likewise.
        wavelengths: each band's centre wavelength in nm, or a file of them, likewise.
        progress: show progress bars and the cost estimate (on standard error).
    {settings}
        settings: deprecated spelling of `method_options`.

    Returns:
        The `Explanation`: tables for pandas, figures, `save` for a report folder.
    """
    given = locals()  # every setting passes to RunConfig by its declared name
    config = RunConfig.build(methods, method_options=_with_settings(method_options, settings),
                             **{f.name: given[f.name] for f in settings_of(RunConfig)})
    data = as_image_set(data, bands=bands, classes=classes, sensor=sensor, wavelengths=wavelengths)
    return run_explanation(as_model(model, data), data, config, progress=progress)


explain.__doc__ = explain.__doc__.replace("    {settings}\n", settings_doc(RunConfig, indent=8))


def _with_settings(method_options: Mapping[str, Mapping] | None,
                   settings: Mapping[str, Mapping] | None) -> Mapping[str, Mapping] | None:
    """`method_options` with the deprecated `settings=` spelling merged in."""
    if settings is None:
        return method_options
    warnings.warn("explain(settings=...) is deprecated; use method_options=",
                  DeprecationWarning, stacklevel=3)
    return {**settings, **(method_options or {})}


def as_image_set(data, **description) -> ImageSet:
    """`data` as an ImageSet: an ImageSet as it is, (images, labels) arrays or torch tensors,
    images, a path, or a torch Dataset, DataLoader or DataModule (`xband.from_torch`: read as
    the loader gives them); `description` (bands, classes, sensor) applies to the latter."""
    description = {k: v for k, v in description.items() if v is not None}
    if isinstance(data, ImageSet):
        if description:
            raise XbandError(f"{', '.join(description)} describe raw images; this ImageSet is "
                             "already described: give them to image_set() or read_data() instead.")
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return image_set(_array(data[0]), _array(data[1]), **description)
    if isinstance(data, np.ndarray | torch.Tensor):
        return image_set(_array(data), None, **description)
    if isinstance(data, str) or hasattr(data, "__fspath__"):
        from xband.data.readers import read_data

        return read_data(data, **description)
    from torch.utils.data import DataLoader, Dataset

    from xband.data.readers import from_torch, is_datamodule

    if isinstance(data, DataLoader | Dataset) or is_datamodule(data):
        return from_torch(data, **description)
    raise XbandError(f"cannot read images from a {type(data).__name__}: give an ImageSet, "
                     "(images, labels), an image array or tensor, a file or folder path, or a "
                     "torch Dataset, DataLoader or DataModule.")


def _array(values):
    """A torch tensor as a NumPy array (off the GPU, out of the autograd graph); else as is."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    return values


def as_model(model, data: ImageSet) -> LoadedModel:
    """`model` as a LoadedModel: one as it is; a torch nn.Module loaded (`xband.load_model`: a
    copy, checked on a few of `data`'s images; yours is left as it is)."""
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, torch.nn.Module):
        raise XbandError(f"cannot explain a {type(model).__name__}: give a torch nn.Module or a "
                         "model from xband.load_model (Keras, ONNX, TorchScript, .pt2 files).")
    try:
        probe = data.take(np.arange(min(8, len(data))))
    except XbandError:  # the band axis is open until the model settles it, or a bad image
        probe = None
    return load_model(model, probe=probe, probe_layout="channels_first", verbose=False)


@dataclass(frozen=True)
class Selection:
    """The images a run may explain, what one pass over them (or a sample) found, and the
    removal baseline."""

    indices: np.ndarray  # (P,) positions in the data source of the candidate images, sorted
    stats: BandStats  # per-band mean and std, preprocessed
    stats_images: int  # images the statistics come from
    checked: np.ndarray  # (P,) whether each candidate image was read and checked already
    baseline: np.ndarray  # (B,) what a removed band becomes (the data baseline: the band's mean)
    skipped: tuple[tuple[str, str], ...]  # (image, reason) left out so far
    notes: tuple[str, ...]


STATS_IMAGES = 1024  # a sampled run computes band statistics from at most this many images


def run_explanation(model: LoadedModel, data: ImageSet, config: RunConfig, *,
                    progress: bool = True, announce: Callable[[str], None] | None = None
                    ) -> Explanation:
    """`explain` with its arguments checked: the run as a sequence of named steps.

    announce: where to say the cost estimate before any method runs (default: standard error
    when `progress`). Freed memory is kept for reuse meanwhile (`xband.run.memory`), and torch
    uses the cores other processes leave free (`xband.run.threads`)."""
    with freed_memory_kept(), threads_for_the_load() as threads_note:
        return _run_explanation(model, data, config, progress=progress, announce=announce,
                                notes=() if threads_note is None else (threads_note,))


def _run_explanation(model: LoadedModel, data: ImageSet, config: RunConfig, *, progress: bool,
                     announce: Callable[[str], None] | None, notes: tuple[str, ...]
                     ) -> Explanation:
    started = time.perf_counter()
    check_device(config.device)
    data = data.for_model(model)
    plan = resolve_plan(config, data, model.n_classes, model.final_activation,
                        model.segmentation is not None)
    if plan.multi_label:
        data = data.as_multi_label(model.n_classes)
    selection = select_images(model, data, plan)
    masks = segmentation_masks(model, data, plan, selection.indices)
    pixels = None if masks is None else masks.masks
    example = torch.from_numpy(network_inputs(data, selection.indices,
                                              np.arange(min(2, len(selection.indices))),
                                              pixels)).to(config.device)
    networks = prepare_networks(explained_network(model, plan), model.layout, config.device,
                                example, tuned=False)
    networks, timing = measure_passes(model, data, plan, networks, example,
                                      expected_items(data, selection.indices, plan))
    take = image_feed(data, selection.indices, networks.forward, config.device, pixels)
    candidates = Candidates(data, selection.indices, networks.forward, take,
                            skip_bad=config.skip_bad, checked=selection.checked,
                            chunk=config.batch_size * 4, threshold=decision_threshold(model, plan),
                            pixel_shares=plan.segmentation)
    pairs = plan_pairs(candidates, plan) if plan.multi_label else None
    n_items = len(selection.indices) if pairs is None else len(pairs)
    plan, budget_notes = plan.fitted_to_budget(timing, len(data.class_names))
    say = announce or (_stderr if progress else None)
    if say is not None:
        say(cost_text(plan, data, timing, n_items, model.n_classes, pairs=pairs is not None))
    spec = runner_spec(data, plan, selection, timing.sizes, model.n_classes,
                       candidates.threshold, pixels)
    with engine_runner(spec.build(networks.forward, take), data, config, spec) as runner:
        work = attribute(plan, runner, candidates, pairs, timing, data, progress)
    record = RunRecord(
        indices=selection.indices[work.explained], baseline=selection.baseline,
        band_mean=selection.stats.mean, band_std=selection.stats.std, timing=timing,
        speed_ups=networks.speed_ups,
        timings={"tuning": networks.tuning_s + timing.seconds,
                 **{m: r.seconds for m, r in work.results.items()}},
        notes=(selection.notes + notes + networks.notes + tuple(budget_notes) + work.notes
               + tuple(skip_notes(candidates.skipped))),
        skipped=selection.skipped + tuple(candidates.skipped),
        run_time_s=time.perf_counter() - started,
        sampling=sampling_record(plan, work.results, data.class_names, selection.stats_images),
        pixel_confusion=None if masks is None else masks.confusion,
        class_mean=selection.stats.class_mean)
    return assemble(model, data, plan, record, candidates, work, pixels)


def explained_network(model: LoadedModel, plan: Plan) -> torch.nn.Module:
    """The network the methods explain: its logits (or probabilities), or for a segmentation
    network each class's mean over its pixels (`xband.run.segmentation.class_pixels`)."""
    if plan.segmentation:
        return class_pixels(model, plan.config.output)
    return model.network(plan.config.output, plan.multi_label)


def segmentation_masks(model: LoadedModel, data: ImageSet, plan: Plan,
                       indices: np.ndarray) -> ClassMasks | None:
    """A segmentation run's class masks of the candidate images (None for a classifier)."""
    if not plan.segmentation:
        return None
    config = plan.config
    return class_masks(model, data, indices, target=plan.target, device=config.device,
                       batch_size=config.batch_size)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def expected_items(data: ImageSet, indices: np.ndarray, plan: Plan) -> int:
    """What the run will explain, as far as it is known before any prediction: the candidate
    images, or multi-label their (image, label) pairs (one per image while the labels explained
    are the predicted ones)."""
    if plan.multi_label and data.labels is not None and plan.target != "predicted":
        return int(data.labels[indices].sum())
    return len(indices)


def decision_threshold(model: LoadedModel, plan: Plan) -> float | None:
    """Multi-label: the output above which a label counts as predicted (logit 0, probability
    0.5); segmentation: the share of a class's pixels predicted as it above which it counts as
    found; single-label: None (the largest output is the prediction)."""
    if plan.segmentation:
        return SHARE_FOUND
    if not plan.multi_label:
        return None
    return 0.0 if model.output_space(plan.config.output) == "logits" else 0.5


def plan_pairs(candidates: Candidates, plan: Plan) -> Pairs:
    """Multi-label: every (image, label) pair of the usable candidate images, for the images'
    labels (their predicted labels without labels or with target 'predicted'); the images are
    checked and predicted first."""
    usable = candidates.prepare(np.arange(len(candidates)))
    predicted = plan.target == "predicted" or candidates.labels is None
    present = (candidates.predictions if predicted else candidates.labels)[usable]
    pairs = Pairs.of(present, usable)
    if not len(pairs):
        raise XbandError(f"{candidates.data.source}: no image has a "
                         f"{'predicted ' if predicted else ''}label, so there is no (image, "
                         "label) pair to explain. Give images with labels (or that the model "
                         "finds labels in).")
    return pairs


def select_images(model: LoadedModel, data: ImageSet, plan: Plan) -> Selection:
    """The images the run may explain (a seeded stratified subset when asked), the band
    statistics from one pass over them (explaining every image) or over a sample of them (the
    sampled run checks the rest as it reads them), and the removal baseline."""
    config = plan.config
    indices = stratified_subset(data.labels, len(data), config.max_images, config.seed,
                                config.max_per_class)
    check = not plan.segmentation  # a segmentation run explains the classes its masks have
    if check:
        _check_classes(data, indices, model.n_classes, config)
    sample = indices if plan.all_images else indices[stratified_subset(
        None if data.labels is None else data.labels[indices], len(indices), STATS_IMAGES,
        config.seed)]
    checked = scan(data, sample, skip_bad=config.skip_bad)
    if checked.skipped:
        indices = np.setdiff1d(indices, np.setdiff1d(sample, checked.kept))
        if check:
            _check_classes(data, indices, model.n_classes, config, skipping=True)
    skipped = data.skipped + tuple(checked.skipped)
    notes = [*skip_notes(skipped), *_output_notes(model, plan), *_unmasked(data, indices)]
    notes += [n for m in plan.methods
              if (n := m.note(len(plan.answer), plan.n_background,
                              feature="region" if plan.by_region else "band"))]
    if plan.few_draws:
        notes.append(few_draws_note(plan))
    return Selection(indices, checked.stats, len(checked.kept), np.isin(indices, checked.kept),
                     constant_values(config.baseline, checked.stats.mean), skipped, tuple(notes))


def few_draws_note(plan: Plan) -> str:
    """What each image is given in rounds until settled, and how to get more per image."""
    drawn = [f"{m.name} {', '.join(f'{k}={getattr(m, k)}' for k in m.until_settled)}"
             for m in plan.methods if m.until_settled]
    background = (f"{plan.n_background} background image(s) per image"
                  if plan.donor_backgrounds else "a constant baseline")
    return ("until settled, each image takes few random draws and the classes more images: "
            + "; ".join([background, *drawn])
            + " (--all-images gives every image the methods' full draws; README, 'Few draws "
              "per image until settled')")


def _output_notes(model: LoadedModel, plan: Plan) -> list[str]:
    """What the scores are for, when it is not what was asked or what the network gives."""
    config = plan.config
    if config.output == "logits" and model.output_space("logits") == "probabilities":
        return [f"output: the network's final {model.final_activation} could not be stripped; "
                "scores are for probabilities, which saturate near 0 and 1."]
    if config.output == "probabilities" and model.final_activation == "none":
        kind = "sigmoid" if plan.multi_label else "softmax"
        return [f"output: the network ends in logits; the probabilities explained are their "
                f"{kind}, applied by xband."]
    return []


def _unmasked(data: ImageSet, indices: np.ndarray) -> list[str]:
    """Segmentation: a note naming the classes no label mask among `indices` has pixels of."""
    if not data.segmentation:
        return []
    absent = [name for name, n in zip(data.class_names, data.labels[indices].sum(axis=0),
                                      strict=True) if n == 0]
    return [f"segmentation: no mask has pixels of class {', '.join(absent)}; not explained"] \
        if absent else []


def _label_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Images per class: with the label, or with it among their labels (multi-label)."""
    if labels.ndim == 2:
        return labels.sum(axis=0)
    return np.bincount(labels, minlength=n_classes)


def _check_classes(data: ImageSet, indices: np.ndarray, n_classes: int, config: RunConfig,
                   skipping: bool = False) -> None:
    """Every class of the model has images among `indices` (when labels are known); if not,
    say which class, why (absent from the data, left out as bad files, or not drawn) and what
    to do."""
    if data.labels is None:
        return
    counts = _label_counts(data.labels[indices], n_classes)
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return
    in_data = _label_counts(data.labels, n_classes)[empty]
    need = ("Per-class importance needs images of every class the model has (and class names in "
            f"the model's output order: {option('classes=', '--classes')}).")
    if (in_data == 0).any():
        names = ", ".join(f"'{data.class_names[c]}' (model output {c})" for c in empty[in_data == 0])
        raise XbandError(f"{data.source}: the data holds no images of class {names}; the other "
                         f"classes have {counts[counts > 0].min()}–{counts.max()} each. {need} "
                         "Add images of that class to the data.")
    names = ", ".join(f"'{data.class_names[c]}' (model output {c})" for c in empty)
    if skipping:
        raise XbandError(f"{data.source}: every image of class {names} was left out as unreadable "
                         f"or bad ({option('skip_bad=True', '--skip-bad')}; {int(in_data.sum())} "
                         f"in the data, listed in the notes). {need} Fix or replace those files.")
    drawn = ", ".join(option(f"{name}={value}", f"--{name.replace('_', '-')} {value}")
                      for name, value in (("max_images", config.max_images),
                                          ("max_per_class", config.max_per_class)) if value)
    raise XbandError(f"{data.source}: none of the {len(indices)} images drawn ({drawn}) is of "
                     f"class {names}, which has {int(in_data.sum())} in the data. {need} Draw "
                     f"more images (raise {option('max_images', '--max-images')} or "
                     f"{option('max_per_class', '--max-per-class')}).")


def measure_passes(model: LoadedModel, data: ImageSet, plan: Plan, networks: Networks,
                   example: torch.Tensor, n_candidates: int) -> tuple[Networks, PassTiming]:
    """The network as the methods run it, and its pass sizes and seconds per image-pass.

    One pass of each kind the methods make, timed at the batch size (or, for a run too short
    to repay tuning, on the example images alone), gives the run's estimate.
    Tuning may then spend 5% of that estimate: on the speed-ups that keep the numbers
    (xband.run.forward) when that share covers their usual cost, then on choosing pass sizes
    (xband.run.tuning). A run too short to repay tuning runs the network as given."""
    config = plan.config
    kinds = {pass_kind(m) for m in plan.methods}
    images = n_candidates if plan.all_images else min(
        n_candidates, config.stopping.first_round * model.n_classes)

    def estimate(timing: PassTiming) -> float:
        return sum(method_cost(m, plan.feature_counts, timing.seconds_per_image,
                               plan.n_background).seconds(images) for m in plan.methods)

    # a pass of the example images first: a run its (higher) per-image time shows too short to
    # repay tuning does not pay for a pass at the batch size as well
    small = plain_timing(networks.forward, example, kinds=kinds, size=len(example))
    too_short = config.tuned and TUNING_SHARE * estimate(small) < SPEED_UP_COST_S
    plain = small if too_short else plain_timing(networks.forward, example, kinds=kinds,
                                                 size=config.batch_size)
    plain = dataclasses.replace(plain, seconds=small.seconds + (0 if too_short else plain.seconds))
    if not config.tuned:
        return networks, plain
    budget = TUNING_SHARE * estimate(plain)
    if budget < SPEED_UP_COST_S:
        return networks, dataclasses.replace(
            plain, sizes=PassSizes(config.batch_size, config.batch_size),
            source=f"default (an estimated {estimate(plain):.1f} s of passes is too short to "
            "repay tuning)")
    started = time.perf_counter()
    passes = passes_by_kind(plan.methods, plan.feature_counts, plan.n_background)
    cache = cache_file(cache_root(), model_id=model.sha256 or module_id(model.module),
                       output=config.output, device=config.device,
                       image_shape=(data.n_bands, *data.image_size))
    networks = faster_networks(networks, example, passes, cache, plain.seconds_per_image, budget)
    timing = pass_timing(networks.forward, example, kinds=kinds, cache=cache,
                         budget_s=budget - (time.perf_counter() - started))
    return networks, dataclasses.replace(timing, seconds=timing.seconds + plain.seconds)


def faster_networks(networks: Networks, example: torch.Tensor, passes: dict[str, float],
                    cache: Path | None = None, seconds_per_image: dict[str, float] | None = None,
                    budget_s: float = float("inf")) -> Networks:
    """`networks` with the speed-ups that keep its numbers, when they make the run's passes
    clearly faster on this machine: timed in passes that fit `budget_s` (from the plain
    network's `seconds_per_image`), once per model and machine when the timings are steady
    (remembered in `cache`); as given, with a note, when they do not pay or cannot be timed."""
    started = time.perf_counter()
    candidate = speed_up(networks, example)
    pays = recall_speed_ups(cache, candidate.speed_ups) if candidate.speed_ups else True
    size = timing_size(seconds_per_image or {}, budget_s)
    if pays is None and size is not None:
        verdict = speed_ups_pay(run_seconds(networks.forward, example, passes, size),
                                run_seconds(candidate.forward, example, passes, size))
        pays = verdict.pays
        if verdict.steady:
            remember_speed_ups(cache, candidate.speed_ups, pays)
    if pays:
        chosen = candidate
    else:
        why = ("was not measurably faster here" if pays is not None else
               "timing it would cost more than the run's share for tuning")
        chosen = dataclasses.replace(networks, notes=(
            *candidate.notes, f"speed: {', '.join(candidate.speed_ups)} not used (keeps the "
            f"numbers but {why})"))
    return dataclasses.replace(chosen, tuning_s=networks.tuning_s + time.perf_counter() - started)


def cost_text(plan: Plan, data: ImageSet, timing: PassTiming, n_candidates: int,
              n_classes: int, *, pairs: bool = False) -> str:
    """What the run will cost, said before it starts; multi-label (`pairs`), `n_candidates`
    counts the (image, label) pairs, every one of them explained."""
    costs = [method_cost(m, plan.feature_counts, timing.seconds_per_image, plan.n_background)
             for m in plan.methods]
    first = n_candidates if plan.all_images else plan.config.stopping.first_round
    unit = "(image, class) pairs" if plan.segmentation else "(image, label) pairs"
    lines = estimate_lines(costs, first, n_classes, n_candidates,
                           unit=unit if pairs else "images")
    if plan.n_background > 1:
        lines.append(f"a removed band takes that band of {plan.n_background} other images of the "
                     "data in turn, per image (--baseline data; --background-images sets how many, "
                     "--baseline mean a single value)")
    for extra in plan.removed[1:]:
        lines.append(f"{extra.name}: perturbation methods also remove or shuffle each of the "
                     f"{len(extra)} groups whole (counted above); a masked copy of "
                     "an image that several methods ask for goes through the network once, so "
                     "the run makes fewer passes than the sum")
    if plan.by_region:
        lines.append(f"regions: perturbation methods remove or shuffle each of the "
                     f"{len(plan.answer)} regions whole, so their cost follows the region "
                     f"count, not the {data.n_bands} bands; per-band detail comes from the "
                     "gradient methods")
    if plan.segmentation:
        lines.append(segmentation_note(plan))
    elif pairs:
        lines.append("multi-label: every (image, label) pair is explained (the rounds until "
                     "settled are for single-label runs)")
    elif plan.config.budget is not None:
        lines.append(f"budget: {plan.config.budget:.0f} s for the methods together")
    elif plan.few_draws:
        lines.append("classes stop taking images once their top bands are settled, each image "
                     "with few random draws (--all-images explains every image, each with the "
                     "methods' full draws: more passes per image than above)")
    elif not plan.all_images:
        lines.append("classes stop taking images once their top bands are settled "
                     "(--all-images explains every image)")
    return "\n".join(lines)


def segmentation_note(plan: Plan) -> str:
    """What a segmentation run explains."""
    mask = ("the network's predicted mask (computed once, on each unperturbed image)"
            if plan.target == "predicted" else "its label mask")
    return (f"segmentation: each image is explained for each class with pixels in {mask}, for "
            f"the class's mean {plan.config.output} over those pixels: every (image, class) pair "
            "(the rounds until settled are for single-label runs)")


def _examples(candidates: Candidates, orders: dict[int, np.ndarray], plan: Plan,
              data: ImageSet) -> np.ndarray:
    """Positions of the example images, among those every method explains first; the class
    order is checked on those images' labels and predictions."""
    config = plan.config
    first = candidates.prepare(first_round(orders, config.stopping, plan.all_images))
    if candidates.labels is not None and not config.accept_low_accuracy:
        check_class_order(candidates.labels[first], candidates.predictions[first], data)
    picked = pick_examples(candidates.known[first], candidates.predictions[first],
                           len(data.class_names), config.examples_per_class, config.seed)
    return first[picked]


def check_class_order(labels: np.ndarray, predictions: np.ndarray, data: ImageSet) -> None:
    """Stop when the predictions match the labels far better under another class order: the
    best one-to-one matching of labels to outputs (on the confusion matrix) gains at least 0.2
    in accuracy and halves the errors. Then the class names are most likely not in the model's
    output order (sorted folder names, say), and every per-class table would be mislabelled."""
    n_classes, n = len(data.class_names), len(labels)
    if n_classes < 2 or n < 2 * n_classes:
        return
    confusion = np.bincount(labels * n_classes + predictions,
                            minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    rows, outputs = linear_sum_assignment(-confusion)
    given, best = np.trace(confusion) / n, confusion[rows, outputs].sum() / n
    if best - given < 0.2 or 1 - best > 0.5 * (1 - given):
        return
    origin = "" if data.class_origin == "given" else f"; {data.class_origin}"
    order = [""] * n_classes
    for label, output in zip(rows, outputs, strict=True):
        order[output] = data.class_names[label]
    found = (f"the predictions match the labels of {data.source} far better under another "
             f"class order: accuracy {given:.2f} with the classes as given "
             f"({', '.join(data.class_names)}{origin}), {best:.2f} with ")
    raise XbandError(
        found + f"classes={order}. Give the class names in the model's output order, or pass "
        "accept_low_accuracy=True to go on.",
        cli=found + f"--classes {shlex.quote(','.join(order))}. Give the class names in the "
        "model's output order with --classes, or pass --accept-low-accuracy to go on.")


def pick_examples(known: np.ndarray, predictions: np.ndarray, n_classes: int, per_class: int,
                  seed: int) -> np.ndarray:
    """Rows of up to `per_class` examples per class, correctly classified ones first."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        members = np.flatnonzero(known == c)
        right = members[predictions[members] == c]
        wrong = members[predictions[members] != c]
        order = np.concatenate([rng.permutation(right), rng.permutation(wrong)])
        picked.extend(order[:per_class])
    return np.array(sorted(picked), dtype=int)


def runner_spec(data: ImageSet, plan: Plan, selection: Selection, passes: PassSizes,
                n_classes: int, threshold: float | None = None,
                masks: np.ndarray | None = None) -> RunnerSpec:
    """What builds the batch runner over the candidate images; multi-label, `threshold` is the
    output above which a label counts as predicted; segmentation, `masks` (P, H, W) are the
    candidates' class masks."""
    config = plan.config
    return RunnerSpec(indices=selection.indices, baseline=selection.baseline,
                      band_std=selection.stats.std, passes=passes, seed=config.seed,
                      batch_size=config.batch_size, n_classes=n_classes,
                      background=plan.donor_backgrounds, device=config.device,
                      feature_sets=plan.features, threshold=threshold, masks=masks)


@contextmanager
def engine_runner(runner: BatchRunner, data: ImageSet, config: RunConfig, spec: RunnerSpec
                  ) -> Iterator[BatchRunner]:
    """The runner of the run's engine: `runner` itself on one machine, or on Ray its jobs
    distributed to actors (xband.run.ray_engine) while the `with` block lasts."""
    if config.engine is None:
        yield runner
        return
    from xband.run.ray_engine import distributed

    with distributed(runner, data, config.engine, spec) as remote:
        yield remote


@dataclass(frozen=True)
class Attributed:
    """What the methods did: their results, the candidate positions of the images explained,
    the examples kept whole (positions, or pair numbers), and multi-label the pairs explained."""

    results: dict[str, MethodResult]
    explained: np.ndarray
    examples: np.ndarray
    pairs: Pairs | None = None
    notes: tuple[str, ...] = ()


def attribute(plan: Plan, runner: BatchRunner, candidates: Candidates, pairs: Pairs | None,
              timing: PassTiming, data: ImageSet, progress: bool) -> Attributed:
    """Every method over the candidates: single-label, class by class in rounds until settled
    (or every image); multi-label, every (image, label) pair."""
    config, n_classes = plan.config, len(data.class_names)
    if pairs is not None:
        hit = candidates.predictions[pairs.image, pairs.target]
        examples = pick_examples(pairs.target, np.where(hit, pairs.target, -1), n_classes,
                                 config.examples_per_class, config.seed)
        results = {m.name: explain_pairs(m, runner, candidates, pairs, examples=examples,
                                         progress=progress) for m in plan.methods}
        explained = np.flatnonzero(candidates.predicted)
        note = (segmentation_note(plan) if plan.segmentation else
                f"multi-label: all {len(pairs)} (image, label) pairs of the {len(explained)} "
                "images were explained; the rounds until each class's top bands are settled "
                "are for single-label runs.")
        return Attributed(results, explained, examples, pairs, (note,))
    if candidates.labels is None:  # the predicted classes are the strata
        candidates.prepare(np.arange(len(candidates)))
    orders = class_orders(candidates.known, n_classes, config.seed)
    examples = _examples(candidates, orders, plan, data)
    if plan.all_images:
        results = explain_every_image(plan.methods, runner, candidates, target=plan.target,
                                      orders=orders, examples=examples, progress=progress)
    else:
        results = explain_until_settled(
            plan.methods, runner, candidates, target=plan.target, orders=orders,
            rule=config.stopping, examples=examples, seed=config.seed,
            seconds_per_image={m.name: method_cost(m, plan.feature_counts,
                                                   timing.seconds_per_image,
                                                   plan.n_background).seconds(1)
                               for m in plan.methods},
            deadline=None if config.budget is None else time.perf_counter() + config.budget,
            progress=progress)
    notes = [shared_note(runner)] if runner.copies_reused else []
    if config.engine is not None:
        workers = runner.engine.workers
        notes.append(f"engine: Ray, {workers} worker{'s' if workers != 1 else ''}; they read "
                     f"{runner.images_read} images (the batches and their donor images)")
    explained = np.flatnonzero(np.any([r.explained for r in results.values()], axis=0))
    return Attributed(results, explained, examples, notes=tuple(notes))


def shared_note(runner: BatchRunner) -> str:
    """How many masked copies of images the perturbation methods shared."""
    total = runner.copies_evaluated + runner.copies_reused
    return (f"shared passes: of {total:,} masked copies of images the perturbation methods "
            f"asked for (bands and band groups), {runner.copies_reused:,} "
            f"({runner.copies_reused / total:.0%}) were the same copy of the same image "
            "and went through the network once")


def sampling_record(plan: Plan, results: dict[str, MethodResult],
                    class_names: tuple[str, ...], stats_images: int) -> dict:
    """How many images (multi-label: pairs) each method explained per class, and why it
    stopped there; for a method that removes band groups whole, also for its group answer."""
    mode = "all images" if plan.all_images else "until settled"
    record = {
        "mode": "all (image, label) pairs" if plan.multi_label else mode,
        "rule": plan.config.stopping.as_dict(),
        "band_statistics_images": stats_images,
        "stops": {m: _named(r.stops[plan.answer.name], class_names) for m, r in results.items()},
    }
    if groups := {m: _named(r.stops[GROUPS], class_names) for m, r in results.items()
                  if GROUPS in r.stops}:
        record["group_stops"] = groups
    return record


def _named(stops: dict[int, ClassStop], class_names: tuple[str, ...]) -> dict[str, dict]:
    return {class_names[c]: stop.as_dict() for c, stop in stops.items()}


def assemble(model: LoadedModel, data: ImageSet, plan: Plan, record: RunRecord,
             candidates: Candidates, work: Attributed,
             masks: np.ndarray | None = None) -> Explanation:
    """Per-class tables of every method's per-image scores on every feature set (over the
    explained images; NaN rows where a method stopped before an image), or multi-label
    per-pair scores, and the result; segmentation, `masks` are the candidates' class masks."""
    config, explained = plan.config, work.explained
    labels = None if candidates.labels is None else candidates.labels[explained]
    predictions = candidates.predictions[explained]
    pairs = rows = None
    if work.pairs is not None:  # rows are pairs, their images numbered among the explained
        pairs = Pairs(np.searchsorted(explained, work.pairs.image), work.pairs.target)
    else:
        rows = explained
    feature_scores = {s.name: {m: _rows(r.scores[s.name], rows) for m, r in work.results.items()
                               if s.name in r.scores} for s in plan.features}
    tables = dict(**aggregate.grouping_keys(labels, predictions, pairs),
                  class_names=list(data.class_names), target_mode=plan.target,
                  n_boot=config.n_boot, seed=config.seed, strata=_strata(candidates, work))
    importance = pd.concat([
        aggregate.importance_table(feature_scores[s.name], band_names=list(s.names),
                                   wavelengths=_centres(s, data), **tables
                                   ).assign(feature_set=s.name)
        for s in plan.features if feature_scores[s.name]], ignore_index=True)
    answer = importance[importance["feature_set"] == plan.answer.name]
    return Explanation(
        plan=plan, record=record,
        band_names=list(data.band_names), class_names=list(data.class_names),
        method_info={m.name: m.info() for m in plan.methods},
        labels=labels, predictions=predictions, feature_scores=feature_scores,
        importance=importance, agreement=aggregate.agreement(answer),
        consensus=aggregate.consensus(answer),
        examples=Examples.of(data, candidates, work.examples, work.results, work.pairs, masks),
        summary=build_summary(model, data, plan, record, labels, predictions), pairs=pairs)


def _centres(feature_set: FeatureSet, data: ImageSet) -> list[float] | None:
    """Each feature's wavelength (nm): a band's, a region's mean band; None for band groups."""
    if data.wavelengths is None or feature_set.name == GROUPS:
        return None
    return region_centres(dict(zip(feature_set.names, feature_set.members, strict=True)),
                          data.wavelengths)


def _strata(candidates: Candidates, work: Attributed) -> tuple[np.ndarray, np.ndarray] | None:
    """`aggregate.importance_table`'s strata for a run until settled: each explained image's
    class as sampled (its label, else its predicted class) and each class's candidates; None
    where every image (every pair) was explained."""
    stopped = {stop.reason for r in work.results.values()
               for stop in next(iter(r.stops.values())).values()}
    if work.pairs is not None or stopped <= {ALL_IMAGES}:
        return None
    known = candidates.known
    return known[work.explained], np.bincount(known, minlength=len(candidates.data.class_names))


def _rows(scores: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return scores if rows is None else scores[rows]
