"""Per-band, per-class importance on a native PyTorch model trained on planted bands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import ShapleyValues
from torch import nn

from tests.planted import N_CLASSES, PLANTED, planted_images
from xband.data.images import image_set
from xband.errors import XbandError
from xband.methods import METHODS
from xband.methods.shapley import shapley_weights
from xband.models.load import LoadedModel
from xband.run.forward import ChannelsFirst
from xband.run.pipeline import explain


def as_loaded(net: nn.Module, n_bands: int, n_classes: int) -> LoadedModel:
    return LoadedModel(
        module=nn.Sequential(net, nn.Softmax(dim=1)), logits_module=net,
        layout="channels_first", n_bands=n_bands, n_classes=n_classes, spatial_size=None,
        final_activation="softmax", source_format="torch-module",
    )


@pytest.fixture(scope="module")
def trained(planted_torch):
    test_x, test_y = planted_images(n_per_class=20, seed=1)
    model = as_loaded(planted_torch, test_x.shape[1], N_CLASSES)
    data = image_set(test_x, test_y)
    return model, data


@pytest.fixture(scope="module")
def explained(trained):
    model, data = trained
    return explain(model, data, methods="all", progress=False, n_boot=200, seed=3)


def test_model_learned_the_task(explained):
    assert explained.summary["accuracy"]["overall"] >= 0.95


@pytest.mark.parametrize("method", list(METHODS))
def test_planted_band_ranks_first_for_its_class(explained, method):
    table = explained.table(method)
    for c, band in PLANTED.items():
        rows = table[table["class"] == f"class {c}"]
        top = rows.loc[rows["rank"] == 1, "band_index"].tolist()
        assert top == [band], f"{method}: class {c} top band {top}, planted {band}"


def test_integrated_gradients_bands_add_up_to_output_difference(trained):
    model, data = trained
    result = explain(model, data, methods="integrated_gradients", progress=False, n_boot=10,
                     baseline="mean", method_options={"integrated_gradients": {"n_steps": 64}})
    forward = ChannelsFirst(model.logits_module, model.layout)
    x = torch.from_numpy(data.images[result.indices])
    baseline = torch.from_numpy(data.images.mean(axis=(0, 2, 3), dtype=np.float64)
                                .astype(np.float32)).view(1, -1, 1, 1).expand_as(x[:1])
    target = torch.from_numpy(result.labels)
    with torch.no_grad():
        gain = (forward(x).gather(1, target[:, None]) - forward(baseline)[0, target][:, None])
    total = result.scores["integrated_gradients"].sum(axis=1)
    gain = gain.squeeze(1).numpy()
    big = np.abs(gain) > 1.0
    assert big.sum() > 10
    assert np.all(np.abs(total[big] - gain[big]) <= 0.05 * np.abs(gain[big]))


def test_group_scores_are_not_multiplied_by_pixel_count(trained):
    model, data = trained
    result = explain(model, data, methods=["feature_ablation", "shapley"], progress=False,
                     n_boot=10, baseline="mean", method_options={"shapley": {"max_exact_bands": 6}})
    forward = ChannelsFirst(model.logits_module, model.layout)
    x = torch.from_numpy(data.images[result.indices[:5]])
    target = torch.from_numpy(result.labels[:5])
    base = torch.from_numpy(np.asarray(result.summary["settings"]["baseline_values"],
                                       dtype=np.float32)).view(1, -1, 1, 1)
    with torch.no_grad():
        full = forward(x).gather(1, target[:, None]).squeeze(1)
        for b in range(x.shape[1]):
            ablated = x.clone()
            ablated[:, b] = base[0, b]
            expected = full - forward(ablated).gather(1, target[:, None]).squeeze(1)
            np.testing.assert_allclose(result.scores["feature_ablation"][:5, b], expected.numpy(),
                                       rtol=1e-4, atol=1e-5)
        empty = forward(base.expand_as(x)).gather(1, target[:, None]).squeeze(1)
    # exact Shapley values are efficient: they add up to f(x) − f(all bands at baseline)
    np.testing.assert_allclose(result.scores["shapley"][:5].sum(axis=1), (full - empty).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_exact_band_shapley_matches_captum_permutations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), nn.Conv2d(4, 2, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 4, 4)
    mask = torch.arange(3).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    want = ShapleyValues(net).attribute(x, baselines=0.0, target=1, feature_mask=mask)
    weights = shapley_weights(3)
    from xband.methods.shapley import coalitions
    members = coalitions(3).view(-1, 3, 1, 1)
    for i in range(2):
        values = net(members * x[i]).detach()[:, 1].double()
        np.testing.assert_allclose((weights @ values).numpy(), want[i, :, 0, 0].numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_same_seed_gives_identical_tables(trained):
    model, data = trained
    methods = ["gradient_shap", "permutation", "kernel_shap"]
    # untuned: tuned pass sizes may differ between runs, and with them the float rounding
    first, again, other = (explain(model, data, methods=methods, seed=seed, progress=False,
                                   n_boot=50, tuned=False) for seed in (11, 11, 12))
    pd.testing.assert_frame_equal(first.importance, again.importance)
    assert not np.allclose(first.scores["gradient_shap"], other.scores["gradient_shap"])


def test_every_class_as_target_gives_class_by_class_scores(trained):
    model, data = trained
    result = explain(model, data, methods="feature_ablation", target="all", progress=False,
                     n_boot=10)
    scores = result.scores["feature_ablation"]
    assert scores.shape == (len(result.indices), N_CLASSES, data.n_bands)
    rows = result.importance[(result.importance["grouping"] == "true_class")
                             & (result.importance["class"] == "class 0")]
    assert set(rows["target"]) == {f"class {c}" for c in range(N_CLASSES)}
    # removing class 1's planted band pushes class-1 images away from class 1
    own = result.table("feature_ablation")
    own = own[own["class"] == "class 1"]
    assert own.loc[own["rank"] == 1, "band_index"].item() == PLANTED[1]


def test_predicted_target_without_labels(trained):
    model, data = trained
    unlabelled = image_set(data.images)
    with pytest.raises(XbandError, match="needs labels"):
        explain(model, unlabelled, methods="saliency", target="true", progress=False)
    result = explain(model, unlabelled, methods="saliency", progress=False, n_boot=10)
    assert result.target_mode == "predicted"
    assert set(result.importance["grouping"]) == {"predicted_class"}
    assert result.summary["accuracy"]["overall"] is None


def test_only_example_maps_are_kept(explained):
    ex = explained.examples
    assert len(ex.index) == 2 * N_CLASSES
    assert set(ex.maps) == {"saliency", "scaled_saliency", "input_x_gradient",
                            "integrated_gradients", "gradient_shap"}
    for maps in ex.maps.values():
        assert maps.shape == (len(ex.index), *ex.image.shape[1:])
        assert np.abs(maps).sum(axis=(1, 2, 3)).min() > 0


def test_save_writes_every_output(explained, tmp_path):
    out = explained.save(tmp_path / "report")
    names = {p.name for p in out.iterdir()}
    assert {"importance.csv", "scores.npz", "summary.json", "report.html", "figures",
            "consensus.csv", "agreement.csv", "top_bands.csv"} <= names
    table = pd.read_csv(out / "importance.csv")
    assert {"method", "class", "band", "score", "share", "ci_low", "ci_high", "n"} <= set(table)
    assert (table["ci_low"] <= table["score"] + 1e-12).all()
    assert (table["score"] <= table["ci_high"] + 1e-12).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and "torch" in summary["versions"]
    assert summary["model"]["output_space"] == "logits"
    with np.load(out / "scores.npz") as f:
        assert f["scores_shapley"].shape == explained.scores["shapley"].shape
    html = (out / "report.html").read_text()
    for section in ("Band × class heat maps", "Methods side by side", "Agreement between methods",
                    "Per-band maps of example images"):
        assert section in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_interrupted_save_leaves_nothing(explained, tmp_path, monkeypatch):
    import xband.report.writer

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xband.report.writer.html, "render_report", broken)
    with pytest.raises(KeyboardInterrupt):
        explained.save(tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not sys.platform.startswith("linux"),
                    reason="figures are drawn in worker processes with 2 cores or more on Linux")
def test_figures_drawn_in_worker_processes_are_the_same_files(explained, tmp_path, monkeypatch):
    import xband.report.plots

    used = []
    in_workers = xband.report.plots._draw_in_workers
    monkeypatch.setattr(xband.report.plots, "_draw_in_workers",
                        lambda *a: used.append(a[2]) or in_workers(*a))
    monkeypatch.setattr(xband.report.plots, "FIGURES_PER_WORKER", 1)
    parallel = _folder_bytes(explained.save(tmp_path / "parallel"))
    assert used and used[0] >= 2
    monkeypatch.setattr(xband.report.plots, "FIGURES_PER_WORKER", 10**9)
    alone = _folder_bytes(explained.save(tmp_path / "alone"))
    assert len(used) == 1
    assert len([n for n in alone if n.endswith(".png")]) > 10
    assert parallel.keys() == alone.keys()
    assert [n for n in alone if parallel[n] != alone[n]] == []


def _interrupted_drawing(draw, path):  # Ctrl-C in a drawing worker (module level: pickled)
    raise KeyboardInterrupt


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not sys.platform.startswith("linux"),
                    reason="figures are drawn in worker processes with 2 cores or more on Linux")
def test_interrupt_while_workers_draw_leaves_nothing(explained, tmp_path, monkeypatch):
    import xband.report.plots

    monkeypatch.setattr(xband.report.plots, "FIGURES_PER_WORKER", 1)
    monkeypatch.setattr(xband.report.plots, "_draw_and_save", _interrupted_drawing)
    with pytest.raises(KeyboardInterrupt):
        explained.save(tmp_path / "report")
    assert list(tmp_path.iterdir()) == []


def test_agreement_is_symmetric_with_unit_diagonal(explained):
    matrix = explained.agreement.to_numpy()
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T, equal_nan=True)


def test_consensus_puts_planted_band_first(explained):
    for c, band in PLANTED.items():
        rows = explained.consensus[explained.consensus["class"] == f"class {c}"]
        assert rows.iloc[0]["band"] == explained.band_names[band]
