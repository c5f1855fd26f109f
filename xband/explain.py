"""The attribution run: stream the images through every method, keep per-image band scores.

Data flows one way: data → model → methods → per-image scores → tables (aggregate) → result.
Memory holds the per-image band scores and full maps only for a few example images per class.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xband import aggregate
from xband.data import BandStats, ImageSet, scan, skip_notes, stratified_subset
from xband.errors import XbandError
from xband.forward import PassSizes, best_pass_sizes, check_device, fast_networks, forward_module
from xband.methods import METHODS, BandAttribution, Batch, Context, Method, get_method
from xband.models import LoadedModel
from xband.result import Examples, Explanation
from xband.versions import versions

TARGETS = ("true", "predicted", "all")
OUTPUTS = ("logits", "probabilities")
BASELINES = ("mean", "zero")


@dataclass
class _Plan:
    """Validated settings of one run."""

    methods: list[Method]
    indices: np.ndarray
    stats: BandStats
    baseline: np.ndarray
    notes: list[str]
    skipped: list[tuple[str, str]]  # (image, reason) left out with skip_bad


def resolve_methods(methods: str | Sequence[str]) -> list[Method]:
    """Method objects for 'all', a comma-separated string or a list of names."""
    if isinstance(methods, str):
        methods = list(METHODS) if methods == "all" else [m.strip() for m in methods.split(",")]
    if not methods:
        raise XbandError(f"no method given. Choose from: {', '.join(METHODS)} (or 'all').")
    return [get_method(name) for name in dict.fromkeys(methods)]


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise XbandError(f"{name} '{value}' is not one of: {', '.join(choices)}.")


def _plan(
    model: LoadedModel,
    data: ImageSet,
    *,
    methods: str | Sequence[str],
    target: str,
    output: str,
    baseline: str | np.ndarray,
    max_images: int | None,
    max_per_class: int | None,
    skip_bad: bool,
    seed: int,
    settings: dict,
) -> _Plan:
    _check_choice("target", target, TARGETS)
    _check_choice("output", output, OUTPUTS)
    chosen = resolve_methods(methods)
    if data.n_bands != model.n_bands:
        raise XbandError(
            f"{data.source}: images have {data.n_bands} bands but the model expects {model.n_bands}."
        )
    if target == "true" and data.labels is None:
        raise XbandError(
            "target 'true' needs labels: give them (--labels, or 'y' in the .npz) or use "
            "--target predicted."
        )
    indices = stratified_subset(data.labels, len(data), max_images, seed, max_per_class)
    _check_classes(data, indices, model.n_classes)
    checked = scan(data, indices, skip_bad=skip_bad)
    indices, stats, skipped = checked.kept, checked.stats, data.skipped + checked.skipped
    if checked.skipped:
        _check_classes(data, indices, model.n_classes)
    notes = skip_notes(skipped)
    if output == "logits" and model.logits_module is None:
        notes.append(
            "output: the network's final softmax could not be stripped; scores are for "
            "probabilities, which saturate near 0 and 1."
        )
    if isinstance(baseline, str):
        _check_choice("baseline", baseline, BASELINES)
        base = stats.mean if baseline == "mean" else np.zeros(data.n_bands, dtype=np.float32)
    else:
        base = np.asarray(baseline, dtype=np.float32).reshape(-1)
        if len(base) != data.n_bands:
            raise XbandError(
                f"baseline has {len(base)} values but the images have {data.n_bands} bands. Give "
                "one value per band."
            )
    unknown = sorted(set(settings) - set(METHODS))
    if unknown:
        raise XbandError(f"settings for unknown method(s) {', '.join(unknown)}.")
    for method in chosen:
        note = method.note(data.n_bands, method.options(settings))
        if note:
            notes.append(note)
    return _Plan(chosen, indices, stats, base, notes, skipped)


def _check_classes(data: ImageSet, indices: np.ndarray, n_classes: int) -> None:
    """Every class of the model has images among `indices` (when labels are known)."""
    if data.labels is None:
        return
    present = np.bincount(data.labels[indices], minlength=n_classes)
    empty = [data.class_names[c] for c in np.flatnonzero(present == 0)]
    if empty:
        raise XbandError(
            f"{data.source}: no images of class {', '.join(repr(e) for e in empty)}. Per-class "
            "importance needs images of every class the model has: add some, or raise "
            "--max-images."
        )


def _group_context(ctx: Context, data: ImageSet) -> tuple[Context, np.ndarray] | None:
    """For band groups: the context whose feature masks join each group's bands, and the
    (bands × groups) membership matrix that sums band scores into group scores."""
    if not data.groups:
        return None
    feature_of_band = np.empty(data.n_bands, dtype=np.int64)
    for g, members in enumerate(data.groups.values()):
        feature_of_band[members] = g
    features = torch.from_numpy(feature_of_band).to(ctx.baseline.device)
    return dataclasses.replace(ctx, features=features), np.eye(len(data.groups))[feature_of_band]


def seed_for(seed: int, method: str, batch_no: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(method.encode()) + batch_no) % 2**32


@contextmanager
def _seeded(seed: int):
    """Seed torch's and NumPy's global generators (Captum draws from both), then restore them."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def run_method(method: Method, batch: Batch, ctx: Context, seed: int) -> BandAttribution:
    """One method on one batch under its own seed."""
    with _seeded(seed), warnings.catch_warnings():
        # Captum's notes on requires_grad and per-example surrogates are not the user's
        warnings.filterwarnings("ignore", category=UserWarning, module="captum")
        return method.attribute(batch, ctx)


