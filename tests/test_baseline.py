"""The data baseline: a removed band takes that band of other images of the data, a few per image,
and every effect method scores the mean over them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xband
from tests.planted import N_BANDS, level_images, train_torch
from xband.methods import Batch, Context, get_method
from xband.methods._base import PassSizes
from xband.run.forward import forward_module


def _context(forward, backgrounds: torch.Tensor) -> Context:
    """A context whose data baseline gives image n the backgrounds backgrounds[:, n]
    ((M, N, B, H, W))."""
    return Context(forward=forward, baseline=torch.zeros(1, N_BANDS, 1, 1),
                   band_std=torch.ones(N_BANDS),
                   donors=lambda positions, repeat: backgrounds[repeat][positions],
                   passes=PassSizes(forward=7, gradient=5), background=len(backgrounds))


@pytest.fixture(scope="module")
def level_task():
    x, y = level_images(60, seed=0)
    return train_torch(x, y, epochs=80), level_images(20, seed=1)


def _batch(x: np.ndarray, y: np.ndarray) -> Batch:
    target = torch.from_numpy(y)
    return Batch(x=torch.from_numpy(x), target=target, label=target, index=np.arange(len(x)))


def _backgrounds(x: np.ndarray, m: int, n: int) -> torch.Tensor:
    """(m, n, B, H, W): m other images for each of n images, drawn from x[n:]."""
    rng = np.random.default_rng(2)
    return torch.from_numpy(x[n:][rng.integers(0, len(x) - n, (m, n))])


@pytest.mark.parametrize("method", [{"name": "feature_ablation"},
                                    {"name": "shapley", "max_exact_bands": 6}])
def test_exact_methods_score_the_mean_over_each_images_background_images(level_task, method):
    net, (x, y) = level_task
    forward = forward_module(net, "channels_first", "cpu")
    chosen = get_method(**method)
    batch = _batch(x[:9], y[:9])
    backgrounds = _backgrounds(x, 3, 9)
    together = chosen.attribute(batch, _context(forward, backgrounds)).scores
    one_by_one = [chosen.attribute(batch, _context(forward, b)).scores
                  for b in backgrounds.split(1)]
    assert np.abs(together).max() > 0
    np.testing.assert_allclose(together, np.mean(one_by_one, axis=0), rtol=1e-5, atol=1e-7)
    assert chosen.passes_per_image(N_BANDS, 3) > chosen.passes_per_image(N_BANDS, 1)


def test_integrated_gradients_shares_its_steps_between_the_background_images(level_task):
    """With K background images, IG runs n_steps // K steps from each: the mean of each path
    alone at that many steps, for the passes of one path."""
    net, (x, y) = level_task
    forward = forward_module(net, "channels_first", "cpu")
    batch = _batch(x[:9], y[:9])
    backgrounds = _backgrounds(x, 3, 9)
    shared = get_method("integrated_gradients", n_steps=24)
    together = shared.attribute(batch, _context(forward, backgrounds)).scores
    one_by_one = [get_method("integrated_gradients", n_steps=8).attribute(
        batch, _context(forward, b)).scores for b in backgrounds.split(1)]
    assert np.abs(together).max() > 0
    np.testing.assert_allclose(together, np.mean(one_by_one, axis=0), rtol=1e-5, atol=1e-7)
    assert shared.passes_per_image(N_BANDS, 3) == shared.passes_per_image(N_BANDS, 1) == 24
    assert shared.passes_per_image(N_BANDS, 48) == 48  # at least one step per path


def test_exact_shapley_values_add_up_to_the_gain_over_the_mean_background_output(level_task):
    net, (x, y) = level_task
    forward = forward_module(net, "channels_first", "cpu")
    backgrounds = _backgrounds(x, 4, 8)
    scores = get_method("shapley", max_exact_bands=6).attribute(
        _batch(x[:8], y[:8]), _context(forward, backgrounds)).scores
    rows, target = np.arange(8), torch.from_numpy(y[:8])
    with torch.no_grad():
        gain = (forward(torch.from_numpy(x[:8]))[rows, target]
                - torch.stack([forward(b)[rows, target] for b in backgrounds]).mean(dim=0))
    np.testing.assert_allclose(scores.sum(axis=1), gain.double().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "shapley"])
def test_sampled_methods_against_copies_of_one_image_equal_that_image_alone(level_task, method):
    """The sampled forms draw a background per subset (or per pair of band orders) after
    drawing the subsets: with every background the same image, they give that image's scores."""
    net, (x, y) = level_task
    forward = forward_module(net, "channels_first", "cpu")
    chosen = get_method(method, n_samples=16) if method != "shapley" else get_method(
        "shapley", max_exact_bands=2, n_samples=6)
    batch = _batch(x[:6], y[:6])
    one = _backgrounds(x, 1, 6)
    scores = []
    for backgrounds in (one, one.expand(4, -1, -1, -1, -1)):
        torch.manual_seed(5)
        scores.append(chosen.attribute(batch, _context(forward, backgrounds)).scores)
    largest = np.abs(scores[0]).max()
    assert largest > 0  # float32 surrogate fits: equal to rounding of the largest score
    np.testing.assert_allclose(scores[1], scores[0], rtol=1e-4, atol=1e-5 * largest)


