"""The result of the checks: one table per check, and the files they are written to (the report's
sections for them are planned in `xband.report.sections`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

RANDOMISATION = "Sanity check: model randomisation"
FAITHFULNESS = "Faithfulness: band deletion and insertion"
AGREEMENT = "Agreement between methods, per class"
CONSENSUS = "Consensus ranking with bootstrap intervals"
COMPLETENESS = "Completeness of Integrated Gradients"

_FILES = {"randomisation": "randomisation.csv", "layers": "randomisation_layers.csv",
          "curves": "deletion_curves.csv",
          "faithfulness": "faithfulness.csv", "stability": "baseline_stability.csv",
          "pairs": "agreement_pairs.csv", "consensus": "consensus_bootstrap.csv",
          "completeness": "completeness.csv"}


@dataclass
class Evaluation:
    """Can the answer be trusted? One table per check (None for checks not run).

    randomisation: method × cascade stage, ρ trained vs randomised (bands per class, per image,
    maps), whether the stage changed the outputs (evidence), flagged; layers: the weights each
    stage re-draws and those left as they are; curves: deletion/insertion curves (long);
    faithfulness: areas and gaps to random orders (NaN where a method's bands all tie: no
    ranking); stability: per method across baselines; pairs: per class Kendall's τ and
    Spearman's ρ between methods; consensus: consensus rank with bootstrap interval;
    completeness: IG's delta per image and number of steps. settings["images_taken"]: per
    check (and stage or baseline), the images it took until its answer was settled.
    """

    method_info: dict[str, dict]
    settings: dict
    randomisation: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
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

    def write_tables(self, folder: Path) -> None:
        """CSV files of every check that ran, and evaluation.json with the settings."""
        for attr, name in _FILES.items():
            table = getattr(self, attr)
            if table is not None:
                table.to_csv(folder / name, index=False)
        (folder / "evaluation.json").write_text(
            json.dumps({"settings": self.settings, "flagged": self.flagged}, indent=2))
