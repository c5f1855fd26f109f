"""Plots and the HTML report, on synthetic importance tables shaped like the engine's."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from xband.report import html as report
from xband.report import plots

LANDSAT = ["B1", "B2", "B3", "B4"]
SENTINEL2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
             "B12"]
CLASSES = ["AnnualCrop", "red soil", "damp grey soil"]
INFO = {
    "saliency": {"label": "Saliency", "kind": "gradient", "signed": False, "units": "|grad|"},
    "integrated_gradients": {"label": "Integrated Gradients", "kind": "attribution",
                             "signed": True, "units": "logit"},
    "feature_ablation": {"label": "Band ablation", "kind": "perturbation", "signed": True,
                         "units": "logit"},
}


def make_importance(bands: list[str], classes: list[str] = CLASSES, *,
                    target_all: bool = False, seed: int = 0) -> pd.DataFrame:
    """Engine-shaped tidy table; saliency ≥ 0 and tiny, the others signed."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in INFO:
        for cls in classes:
            for target in (classes if target_all else ["true class"]):
                raw = rng.normal(0.5, 1.0, len(bands))
                score = np.abs(raw) * 1e-4 if method == "saliency" else raw
                share = score / np.abs(score).sum()
                rank = (-share).argsort().argsort() + 1
                for b, band in enumerate(bands):
                    rows.append({
                        "method": method, "grouping": "true_class", "class": cls,
                        "target": target, "band": band, "band_index": b, "score": score[b],
                        "score_std": 0.1, "ci_low": score[b] - abs(score[b]) / 10,
                        "ci_high": score[b] + abs(score[b]) / 10,
                        "share": share[b], "share_std": 0.02, "share_ci_low": share[b] - 0.01,
                        "share_ci_high": share[b] + 0.01, "n": 20, "rank": rank[b]})
    return pd.DataFrame(rows)


def labels(texts) -> list[str]:
    return [t.get_text() for t in texts]


@pytest.fixture(params=[LANDSAT, SENTINEL2], ids=["4 bands", "13 bands"])
def bands(request) -> list[str]:
    return request.param


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
@pytest.mark.parametrize("value", ["share", "score"])
def test_band_class_heatmap_names_axes_and_picks_the_colour_map(bands, method, value):
    fig = plots.band_class_heatmap(make_importance(bands), method, value=value, method_info=INFO)
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert labels(ax.get_xticklabels()) == bands
    assert labels(ax.get_yticklabels()) == CLASSES
    assert INFO[method]["label"] in ax.get_title(loc="left")
    image = ax.images[0]
    low, high = image.get_clim()
    if method == "saliency":
        assert image.get_cmap().name == "YlOrRd" and low == 0
    else:
        assert image.get_cmap().name == "RdBu_r" and low == -high
    assert len(ax.patches) == len(CLASSES)  # one box per class around its top band


def test_heatmap_scales_tiny_scores_into_readable_annotations():
    fig = plots.band_class_heatmap(make_importance(LANDSAT), "saliency", value="score")
    colorbar_label = fig.axes[1].get_ylabel()
    assert "10^{-" in colorbar_label
    annotations = [float(t.get_text()) for t in fig.axes[0].texts]
    assert max(annotations) >= 1  # 1e-4 scores shown as e.g. 1.23 with ×10^-4 on the bar


def test_class_bars_one_panel_per_class_with_top_band_highlighted(bands):
    importance = make_importance(bands)
    fig = plots.class_bars(importance, "integrated_gradients", method_info=INFO)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(CLASSES)
    for ax, cls in zip(panels, CLASSES, strict=True):
        assert ax.get_title().startswith(cls)
        assert labels(ax.get_xticklabels()) == bands
        shares = importance.query("method == 'integrated_gradients' and `class` == @cls")["share"]
        colors = [p.get_facecolor() for p in ax.patches]
        top = int(np.argmax(shares.to_numpy()))
        assert colors[top] != colors[(top + 1) % len(bands)]
        assert len(ax.lines) + len(ax.collections) > 1  # error bars drawn


