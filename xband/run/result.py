"""The result of a run: tables for pandas, figures for matplotlib, and a folder on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from xband.data.images import ImageSet
from xband.data.regions import region_bounds
from xband.errors import whole_number
from xband.methods._base import PassSizes
from xband.run import aggregate
from xband.run.config import RunConfig
from xband.run.plan import BANDS, FeatureSet, Plan
from xband.run.runner import Pairs
from xband.run.segmentation import pixel_scores
from xband.run.tuning import PassTiming
from xband.versions import versions

if TYPE_CHECKING:
    from xband.models.load import LoadedModel


class CheckResults(Protocol):
    """What the report and the verdict need of the trust checks (`xband.checks.Evaluation`)."""

    flagged: list[str]
    settings: dict
    randomisation: pd.DataFrame | None
    faithfulness: pd.DataFrame | None

    def write_tables(self, folder: Path) -> None: ...


@dataclass(frozen=True)
class RunRecord:
    """What a run found and did beside its configuration: the images it explained, the baseline
    and band statistics it used, how the network ran, how long each step took."""

    indices: np.ndarray  # (N,) positions in the data source of the explained images
    baseline: np.ndarray  # (B,) what a removed band became (the data baseline: the band's mean)
    band_mean: np.ndarray  # (B,) over the explained images, preprocessed
    band_std: np.ndarray  # (B,)
    timing: PassTiming  # images per network pass and seconds per image-pass
    speed_ups: tuple[str, ...]
    timings: dict[str, float]  # seconds: "tuning" and one per method
    notes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (image, reason) left out
    run_time_s: float
    sampling: dict  # how many images each method explained per class, and why (xband.run.sampling)
    # segmentation: (C, C) labelled pixels by label (rows) and predicted class (columns) over
    # the candidate images (xband.run.segmentation); None without label masks or classifiers
    pixel_confusion: np.ndarray | None = None
    # (C, B) each class's mean spectrum, as stored (`BandStats.class_mean`); None without labels
    class_mean: np.ndarray | None = None

    @property
    def passes(self) -> PassSizes:
        return self.timing.sizes


@dataclass
class Examples:
    """A few images kept whole, with each pixel-map method's attribution maps (K, B, H, W).

    Multi-label, each example is an image with one of its labels: `label` is the class it is
    explained for, `label_sets` and `predicted_sets` (K, C) its labels and predicted labels;
    segmentation, `masks` (K, H, W) its class mask, the pixels of `label` being those explained."""

    index: np.ndarray  # positions in the data source
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    maps: dict[str, np.ndarray]
    label_sets: np.ndarray | None = None
    predicted_sets: np.ndarray | None = None
    masks: np.ndarray | None = None  # (K, H, W) segmentation: each pixel's class, -1 for none

    @classmethod
    def of(cls, data: ImageSet, candidates, positions: np.ndarray, results: dict,
           pairs: Pairs | None = None, masks: np.ndarray | None = None) -> Examples:
        """The candidate images at `positions` (pair numbers, for multi-label `pairs`), with the
        maps each method kept of them (zeros where a method stopped before one); segmentation,
        with their class masks (`masks`: the candidates')."""
        images = positions if pairs is None else pairs.image[positions]
        indices = candidates.indices[images]
        image = data.take(indices)
        maps = {m: np.stack([r.maps.get(int(p), np.zeros_like(image[0])) for p in positions])
                for m, r in results.items() if r.maps is not None and len(positions)}
        if pairs is None:
            return cls(index=indices, image=image, label=candidates.known[positions],
                       prediction=candidates.predictions[positions], maps=maps)
        target = pairs.target[positions]
        hit = candidates.predictions[images, target]
        return cls(index=indices, image=image, label=target,
                   prediction=np.where(hit, target, -1), maps=maps,
                   label_sets=candidates.known[images],
                   predicted_sets=candidates.predictions[images],
                   masks=None if masks is None else masks[images])


def build_summary(model: LoadedModel, data: ImageSet, plan: Plan, record: RunRecord,
                  labels: np.ndarray | None, predictions: np.ndarray) -> dict:
    """What a reader needs to trust and reproduce the run (summary.json)."""
    return {
        "model": _model_summary(model, plan),
        "fidelity": model.fidelity.as_dict() if model.fidelity else None,
        "data": {
            "path": data.source,
            "n_images": int(len(record.indices)),
            "n_images_in_source": len(data),
            "image_shape": [data.n_bands, *data.image_size],
            "layout_on_disk": str(data.layout),
            "preprocessing": data.preprocess.describe(),
            "images_skipped": len(record.skipped),
            "class_counts": _class_counts(labels, data.class_names),
        },
        "skipped": [{"image": item, "reason": reason} for item, reason in record.skipped],
        "bands": [
            {"band": name, "wavelength_nm": wavelength, "mean": float(mean), "std": float(std),
             "baseline": float(base)}
            for name, wavelength, mean, std, base in zip(
                data.band_names, data.wavelengths or [None] * data.n_bands, record.band_mean,
                record.band_std, record.baseline, strict=True)
        ],
        "band_groups": next((s.as_dict(data.band_names) for s in plan.features
                             if s.name != BANDS), {}),
        "classes": list(data.class_names),
        "accuracy": _accuracy_of(plan, record, labels, predictions, data.class_names),
        "methods": {
            m.name: {**m.options(),
                     "passes_per_image": m.passes_per_image(data.n_bands, plan.n_background),
                     "seconds": round(record.timings[m.name], 3)}
            for m in plan.methods
        },
        "notes": list(model.notes) + list(data.notes) + list(plan.notes) + list(record.notes),
        "seed": plan.config.seed,
        "settings": {
            **plan.settings(),
            "baseline_values": record.baseline.tolist(),
            "speed_ups": list(record.speed_ups),
            "images_per_pass": record.passes.as_dict(),
            "tuning_s": round(record.timings["tuning"], 2),
            "pass_timing": record.timing.as_dict(),
        },
        "sampling": record.sampling,
        "versions": versions(),
        "run_time_s": round(record.run_time_s, 2),
    }


def _model_summary(model: LoadedModel, plan: Plan) -> dict:
    """The model's identity, what it ends in and what the scores are for."""
    space = model.output_space(plan.config.output)
    if space == "logits" and model.final_activation != "none":
        note = f"scores are for logits: the network's final {model.final_activation} was stripped"
    elif space == "logits":
        note = "scores are for the network's raw outputs (logits): it has no final softmax/sigmoid"
    elif model.final_activation == "none":
        kind = "sigmoid" if plan.multi_label else "softmax"
        note = f"scores are for probabilities: the {kind} of the network's logits, applied by xband"
    else:
        note = f"scores are for probabilities: the network's final {model.final_activation}"
    return {
        "path": model.source_path,
        "format": model.source_format,
        "sha256": model.sha256,
        "layout": str(model.layout),
        "n_bands": model.n_bands,
        "n_classes": model.n_classes,
        "final_activation": model.final_activation,
        "ends_with_softmax": model.ends_with_softmax,
        "multi_label": plan.multi_label,
        "output_space": space,
        "output_note": note,
    }


def _class_counts(labels: np.ndarray | None, names: Sequence[str]) -> dict[str, int]:
    if labels is None:
        return {}
    if labels.ndim == 2:  # multi-label: images with each label
        return {name: int(labels[:, c].sum()) for c, name in enumerate(names)}
    return {name: int((labels == c).sum()) for c, name in enumerate(names)}


def _accuracy_of(plan: Plan, record: RunRecord, labels: np.ndarray | None,
                 predictions: np.ndarray, names: Sequence[str]) -> dict:
    """How well the model does on the images explained: per pixel (segmentation), per label
    (multi-label), or per image."""
    if plan.segmentation:
        return pixel_scores(record.pixel_confusion, names)
    if plan.multi_label:
        return _label_scores(labels, predictions, names)
    return _accuracy(labels, predictions, names)


def _accuracy(labels: np.ndarray | None, predictions: np.ndarray, names: Sequence[str]) -> dict:
    accuracy: dict = {"overall": None, "per_class": {}}
    if labels is not None:
        accuracy["overall"] = float(np.mean(labels == predictions))
        for c, name in enumerate(names):
            members = labels == c
            if members.any():
                accuracy["per_class"][name] = float(np.mean(predictions[members] == c))
    return accuracy


def _label_scores(labels: np.ndarray | None, predictions: np.ndarray,
                  names: Sequence[str]) -> dict:
    """Multi-label accuracy: per label precision, recall, F1 and support (images with the
    label), their micro average over every (image, label), and the share of images whose
    predicted labels are exactly their labels (NaN where a ratio has nothing to count)."""
    scores: dict = {"overall": None, "multi_label": True, "per_class": {}}
    if labels is None:
        return scores

    def prf(average: str | None) -> list[dict]:
        found = precision_recall_fscore_support(labels, predictions, average=average,
                                                zero_division=np.nan)
        support = labels.sum(axis=0) if average is None else [labels.sum()]
        return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                for p, r, f, n in zip(*(np.atleast_1d(v) for v in found[:3]), support,
                                      strict=True)]

    scores["per_class"] = dict(zip(names, prf(None), strict=True))
    scores["micro"] = prf("micro")[0]
    scores["exact_match"] = float(accuracy_score(labels, predictions))
    return scores


