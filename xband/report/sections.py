"""What the report shows, planned before anything is drawn: each section's figures as (file
name stem, caption, a function that draws it), for the explanation and for its trust checks.
`xband.report.writer` draws them (in parallel) and lays them out."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from xband.checks.completeness import completeness_summary
from xband.checks.evaluation import (
    AGREEMENT,
    COMPLETENESS,
    CONSENSUS,
    FAITHFULNESS,
    RANDOMISATION,
    Evaluation,
)
from xband.data.wavelengths import WATER_VAPOUR_NM, near_water_vapour, spectral_gaps
from xband.report import plots
from xband.run.aggregate import ALL_IMAGES, agreement_matrix
from xband.run.plan import BANDS
from xband.run.result import Explanation

Section = tuple[dict[str, pd.DataFrame], list[plots.Drawing]]  # tables, figures to draw


def explanation_drawings(result: Explanation) -> dict[str, list[plots.Drawing]]:
    """Every figure of the report by section, not drawn yet: (file name stem, caption, a
    function that draws it), so that `save` can draw them in parallel."""
    info, grouping = result.method_info, grouping_of(result)
    importance = result.importance_of()
    sections: dict[str, list[plots.Drawing]] = {}
    feature = "Spectral region" if result.plan.by_region else "Band"
    sections[f"{feature} × class heat maps"] = [
        (f"heatmap_{m}", f"{info[m]['label']}: mean share per class",
         partial(plots.band_class_heatmap, importance, m, grouping=grouping,
                 method_info=info, feature=feature.lower()))
        for m in result.methods
    ]
    sections[f"{feature} importance per class, with 95% intervals"] = [
        (f"bars_{m}", info[m]["label"],
         partial(plots.class_bars, importance, m, grouping=grouping, method_info=info,
                 feature=feature.lower()))
        for m in result.methods
    ]
    sections["Methods side by side"] = [
        ("methods_panel", f"{feature} rank by every method, per class (1 = most important)",
         partial(plots.methods_panel, importance, grouping=grouping, method_info=info,
                 feature=feature.lower())),
    ]
    if len(result.methods) > 1:
        sections["Agreement between methods"] = [
            ("agreement", f"Spearman's ρ between {feature.lower()} rankings, mean over classes",
             partial(plots.agreement_matrix, result.agreement, method_info=info,
                     feature=feature.lower())),
        ]
    if result.target_mode == "all":
        sections["How each band pushes images of one class toward another"] = [
            (f"class_target_{m}", f"{info[m]['label']}: class × target",
             partial(plots.class_target_heatmap, importance, m, grouping=grouping,
                     method_info=info))
            for m in result.methods
        ]
    for extra in result.plan.removed[1:]:  # the band groups, each also removed whole
        table = result.importance_of(extra.name)
        members = "; ".join(f"{g}: {' '.join(b)}"
                            for g, b in extra.as_dict(tuple(result.band_names)).items())
        sections[f"{extra.name.capitalize()} × class heat maps"] = [
            (f"groups_heatmap_{m}",
             f"{info[m]['label']}: mean share per class and {extra.name[:-1]} ({members})",
             partial(plots.band_class_heatmap, table, m, grouping=grouping,
                     method_info=info, feature=extra.name[:-1]))
            for m in result.methods
        ]
    if importance["wavelength_nm"].notna().all():
        sections["Importance against wavelength"] = _spectra(result, importance)
    sections.update(_example_sections(result))
    return sections


def _example_sections(result: Explanation) -> dict[str, list[plots.Drawing]]:
    """The example images' maps, one figure per image: per band (or region) maps of images;
    for single spectra, each method's attribution drawn along the spectrum."""
    ex, info = result.examples, result.method_info
    if not ex.maps:
        return {}
    if ex.image.shape[2:] == (1, 1):
        return {"Example spectra: each method's attribution along the spectrum":
                _example_spectra(result)}
    mean, names = _map_features(result)
    title = ("Per-region maps of example images (mean over each region's bands)"
             if result.plan.by_region else "Per-band maps of example images")
    return {title: [
        (f"maps_image{ex.index[i]}" + ("" if ex.label_sets is None else f"_class{ex.label[i]}"),
         example_title(result, i),
         partial(plots.band_maps, mean(ex.image[i]), {m: mean(v[i]) for m, v in ex.maps.items()},
                 names, title=example_title(result, i), method_info=info,
                 outline=None if ex.masks is None else ex.masks[i] == ex.label[i]))
        for i in range(len(ex.index))]}


