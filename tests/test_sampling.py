"""Sampling that stops when the answer is settled: rounds per class in a seeded order, a
bootstrap test of each class's top bands, and the record of why each method stopped."""

from __future__ import annotations

import numpy as np
import pytest

from tests.planted import N_CLASSES, PLANTED, planted_images, train_torch
from tests.test_explain import as_loaded
from xband import explain, image_set
from xband.config import RunConfig
from xband.methods import Shapley
from xband.sampling import (
    ALL_IMAGES,
    BUDGET,
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
    ends = [RULE.first_round]  # rounds of 32, 32, 32, 32, 32, 40, … images: a quarter more
    while ends[-1] < 500:
        ends.append(min(ends[-1] + max(RULE.first_round, int(RULE.growth * ends[-1])), 500))
    assert ends[:7] == [32, 64, 96, 128, 160, 200, 250] and stops[2].n in ends
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


@pytest.fixture(scope="module")
def planted():
    x, y = planted_images(n_per_class=80, seed=0)
    model = as_loaded(train_torch(x, y), x.shape[1], N_CLASSES)
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


def test_rounds_until_settled_take_few_draws_per_image_unless_told():
    """Until settled, methods named take their `until_settled` options and one background image
    per image; with every image (or options the user set, or configured methods) they do not."""
    settled = RunConfig.build("shapley,permutation,feature_ablation").for_mode()
    assert settled.method("shapley").n_samples == Shapley.until_settled["n_samples"] == 2
    assert settled.method("permutation").n_repeats == 1 and settled.n_background == 1
    every = RunConfig.build("shapley,permutation", all_images=True).for_mode()
    assert every.method("shapley").n_samples == Shapley().n_samples == 8
    assert every.n_background == 8 and settled.few_draws and not every.few_draws
    small = RunConfig.build("shapley").for_mode(more_images=False)  # the first round takes all
    assert small.method("shapley").n_samples == 8 and not small.few_draws
    told = RunConfig.build([Shapley(n_samples=6), "permutation"], background_images=4,
                           method_options={"permutation": {"n_repeats": 3}}).for_mode()
    assert told.method("shapley").n_samples == 6 and told.method("permutation").n_repeats == 3
    assert told.n_background == 4