@dataclass
class Explanation:
    """Per-band, per-class importance by several methods.

    `importance` is the one tidy table (method, feature_set, grouping, class, target, band,
    score, ci_low, ci_high, share, …, n, rank) over every feature set of the run (`plan.features`:
    the bands or the spectral regions the answer ranks, then the band groups, or the bands as the
    gradient methods' detail); `importance_of()` gives one set's rows. `feature_scores[set]
    [method]` are the per-image scores, (N, F) or (N, C, F) when every class was a target; rows
    follow `indices` into the data source; `scores` are the answer's. Multi-label, `labels` and
    `predictions` are (N, C) bools and the scores' rows follow `pairs`: each image with each of
    its labels (of its predicted labels without labels). `plan` is what the run did (with the
    user's settings, `config`) and `record` what it found; `summary` (summary.json) is written
    from them.
    """

    plan: Plan
    record: RunRecord
    band_names: list[str]
    class_names: list[str]
    method_info: dict[str, dict]
    labels: np.ndarray | None
    predictions: np.ndarray
    feature_scores: dict[str, dict[str, np.ndarray]]  # feature set → method → per-image scores
    importance: pd.DataFrame
    agreement: pd.DataFrame
    consensus: pd.DataFrame
    examples: Examples
    summary: dict
    evaluation: CheckResults | None = None  # the trust checks, when asked for (xband.evaluate)
    pairs: Pairs | None = None  # multi-label: the (image, class) pair of each row of the scores
    # the verdict, and the evaluation it was computed with (`verdict`)
    _verdict: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        """What was explained, then the verdict's sentences (not every table's numbers)."""
        unit = "(image, label) pairs" if self.pairs is not None else "images"
        rows = len(self.pairs) if self.pairs is not None else len(self.indices)
        head = (f"Explanation of {self.summary['data']['path']}: {rows} {unit}, "
                f"{len(self.band_names)} bands, {len(self.class_names)} classes, by "
                f"{', '.join(self.methods)}")
        return f"{head}\n{self.verdict().text()}\n(tables: .table(), .top_bands(), .importance)"

    @property
    def config(self) -> RunConfig:
        """The user's settings."""
        return self.plan.config

    @property
    def target_mode(self) -> str:
        return self.plan.target

    @property
    def indices(self) -> np.ndarray:
        return self.record.indices

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """Method → per-image scores on the answer's feature set (the bands, or the regions)."""
        return self.feature_scores[self.plan.answer.name]

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def importance_of(self, feature_set: str | None = None) -> pd.DataFrame:
        """The rows of `importance` for one feature set (default: the answer's), without the
        feature_set column; empty when the run has no such set."""
        name = feature_set or self.plan.answer.name
        rows = self.importance[self.importance["feature_set"] == name]
        return rows.drop(columns="feature_set").reset_index(drop=True)

    def feature_set(self, name: str) -> FeatureSet | None:
        """The run's feature set called `name` (None when it has none)."""
        return next((s for s in self.plan.features if s.name == name), None)

    def members(self, feature_set: str | None = None) -> dict[str, list[str]]:
        """Feature → the names of its bands, for one feature set (default: the answer's)."""
        chosen = self.feature_set(feature_set) if feature_set else self.plan.answer
        return chosen.as_dict(tuple(self.band_names))

    @property
    def regions(self) -> dict[str, tuple[float, float]] | None:
        """In a run by spectral region, each region's first and last band wavelength (nm);
        None in a run by band."""
        if not self.plan.by_region:
            return None
        answer = self.plan.answer
        wavelengths = [band["wavelength_nm"] for band in self.summary["bands"]]
        return region_bounds(dict(zip(answer.names, answer.members, strict=True)), wavelengths)

    def sampling_table(self) -> pd.DataFrame:
        """Per class, method and answer (its bands; its band groups, for a method that removes
        them whole): images explained, why the method stopped there, and the bootstrap chance
        that the class's top bands (band groups) would still change."""
        sampling = self.record.sampling
        rows = [{"class": cls, "method": method, "answer": answer, **stop}
                for answer, key in ((f"{self.feature}s", "stops"), ("band groups", "group_stops"))
                for method, stops in sampling.get(key, {}).items()
                for cls, stop in stops.items()]
        return pd.DataFrame(rows).rename(columns={"n": "images", "reason": "stopped because",
                                                  "change_chance": "chance top bands change"})

    def sampling_overview(self) -> pd.DataFrame:
        """Class × method: "images (why the method stopped)", and where a method's band groups
        stopped apart, "; band groups: images (why)"."""
        table = self.sampling_table()
        chance = table["chance top bands change"].map(
            lambda p: "" if p is None or p != p else f", chance of change {p:.2f}")
        text = table["images"].astype(str) + " (" + table["stopped because"] + chance + ")"
        cells = table.assign(text=text).pivot(index="class", columns=["answer", "method"],
                                              values="text")
        overview = cells[f"{self.feature}s"].copy()
        if "band groups" in cells.columns.get_level_values(0):
            for method, groups in cells["band groups"].items():
                overview[method] += "; band groups: " + groups
        return overview.reindex(index=self.class_names, columns=self.methods)

    def sampling_text(self) -> str:
        """One line per method: images (multi-label: pairs) per class and why they stopped."""
        sampling = self.record.sampling
        heads = {"all images": "every image explained",
                 "all (image, label) pairs": "multi-label: every (image, label) pair explained; "
                 "sampling until settled is for single-label runs"}
        head = heads.get(sampling["mode"], f"images per class until the top "
                         f"{sampling['rule']['top_k']} {self.feature}s were settled")
        unit = "Pairs" if self.pairs is not None else "Images"
        lines = [f"{unit} explained per class ({head}):"]
        for method, stops in sampling["stops"].items():
            lines.append(f"  {method:<22} {_stops_text(stops.values())}")
        if groups := sampling.get("group_stops"):
            lines.append(f"  band groups (methods that remove them whole): "
                         f"{_stops_text(s for stops in groups.values() for s in stops.values())}")
        return "\n".join(lines)

    def table(self, method: str | None = None) -> pd.DataFrame:
        """The main view: per class (true class when labels are known), one row per feature of
        the answer (band, or region)."""
        rows = aggregate.class_rows(self.importance_of(), per_class_only=False)
        if method is not None:
            rows = rows[rows["method"] == method]
        return rows.reset_index(drop=True)

    def top_bands(self, k: int = 3) -> pd.DataFrame:
        """Per class: the consensus top-k ranks (tied bands joined by " = ") and each method's top
        band; "(all tied)" where every band ties, which names none."""
        k = whole_number(k, "k")
        consensus = self.consensus
        rows = aggregate.class_rows(self.importance_of(), per_class_only=False)
        top = aggregate.top_features(rows)  # a tie names no band
        order = [aggregate.ALL_IMAGES, *self.class_names]
        out = []
        for cls in order:
            ranked = consensus[consensus["class"] == cls]
            if ranked.empty:
                continue
            line = {"class": cls, "consensus": aggregate.top_tiers(ranked, k)}
            for method in self.methods:
                line[method] = top.get((cls, method), "")
            out.append(line)
        return pd.DataFrame(out).set_index("class")

    def verdict(self):
        """Per class, the bands the trusted methods put first: those that passed the trust
        checks attached as `evaluation`, or every method, marked not checked, without them
        (`xband.report.verdict`). Computed once per attached evaluation."""
        from xband.report.verdict import judge

        if self._verdict is None or self._verdict[0] is not self.evaluation:
            self._verdict = (self.evaluation, judge(
                self.importance_of(), self.evaluation,
                method_labels={m: i["label"] for m, i in self.method_info.items()},
                band_groups=self.summary.get("band_groups"), checkable=self.pairs is None,
                feature="spectral region" if self.plan.by_region else "band"))
        return self._verdict[1]

    @property
    def feature(self) -> str:
        """What the run ranks: "band", or "region" in a run by spectral region."""
        return "region" if self.plan.by_region else "band"

    def figures(self) -> dict[str, list[tuple[str, str, Figure]]]:
        """Every figure of the report by section, as (file name stem, caption, figure)."""
        from xband.report.sections import explanation_drawings

        return {section: [(stem, caption, draw()) for stem, caption, draw in items]
                for section, items in explanation_drawings(self).items()}

    def save(self, out: str | os.PathLike, *, overwrite: bool = False,
             figures: bool = True) -> Path:
        """Write tables, per-image scores, figures, summary.json and report.html to `out`
        (`xband.report.writer.save_report`: atomically, and only over a folder xband wrote,
        unless `overwrite`). figures: False writes the tables and a report without figures."""
        from xband.report.writer import save_report

        return save_report(self, out, overwrite=overwrite, figures=figures)



def _stops_text(stops: Iterable[Mapping]) -> str:
    """ "32–312 per class (settled, …)": the span of images and the reasons of some stops."""
    stops = list(stops)
    counts = sorted(s["n"] for s in stops)
    span = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    return f"{span} per class ({', '.join(sorted({s['reason'] for s in stops}))})"