def test_methods_panel_rows_are_methods_columns_bands_titles_classes(bands):
    fig = plots.methods_panel(make_importance(bands), method_info=INFO)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert [ax.get_title(loc="left") for ax in panels] == CLASSES
    for ax in panels:
        assert labels(ax.get_xticklabels()) == bands
        assert labels(ax.get_yticklabels()) == [i["label"] for i in INFO.values()]
        assert ax.images[0].get_clim() == (1, min(len(bands), 6))


def test_methods_panel_share_is_diverging_for_signed_methods():
    fig = plots.methods_panel(make_importance(LANDSAT), value="share")
    low, high = fig.axes[0].images[0].get_clim()
    assert low == -high


def test_band_maps_one_map_per_band_per_method(bands):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(len(bands), 8, 10))
    maps = {"saliency": np.abs(rng.normal(size=image.shape)),
            "integrated_gradients": rng.normal(size=image.shape)}
    fig = plots.band_maps(image, maps, bands, title="image 3 — class red soil", method_info=INFO)
    rows = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(rows) == 3  # the input bands, then one row per method
    assert [t.get_text() for t in rows[0].texts] == ["input band\n(own 2–98% stretch)", *bands]
    assert rows[1].texts[0].get_text() == "Saliency"
    for row, cube in zip(rows, [image, *maps.values()], strict=True):
        mosaic = row.images[0].get_array()
        tiles = [mosaic[:, k * (10 + 1):k * (10 + 1) + 10] for k in range(len(bands))]
        assert len(tiles) == len(bands) and mosaic.shape == (8, len(bands) * 11 - 1)
        if row is not rows[0]:  # method rows show the maps themselves, band by band
            np.testing.assert_allclose(np.stack(tiles), cube)
    assert rows[1].images[0].get_clim()[0] == 0  # one sequential scale for saliency
    low, high = rows[2].images[0].get_clim()
    assert low == -high  # a diverging one for integrated gradients
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 2  # one per method row


def test_agreement_matrix_annotates_values_and_nan():
    methods = list(INFO)
    agreement = pd.DataFrame([[1.0, 0.4, np.nan], [0.4, 1.0, -0.2], [np.nan, -0.2, 1.0]],
                             index=methods, columns=methods)
    fig = plots.agreement_matrix(agreement, method_info=INFO)
    ax = fig.axes[0]
    assert labels(ax.get_yticklabels()) == [i["label"] for i in INFO.values()]
    texts = labels(ax.texts)
    assert texts.count("n/a") == 2 and "0.40" in texts and "-0.20" in texts
    assert ax.images[0].get_clim() == (-1.0, 1.0)


def test_class_target_heatmap_grid_and_single_band(bands):
    importance = make_importance(bands, target_all=True)
    grid = plots.class_target_heatmap(importance, "integrated_gradients")
    panels = [ax for ax in grid.axes if ax.get_visible() and ax.images]
    assert [ax.get_title() for ax in panels] == bands
    assert len({ax.images[0].get_clim() for ax in panels}) == 1  # one colour scale
    single = plots.class_target_heatmap(importance, "integrated_gradients", bands[2])
    ax = single.axes[0]
    assert labels(ax.get_yticklabels()) == CLASSES
    assert labels(ax.get_xticklabels()) == CLASSES
    with pytest.raises(ValueError, match="unknown band"):
        plots.class_target_heatmap(importance, "integrated_gradients", "B99")


def test_per_class_plots_use_the_diagonal_when_every_class_is_a_target():
    fig = plots.band_class_heatmap(make_importance(LANDSAT, target_all=True), "feature_ablation")
    assert labels(fig.axes[0].get_yticklabels()) == CLASSES


