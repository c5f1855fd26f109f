"""Pass sizes that never hurt: adopted only when clearly faster than the default, measured in
the same run within a time budget, remembered per model and machine when the timings were
steady; and the cost estimate that is said before any method runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_explain import as_loaded
from tests.test_speed import N_BANDS, N_CLASSES, as_data, bn_cnn, images
from xband.errors import XbandError
from xband.methods import Saliency, Shapley
from xband.methods._base import PassSizes
from xband.run import memory
from xband.run.cost import fit_budget, parse_budget
from xband.run.forward import forward_module
from xband.run.pipeline import explain
from xband.run.tuning import (
    DEFAULT_SIZE,
    KINDS,
    Verdict,
    cache_file,
    choose_size,
    pass_timing,
    plain_timing,
    sizes_for,
    speed_ups_pay,
    timing_size,
)


def noisy_timer(per_image: dict[int, float], seed: int, calls: list[int] | None = None):
    """Seconds of a pass of `size` images at the given speeds, with the spikes of a busy
    machine: a third of the passes up to 50% slower, and a few % of jitter."""
    rng = np.random.default_rng(seed)

    def measure(size: int) -> float:
        if calls is not None:
            calls.append(size)
        slow = 1 + (rng.random() < 0.3) * 0.5 * rng.random() + 0.03 * abs(rng.standard_normal())
        return per_image[size] * size * slow
    return measure


@pytest.mark.parametrize(("speeds", "at_most"), [
    ({32: 1.0, 64: 1.0, 128: 1.0, 256: 1.0}, 0.08),  # no size is faster: a switch gains nothing
    ({32: 1.3, 64: 1.0, 128: 1.1, 256: 1.2}, 0.02),  # every other size is slower: a switch hurts
], ids=["equal", "slower"])
def test_noisy_timings_keep_the_default(speeds, at_most):
    """Over 200 seeded runs of a noisy timer, the default is left only rarely, and for a size
    that is slower almost never (an unsteady run is not remembered either)."""
    picks = np.array([choose_size(noisy_timer(speeds, seed), budget_s=1e9).size
                      for seed in range(200)])
    assert np.mean(picks != DEFAULT_SIZE) <= at_most


def test_a_clearly_faster_size_is_adopted_despite_the_noise():
    speeds = {32: 1.0, 64: 1.0, 128: 0.8, 256: 0.5}
    assert all(choose_size(noisy_timer(speeds, seed), budget_s=1e9).size == 256
               for seed in range(200))


def test_tuning_stays_within_its_budget():
    calls: list[int] = []
    speeds = {32: 1.0, 64: 1.0, 128: 0.8, 256: 0.5}
    choice = choose_size(noisy_timer(speeds, 0, calls), budget_s=0.0)
    assert choice.size == DEFAULT_SIZE and choice.tried == (DEFAULT_SIZE,)
    assert set(calls) == {DEFAULT_SIZE} and len(calls) == 2  # a warm-up and one timed pass


def test_steady_choices_are_remembered_and_unsteady_ones_are_not(tmp_path):
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    example = torch.from_numpy(images(2)[0])
    cache = tmp_path / "tuning" / "model.json"
    first = pass_timing(forward, example, kinds=["forward"], budget_s=2.0, cache=cache)
    if first.source == "measured":
        again = pass_timing(forward, example, kinds=["forward"], budget_s=2.0, cache=cache)
        assert again.source == "remembered" and again.sizes == first.sizes
        assert json.loads(cache.read_text())["sizes"]["forward"] == first.sizes.forward
    else:  # this machine was too busy to trust the timings: nothing may be remembered
        assert not cache.exists()


def test_smaller_images_go_through_the_network_in_larger_passes():
    assert sizes_for((13, 64, 64)) == (64, (32, 64, 128, 256))  # as before for 64×64 and more
    assert sizes_for((4, 224, 224)) == (64, (32, 64, 128, 256))
    assert sizes_for((10, 24, 24)) == (256, (128, 256, 512, 1024))  # 7× fewer pixels
    assert sizes_for((6, 8, 8)) == (1024, (512, 1024))


def test_each_kind_of_pass_keeps_its_remembered_size(monkeypatch, tmp_path):
    """A run of forward-only methods and then one of gradient methods on the same model: each
    remembers its own kind's size, and a run of both recalls them without measuring."""
    import xband.run.tuning

    monkeypatch.setattr(xband.run.tuning, "choose_size", lambda measure, budget_s, **sizes: (
        xband.run.tuning.Choice(512, 1e-4, True, (512,))))
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    example = torch.from_numpy(images(2)[0])
    cache = tmp_path / "tuning" / "model.json"
    for kind in KINDS:
        assert pass_timing(forward, example, kinds=[kind], budget_s=1.0, cache=cache
                           ).source == "measured"
    both = pass_timing(forward, example, kinds=KINDS, budget_s=1.0, cache=cache)
    assert both.source == "remembered" and both.sizes == PassSizes(512, 512)