def _spectra(result: Explanation, importance: pd.DataFrame) -> list[plots.Drawing]:
    """Per method, importance against wavelength; by region, with the regions shaded: per
    band for the gradient methods (their band detail), per region for the others; each
    class's mean spectrum beneath, gaps in the band centres and the water-vapour absorptions
    marked, and a warning in the caption where a class's top feature lies next to one."""
    info = result.method_info
    wavelength = band_wavelengths(result)
    gaps = spectral_gaps(wavelength)
    if not result.plan.by_region:
        return [(f"spectrum_{m}", f"{info[m]['label']}: mean share per class against "
                 "wavelength" + _absorption_warning(result, importance, m),
                 partial(plots.importance_spectrum, importance, m,
                         grouping=grouping_of(result), method_info=info, gaps=gaps))
                for m in result.methods]
    bands = result.importance_of(BANDS)
    out = []
    for m in result.methods:
        per_band = (bands["method"] == m).any()
        what = "per band" if per_band else "per region (the method removes regions whole)"
        table = bands if per_band else importance
        out.append((f"spectrum_{m}", f"{info[m]['label']}: mean share per class {what}"
                    + _absorption_warning(result, table, m),
                    partial(plots.region_spectrum, table, m, result.regions, per_band=per_band,
                            grouping=grouping_of(result), method_info=info,
                            class_spectra=class_spectra(result, wavelength), gaps=gaps,
                            absorption=WATER_VAPOUR_NM)))
    return out


def band_wavelengths(result: Explanation) -> np.ndarray:
    """Each band's centre wavelength (nm), from the run's summary."""
    return np.array([b["wavelength_nm"] for b in result.summary["bands"]], dtype=float)


def class_spectra(result: Explanation, wavelength: np.ndarray) -> plots.ClassSpectra | None:
    """Each class's mean spectrum (as stored) by class name, where the run has them."""
    means = result.record.class_mean
    if means is None or result.labels is None:
        return None
    return wavelength, {name: means[c] for c, name in enumerate(result.class_names)
                        if c < len(means) and np.isfinite(means[c]).all()}


def _absorption_warning(result: Explanation, table: pd.DataFrame, method: str) -> str:
    """A caption's warning naming the classes whose top band or region lies next to a
    water-vapour absorption window ('' when none does)."""
    top = table[(table["method"] == method) & (table["grouping"] == grouping_of(result))
                & (table["rank"] == 1) & table["target"].isin(("true class", "predicted class"))]
    near = []
    for cls, feature, nm in zip(top["class"], top["band"], top["wavelength_nm"], strict=True):
        region = (result.regions or {}).get(feature)
        window = near_water_vapour(*(region or (nm, nm)))
        if window is not None and cls != ALL_IMAGES:
            where = f"{feature} nm" if region else f"{feature} ({nm:.0f} nm)"
            near.append(f"{cls}: {where}, next to the {window} absorption")
    if not near:
        return ""
    return (". ⚠ Top feature next to a water-vapour absorption, where reflectance is noisy and "
            "atmospheric correction leaves residue — check it before trusting it: "
            + "; ".join(near))


def _example_spectra(result: Explanation) -> list[plots.Drawing]:
    """Per example pixel, each map method's attribution drawn along its spectrum."""
    ex, info = result.examples, result.method_info
    wavelength = band_wavelengths(result)
    if not np.isfinite(wavelength).all():
        wavelength = np.arange(1, len(result.band_names) + 1, dtype=float)
    gaps = spectral_gaps(wavelength)
    return [(f"spectrum_image{ex.index[i]}", example_title(result, i),
             partial(plots.spectrum_maps, wavelength, ex.image[i][:, 0, 0],
                     {m: v[i][:, 0, 0] for m, v in ex.maps.items()},
                     title=example_title(result, i), gaps=gaps, method_info=info))
            for i in range(len(ex.index))]


