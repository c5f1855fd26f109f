"""The one report writer, for `xband explain` and `xband evaluate`: tables, per-image scores,
summary.json, the figures (drawn in parallel) and one HTML page, written beside `out` and
swapped in whole (`xband.files.atomic_folder`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from xband.files import atomic_folder
from xband.report import html, plots
from xband.report.sections import check_sections, explanation_drawings
from xband.run.plan import GROUPS
from xband.run.result import Explanation


def save_report(result: Explanation, out: str | os.PathLike, *, overwrite: bool = False,
                figures: bool = True, checks_only: bool = False) -> Path:
    """Write `result` to the folder `out`: its tables, per-image scores (scores.npz), figures,
    summary.json and report.html; with `checks_only`, its trust checks alone (`xband
    evaluate`). Everything is written to a temporary folder beside `out` and moved into place
    at the end: an interrupted run leaves no half report. `out` may be new, empty, or a report
    folder xband wrote; a folder holding other files is replaced only with `overwrite`, and
    never one that is, holds or lies inside the data or the model. figures: False writes the
    tables and a report without figures (quicker, for scripted runs)."""
    verdict = result.verdict()
    summary = {**result.summary, "verdict": verdict.as_dict()}
    evaluation = result.evaluation
    checks = {} if evaluation is None else check_sections(evaluation)
    drawings = {("check", title): items for title, (_, items) in checks.items()}
    if not checks_only:
        figure = verdict.figure() if figures else None
        drawings = {("verdict", ""): [] if figure is None else [("verdict_consensus", "", figure)],
                    **{("section", title): items
                       for title, items in explanation_drawings(result).items()},
                    **drawings}
    with atomic_folder(out, overwrite=overwrite, inputs=report_inputs(summary)) as tmp:
        if not checks_only:
            write_tables(result, tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
        if evaluation is not None:
            evaluation.write_tables(tmp)
        written = {}
        if figures:
            (tmp / "figures").mkdir()
            written = plots.write_figures(drawings, tmp / "figures")
        page = html.render_report(
            summary,
            figures={title: pngs for (part, title), pngs in written.items() if part == "section"},
            tables={} if checks_only else _tables(result),
            checks={title: (tables, written.get(("check", title), []))
                    for title, (tables, _) in checks.items()},
            verdict_figure=next((png for _, png in written.get(("verdict", ""), [])), None),
        )
        (tmp / "report.html").write_text(page, encoding="utf-8")
    return Path(out).resolve()


def _tables(result: Explanation) -> dict[str, pd.DataFrame]:
    """The report's tables before its figures."""
    return {
        f"Top {result.feature}s per class": result.top_bands(),
        "Images explained per class and method (why each stopped)": result.sampling_overview(),
        "Bands: spread over the data and baseline": pd.DataFrame(
            result.summary["bands"]).set_index("band"),
    }


def write_tables(result: Explanation, folder: Path) -> None:
    """The CSV tables and the per-image scores (scores.npz) into `folder`: the answer's feature
    set in importance.csv and scores_<method>, the others beside them (`_prefix`)."""
    plan = result.plan
    for feature_set in plan.features:
        prefix = _prefix(plan, feature_set.name)
        table = result.importance_of(feature_set.name)
        if len(table):
            table.to_csv(folder / f"{prefix}importance.csv", index=False)
    result.consensus.to_csv(folder / "consensus.csv", index=False)
    result.agreement.to_csv(folder / "agreement.csv")
    result.top_bands().to_csv(folder / "top_bands.csv")
    np.savez_compressed(
        folder / "scores.npz",
        indices=result.indices,
        labels=result.labels if result.labels is not None else np.array([]),
        predictions=result.predictions,
        band_names=np.array(result.band_names),
        class_names=np.array(result.class_names),
        **{f"{_prefix(plan, name)}scores_{m}": values
           for name, scores in result.feature_scores.items() for m, values in scores.items()},
        **({"region_names": np.array(plan.answer.names)} if plan.by_region else {}),
        **({} if result.pairs is None else {"pair_image": result.pairs.image,
                                          "pair_class": result.pairs.target}),
    )


def _prefix(plan, feature_set: str) -> str:
    """How a feature set's files are named: the answer's plainly (importance.csv,
    scores_<method>), the band groups' with "group_", the bands' beside regions with "band_"."""
    if feature_set == plan.answer.name:
        return ""
    return "group_" if feature_set == GROUPS else "band_"


def report_inputs(summary: Mapping) -> dict[str, str | None]:
    """The files a report was made from (data, model), which its folder must keep apart from."""
    return {"data": summary.get("data", {}).get("path"),
            "model": summary.get("model", {}).get("path")}


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