def test_a_steady_verdict_on_the_speed_ups_is_remembered_and_an_unsteady_one_is_not(
        monkeypatch, tmp_path):
    import xband.run.pipeline

    monkeypatch.setenv("XBAND_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(xband.run.pipeline, "SPEED_UP_COST_S", 0.0)
    monkeypatch.setattr(xband.run.pipeline, "timing_size", lambda seconds, budget: 8)
    timed = []
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    data = as_data(*images(24))
    for steady in (False, True, True):
        monkeypatch.setattr(xband.run.pipeline, "speed_ups_pay", lambda plain, sped_up, steady=steady: (
            timed.append(steady) or Verdict(True, steady=steady)))
        result = explain(model, data, "saliency", n_boot=10, progress=False, all_images=True)
        assert "channels-last memory" in result.summary["settings"]["speed_ups"]
    assert timed == [False, True]  # the third run recalls the second's verdict


def test_speed_ups_are_timed_in_passes_the_tuning_share_can_pay_for():
    """Timing both networks costs 8 passes of each kind: at 64 images when the share pays for
    that, in smaller passes when not (ResNet50 once took 7 s of a 1 s share), not at all below 8."""
    assert timing_size({"forward": 4e-4, "gradient": 1e-3}, budget_s=10.0) == 64
    assert timing_size({"gradient": 0.01}, budget_s=1.0) == 12
    assert timing_size({"gradient": 0.1}, budget_s=1.0) is None


def test_pass_sizes_measured_under_another_allocator_are_not_recalled(monkeypatch, tmp_path):
    """Pass timings depend on whether freed memory is kept (xband.run.memory): a size measured
    under another allocator setting is measured again."""
    where = {"model_id": "m", "output": "logits", "device": "cpu", "image_shape": (13, 64, 64)}
    here = cache_file(tmp_path, **where)
    monkeypatch.setattr(memory, "allocator", lambda: "another allocator")
    assert cache_file(tmp_path, **where) != here


def test_untuned_runs_use_the_batch_size_and_still_time_a_pass():
    forward = forward_module(bn_cnn(), "channels_first", "cpu")
    timing = plain_timing(forward, torch.from_numpy(images(2)[0]), kinds=["gradient"], size=16)
    assert timing.sizes.gradient == 16 and timing.seconds_per_image["gradient"] > 0


def _timer(seconds: float, seed: int):
    measure = noisy_timer({DEFAULT_SIZE: seconds / DEFAULT_SIZE}, seed)
    return lambda: measure(DEFAULT_SIZE)


@pytest.mark.parametrize(("sped_up", "at_most"), [(1.0, 0.08), (1.2, 0.02)],
                         ids=["equal", "slower"])
def test_speed_ups_not_clearly_faster_are_rarely_used(sped_up, at_most):
    """Speed-ups keep the numbers but may be slower on a machine: over 200 seeded runs of a
    noisy timer, ones that gain nothing are seldom adopted, slower ones almost never."""
    used = [speed_ups_pay(_timer(1.0, seed), _timer(sped_up, seed + 1000)).pays
            for seed in range(200)]
    assert np.mean(used) <= at_most


def test_clearly_faster_speed_ups_are_used_despite_the_noise():
    assert all(speed_ups_pay(_timer(1.0, seed), _timer(0.6, seed + 1000)).pays
               for seed in range(200))


def test_speed_ups_that_do_not_pay_leave_the_network_as_given(monkeypatch, tmp_path):
    import xband.run.pipeline

    monkeypatch.setenv("XBAND_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(xband.run.pipeline, "SPEED_UP_COST_S", 0.0)
    monkeypatch.setattr(xband.run.pipeline, "timing_size", lambda seconds, budget: 8)
    monkeypatch.setattr(xband.run.pipeline, "speed_ups_pay",
                        lambda plain, sped_up: Verdict(False, steady=False))
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    result = explain(model, as_data(*images(24)), "saliency", n_boot=10, progress=False,
                     all_images=True)
    assert result.summary["settings"]["speed_ups"] == []
    assert any(n.startswith("speed: batchnorm folded into convolutions") and
               "not measurably faster" in n for n in result.summary["notes"])


@pytest.mark.parametrize("long_run", [False, True])
def test_tuning_spends_at_most_its_share_of_the_estimated_run(long_run, monkeypatch, tmp_path):
    import xband.run.pipeline

    monkeypatch.setenv("XBAND_CACHE_DIR", str(tmp_path))
    if long_run:  # as if tuning were cheap next to this run: the speed-ups are tried
        monkeypatch.setattr(xband.run.pipeline, "SPEED_UP_COST_S", 0.0)
        monkeypatch.setattr(xband.run.pipeline, "timing_size", lambda seconds, budget: 8)
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    result = explain(model, as_data(*images(24)), "saliency", n_boot=10,
                           progress=False, all_images=True)
    settings = result.summary["settings"]
    timing = settings["pass_timing"]
    if long_run:  # tried, and used only if they made the passes clearly faster here
        used = "batchnorm folded into convolutions" in settings["speed_ups"]
        assert used != any("not measurably faster" in n for n in result.summary["notes"])
        assert timing["source"].startswith("measured") or timing["source"] == "remembered"
    else:  # 24 saliency passes: nothing could repay tuning, so the network runs as given
        assert settings["speed_ups"] == [] and "too short to repay tuning" in timing["source"]
        assert timing["images_per_pass"] == {"forward": 64, "gradient": 64}


def test_budget_text_is_read_and_bad_budgets_are_named():
    assert parse_budget("5m") == 300 and parse_budget("90s") == 90 and parse_budget(1.5) == 1.5
    assert parse_budget(" 1.5h ") == 5400
    for bad in ("five minutes", "0s", "-3m"):
        with pytest.raises(XbandError, match="budget"):
            parse_budget(bad)


def test_the_estimate_is_said_before_the_methods_run_and_recorded():
    said: list[str] = []
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    from xband.data.images import image_set
    from xband.run.config import RunConfig
    from xband.run.pipeline import run_explanation

    config = RunConfig.build("saliency,feature_ablation", n_boot=10)
    result = run_explanation(model, image_set(*images(24)), config, progress=False,
                             announce=said.append)
    assert len(said) == 1 and "saliency" in said[0] and "feature_ablation" in said[0]
    assert "passes/image" in said[0] and "total" in said[0]
    timing = result.summary["settings"]["pass_timing"]
    assert set(timing["seconds_per_image_pass"]) == {"forward", "gradient"}
    k = result.plan.n_background  # band ablation: each band against each background image
    ablation = next(line for line in said[0].splitlines() if "feature_ablation" in line)
    assert ablation.split()[1] == str(N_BANDS * k + 1)
    # with band groups, the methods that remove bands run once more, on the groups
    said.clear()
    names = image_set(*images(24)).band_names
    grouped = image_set(*images(24), band_groups={"a": names[:2], "b": names[2:]})
    run_explanation(model, grouped, config, progress=False, announce=said.append)
    ablation = next(line for line in said[0].splitlines() if "feature_ablation" in line)
    assert ablation.split()[1] == str(N_BANDS * k + 1 + 2 * k + 1)
    assert "2 groups whole" in said[0]


def test_a_budget_share_too_small_for_exact_shapley_takes_the_sampled_form():
    methods = (Shapley(max_exact_bands=10), Saliency())
    seconds = {"forward": 1e-3, "gradient": 1e-3}  # a second per thousand passes
    fitted, notes = fit_budget(methods, (10,), seconds, budget_s=60, n_classes=4, min_images=30)
    assert not fitted[0].exact(10) and fitted[1] == methods[1]
    assert "shapley runs sampled" in notes[0] and "instead of exact (1024 passes" in notes[0]
    roomy, _ = fit_budget(methods, (10,), seconds, budget_s=3600, n_classes=4, min_images=30)
    assert roomy[0].exact(10)


def test_a_spent_budget_stops_every_method_and_says_so():
    model = as_loaded(bn_cnn(), N_BANDS, N_CLASSES)
    x, y = images(600)
    result = explain(model, as_data(x, y), methods="saliency,integrated_gradients",
                     method_options={"integrated_gradients": {"n_steps": 64}},  # kept until settled
                     budget="0.3s", n_boot=10, progress=False)
    stops = result.summary["sampling"]["stops"]
    assert {s["reason"] for m in stops.values() for s in m.values()} <= {"budget spent", "settled"}
    assert any(s["reason"] == "budget spent" for s in stops["integrated_gradients"].values())
    assert all(s["n"] >= 1 for m in stops.values() for s in m.values())
    table = result.sampling_table()
    assert set(table["method"]) == {"saliency", "integrated_gradients"}
    assert len(result.indices) < 600


def test_a_run_too_short_to_repay_tuning_times_no_pass_at_the_batch_size(monkeypatch):
    """ResNet50 saliency on 64 images spent as long timing one pass of 64 as explaining them:
    a pass of the two example images shows such a run too short to tune, and is its estimate.
    (Speed-ups made to cost an hour: every run is too short, whatever the machine's load.)"""
    monkeypatch.setattr("xband.run.pipeline.SPEED_UP_COST_S", 3600.0)
    net = bn_cnn()
    sizes = []
    net.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    result = explain(as_loaded(net, N_BANDS, N_CLASSES), as_data(*images(24)), "saliency",
                     n_boot=10, progress=False, all_images=True, batch_size=20)
    assert "too short to repay tuning" in result.summary["settings"]["pass_timing"]["source"]
    assert sizes.count(20) == 1  # the method's own pass of 20 images; the timing took 2
    assert result.summary["settings"]["images_per_pass"] == {"forward": 20, "gradient": 20}