def _map_features(result: Explanation):
    """(K, B, H, W) maps → what the map figures show, and its names: the bands, or as
    regions the mean over each region's bands."""
    answer = result.plan.answer
    if not result.plan.by_region:
        return (lambda maps: maps), result.band_names
    members = [list(m) for m in answer.members]
    return (lambda maps: np.stack([maps[m].mean(axis=0) for m in members])), list(answer.names)


def grouping_of(result: Explanation) -> str:
    return "true_class" if result.labels is not None else "predicted_class"


def example_title(result: Explanation, i: int) -> str:
    ex, names = result.examples, result.class_names
    if ex.label_sets is not None:
        def listed(row: np.ndarray) -> str:
            return " + ".join(names[c] for c in np.flatnonzero(row)) or "none"

        if ex.masks is not None:
            mask = "predicted" if result.plan.target == "predicted" else "label"
            return (f"image {ex.index[i]} — explained for the pixels of {names[ex.label[i]]} "
                    f"(outlined, {mask} mask); classes in the mask {listed(ex.label_sets[i])}")
        truth = "labels" if result.labels is not None else "predicted labels"
        return (f"image {ex.index[i]} — {truth} {listed(ex.label_sets[i])}, predicted "
                f"{listed(ex.predicted_sets[i])}; explained for {names[ex.label[i]]}")
    truth = "class" if result.labels is not None else "predicted"
    return (f"image {ex.index[i]} — {truth} {names[ex.label[i]]}, "
            f"predicted {names[ex.prediction[i]]}")


def check_sections(evaluation: Evaluation) -> dict[str, Section]:
    """Report sections in order: title → (tables by title, [(file stem, caption, what draws
    the figure)])."""
    info = evaluation.method_info
    out: dict[str, Section] = {}
    if evaluation.randomisation is not None:
        out[RANDOMISATION] = _randomisation_section(evaluation)
    if evaluation.faithfulness is not None:
        baseline = evaluation.settings["primary_baseline"]
        out[FAITHFULNESS] = (
            {"Deletion gap to random orders (accuracy area, mean over classes) per baseline; "
             "ranking ρ between the run's baseline and a zero (or mean) one":
             evaluation.stability.set_index("method"),
             **_no_ranking(evaluation.faithfulness, baseline),
             "Images each baseline took (the run's until its answer was settled, the others "
             "the first round)":
             _taken(evaluation, ("deletion", "ranking under"))},
            [("faithfulness_gaps", "Area between each method's curves and random orders",
              partial(plots.faithfulness_gaps, evaluation.faithfulness, method_info=info))]
            + [(f"deletion_{m}", f"{info[m]['label']}: deletion and insertion curves",
                partial(plots.deletion_curves, evaluation.curves, m, baseline=baseline,
                        method_info=info))
               for m in pd.unique(evaluation.faithfulness["method"])],
        )
    if evaluation.pairs is not None and len(info) > 1:
        out[AGREEMENT] = (
            {"Kendall's τ between band rankings, mean over classes":
             agreement_matrix(evaluation.pairs, "kendall")},
            [("agreement_kendall_by_class", "Kendall's τ between methods, per class",
              partial(plots.agreement_by_class, evaluation.pairs, method_info=info))],
        )
    if evaluation.consensus is not None:
        k = evaluation.settings["consensus_top_k"]
        top = evaluation.consensus[evaluation.consensus["consensus_rank"] <= k]
        out[CONSENSUS] = (
            {f"Consensus top {k} per class, 95% bootstrap interval of the rank":
             top.drop(columns="band_index").set_index(["class", "band"])},
            [("consensus_intervals", "Consensus rank with bootstrap intervals",
              partial(plots.consensus_intervals, evaluation.consensus))],
        )
    if evaluation.completeness is not None:
        steps = evaluation.settings["integrated_gradients_steps"]
        out[COMPLETENESS] = (
            {"Convergence delta by number of steps": completeness_summary(evaluation.completeness),
             "Images taken (until the median relative delta was settled)":
             _taken(evaluation, ("completeness",))},
            [("completeness", "Band sums against f(x) − f(baseline)",
              partial(plots.completeness_plot, evaluation.completeness, steps))],
        )
    return out


