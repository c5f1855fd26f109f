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

from xband.data.images import ImageSet
from xband.errors import whole_number
from xband.methods._base import PassSizes
from xband.run import aggregate
from xband.run.config import RunConfig
from xband.run.runner import Pairs
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
    # (C, B) each class's mean spectrum, as stored (`BandStats.class_mean`); None without labels
    class_mean: np.ndarray | None = None

    @property
    def passes(self) -> PassSizes:
        return self.timing.sizes


@dataclass
class Examples:
    """A few images kept whole, with each pixel-map method's attribution maps (K, B, H, W).

    Multi-label, each example is an image with one of its labels: `label` is the class it is
    explained for, `label_sets` and `predicted_sets` (K, C) its labels and predicted labels."""

    index: np.ndarray  # positions in the data source
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    maps: dict[str, np.ndarray]
    label_sets: np.ndarray | None = None
    predicted_sets: np.ndarray | None = None

    @classmethod
    def of(cls, data: ImageSet, candidates, positions: np.ndarray, results: dict,
           pairs: Pairs | None = None) -> Examples:
        """The candidate images at `positions` (pair numbers, for multi-label `pairs`), with the
        maps each method kept of them (zeros where a method stopped before one)."""
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
                   predicted_sets=candidates.predictions[images])


def build_summary(model: LoadedModel, data: ImageSet, config: RunConfig, record: RunRecord,
                  labels: np.ndarray | None, predictions: np.ndarray) -> dict:
    """What a reader needs to trust and reproduce the run (summary.json)."""
    return {
        "model": _model_summary(model, config),
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
        "band_groups": data.group_bands(),
        "classes": list(data.class_names),
        "accuracy": (_label_scores(labels, predictions, data.class_names) if config.multi_label
                     else _accuracy(labels, predictions, data.class_names)),
        "methods": {
            m.name: {**m.options(),
                     "passes_per_image": m.passes_per_image(data.n_bands, config.n_background),
                     "seconds": round(record.timings[m.name], 3)}
            for m in config.methods
        },
        "notes": list(model.notes) + list(data.notes) + list(record.notes),
        "seed": config.seed,
        "settings": {
            **config.settings(),
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


def _model_summary(model: LoadedModel, config: RunConfig) -> dict:
    """The model's identity, what it ends in and what the scores are for."""
    space = model.output_space(config.output)
    if space == "logits" and model.final_activation != "none":
        note = f"scores are for logits: the network's final {model.final_activation} was stripped"
    elif space == "logits":
        note = "scores are for the network's raw outputs (logits): it has no final softmax/sigmoid"
    elif model.final_activation == "none":
        kind = "sigmoid" if config.multi_label else "softmax"
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
        "multi_label": config.multi_label,
        "output_space": space,
        "output_note": note,
    }


def _class_counts(labels: np.ndarray | None, names: Sequence[str]) -> dict[str, int]:
    if labels is None:
        return {}
    if labels.ndim == 2:  # multi-label: images with each label
        return {name: int(labels[:, c].sum()) for c, name in enumerate(names)}
    return {name: int((labels == c).sum()) for c, name in enumerate(names)}


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
    predicted labels are exactly their labels."""
    scores: dict = {"overall": None, "multi_label": True, "per_class": {}}
    if labels is None:
        return scores

    def prf(truth: np.ndarray, guess: np.ndarray) -> dict:
        hits = int((truth & guess).sum())
        precision = hits / guess.sum() if guess.sum() else float("nan")
        recall = hits / truth.sum() if truth.sum() else float("nan")
        f1 = 2 * hits / (truth.sum() + guess.sum()) if truth.sum() + guess.sum() else float("nan")
        return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                "support": int(truth.sum())}

    scores["per_class"] = {name: prf(labels[:, c], predictions[:, c])
                           for c, name in enumerate(names)}
    scores["micro"] = prf(labels, predictions)
    scores["exact_match"] = float((labels == predictions).all(axis=1).mean())
    return scores


@dataclass
class Explanation:
    """Per-band, per-class importance by several methods.

    `importance` is the tidy table (method, grouping, class, target, band, score, ci_low, ci_high,
    share, …, n, rank); `scores[method]` the per-image band scores, (N, B) or (N, C, B) when every
    class was a target; rows follow `indices` into the data source. Multi-label, `labels` and
    `predictions` are (N, C) bools and the scores' rows follow `pairs`: each image with each of
    its labels (of its predicted labels without labels). `config` is the run's configuration and
    `record` what it found; `summary` (summary.json) is written from them.
    """

    config: RunConfig
    record: RunRecord
    band_names: list[str]
    class_names: list[str]
    method_info: dict[str, dict]
    labels: np.ndarray | None
    predictions: np.ndarray
    scores: dict[str, np.ndarray]
    importance: pd.DataFrame
    agreement: pd.DataFrame
    consensus: pd.DataFrame
    examples: Examples
    summary: dict
    evaluation: CheckResults | None = None  # the trust checks, when asked for (xband.evaluate)
    groups: dict[str, list[str]] | None = None  # band groups: group → its bands
    group_scores: dict[str, np.ndarray] | None = None  # per-image group scores, like `scores`
    group_importance: pd.DataFrame | None = None  # the tidy table with groups in place of bands
    pairs: Pairs | None = None  # multi-label: the (image, class) pair of each row of the scores
    # explained by spectral region: the features of `importance` and `scores` are the regions
    regions: dict[str, tuple[float, float]] | None = None  # region → (first, last) band, nm
    band_scores: dict[str, np.ndarray] | None = None  # gradient methods' per-image band scores
    band_importance: pd.DataFrame | None = None  # the tidy table of those, per band
    # the verdict, and the evaluation it was computed with (`verdict`)
    _verdict: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def target_mode(self) -> str:
        return self.config.target

    @property
    def indices(self) -> np.ndarray:
        return self.record.indices

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

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
        """The main view: per class (true class when labels are known), one row per band."""
        rows = aggregate.class_rows(self.importance, per_class_only=False)
        if method is not None:
            rows = rows[rows["method"] == method]
        return rows.reset_index(drop=True)

    def top_bands(self, k: int = 3) -> pd.DataFrame:
        """Per class: the consensus top-k ranks (tied bands joined by " = ") and each method's top
        band."""
        k = whole_number(k, "k")
        consensus = self.consensus
        rows = aggregate.class_rows(self.importance, per_class_only=False)
        top = rows[rows["rank"] == 1].groupby(["class", "method"], sort=False)["band"].first()
        order = [aggregate.ALL_IMAGES, *self.class_names]
        out = []
        for cls in order:
            ranked = consensus[consensus["class"] == cls]
            if ranked.empty:
                continue
            tiers = ranked.groupby("consensus_rank", sort=True)["band"].agg(" = ".join)
            line = {"class": cls, "consensus": ", ".join(tiers.head(k))}
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
                self.importance, self.evaluation,
                method_labels={m: i["label"] for m, i in self.method_info.items()},
                band_groups=self.summary.get("band_groups"), checkable=self.pairs is None,
                feature="band" if self.regions is None else "spectral region"))
        return self._verdict[1]

    @property
    def feature(self) -> str:
        """What the run ranks: "band", or "region" in a run by spectral region."""
        return "band" if self.regions is None else "region"

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