def test_unknown_method_or_missing_target_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="no per-class rows for method 'lime'"):
        plots.band_class_heatmap(make_importance(LANDSAT), "lime")
    with pytest.raises(ValueError, match="class × target"):
        plots.class_target_heatmap(make_importance(LANDSAT), "saliency")


def test_save_figure_writes_png_atomically(tmp_path):
    path = tmp_path / "heat.png"
    plots.save_figure(plots.band_class_heatmap(make_importance(LANDSAT), "saliency"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["heat.png"]


EVIL = "<script>alert('x')</script>"


def make_summary(**model) -> dict:
    return {
        "model": {"path": "m.keras", "format": "keras", "sha256": "f" * 64, "layout": "NHWC",
                  "n_bands": 4, "n_classes": 2, "ends_with_softmax": True,
                  "output_space": "logits", **model},
        "fidelity": {"reference": "tensorflow", "probe": "32 images", "max_abs_diff": 2e-6,
                     "mean_abs_diff": 1e-7, "grad_rel_diff": 3e-5, "passed": True},
        "data": {"path": "d.npz", "n_images": 40, "image_shape": [4, 8, 8],
                 "class_counts": {"red soil": 20, EVIL: 20}},
        "accuracy": {"overall": 0.9, "per_class": {"red soil": 0.95, EVIL: 0.85}},
        "methods": {"integrated_gradients": {"n_steps": 32}},
        "notes": ["shapley: 13 bands → sampled Shapley values"],
        "seed": 7, "versions": {"xband": "0.1.0", "torch": "2.4"},
        "settings": {"target": "true", "baseline": "mean"}, "run_time_s": 12.5,
    }


def test_report_is_self_contained_complete_and_escaped():
    importance = make_importance(LANDSAT, ["red soil", EVIL])
    figures = {
        "Band × class heat maps": [
            ("Saliency", plots.figure_png(plots.band_class_heatmap(importance, "saliency"))),
            (f"IG for {EVIL}", plots.band_class_heatmap(importance, "integrated_gradients")),
        ],
        "Agreement between methods": [
            ("ρ", plots.agreement_matrix(pd.DataFrame(np.eye(2), index=["a", "b"],
                                                      columns=["a", "b"])))],
    }
    tables = {"Top bands per class": pd.DataFrame({"saliency": ["B1, B2", "B3"]},
                                                  index=["red soil", EVIL])}
    html = report.render_report(make_summary(), figures=figures, tables=tables)
    for section in ["Conversion fidelity", "Notes and fallbacks", "How to read these scores",
                    "Top bands per class", "Band × class heat maps", "Agreement between methods",
                    "Settings, versions and run", "Output space", "Accuracy", "Model", "Data"]:
        assert section in html
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)) == 3
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)
    assert "the model&#x27;s final softmax was stripped" in html
    assert "sampled Shapley values" in html and "12.5" in html and "n_steps" in html
    assert "passed" in html


@pytest.mark.parametrize("model, expected", [
    ({"ends_with_softmax": True, "output_space": "logits"}, "softmax was stripped"),
    ({"final_activation": "sigmoid", "output_space": "logits"}, "sigmoid was stripped"),
    ({"final_activation": "none", "output_space": "logits"}, "raw outputs (logits)"),
    ({"ends_with_softmax": True, "output_space": "probabilities"}, "class probabilities"),
    ({"final_activation": "sigmoid", "output_space": "probabilities"}, "one sigmoid per label"),
    ({"final_activation": "none", "output_space": "probabilities"}, "softmax of the model's raw"),
    ({"final_activation": "none", "output_space": "probabilities", "multi_label": True},
     "sigmoid of the model's raw"),
])
def test_output_space_statement(model, expected):
    assert expected in report.output_space_statement(model)


def test_report_without_conversion_or_notes():
    summary = make_summary(format="pytorch") | {"fidelity": None, "notes": []}
    html = report.render_report(summary, figures={}, tables={})
    assert "loaded natively" in html and "No fallbacks" in html