def _randomisation_section(evaluation: Evaluation) -> Section:
    """The model randomisation section: ρ by stage (a stage that left the outputs as they were
    marked, not evidence), the layers re-drawn and the tensors left, the images taken."""
    table, info = evaluation.randomisation, evaluation.method_info
    if "evidence" not in table:  # a table made before stages were tested: every stage counts
        table = table.assign(evidence=True)
    inert = set(table.loc[~table["evidence"], "stage"])
    pivot = table.pivot(index="method", columns="stage", values="rank_rho")
    pivot = pivot.reindex(index=pd.unique(table["method"]), columns=pd.unique(table["stage"]))
    pivot = pivot.rename(columns={s: f"{s} (outputs unchanged: not evidence)" for s in inert})
    final = table[table["evidence"]].drop_duplicates("method", keep="last").set_index("method")
    pivot["map ρ (examples, last stage)"] = final["map_rho"]
    pivot["flagged"] = final["flagged"].map({True: "barely changes", False: ""})
    threshold = evaluation.settings["randomisation_threshold"]
    layers = evaluation.layers
    shown = table[table["evidence"]]
    return (
        {"Band-ranking ρ, trained vs randomised (mean over classes), by layers re-drawn": pivot,
         f"Layers ({evaluation.settings.get('randomisation_layers', '')})":
         _layer_summary(layers) if layers is not None else pd.DataFrame(),
         "Images each stage took (every layer random: until every method's answer was "
         "settled; the earlier stages: the first round)":
         _taken(evaluation, ("randomisation",))},
        [("randomisation_bars", "Similarity with every layer re-drawn",
          partial(plots.randomisation_bars, shown, threshold=threshold, method_info=info)),
         ("randomisation_cascade", "Cascading randomisation from the output layer down",
          partial(plots.randomisation_cascade, shown, method_info=info))],
    )


def _layer_summary(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per layer re-drawn (its tensors, values, first stage), then one per kind of
    tensor left as it is (how many, the first names)."""
    drawn = layers[layers["left_because"] == ""].groupby("layer", sort=True).agg(
        tensors=("tensor", ", ".join), values=("values", "sum"),
        redrawn_from=("redrawn_from_stage", "first"))
    drawn.index = [f"layer {int(i)}" for i in drawn.index]
    left = layers[layers["left_because"] != ""].groupby("left_because", sort=False)["tensor"]
    kept = pd.DataFrame({"tensors": left.agg(lambda t: ", ".join(t.head(3))
                                             + (f", … ({len(t)})" if len(t) > 3 else "")),
                         "redrawn_from": "left as it is"})
    return pd.concat([drawn, kept])


def _no_ranking(faithfulness: pd.DataFrame, baseline: str) -> dict[str, pd.DataFrame]:
    """A table of the classes where a method's bands all tie (no ranking: no deletion test),
    when there are any."""
    if "ranked" not in faithfulness:  # a table made before ties were told apart
        return {}
    rows = faithfulness[(faithfulness["baseline"] == baseline)
                        & (faithfulness["curve"] == "deletion")
                        & (faithfulness["metric"] == "accuracy") & ~faithfulness["ranked"]]
    if rows.empty:
        return {}
    tied = rows.groupby("method", sort=False)["class"].agg(", ".join).rename("classes")
    return {"No ranking (every band's score ties), so no deletion test: z not computed, never "
            "credited as faithful": tied.to_frame()}


def _taken(evaluation: Evaluation, prefixes: tuple[str, ...]) -> pd.DataFrame:
    """How the checks whose names start with `prefixes` took their images."""
    taken = evaluation.settings.get("images_taken", {})
    return pd.DataFrame({name: t for name, t in taken.items()
                         if name.startswith(prefixes)}).T