def _predict(forward: nn.Module, data: ImageSet, indices: np.ndarray, batch_size: int,
             device: str) -> np.ndarray:
    predictions = []
    with torch.inference_mode():
        for chunk in data.batches(indices, batch_size * 4):
            x = torch.from_numpy(data.take(chunk)).to(device)
            predictions.append(forward(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(predictions)


def _pick_examples(labels: np.ndarray, predictions: np.ndarray, n_classes: int, per_class: int,
                   seed: int) -> np.ndarray:
    """Positions of up to `per_class` examples per class, correctly classified ones first."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        right = members[predictions[members] == c]
        wrong = members[predictions[members] != c]
        order = np.concatenate([rng.permutation(right), rng.permutation(wrong)])
        picked.extend(order[:per_class])
    return np.array(sorted(picked), dtype=int)


def explain(
    model: LoadedModel,
    data: ImageSet,
    *,
    methods: str | Sequence[str] = "all",
    target: str = "true",
    output: str = "logits",
    baseline: str | np.ndarray = "mean",
    batch_size: int = 64,
    max_images: int | None = None,
    examples_per_class: int = 2,
    seed: int = 0,
    device: str = "cpu",
    settings: dict | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    max_per_class: int | None = None,
    skip_bad: bool = False,
    tuned: bool = True,
) -> Explanation:
    """Per-band, per-class importance of `model` on `data` by every method asked for.

    target: "true" (the label), "predicted", or "all" (every class, a class × class view).
    output: "logits" (final softmax stripped when possible) or "probabilities".
    baseline: "mean" (per-band data mean), "zero", or one value per band.
    settings: per-method options, e.g. {"integrated_gradients": {"n_steps": 64}}.
    max_per_class: explain at most this many images per class (seeded draw).
    skip_bad: leave out unreadable images and images with NaN/Inf/nodata values, listing them
    in the notes, instead of stopping at the first.
    tuned: run a faster forward pass with the same numbers (xband.forward.tune); False runs the
    network as given, to rule the speed-ups out.
    device: "cpu" or "cuda" (a GPU; channels-last and every method work there too).
    With band groups (`data.groups`), group methods run again with one feature per group and
    the others' band scores are summed per group: `group_importance` in the result.
    """
    started = time.perf_counter()
    settings = settings or {}
    check_device(device)
    plan = _plan(model, data, methods=methods, target=target, output=output, baseline=baseline,
                 max_images=max_images, max_per_class=max_per_class, skip_bad=skip_bad, seed=seed,
                 settings=settings)
    forward = forward_module(model.network(output), model.layout, device)
    indices = plan.indices
    speed_ups: list[str] = []
    passes = PassSizes(batch_size, batch_size)
    tuning_started = time.perf_counter()
    inference = forward
    if tuned:
        example = torch.from_numpy(data.take(indices[:2])).to(device)
        forward, inference, speed_ups, speed_notes = fast_networks(forward, example)
        passes = best_pass_sizes(forward, inference, example)
        plan.notes.extend(speed_notes)
    timings = {"tuning": time.perf_counter() - tuning_started}

    def as_input(images: np.ndarray) -> torch.Tensor:
        """Images on the device, in the memory format the network runs in: copied once per
        batch instead of once per pass."""
        return forward.prepare(torch.from_numpy(images).to(device))

    predictions = _predict(inference, data, indices, batch_size, device)
    labels = data.labels[indices] if data.labels is not None else None
    known = labels if labels is not None else predictions
    example_pos = _pick_examples(known, predictions, model.n_classes, examples_per_class, seed)

    donor_of: dict[int, np.ndarray] = {}  # repeat → a seeded permutation of the images

    def donors(positions: np.ndarray, repeat: int) -> torch.Tensor:
        if repeat not in donor_of:
            donor_of[repeat] = np.random.default_rng([seed, 7, repeat]).permutation(len(indices))
        return as_input(data.take(indices[donor_of[repeat][positions]]))

    ctx = Context(
        forward=forward,
        baseline=torch.from_numpy(plan.baseline).view(1, -1, 1, 1).to(device),
        band_std=torch.from_numpy(plan.stats.std).to(device),
        donors=donors,
        settings=settings,
        passes=passes,
        inference=inference,
    )
    n, n_bands, n_classes = len(indices), data.n_bands, model.n_classes
    grouping = _group_context(ctx, data)
    group_scores: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {}
    for method in plan.methods:
        shape = (n, n_classes, n_bands) if target == "all" else (n, n_bands)
        scores[method.name] = np.zeros(shape)
        if grouping is not None and method.grouped:
            group_scores[method.name] = np.zeros((*shape[:-1], len(data.groups)))
        method_maps = np.zeros((len(example_pos), n_bands, *data.image_size), dtype=np.float32)
        has_maps = False
        t0 = time.perf_counter()
        bar = tqdm(total=n, desc=f"{method.label:<28}", unit="img", disable=not progress,
                   leave=True, dynamic_ncols=True)
        for batch_no, start in enumerate(range(0, n, batch_size)):
            pos = np.arange(start, min(start + batch_size, n))
            x = as_input(data.take(indices[pos]))
            label = torch.from_numpy(known[pos]).to(device)
            goals = range(n_classes) if target == "all" else [None]
            for goal in goals:
                if goal is None:
                    chosen = label if target == "true" else torch.from_numpy(predictions[pos])
                else:
                    chosen = torch.full((len(pos),), goal, dtype=torch.long)
                batch = Batch(x=x, target=chosen.to(device), label=label, index=pos)
                batch_seed = seed_for(seed, method.name, batch_no * n_classes + (goal or 0))
                result = run_method(method, batch, ctx, batch_seed)
                rows = pos if goal is None else (pos, goal)
                scores[method.name][rows] = result.scores
                if method.name in group_scores:
                    group_scores[method.name][rows] = run_method(method, batch, grouping[0],
                                                                 batch_seed).scores
                if result.maps is not None:
                    keep = np.isin(pos, example_pos)
                    if goal is not None:  # every class a target: keep the map of the true one
                        keep &= known[pos] == goal
                    for row in np.flatnonzero(keep):
                        method_maps[np.searchsorted(example_pos, pos[row])] = (
                            result.maps[row].cpu().numpy()
                        )
                        has_maps = True
            bar.update(len(pos))
        bar.close()
        timings[method.name] = time.perf_counter() - t0
        if has_maps:
            maps[method.name] = method_maps
        if grouping is not None and not method.grouped:
            group_scores[method.name] = scores[method.name] @ grouping[1]

    importance = aggregate.importance_table(
        scores, labels=labels, predictions=predictions, class_names=data.class_names,
        band_names=data.band_names, target_mode=target, n_boot=n_boot, seed=seed,
        wavelengths=data.wavelengths,
    )
    group_importance = None if grouping is None else aggregate.importance_table(
        group_scores, labels=labels, predictions=predictions, class_names=data.class_names,
        band_names=list(data.groups), target_mode=target, n_boot=n_boot, seed=seed,
    )
    examples = Examples(
        index=indices[example_pos],
        image=data.take(indices[example_pos]),
        label=known[example_pos],
        prediction=predictions[example_pos],
        maps=maps,
    )
    summary = _summary(model, data, plan, labels=labels, predictions=predictions, target=target,
                       output=output, baseline=baseline, batch_size=batch_size, seed=seed,
                       settings=settings, device=device, timings=timings,
                       run_time=time.perf_counter() - started, n_boot=n_boot,
                       max_per_class=max_per_class, tuned=tuned, speed_ups=speed_ups,
                       passes=passes)
    return Explanation(
        band_names=data.band_names,
        class_names=data.class_names,
        method_info={m.name: m.info() for m in plan.methods},
        target_mode=target,
        indices=indices,
        labels=labels,
        predictions=predictions,
        scores=scores,
        importance=importance,
        agreement=aggregate.agreement(importance),
        consensus=aggregate.consensus(importance),
        examples=examples,
        band_mean=plan.stats.mean,
        band_std=plan.stats.std,
        summary=summary,
        groups=data.group_bands() or None,
        group_scores=group_scores or None,
        group_importance=group_importance,
    )


def _summary(model: LoadedModel, data: ImageSet, plan: _Plan, *, labels, predictions, target,
             output, baseline, batch_size, seed, settings, device, timings, run_time,
             n_boot, max_per_class, tuned, speed_ups, passes) -> dict:
    """What a reader needs to trust and reproduce the run."""
    names = data.class_names
    accuracy: dict = {"overall": None, "per_class": {}}
    counts = {}
    if labels is not None:
        accuracy["overall"] = float(np.mean(labels == predictions))
        for c, name in enumerate(names):
            members = labels == c
            counts[name] = int(members.sum())
            if members.any():
                accuracy["per_class"][name] = float(np.mean(predictions[members] == c))
    space = "logits" if output == "logits" and model.logits_module is not None else "probabilities"
    return {
        "model": {
            "path": model.source_path,
            "format": model.source_format,
            "sha256": model.sha256,
            "layout": model.layout,
            "n_bands": model.n_bands,
            "n_classes": model.n_classes,
            "ends_with_softmax": model.ends_with_softmax,
            "output_space": space,
            "output_note": (
                "scores are for logits: the network's final softmax was stripped"
                if space == "logits" and model.ends_with_softmax
                else f"scores are for the network's {space}"
            ),
        },
        "fidelity": model.fidelity.as_dict() if model.fidelity else None,
        "data": {
            "path": data.source,
            "n_images": int(len(plan.indices)),
            "n_images_in_source": len(data),
            "image_shape": [data.n_bands, *data.image_size],
            "layout_on_disk": data.layout_on_disk,
            "preprocessing": data.preprocess.describe(),
            "images_skipped": len(plan.skipped),
            "class_counts": counts,
        },
        "skipped": [{"image": item, "reason": reason} for item, reason in plan.skipped],
        "bands": [
            {"band": name, "wavelength_nm": wavelength, "mean": float(mean), "std": float(std),
             "baseline": float(base)}
            for name, wavelength, mean, std, base in zip(
                data.band_names, data.wavelengths or [None] * data.n_bands, plan.stats.mean,
                plan.stats.std, plan.baseline, strict=True)
        ],
        "band_groups": data.group_bands(),
        "classes": names,
        "accuracy": accuracy,
        "methods": {
            m.name: {
                **m.options(settings),
                "passes_per_image": m.passes_per_image(data.n_bands, m.options(settings)),
                "seconds": round(timings[m.name], 3),
            }
            for m in plan.methods
        },
        "notes": model.notes + data.notes + plan.notes,
        "seed": seed,
        "settings": {
            "target": target,
            "output": output,
            "baseline": baseline if isinstance(baseline, str) else "user-given",
            "baseline_values": plan.baseline.tolist(),
            "batch_size": batch_size,
            "max_per_class": max_per_class,
            "device": device,
            "tuned": tuned,
            "speed_ups": speed_ups,
            "images_per_pass": passes.as_dict(),
            "tuning_s": round(timings["tuning"], 2),
            "bootstrap_resamples": n_boot,
        },
        "versions": versions(),
        "run_time_s": round(run_time, 2),
    }
