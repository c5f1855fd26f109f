"""Can the answer be trusted? The checks on a model trained on planted bands, and their CLI."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.planted import N_BANDS, N_CLASSES, PLANTED, planted_images, small_cnn
from tests.test_explain import as_loaded
from xband import evaluate, explain, image_set, load_model
from xband.checks import evaluation
from xband.checks._common import Setup
from xband.checks.compare import map_similarity
from xband.checks.completeness import completeness_summary
from xband.checks.randomisation import (
    ALL_LAYERS,
    BEFORE_FIRST_LAYER,
    cascade,
    layer_groups,
    randomised,
)
from xband.checks.rounds import ALL_IMAGES, ONE_ROUND, SETTLED, CheckRule, take_until_settled
from xband.cli.main import main
from xband.errors import XbandError
from xband.methods import BandAttribution, BandSubsetMethod, Saliency
from xband.methods._base import n_features
from xband.run.aggregate import TIED, agreement_matrix

METHODS = "saliency,input_x_gradient,integrated_gradients,feature_ablation"
SECTIONS = [evaluation.RANDOMISATION, evaluation.FAITHFULNESS, evaluation.AGREEMENT,
            evaluation.CONSENSUS, evaluation.COMPLETENESS]


@pytest.fixture(scope="module")
def trained(planted_torch):
    model = as_loaded(planted_torch, N_BANDS, N_CLASSES)
    test_x, test_y = planted_images(n_per_class=12, seed=1)
    data = image_set(test_x, test_y)
    return model, data


@pytest.fixture(scope="module")
def checked(trained):
    model, data = trained
    result = explain(model, data, methods=METHODS, progress=False, n_boot=100, seed=2)
    kwargs = {"max_images": 32, "random_orders": 6, "cascade_stages": 3, "n_boot": 100}
    return result, evaluate(model, data, result, **kwargs), kwargs


def test_deleting_top_ranked_bands_drops_accuracy_faster_than_random(checked):
    _, ev, _ = checked
    rows = ev.faithfulness[(ev.faithfulness["metric"] == "accuracy")
                           & (ev.faithfulness["baseline"] == "mean")]
    for method in ("feature_ablation", "integrated_gradients"):
        for c in PLANTED:
            row = rows[(rows["method"] == method) & (rows["class"] == f"class {c}")
                       & (rows["curve"] == "deletion")].iloc[0]
            assert row["auc"] < row["auc_random"] - row["auc_random_std"], (method, c)
            assert row["auc_reverse"] > row["auc_random"], (method, c)
    assert (ev.stability["beats_random"] == "4/4").all()


def test_randomised_model_changes_gradient_methods_rankings(checked):
    _, ev, _ = checked
    final = ev.randomisation[ev.randomisation["stage"] == ALL_LAYERS].set_index("method")
    for method in ("saliency", "input_x_gradient", "integrated_gradients"):
        assert final.loc[method, "rank_rho"] < 0.5, method
        assert final.loc[method, "map_rho"] < 0.9, method
        assert not final.loc[method, "flagged"]
    assert list(ev.randomisation["stage"].unique())[-1] == ALL_LAYERS


def test_agreement_matrix_is_symmetric_with_unit_diagonal(checked):
    _, ev, _ = checked
    for measure in ("kendall", "spearman"):
        matrix = agreement_matrix(ev.pairs, measure).to_numpy()
        np.testing.assert_allclose(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0)


def test_consensus_bootstrap_matches_the_explanation_and_brackets_it(checked):
    result, ev, _ = checked
    ours = ev.consensus.set_index(["class", "band"])["consensus_rank"]
    theirs = result.consensus.set_index(["class", "band"])["consensus_rank"]
    assert (ours == theirs.loc[ours.index]).all()
    assert (ev.consensus["rank_ci_low"] <= ev.consensus["rank_ci_high"]).all()
    for c, band in PLANTED.items():
        top = ev.consensus[(ev.consensus["class"] == f"class {c}")].iloc[0]
        assert top["band_index"] == band and top["p_top1"] > 0.9


def test_integrated_gradients_delta_is_small_and_shrinks(checked):
    """32 steps shared by 8 background images (4 per path) leave a few percent; 128 (16 per
    path) about 1% (scripts/ig_steps.py); the delta shrinks with the steps."""
    _, ev, _ = checked
    summary = completeness_summary(ev.completeness)
    assert list(summary.index) == [8, 32, 128]
    assert summary.loc[32, "median_relative_delta"] < 0.06
    assert summary.loc[128, "median_relative_delta"] < 0.02
    assert summary.loc[128, "within_5pct"] > 0.9
    assert summary["median_abs_delta"].is_monotonic_decreasing


def test_steps_that_decide_nothing_take_half_a_round_and_half_the_random_orders(checked):
    """The verdict reads the run's baseline's curves, the last randomisation stage and the
    run's integration steps; the other baselines, the ranking under another baseline and the
    other numbers of steps only describe, and cost half as much."""
    _, ev, kwargs = checked
    primary = ev.settings["primary_baseline"]
    randoms = ev.curves[ev.curves["order"].str.startswith("random:")].groupby("baseline")[
        "order"].nunique()
    assert randoms[primary] == kwargs["random_orders"]
    assert len(randoms) == 4 and (randoms.drop(primary) == kwargs["random_orders"] // 2).all()
    half_round = CheckRule().descriptive_round * N_CLASSES
    images = completeness_summary(ev.completeness)["images"]
    assert images[8] == images[128] == half_round < images[32]
    taken = ev.settings["images_taken"]
    assert taken["ranking under another baseline"]["images"] == half_round
    assert taken[f"deletion, {primary} baseline"]["images"] > half_round


def test_same_seed_same_tables(trained, checked):
    model, data = trained
    result, ev, kwargs = checked
    again = evaluate(model, data, result, checks="randomisation,faithfulness", **kwargs)
    pd.testing.assert_frame_equal(again.randomisation, ev.randomisation)
    pd.testing.assert_frame_equal(again.curves, ev.curves)


def test_randomisation_covers_buffers_of_converted_models(tmp_path):
    net = torch.nn.Sequential(small_cnn(), torch.nn.Softmax(dim=1)).eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, (torch.zeros(2, N_BANDS, 12, 12),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    network = load_model(path, verbose=False).logits_module
    x = torch.randn(4, N_BANDS, 12, 12)
    groups = layer_groups(network, x[:1])
    weights = {n for n, t in [*network.named_parameters(), *network.named_buffers()]
               if t.is_floating_point() and t.numel() > 1}
    assert {n for g in groups for n in g} == weights and len(groups) == 3
    before = network(x)
    names = set(groups[-1])
    first, second = randomised(network, names, seed=0), randomised(network, names, seed=0)
    assert torch.equal(network(x), before)  # the original is untouched
    assert torch.equal(first(x), second(x)) and not torch.allclose(first(x), before)


def test_bad_options_say_what_to_choose(trained, checked):
    model, data = trained
    result, _, _ = checked
    with pytest.raises(XbandError, match="choose from randomisation"):
        evaluate(model, data, result, checks="sanity")
    with pytest.raises(XbandError, match="deletion baseline blur"):
        evaluate(model, data, result, baselines="mean,blur")


def _sections(html: str) -> list[str]:
    return [s for s in SECTIONS if f">{s}</h2>" in html]


@pytest.fixture(scope="module")
def onnx_and_data(tmp_path_factory, trained) -> tuple[Path, Path]:
    model, data = trained
    folder = tmp_path_factory.mktemp("cli")
    net = torch.nn.Sequential(model.logits_module, torch.nn.Softmax(dim=1)).eval()
    torch.onnx.export(net, (torch.from_numpy(data.images[:2]),), str(folder / "m.onnx"),
                      dynamo=False, opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    np.savez(folder / "d.npz", x=data.images, y=data.labels)
    return folder / "m.onnx", folder / "d.npz"


def test_cli_evaluate_and_explain_evaluate_write_every_section(onnx_and_data, tmp_path, capsys):
    model, data = onnx_and_data
    common = ["--model", str(model), "--data", str(data), "--methods", METHODS, "--quiet",
              "--eval-images", "16", "--random-orders", "3", "--cascade-stages", "2",
              "--deletion-baselines", "mean,shuffle"]  # "shuffle": the old name of "data"
    assert main(["evaluate", *common, "--out", str(tmp_path / "ev")]) == 0
    html = (tmp_path / "ev" / "report.html").read_text()
    assert _sections(html) == SECTIONS
    assert "Band × class heat maps" not in html  # the checks only
    for name in ("randomisation.csv", "deletion_curves.csv", "faithfulness.csv",
                 "baseline_stability.csv", "agreement_pairs.csv", "consensus_bootstrap.csv",
                 "completeness.csv", "figures/deletion_feature_ablation.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    settings = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["settings"]
    assert settings["deletion_baselines"] == ["mean", "data"] and settings["images"] == 16

    assert main(["explain", *common, "--evaluate", "--out", str(tmp_path / "both")]) == 0
    html = (tmp_path / "both" / "report.html").read_text()
    assert _sections(html) == SECTIONS and "Band × class heat maps" in html

    assert main(["explain", *common, "--out", str(tmp_path / "plain")]) == 0
    assert _sections((tmp_path / "plain" / "report.html").read_text()) == []
    assert not (tmp_path / "plain" / "evaluation.json").exists()
    capsys.readouterr()


@dataclass(frozen=True)
class Constant(BandSubsetMethod):
    """Every band scores 0 for every image: the scores tie, as permutation importance's do
    where removing no single band changes a prediction."""

    name = "constant"
    label = "Constant"
    units = "nothing"

    def attribute(self, batch, ctx) -> BandAttribution:
        return BandAttribution(np.zeros((len(batch.x), n_features(batch.x, ctx.features))))


def test_a_method_whose_scores_all_tie_is_never_trusted_and_names_no_top_band(trained):
    model, data = trained
    result = explain(model, data, methods=["feature_ablation", Constant()], progress=False,
                     n_boot=50, seed=2)
    rows = result.table("constant")
    assert (rows["rank"] == 1).all()  # the table shows the tie: every band shares rank 1
    assert (result.top_bands()["constant"] == TIED).all()  # and no band is named first
    assert not result.top_bands()["feature_ablation"].isin(["", TIED]).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" or other numpy warning
        result.evaluation = evaluate(model, data, result, checks="randomisation,faithfulness",
                                     random_orders=4, cascade_stages=2, progress=False)
    tied = result.evaluation.faithfulness.query("method == 'constant'")
    assert not tied["ranked"].any() and tied["z"].isna().all() and tied["auc"].isna().all()
    assert not (result.evaluation.curves["order"] == "constant").any()
    verdict = result.verdict()
    assert verdict.trusted == ("feature_ablation",)
    assert "no ranking: its scores tie in every class" in verdict.excluded["constant"]


class _Probed(nn.Module):
    """The planted CNN behind a per-band standardisation (mean 0, std 1: the same function),
    with its output layer as a matrix product and a separate 4-value bias, and a last layer
    whose output is multiplied by zero: re-drawing it changes nothing."""

    def __init__(self, trained: nn.Sequential):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, N_BANDS, 1, 1))
        self.register_buffer("std", torch.ones(1, N_BANDS, 1, 1))
        self.body = trained[:-1]
        self.weight = nn.Parameter(trained[-1].weight.detach().T.clone())
        self.bias = nn.Parameter(trained[-1].bias.detach().clone())
        self.inert = nn.Linear(16, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body((x - self.mean) / self.std)
        return h @ self.weight + self.bias + 0.0 * self.inert(h)


def test_randomisation_stages_are_layers_with_learned_weights_and_inert_ones_are_no_evidence(
        planted_torch, trained):
    _, data = trained
    model = as_loaded(_Probed(planted_torch).eval(), N_BANDS, N_CLASSES)
    result = explain(model, data, methods="saliency", progress=False, n_boot=50, seed=2)
    ev = evaluate(model, data, result, checks="randomisation", cascade_stages=4, progress=False)
    layers = ev.layers.set_index("tensor")
    # two convolutions, the output matrix with its bias, the inert layer; the standardisation's
    # mean and std are data statistics, left as they are (and said so)
    assert layers["layer"].max() == 4
    assert layers.loc["network.bias", "layer"] == layers.loc["network.weight", "layer"]
    assert set(layers.index[layers["left_because"] == BEFORE_FIRST_LAYER]) == {
        "network.mean", "network.std"}
    table = ev.randomisation.set_index("stage")
    assert list(table.index) == ["top 1 of 4", "top 2 of 4", "top 3 of 4", ALL_LAYERS]
    inert = table.loc["top 1 of 4"]
    assert not inert["evidence"] and inert["output_change"] == 0 and np.isnan(inert["rank_rho"])
    assert table.drop(index="top 1 of 4")["evidence"].all()
    assert ev.settings["randomisation_layers"] == (
        f"4 layers with learned weights re-drawn; left as they are: {BEFORE_FIRST_LAYER} × 2")


_ATTRIBUTED: list[int] = []  # images the counting method was given


@dataclass(frozen=True)
class _CountingSaliency(Saliency):
    def attribute(self, batch, ctx) -> BandAttribution:
        _ATTRIBUTED.append(len(batch.x))
        return super().attribute(batch, ctx)


def test_checks_take_images_until_settled_and_reuse_the_explanations_scores(trained, capsys):
    """The trained model's scores are the explanation's: the randomisation check runs the
    method on the randomised models only, on the images each stage took (the last until
    settled, the earlier ones the first round); the cost
    estimate comes first, and a bar per stage shows the images taken."""
    model, data = trained
    result = explain(model, data, methods=[_CountingSaliency()], progress=False, n_boot=50,
                     seed=2)
    _ATTRIBUTED.clear()
    said = []
    ev = evaluate(model, data, result, checks="randomisation", cascade_stages=2,
                  announce=said.append)
    taken = ev.settings["images_taken"]
    assert sum(_ATTRIBUTED) == sum(t["images"] for t in taken.values())
    assert ev.settings["images"] == len(result.indices)  # every method explained them all
    last = taken.pop(f"randomisation, {ALL_LAYERS}")
    assert last["images"] < len(result.indices) and last["reason"] == SETTLED
    # the earlier stage draws the cascade and decides nothing: half a first round
    assert [t["images"] for t in taken.values()] == [CheckRule().descriptive_round * N_CLASSES]
    assert said[0].startswith("trust checks: estimated time")
    assert "  randomisation  " in said[0] and "  cascade, 1 earlier  " in said[0]
    assert "randomisation, all layers" in capsys.readouterr().err
    evaluate(model, data, result, checks="randomisation", cascade_stages=2, progress=False)
    assert capsys.readouterr().err == ""


class _NeverSettled:
    """A check statistic whose answer never settles."""

    def __init__(self):
        self.taken: list[int] = []

    def add(self, positions: np.ndarray) -> None:
        self.taken += list(positions)

    def change_chance(self, rng: np.random.Generator) -> float:
        return 1.0


def test_a_check_that_never_settles_takes_every_image_and_a_one_round_step_half_the_first():
    orders = {0: np.arange(0, 30), 1: np.arange(30, 50)}
    rule = CheckRule(first_round=4)
    steps = {}
    for one_round in (False, True):
        statistic = _NeverSettled()
        taken = take_until_settled(orders, statistic, rule, seed=0, keep=lambda p: None,
                                   label="", progress=False, one_round=one_round)
        steps[one_round] = (taken.images, taken.reason, sorted(statistic.taken))
    assert steps[False] == (50, ALL_IMAGES, list(range(50)))
    assert steps[True] == (4, ONE_ROUND, [0, 1, 30, 31])


def test_the_checks_build_a_sped_up_network_even_when_first_used_under_inference_mode():
    """The deletion check first runs the network under inference mode; the explanation's
    speed-ups are checked by comparing gradients, which must still work there."""
    x, y = planted_images(n_per_class=6, seed=1)
    model = as_loaded(small_cnn().eval(), N_BANDS, N_CLASSES)
    data = image_set(x, y)
    result = explain(model, data, methods="saliency", progress=False, n_boot=10)
    result.record = replace(result.record, speed_ups=("channels-last memory",))
    setup = Setup.of(model, data, result, max_images=None)
    with torch.inference_mode():
        out = setup.forward(setup.images(np.arange(2)))
    assert out.shape == (2, N_CLASSES)


def test_a_randomised_model_with_flat_maps_gives_no_map_similarity_and_no_warning():
    """A randomised ReLU network often has zero gradient everywhere for an image: its maps are
    flat, so no band's pixel ranking exists; that is "no value", not a numpy warning."""
    trained_map = np.random.default_rng(0).normal(size=(N_BANDS, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(map_similarity(trained_map, np.zeros_like(trained_map)))


def test_the_cascade_always_ends_with_every_layer_random():
    assert cascade(5, 1) == [5]  # one stage: every layer random, not only the top one
    assert cascade(5, 3) == [1, 3, 5] and cascade(3, 10) == [1, 2, 3]