def test_the_data_baseline_finds_a_band_whose_class_sits_at_its_mean(level_task):
    """Class 1 sits at band 0's mean: the mean baseline hides the band, the data baseline not."""
    net, (x, y) = level_task
    model = xband.load_model(net, layout="channels_first", verbose=False)
    data = xband.image_set(x, y, bands=[f"b{i}" for i in range(N_BANDS)],
                           classes=["low", "middle", "high"])
    top = {}
    for baseline in ("mean", "data"):
        result = xband.explain(model, data, "feature_ablation", baseline=baseline,
                               all_images=True, progress=False, n_boot=50)
        table = result.table("feature_ablation")
        first = table[(table["rank"] == 1) & (table["class"] != "all images")]
        top[baseline] = first.set_index("class")["band"].to_dict()
    assert result.summary["accuracy"]["overall"] > 0.9
    assert top["data"] == {"low": "b0", "middle": "b0", "high": "b0"}
    assert top["mean"]["middle"] != "b0"


def test_a_run_records_its_background_images_and_their_cost(level_task, capsys):
    net, (x, y) = level_task
    model = xband.load_model(net, layout="channels_first", verbose=False)
    data = xband.image_set(x, y, bands=[f"b{i}" for i in range(N_BANDS)])
    runs = [xband.explain(model, data, "feature_ablation,lime", background_images=3, seed=4,
                          all_images=True, n_boot=50, tuned=False) for _ in range(2)]
    said = capsys.readouterr().err
    settings = runs[0].summary["settings"]
    assert settings["baseline"] == "data" and settings["background_images"] == 3
    assert runs[0].summary["methods"]["feature_ablation"]["passes_per_image"] == 3 * N_BANDS + 1
    assert f"{3 * N_BANDS + 1} passes/image" in said and "3 other images" in said
    np.testing.assert_array_equal(runs[0].scores["lime"], runs[1].scores["lime"])
    mean_run = xband.explain(model, data, "feature_ablation", baseline="mean", all_images=True,
                             progress=False, n_boot=50)
    assert mean_run.summary["settings"]["background_images"] is None
    assert mean_run.summary["methods"]["feature_ablation"]["passes_per_image"] == N_BANDS + 1


def test_the_checks_rerun_the_methods_against_the_same_background(level_task):
    """Background images are seeded donors: the checks, run on every explained image, draw the
    same ones and reproduce the explanation's scores."""
    net, (x, y) = level_task
    model = xband.load_model(net, layout="channels_first", verbose=False)
    data = xband.image_set(x, y, bands=[f"b{i}" for i in range(N_BANDS)])
    result = xband.explain(model, data, "feature_ablation", background_images=4,
                           all_images=True, progress=False, n_boot=50)
    from xband.checks._common import Setup

    setup = Setup.of(model, data, result, max_images=None)
    own = setup.attribute(result.plan.methods, setup.context(setup.forward),
                          np.arange(len(setup.rows)))["feature_ablation"].scores
    np.testing.assert_allclose(own, result.scores["feature_ablation"][setup.rows],
                               rtol=1e-5, atol=1e-6)
