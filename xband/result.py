"""The result of a run: tables for pandas, figures for matplotlib, and a folder on disk."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xband import aggregate, plots, report
from xband.errors import XbandError

if TYPE_CHECKING:
    from xband.checks import Evaluation


@dataclass
class Examples:
    """A few images kept whole, with each pixel-map method's attribution maps (K, B, H, W)."""

    index: np.ndarray  # positions in the data source
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    maps: dict[str, np.ndarray]


@dataclass
class Explanation:
    """Per-band, per-class importance by several methods.

    `importance` is the tidy table (method, grouping, class, target, band, score, ci_low, ci_high,
    share, …, n, rank); `scores[method]` the per-image band scores, (N, B) or (N, C, B) when every
    class was a target; rows follow `indices` into the data source.
    """

    band_names: list[str]
    class_names: list[str]
    method_info: dict[str, dict]
    target_mode: str
    indices: np.ndarray
    labels: np.ndarray | None
    predictions: np.ndarray
    scores: dict[str, np.ndarray]
    importance: pd.DataFrame
    agreement: pd.DataFrame
    consensus: pd.DataFrame
    examples: Examples
    band_mean: np.ndarray
    band_std: np.ndarray
    summary: dict
    evaluation: Evaluation | None = None  # the trust checks, when asked for (xband.evaluate)
    groups: dict[str, list[str]] | None = None  # band groups: group → its bands
    group_scores: dict[str, np.ndarray] | None = None  # per-image group scores, like `scores`
    group_importance: pd.DataFrame | None = None  # the tidy table with groups in place of bands

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def table(self, method: str | None = None) -> pd.DataFrame:
        """The main view: per class (true class when labels are known), one row per band."""
        rows = aggregate.class_rows(self.importance, per_class_only=False)
        if method is not None:
            rows = rows[rows["method"] == method]
        return rows.reset_index(drop=True)

    def top_bands(self, k: int = 3) -> pd.DataFrame:
        """Per class: the consensus top-k ranks (tied bands joined by " = ") and each method's top
        band."""
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

    def figures(self) -> dict[str, list[tuple[str, str, Figure]]]:
        """Every figure of the report by section, as (file name stem, caption, figure)."""
        info, grouping = self.method_info, self._grouping
        sections: dict[str, list[tuple[str, str, Figure]]] = {}
        sections["Band × class heat maps"] = [
            (f"heatmap_{m}", f"{info[m]['label']}: mean share per class",
             plots.band_class_heatmap(self.importance, m, grouping=grouping, method_info=info))
            for m in self.methods
        ]
        sections["Band importance per class, with 95% intervals"] = [
            (f"bars_{m}", info[m]["label"],
             plots.class_bars(self.importance, m, grouping=grouping, method_info=info))
            for m in self.methods
        ]
        sections["Methods side by side"] = [
            ("methods_panel", "Band rank by every method, per class (1 = most important)",
             plots.methods_panel(self.importance, grouping=grouping, method_info=info)),
        ]
        if len(self.methods) > 1:
            sections["Agreement between methods"] = [
                ("agreement", "Spearman's ρ between band rankings, mean over classes",
                 plots.agreement_matrix(self.agreement, method_info=info)),
            ]
        if self.target_mode == "all":
            sections["How each band pushes images of one class toward another"] = [
                (f"class_target_{m}", f"{info[m]['label']}: class × target",
                 plots.class_target_heatmap(self.importance, m, grouping=grouping,
                                            method_info=info))
                for m in self.methods
            ]
        if self.group_importance is not None:
            members = "; ".join(f"{g}: {' '.join(b)}" for g, b in self.groups.items())
            sections["Band groups × class heat maps"] = [
                (f"groups_heatmap_{m}",
                 f"{info[m]['label']}: mean share per class and band group ({members})",
                 plots.band_class_heatmap(self.group_importance, m, grouping=grouping,
                                          method_info=info))
                for m in self.methods
            ]
        if self.importance["wavelength_nm"].notna().all():
            sections["Importance against wavelength"] = [
                (f"spectrum_{m}", f"{info[m]['label']}: mean share per class against wavelength",
                 plots.importance_spectrum(self.importance, m, grouping=grouping,
                                           method_info=info))
                for m in self.methods
            ]
        ex = self.examples
        if ex.maps:
            sections["Per-band maps of example images"] = [
                (f"maps_image{ex.index[i]}", self._example_title(i),
                 plots.band_maps(ex.image[i], {m: v[i] for m, v in ex.maps.items()},
                                 self.band_names, title=self._example_title(i), method_info=info))
                for i in range(len(ex.index))
            ]
        return sections

    @property
    def _grouping(self) -> str:
        return "true_class" if self.labels is not None else "predicted_class"

    def _example_title(self, i: int) -> str:
        ex = self.examples
        truth = "class" if self.labels is not None else "predicted"
        return (f"image {ex.index[i]} — {truth} {self.class_names[ex.label[i]]}, "
                f"predicted {self.class_names[ex.prediction[i]]}")

    def save(self, out: str | os.PathLike) -> Path:
        """Write tables, per-image scores, figures, summary.json and report.html to `out`.

        Everything is written to a temporary folder beside `out` and moved into place at the
        end: an interrupted run leaves no half report.
        """
        out = Path(out)
        with atomic_folder(out) as tmp:
            self.importance.to_csv(tmp / "importance.csv", index=False)
            self.consensus.to_csv(tmp / "consensus.csv", index=False)
            self.agreement.to_csv(tmp / "agreement.csv")
            self.top_bands().to_csv(tmp / "top_bands.csv")
            if self.group_importance is not None:
                self.group_importance.to_csv(tmp / "group_importance.csv", index=False)
            np.savez_compressed(
                tmp / "scores.npz",
                indices=self.indices,
                labels=self.labels if self.labels is not None else np.array([]),
                predictions=self.predictions,
                band_names=np.array(self.band_names),
                class_names=np.array(self.class_names),
                **{f"scores_{m}": s for m, s in self.scores.items()},
                **{f"group_scores_{m}": s for m, s in (self.group_scores or {}).items()},
            )
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_jsonable))
            figures_dir = tmp / "figures"
            figures_dir.mkdir()
            sections = {section: write_figures(items, figures_dir)
                        for section, items in self.figures().items()}
            checks = {}
            if self.evaluation is not None:
                self.evaluation.write_tables(tmp)
                checks = {title: (tables, write_figures(items, figures_dir))
                          for title, (tables, items) in self.evaluation.sections().items()}
            html = report.render_report(
                self.summary,
                figures=sections,
                tables={
                    "Top bands per class": self.top_bands(),
                    "Bands: spread over the data and baseline": pd.DataFrame(
                        self.summary["bands"]).set_index("band"),
                },
                checks=checks,
            )
            (tmp / "report.html").write_text(html, encoding="utf-8")
        return out


def write_figures(items: list[tuple[str, str, Figure]], folder: Path) -> list[tuple[str, bytes]]:
    """Write each (file stem, caption, figure) as folder/stem.png; (caption, PNG bytes) pairs."""
    rendered = []
    for stem, caption, fig in items:
        path = folder / f"{stem}.png"
        plots.save_figure(fig, path)  # also releases the figure
        rendered.append((caption, path.read_bytes()))
    return rendered


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def check_writable(out: str | os.PathLike) -> None:
    """Fail now, before any work, if `out` cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XbandError(f"{out}: exists and is not a folder. Choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent)
        os.rmdir(probe)
    except OSError as err:
        raise XbandError(
            f"{out}: cannot write the report there ({err.strerror}). Choose a writable --out."
        ) from None


@contextmanager
def atomic_folder(out: Path):
    """Yield a temporary folder that replaces `out` only if the block finishes."""
    check_writable(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the report is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
