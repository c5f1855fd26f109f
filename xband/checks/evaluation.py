"""The result of the checks: tables for pandas, figures for matplotlib, report sections, files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from xband import plots, report
from xband.aggregate import agreement_matrix
from xband.checks.completeness import completeness_summary
from xband.files import atomic_folder
from xband.result import report_inputs

Section = tuple[dict[str, pd.DataFrame], list[plots.Drawing]]  # tables, figures to draw

RANDOMISATION = "Sanity check: model randomisation"
FAITHFULNESS = "Faithfulness: band deletion and insertion"
AGREEMENT = "Agreement between methods, per class"
CONSENSUS = "Consensus ranking with bootstrap intervals"
COMPLETENESS = "Completeness of Integrated Gradients"

_FILES = {"randomisation": "randomisation.csv", "curves": "deletion_curves.csv",
          "faithfulness": "faithfulness.csv", "stability": "baseline_stability.csv",
          "pairs": "agreement_pairs.csv", "consensus": "consensus_bootstrap.csv",
          "completeness": "completeness.csv"}


@dataclass
class Evaluation:
    """Can the answer be trusted? One table per check (None for checks not run).

    randomisation: method × cascade stage, ρ trained vs randomised (bands per class, per image,
    maps), flagged; curves: deletion/insertion curves (long); faithfulness: areas and gaps to
    random orders; stability: per method across baselines; pairs: per class Kendall's τ and
    Spearman's ρ between methods; consensus: consensus rank with bootstrap interval;
    completeness: IG's delta per image and number of steps.
    """

    method_info: dict[str, dict]
    settings: dict
    randomisation: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    faithfulness: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    pairs: pd.DataFrame | None = None
    consensus: pd.DataFrame | None = None
    completeness: pd.DataFrame | None = None

    @property
    def flagged(self) -> list[str]:
        """Methods whose band ranking barely changed when every layer was randomised."""
        if self.randomisation is None:
            return []
        return list(pd.unique(self.randomisation.loc[self.randomisation["flagged"], "method"]))

    def sections(self) -> dict[str, Section]:
        """Report sections in order: title → (tables by title, [(file stem, caption, what draws
        the figure)])."""
        info = self.method_info
        out: dict[str, Section] = {}
        if self.randomisation is not None:
            table = self.randomisation
            pivot = table.pivot(index="method", columns="stage", values="rank_rho")
            pivot = pivot.reindex(index=pd.unique(table["method"]), columns=pd.unique(table["stage"]))
            final = table[table["stage"] == table["stage"].iloc[-1]].set_index("method")
            pivot["map ρ (all layers)"] = final["map_rho"]
            pivot["flagged"] = final["flagged"].map({True: "barely changes", False: ""})
            threshold = self.settings["randomisation_threshold"]
            out[RANDOMISATION] = (
                {"Band-ranking ρ, trained vs randomised (mean over classes), by layers re-drawn":
                 pivot},
                [("randomisation_bars", "Similarity with every layer re-drawn",
                  partial(plots.randomisation_bars, table, threshold=threshold, method_info=info)),
                 ("randomisation_cascade", "Cascading randomisation from the output layer down",
                  partial(plots.randomisation_cascade, table, method_info=info))],
            )
        if self.faithfulness is not None:
            baseline = self.settings["primary_baseline"]
            out[FAITHFULNESS] = (
                {"Deletion gap to random orders (accuracy area, mean over classes) per baseline; "
                 "ranking ρ between the run's baseline and a zero (or mean) one":
                 self.stability.set_index("method")},
                [("faithfulness_gaps", "Area between each method's curves and random orders",
                  partial(plots.faithfulness_gaps, self.faithfulness, method_info=info))]
                + [(f"deletion_{m}", f"{info[m]['label']}: deletion and insertion curves",
                    partial(plots.deletion_curves, self.curves, m, baseline=baseline,
                            method_info=info))
                   for m in pd.unique(self.faithfulness["method"])],
            )
        if self.pairs is not None and len(info) > 1:
            out[AGREEMENT] = (
                {"Kendall's τ between band rankings, mean over classes":
                 agreement_matrix(self.pairs, "kendall")},
                [("agreement_kendall_by_class", "Kendall's τ between methods, per class",
                  partial(plots.agreement_by_class, self.pairs, method_info=info))],
            )
        if self.consensus is not None:
            k = self.settings["consensus_top_k"]
            top = self.consensus[self.consensus["consensus_rank"] <= k]
            out[CONSENSUS] = (
                {f"Consensus top {k} per class, 95% bootstrap interval of the rank":
                 top.drop(columns="band_index").set_index(["class", "band"])},
                [("consensus_intervals", "Consensus rank with bootstrap intervals",
                  partial(plots.consensus_intervals, self.consensus))],
            )
        if self.completeness is not None:
            steps = self.settings["integrated_gradients_steps"]
            out[COMPLETENESS] = (
                {"Convergence delta by number of steps": completeness_summary(self.completeness)},
                [("completeness", "Band sums against f(x) − f(baseline)",
                  partial(plots.completeness_plot, self.completeness, steps))],
            )
        return out

    def write_tables(self, folder: Path) -> None:
        """CSV files of every check that ran, and evaluation.json with the settings."""
        for attr, name in _FILES.items():
            table = getattr(self, attr)
            if table is not None:
                table.to_csv(folder / name, index=False)
        (folder / "evaluation.json").write_text(
            json.dumps({"settings": self.settings, "flagged": self.flagged}, indent=2))

    def save(self, out: str | os.PathLike, summary: Mapping, *, overwrite: bool = False,
             figures: bool = True) -> Path:
        """Only the checks as a report folder (`summary`: the explanation's, for the header);
        `out` and `figures` as in `Explanation.save`."""
        with atomic_folder(out, overwrite=overwrite, inputs=report_inputs(summary)) as tmp:
            self.write_tables(tmp)
            sections = self.sections()
            if figures:
                (tmp / "figures").mkdir()
                written = plots.write_figures(
                    {title: items for title, (_, items) in sections.items()}, tmp / "figures")
            else:
                written = {title: [] for title in sections}  # the tables only
            checks = {title: (tables, written[title]) for title, (tables, _) in sections.items()}
            html = report.render_report(summary, figures={}, tables={}, checks=checks)
            (tmp / "report.html").write_text(html, encoding="utf-8")
        return Path(out).resolve()
