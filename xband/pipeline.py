"""The attribution run: stream the images through every method, keep per-image band scores.

Data flows one way: data → model → methods → per-image scores → tables (aggregate) → result.
Memory holds the per-image band scores and full maps only for a few example images per class.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xband import aggregate
from xband.config import RunConfig
from xband.data import BandStats, ImageSet, image_set, scan, skip_notes, stratified_subset
from xband.errors import XbandError
from xband.forward import Networks, check_device, prepare_networks
from xband.methods import Context, Method
from xband.models import LoadedModel
from xband.result import Examples, Explanation, RunRecord, build_summary
from xband.runner import BandGroups, BatchRunner, Donors, MethodRun, Pairs


def explain(
    model: LoadedModel,
    data,
    methods: str | Method | Sequence[str | Method] = "all",
    *,
    target: str | None = None,
    output: str = "logits",
    baseline: str | Sequence[float] = "mean",
    seed: int = 0,
    max_images: int | None = None,
    max_per_class: int | None = None,
    examples_per_class: int = 2,
    batch_size: int = 64,
    device: str = "cpu",
    tuned: bool = True,
    skip_bad: bool = False,
    n_boot: int = 1000,
    multi_label: bool | None = None,
    method_options: Mapping[str, Mapping] | None = None,
    progress: bool = True,
    bands: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    sensor: str | None = None,
    settings: Mapping[str, Mapping] | None = None,
) -> Explanation:
    """Per-band, per-class importance of `model` on `data` by every method asked for.

    data: an `ImageSet` (`xband.image_set`, `xband.read_data`), an (images, labels) pair or an
    image array, a path that `xband.read_data` opens, or a torch Dataset/DataLoader; `bands`,
    `classes` and `sensor` describe data that is not an ImageSet yet.
    methods: "all", names ("saliency,shapley" or a list), or configured methods
    (`xband.methods.IntegratedGradients(n_steps=64)`); method_options: {name: {option: value}}.
    target: "true" (the label), "predicted", "all" (every class, a class × class view), or None:
    the label when labels are known, else the predicted class. output: "logits" (a final
    softmax or sigmoid stripped when possible; a network that ends in neither gives logits) or
    "probabilities". baseline: what a removed band becomes:
    "mean" (its mean over the data), "zero", or one value per band. max_images / max_per_class:
    explain a seeded stratified subset. skip_bad: leave out unreadable images and images with
    NaN/Inf/nodata values, listing them in the notes, instead of stopping at the first.
    tuned: run a faster forward pass with the same numbers (xband.forward); False runs the
    network as given. device: "cpu" or "cuda". multi_label: explain each image for each of its
    labels (default: when the network ends in a sigmoid or the labels are multi-hot); accuracy
    is then per-label precision, recall and F1.
    With band groups, perturbation methods run again with one feature per group and the
    others' band scores are summed per group: `group_importance` in the result.
    """
    if settings is not None:
        warnings.warn("explain(settings=...) is deprecated; use method_options=",
                      DeprecationWarning, stacklevel=2)
        method_options = {**settings, **(method_options or {})}
    config = RunConfig.build(
        methods, method_options=method_options, target=target, output=output,
        baseline=baseline if isinstance(baseline, str) else tuple(np.ravel(baseline)),
        seed=seed, max_images=max_images, max_per_class=max_per_class,
        examples_per_class=examples_per_class, batch_size=batch_size, device=device,
        tuned=tuned, skip_bad=skip_bad, n_boot=n_boot, multi_label=multi_label)
    return run_explanation(model, as_image_set(data, bands=bands, classes=classes, sensor=sensor),
                           config, progress=progress)


def as_image_set(data, **description) -> ImageSet:
    """`data` as an ImageSet: an ImageSet as it is, (images, labels), images, a path or a torch
    dataset; `description` (bands, classes, sensor) applies to the latter."""
    description = {k: v for k, v in description.items() if v is not None}
    if isinstance(data, ImageSet):
        if description:
            raise XbandError(f"{', '.join(description)} describe raw images; this ImageSet is "
                             "already described: give them to image_set() or read_data() instead.")
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return image_set(data[0], data[1], **description)
    if isinstance(data, np.ndarray):
        return image_set(data, None, **description)
    if isinstance(data, str) or hasattr(data, "__fspath__"):
        from xband.readers import read_data

        return read_data(data, **description)
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader | Dataset):
        from xband.readers import from_torch

        return from_torch(data, **description)
    raise XbandError(f"cannot read images from a {type(data).__name__}: give an ImageSet, "
                     "(images, labels), an image array, a file or folder path, or a torch Dataset.")


@dataclass(frozen=True)
class Selection:
    """The images a run explains, what one pass over them found, and the removal baseline."""

    indices: np.ndarray  # (N,) positions in the data source, sorted
    stats: BandStats  # per-band mean and std over these images, preprocessed
    baseline: np.ndarray  # (B,) what a removed band becomes
    skipped: tuple[tuple[str, str], ...]  # (image, reason) left out, on reading or scanning
    notes: tuple[str, ...]


def run_explanation(model: LoadedModel, data: ImageSet, config: RunConfig, *,
                    progress: bool = True) -> Explanation:
    """`explain` with its arguments checked: the run as a sequence of named steps."""
    started = time.perf_counter()
    check_device(config.device)
    data = data.for_model(model)
    config = config.with_target_for(data.labels is not None).with_multi_label_for(
        model.final_activation, data.multi_label)
    if config.multi_label:
        data = data.as_multi_label(model.n_classes)
    selection = select_images(model, data, config)
    example = torch.from_numpy(data.take(selection.indices[:2])).to(config.device)
    networks = prepare_networks(model.network(config.output, config.multi_label), model.layout,
                                config.device, example, tuned=config.tuned,
                                batch_size=config.batch_size)
    take = image_feed(data, selection.indices, networks.forward, config.device)
    threshold = decision_threshold(model, config)
    predictions = predict(networks.forward, take, len(selection.indices), config.batch_size * 4,
                          threshold)
    labels = data.labels[selection.indices] if data.labels is not None else None
    plan = plan_targets(config, labels, predictions, model.n_classes)
    runner = make_runner(data, config, selection, networks, take, model.n_classes, threshold)
    runs = {m.name: runner.run(m, known=plan.known, targets=plan.targets, keep_maps=plan.examples,
                               progress=progress) for m in config.methods}
    record = RunRecord(
        indices=selection.indices, baseline=selection.baseline, band_mean=selection.stats.mean,
        band_std=selection.stats.std, passes=networks.passes, speed_ups=networks.speed_ups,
        timings={"tuning": networks.tuning_s, **{m: r.seconds for m, r in runs.items()}},
        notes=selection.notes + networks.notes, skipped=selection.skipped,
        run_time_s=time.perf_counter() - started)
    examples = Examples.of(data, selection.indices, plan.examples, plan.known, predictions, runs,
                           plan.targets if isinstance(plan.targets, Pairs) else None)
    return assemble(model, data, config, record, labels, predictions, examples, runs,
                    plan.targets if isinstance(plan.targets, Pairs) else None)


def decision_threshold(model: LoadedModel, config: RunConfig) -> float | None:
    """Multi-label: the output above which a label counts as predicted (logit 0, probability
    0.5); single-label: None (the largest output is the prediction)."""
    if not config.multi_label:
        return None
    return 0.0 if model.output_space(config.output) == "logits" else 0.5


@dataclass(frozen=True)
class TargetPlan:
    """What the runner explains: the class each image counts as, the targets (per image, every
    class, or (image, label) pairs), and the positions (pair numbers) kept as examples."""

    known: np.ndarray
    targets: np.ndarray | Pairs | None
    examples: np.ndarray


def plan_targets(config: RunConfig, labels: np.ndarray | None, predictions: np.ndarray,
                 n_classes: int) -> TargetPlan:
    """Single-label: the label (or prediction) per image, or every class. Multi-label: every
    (image, label) pair of the images' labels (of their predicted labels without labels or
    with target 'predicted'); examples are pairs, true positives first."""
    known = labels if labels is not None else predictions
    per_class = config.examples_per_class
    if not config.multi_label:
        examples = pick_examples(known, predictions, n_classes, per_class, config.seed)
        targets = {"true": labels, "predicted": predictions, "all": None}[config.target]
        return TargetPlan(known, targets, examples)
    pairs = Pairs.of(predictions if config.target == "predicted" else known)
    hit = predictions[pairs.image, pairs.target]
    examples = pick_examples(pairs.target, np.where(hit, pairs.target, -1), n_classes,
                             per_class, config.seed)
    return TargetPlan(known, pairs, examples)


def select_images(model: LoadedModel, data: ImageSet, config: RunConfig) -> Selection:
    """The images to explain (a seeded stratified subset when asked), checked in one pass that
    also gives the band statistics, and the removal baseline."""
    indices = stratified_subset(data.labels, len(data), config.max_images, config.seed,
                                config.max_per_class)
    _check_classes(data, indices, model.n_classes, config)
    checked = scan(data, indices, skip_bad=config.skip_bad)
    if checked.skipped:
        _check_classes(data, checked.kept, model.n_classes, config, skipping=True)
    skipped = data.skipped + tuple(checked.skipped)
    notes = [*skip_notes(skipped), *_output_notes(model, config)]
    notes += [n for n in (m.note(data.n_bands) for m in config.methods) if n]
    return Selection(checked.kept, checked.stats, _baseline(config, checked.stats, data.n_bands),
                     skipped, tuple(notes))


def _baseline(config: RunConfig, stats: BandStats, n_bands: int) -> np.ndarray:
    if config.baseline == "mean":
        return stats.mean
    if config.baseline == "zero":
        return np.zeros(n_bands, dtype=np.float32)
    if len(config.baseline) != n_bands:
        raise XbandError(f"baseline has {len(config.baseline)} values but the images have "
                         f"{n_bands} bands. Give one value per band.")
    return np.asarray(config.baseline, dtype=np.float32)


def _output_notes(model: LoadedModel, config: RunConfig) -> list[str]:
    """What the scores are for, when it is not what was asked or what the network gives."""
    if config.output == "logits" and model.output_space("logits") == "probabilities":
        return [f"output: the network's final {model.final_activation} could not be stripped; "
                "scores are for probabilities, which saturate near 0 and 1."]
    if config.output == "probabilities" and model.final_activation == "none":
        kind = "sigmoid" if config.multi_label else "softmax"
        return [f"output: the network ends in logits; the probabilities explained are their "
                f"{kind}, applied by xband."]
    return []


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
            "the model's output order: --classes, classes=).")
    if (in_data == 0).any():
        names = ", ".join(f"'{data.class_names[c]}' (model output {c})" for c in empty[in_data == 0])
        raise XbandError(f"{data.source}: the data holds no images of class {names}; the other "
                         f"classes have {counts[counts > 0].min()}–{counts.max()} each. {need} "
                         "Add images of that class to the data.")
    names = ", ".join(f"'{data.class_names[c]}' (model output {c})" for c in empty)
    if skipping:
        raise XbandError(f"{data.source}: every image of class {names} was left out as unreadable "
                         f"or bad (--skip-bad; {int(in_data.sum())} in the data, listed in the "
                         f"notes). {need} Fix or replace those files.")
    drawn = ", ".join(f"--{flag} {value}" for flag, value in (
        ("max-images", config.max_images), ("max-per-class", config.max_per_class)) if value)
    raise XbandError(f"{data.source}: none of the {len(indices)} images drawn ({drawn}) is of "
                     f"class {names}, which has {int(in_data.sum())} in the data. {need} Draw "
                     "more images (raise --max-images or --max-per-class).")


def image_feed(data: ImageSet, indices: np.ndarray, forward: nn.Module,
               device: str) -> Callable[[np.ndarray], torch.Tensor]:
    """Positions among the explained images → their images on `device`, in the memory format
    the network runs in: copied once per batch instead of once per pass."""
    def take(positions: np.ndarray) -> torch.Tensor:
        return forward.prepare(torch.from_numpy(data.take(indices[positions])).to(device))

    return take


def predict(network: nn.Module, take: Callable[[np.ndarray], torch.Tensor], n: int,
            chunk: int, threshold: float | None = None) -> np.ndarray:
    """Predicted class of every explained image (N,); multi-label (a `threshold`): the labels
    predicted, outputs above it, (N, C) bools."""
    def decide(outputs: torch.Tensor) -> np.ndarray:
        return (outputs.argmax(dim=1) if threshold is None else outputs > threshold).cpu().numpy()

    with torch.inference_mode():
        return np.concatenate([decide(network(take(np.arange(start, min(start + chunk, n)))))
                               for start in range(0, n, chunk)])


def pick_examples(known: np.ndarray, predictions: np.ndarray, n_classes: int, per_class: int,
                  seed: int) -> np.ndarray:
    """Positions of up to `per_class` examples per class, correctly classified ones first."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        members = np.flatnonzero(known == c)
        right = members[predictions[members] == c]
        wrong = members[predictions[members] != c]
        order = np.concatenate([rng.permutation(right), rng.permutation(wrong)])
        picked.extend(order[:per_class])
    return np.array(sorted(picked), dtype=int)


