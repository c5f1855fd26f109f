"""Sampling that stops when the answer is settled: rounds per class in a seeded order, a
bootstrap test of each class's top bands, and the record of why each method stopped."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.planted import N_CLASSES, PLANTED, planted_images
from tests.test_explain import as_loaded
from xband import explain, image_set
from xband.layout import Layout
from xband.methods import Shapley
from xband.run import aggregate
from xband.run.aggregate import importance_table
from xband.run.config import RunConfig
from xband.run.plan import GROUPS, Plan, resolve_plan
from xband.run.sampling import (
    ALL_IMAGES,
    BUDGET,
    LEADER_SETTLED,
    SETTLED,
    StoppingRule,
    change_chance,
    class_orders,
    sample_until_settled,
)

RULE = StoppingRule()


def shares_with(means: list[float], n: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(means) + noise * rng.standard_normal((n, len(means)))


def test_change_chance_sees_clear_winners_ties_and_close_contests():
    rng = np.random.default_rng(0)
    clear = shares_with([0.5, 0.3, 0.15, 0.02, 0.02, 0.01], 40, 0.05)
    assert change_chance(clear, RULE, rng) == 0.0
    tied = shares_with([0.5, 0.3, 0.1, 0.096, 0.002, 0.002], 40, 0.05)  # 3rd vs 4th: a tie
    assert change_chance(tied, RULE, rng) == 0.0
    close = shares_with([0.5, 0.3, 0.12, 0.08, 0.0, 0.0], 40, 0.2)  # 4 pp apart, noisy
    assert change_chance(close, RULE, rng) > RULE.stop_chance  # not settled: go on
    assert change_chance(clear[:, :3], RULE, rng) == 0.0  # k ≥ bands: nothing can change


def fake_attribute(means: dict[int, list[float]], noise: dict[int, float], class_of: np.ndarray,
                   explained: list[np.ndarray], methods: tuple[str, ...] = ("m",)):
    """Shares drawn per class, each method from its own generator; `explained` gets the images
    each round gives the first method."""
    rngs = {m: np.random.default_rng(5) for m in methods}

    def attribute(positions: np.ndarray, active: dict[str, set[int]]):
        done = {}
        for method in methods:
            mine = positions[np.isin(class_of[positions], list(active[method]))]
            if method == methods[0]:
                explained.append(mine)
            spread = {c: noise[c] * (6 if method != methods[0] else 1) for c in noise}
            rows = [np.asarray(means[c]) + spread[c] * rngs[method].standard_normal(len(means[c]))
                    for c in class_of[mine]]
            done[method] = (mine, np.array(rows).reshape(len(mine), len(means[0])))
        return done
    return attribute


def test_clear_classes_settle_tiny_ones_use_all_and_unclear_ones_go_on():
    class_of = np.repeat([0, 1, 2], [500, 10, 500])
    orders = class_orders(class_of, 3, seed=1)
    means = {0: [0.5, 0.3, 0.15, 0.05], 1: [0.5, 0.3, 0.15, 0.05], 2: [0.26, 0.25, 0.25, 0.24]}
    noise = {0: 0.05, 1: 0.05, 2: 0.3}
    explained: list[np.ndarray] = []
    stops = sample_until_settled(fake_attribute(means, noise, class_of, explained), ["m"], orders,
                                 RULE, class_of=class_of, seed=0,
                                 seconds_per_image={"m": 0.0})["m"]
    assert stops[0].reason == SETTLED and stops[0].n == RULE.first_round
    assert stops[1].reason == ALL_IMAGES and stops[1].n == 10
    assert stops[2].n > 4 * RULE.first_round
    ends = [RULE.first_round]  # rounds of 32 images up to 256, then an eighth more
    while ends[-1] < 500:
        ends.append(min(ends[-1] + max(RULE.first_round, int(RULE.growth * ends[-1])), 500))
    assert ends[:11] == [32, 64, 96, 128, 160, 192, 224, 256, 288, 324, 364]
    assert stops[2].n in ends
    taken = np.concatenate(explained)
    assert len(np.unique(taken)) == len(taken)  # no image twice
    for c, order in orders.items():  # each class's images in its seeded order: a prefix
        mine = taken[class_of[taken] == c]
        assert set(mine) == set(order[:stops[c].n])


def test_a_deadline_stops_the_rounds():
    class_of = np.repeat([0, 1], [400, 400])
    orders = class_orders(class_of, 2, seed=1)
    flat = {0: [0.25] * 4, 1: [0.25] * 4}
    stops = sample_until_settled(fake_attribute(flat, {0: 0.3, 1: 0.3}, class_of, []), ["m"],
                                 orders, RULE, class_of=class_of, seed=0,
                                 seconds_per_image={"m": 1.0}, deadline=0.0)["m"]
    assert {s.reason for s in stops.values()} == {BUDGET}
    assert all(s.n == 1 for s in stops.values())  # every class still gets an answer


def test_methods_take_rounds_together_and_stop_on_their_own():
    """A noisier method goes on taking a class's images after a clearer one has settled it, and
    each method stops where it would alone."""
    class_of = np.repeat([0, 1], [600, 600])
    orders = class_orders(class_of, 2, seed=1)
    means = {0: [0.5, 0.25, 0.15, 0.1], 1: [0.4, 0.3, 0.2, 0.1]}
    noise = {0: 0.1, 1: 0.1}
    together = sample_until_settled(
        fake_attribute(means, noise, class_of, [], ("clear", "noisy")), ["clear", "noisy"],
        orders, RULE, class_of=class_of, seed=0, seconds_per_image={"clear": 0, "noisy": 0})
    alone = sample_until_settled(fake_attribute(means, noise, class_of, []), ["m"], orders, RULE,
                                 class_of=class_of, seed=0, seconds_per_image={"m": 0})["m"]
    assert together["clear"] == alone
    for c in (0, 1):
        assert together["noisy"][c].n > together["clear"][c].n


def test_an_answer_that_follows_another_stops_with_it_or_sooner():
    """A method's band-group answer stops when its band answer does, or sooner when its own top
    groups settle first; it never takes images past the band answer."""
    class_of = np.repeat([0, 1], [600, 600])
    orders = class_orders(class_of, 2, seed=1)
    clear, close = [0.5, 0.25, 0.15, 0.1], [0.28, 0.26, 0.24, 0.22]
    groups, bands = "m (band groups)", "m"

    def attribute(means: dict[str, dict[int, list[float]]]):
        rng = np.random.default_rng(5)

        def draw(positions: np.ndarray, active: dict[str, set[int]]):
            done = {}
            for answer in means:
                used = positions[np.isin(class_of[positions], list(active.get(answer, ())))]
                centre = np.array([means[answer][c] for c in class_of[used]]).reshape(-1, 4)
                done[answer] = (used, centre + 0.1 * rng.standard_normal(centre.shape))
            return {answer: done[answer] for answer in active}
        return draw

    # class 0: groups clear, bands close; class 1: groups close, bands clear
    means = {bands: {0: close, 1: clear}, groups: {0: clear, 1: close}}
    stops = sample_until_settled(attribute(means), [bands, groups], orders, RULE,
                                 class_of=class_of, seed=0, seconds_per_image={bands: 0},
                                 follows={groups: bands})
    assert stops[groups][0].reason == SETTLED and stops[groups][0].n < stops[bands][0].n
    assert stops[bands][1].reason == SETTLED
    assert stops[groups][1].n == stops[bands][1].n and stops[groups][1].reason == LEADER_SETTLED
    alone = sample_until_settled(attribute({groups: means[groups]}), [groups], orders, RULE,
                                 class_of=class_of, seed=0, seconds_per_image={groups: 0})[groups]
    assert alone[1].n > stops[groups][1].n  # on its own it would have gone on


@pytest.fixture(scope="module")
def planted(planted_torch):
    model = as_loaded(planted_torch, planted_torch[0].in_channels, N_CLASSES)
    return model, planted_images(n_per_class=300, seed=1)


def test_default_run_stops_early_and_agrees_with_every_image(planted):
    model, (x, y) = planted
    methods = "saliency,feature_ablation,gradient_shap"
    sampled = explain(model, image_set(x, y), methods=methods, n_boot=50, progress=False)
    every = explain(model, image_set(x, y), methods=methods, n_boot=50, progress=False,
                    all_images=True)
    assert len(every.indices) == len(x) and len(sampled.indices) < len(x) / 2
    for method in methods.split(","):
        for table in (sampled.table(method), every.table(method)):
            for c, band in PLANTED.items():
                rows = table[table["class"] == f"class {c}"]
                assert rows.loc[rows["rank"] == 1, "band_index"].item() == band
    stops = sampled.summary["sampling"]["stops"]["feature_ablation"]
    assert {s["reason"] for s in stops.values()} == {SETTLED}
    assert {s["reason"] for s in every.summary["sampling"]["stops"]["saliency"].values()} == {
        ALL_IMAGES}
    few = "until settled, each image takes few random draws"
    assert any(n.startswith(few) and "gradient_shap n_samples=4" in n
               for n in sampled.summary["notes"])
    assert not any(n.startswith(few) for n in every.summary["notes"])
    assert sampled.summary["methods"]["gradient_shap"]["n_samples"] == 4
    assert every.summary["methods"]["gradient_shap"]["n_samples"] == 16
    counts = sampled.table("saliency").groupby("class")["n"].first()
    assert (counts >= RULE.min_images).all()
    assert len(sampled.examples.index) == 2 * N_CLASSES and sampled.examples.maps


def _plan(config: RunConfig, n_per_class: int = 40) -> Plan:
    """The plan of `config` on planted images (4 classes × `n_per_class`)."""
    x, y = planted_images(n_per_class=n_per_class, seed=0)
    model = SimpleNamespace(n_bands=x.shape[1], n_classes=N_CLASSES, spatial_size=None,
                            layout=Layout.CHANNELS_FIRST)
    return resolve_plan(config, image_set(x, y).for_model(model), N_CLASSES, "none")


def test_rounds_until_settled_take_few_draws_per_image_unless_told():
    """Until settled, methods named take their `until_settled` options and one background image
    per image; with every image (or options the user set, or configured methods) they do not."""
    settled = _plan(RunConfig.build("shapley,permutation,feature_ablation"))
    assert settled.method("shapley").n_samples == Shapley.until_settled["n_samples"] == 2
    assert settled.method("permutation").n_repeats == 1 and settled.n_background == 1
    every = _plan(RunConfig.build("shapley,permutation", all_images=True))
    assert every.method("shapley").n_samples == Shapley().n_samples == 8
    assert every.n_background == 8 and settled.few_draws and not every.few_draws
    small = _plan(RunConfig.build("shapley"), n_per_class=8)  # the first round takes all
    assert small.method("shapley").n_samples == 8 and not small.few_draws
    told = _plan(RunConfig.build([Shapley(n_samples=6), "permutation"], background_images=4,
                                 method_options={"permutation": {"n_repeats": 3}}))
    assert told.method("shapley").n_samples == 6 and told.method("permutation").n_repeats == 3
    assert told.n_background == 4



def test_band_groups_stop_with_their_method_or_sooner(planted):
    """In a run until settled, a method's band-group scores cover a prefix of the images its band
    scores cover, class by class, and the summary says where and why each stopped."""
    model, (x, y) = planted
    names = image_set(x, y).band_names
    data = image_set(x, y, band_groups={"a": names[:2], "b": names[2:3], "c": names[3:4],
                                        "d": names[4:]})
    result = explain(model, data, methods="saliency,feature_ablation,permutation", n_boot=20,
                     progress=False)
    sampling = result.summary["sampling"]
    assert set(sampling["group_stops"]) == {"feature_ablation", "permutation"}  # not saliency
    for method, stops in sampling["group_stops"].items():
        banded = np.isfinite(result.scores[method]).all(axis=1)
        grouped = np.isfinite(result.feature_scores[GROUPS][method]).all(axis=1)
        assert not (grouped & ~banded).any()
        for name, stop in stops.items():
            c = result.class_names.index(name)
            assert stop["n"] == (grouped & (result.labels == c)).sum()
            assert stop["n"] <= sampling["stops"][method][name]["n"]
            assert stop["reason"] in {SETTLED, LEADER_SETTLED, ALL_IMAGES}
            if stop["n"] < sampling["stops"][method][name]["n"]:
                assert stop["reason"] == SETTLED
    overview = result.sampling_overview()
    assert overview["permutation"].str.contains("; band groups: ").all()
    assert not overview["saliency"].str.contains("band groups").any()
    assert "band groups (methods that remove them whole)" in result.sampling_text()


def test_rows_mixing_classes_weigh_each_class_by_its_candidates_not_its_images_explained():
    """A class that settled on 30 of its 900 images counts 9 times as much as one that needed
    all 100 of its images in the 'all images' rows; each class's own rows are unchanged."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [30, 100])
    centre = np.where(labels[:, None] == 0, [0.6, 0.2, 0.2], [0.2, 0.6, 0.2])
    scores = {"m": centre + 0.05 * rng.standard_normal((130, 3))}
    table = dict(labels=labels, predictions=labels, class_names=["a", "b"],
                 band_names=["x", "y", "z"], target_mode="true", n_boot=200)
    plain = importance_table(scores, **table)
    weighted = importance_table(scores, **table, strata=(labels, np.array([900, 100])))

    def rows(frame, cls):
        return frame[(frame["grouping"] == "true_class") & (frame["class"] == cls)
                     ].set_index("band")

    shares = aggregate.shares(scores["m"])
    expected = 0.9 * shares[labels == 0].mean(axis=0) + 0.1 * shares[labels == 1].mean(axis=0)
    everyone = rows(weighted, "all images")
    np.testing.assert_allclose(everyone["share"].to_numpy(), expected)
    assert everyone["rank"].idxmin() == "x" and rows(plain, "all images")["rank"].idxmin() == "y"
    assert (everyone["share_ci_low"] < everyone["share"]).all()
    assert (everyone["share"] < everyone["share_ci_high"]).all()
    assert (everyone["n"] == 130).all()
    for cls in ("a", "b"):
        np.testing.assert_allclose(rows(weighted, cls)["share"], rows(plain, cls)["share"])


def test_images_no_method_answered_for_leave_their_rows_out():
    """Band groups that settled sooner than the bands leave images without any group score:
    their groupings (here the misclassified images of class b) have no rows, and no error."""
    labels = np.repeat([0, 1], [40, 40])
    predictions = labels.copy()
    predictions[75:] = 0  # five misclassified images of class b, which no method answered for
    scores = {"m": np.random.default_rng(0).standard_normal((80, 3))}
    scores["m"][75:] = np.nan
    table = importance_table(scores, labels=labels, predictions=predictions,
                             class_names=["a", "b"], band_names=["x", "y", "z"],
                             target_mode="true", n_boot=50)
    misclassified = table[table["grouping"] == "misclassified"]
    assert misclassified.empty
    assert set(table.loc[table["grouping"] == "true_class", "class"]) == {"all images", "a", "b"}