def make_runner(data: ImageSet, config: RunConfig, selection: Selection, networks: Networks,
                take: Callable[[np.ndarray], torch.Tensor], n_classes: int,
                threshold: float | None = None) -> BatchRunner:
    """The batch runner over the explained images, with band groups when the data has them."""
    device = config.device
    ctx = Context(
        forward=networks.forward,
        baseline=torch.from_numpy(selection.baseline).view(1, -1, 1, 1).to(device),
        band_std=torch.from_numpy(selection.stats.std).to(device),
        donors=Donors(len(selection.indices), config.seed, take),
        passes=networks.passes,
        threshold=threshold,
    )
    groups = BandGroups.of(ctx, data.band_groups, data.n_bands) if data.band_groups else None
    return BatchRunner(ctx, take, seed=config.seed, batch_size=config.batch_size,
                       n_classes=n_classes, groups=groups)


def assemble(model: LoadedModel, data: ImageSet, config: RunConfig, record: RunRecord,
             labels: np.ndarray | None, predictions: np.ndarray, examples: Examples,
             runs: dict[str, MethodRun], pairs: Pairs | None = None) -> Explanation:
    """Per-class tables of every method's per-image (per-pair) scores, and the result object."""
    scores = {m: r.scores for m, r in runs.items()}
    group_scores = {m: r.group_scores for m, r in runs.items() if r.group_scores is not None}
    tables = dict(**aggregate.grouping_keys(labels, predictions, pairs),
                  class_names=list(data.class_names), target_mode=config.target,
                  n_boot=config.n_boot, seed=config.seed)
    importance = aggregate.importance_table(scores, band_names=list(data.band_names),
                                            wavelengths=data.wavelengths, **tables)
    group_importance = aggregate.importance_table(
        group_scores, band_names=list(data.band_groups), **tables) if group_scores else None
    return Explanation(
        config=config, record=record,
        band_names=list(data.band_names), class_names=list(data.class_names),
        method_info={m.name: m.info() for m in config.methods},
        labels=labels, predictions=predictions, scores=scores, importance=importance,
        agreement=aggregate.agreement(importance), consensus=aggregate.consensus(importance),
        examples=examples, summary=build_summary(model, data, config, record, labels, predictions),
        groups=data.group_bands() or None, group_scores=group_scores or None,
        group_importance=group_importance, pairs=pairs,
    )
