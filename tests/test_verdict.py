"""The verdict per class: trusted by measurement, one sentence per class, first in every output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.planted import N_BANDS, N_CLASSES, planted_images, small_cnn
from tests.test_cli_explain import explain_cli, onnx_model, write_data  # noqa: F401 (fixture)
from tests.test_explain import as_loaded
from xband import explain, image_set
from xband.checks import Evaluation
from xband.data.sensors import SENSORS
from xband.report import html as report
from xband.report.verdict import CHECK_COMMAND, DELETION, RANDOMISATION, judge
from xband.run import aggregate

S2 = SENSORS["sentinel2"]
CLASSES = ["Water", "Forest", "Urban"]
METHODS = ["m1", "m2", "m3", "flagged", "unfaithful"]
LABELS = {m: m.title() for m in METHODS}
# class → method → (the method's top band, its second band)
TOPS = {
    "Water": dict.fromkeys(METHODS, ("B02", "B03")),
    "Forest": {"m1": ("B08", "B11"), "m2": ("B08", "B11"), "m3": ("B08", "B11"),
               "flagged": ("B04", "B11"), "unfaithful": ("B04", "B11")},
    "Urban": {"m1": ("B12", "B04"), "m2": ("B04", "B12"), "m3": ("B11", "B12"),
              "flagged": ("B12", "B04"), "unfaithful": ("B12", "B04")},
}


@pytest.fixture(scope="module")
def importance() -> pd.DataFrame:
    """Engine tidy table of 8 images per class whose per-method top bands are TOPS."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 8)
    names = S2.band_names
    scores = {}
    for method in METHODS:
        values = rng.uniform(0, 0.1, (len(labels), len(names)))
        for i, c in enumerate(labels):
            top, second = TOPS[CLASSES[c]][method]
            values[i, names.index(top)] += 1.0
            values[i, names.index(second)] += 0.5
        scores[method] = values
    return aggregate.importance_table(scores, labels=labels, predictions=labels,
                                      class_names=CLASSES, band_names=names, target_mode="true",
                                      n_boot=20, wavelengths=S2.wavelengths)


def checks(*, randomisation: bool = True, deletion: bool = True) -> Evaluation:
    """Trust-check tables as `xband.evaluate` writes them: 'flagged' keeps its band ranking with
    every layer random; 'unfaithful' deletes accuracy barely faster than random orders (mean z
    0.2 over 3 classes, under the 1.645 / √3 = 0.95 a random order rarely reaches)."""
    rows = [{"method": m, "stage": stage, "layers_randomised": k,
             "rank_rho": 0.9 if m == "flagged" else 0.1 * k, "flagged": m == "flagged"}
            for m in METHODS for k, stage in ((1, "top 1 of 3"), (3, "all layers"))]
    z = {"unfaithful": [0.5, -0.2, 0.3]}
    faithful = [{"baseline": baseline, "class": cls, "curve": curve, "metric": "accuracy",
                 "method": m, "gap": 0.1 * zz, "z": zz}
                for baseline in ("mean", "zero") for curve in ("deletion", "insertion")
                for m in METHODS for cls, zz in zip(CLASSES, z.get(m, [3.0, 2.5, 4.0]),
                                                   strict=True)]
    # under a baseline the run did not use, 'unfaithful' would pass: only the run's counts
    faithful = [{**r, "z": 5.0} if r["baseline"] == "zero" else r for r in faithful]
    return Evaluation(method_info={m: {"label": label} for m, label in LABELS.items()},
                      settings={"randomisation_threshold": 0.5, "primary_baseline": "mean"},
                      randomisation=pd.DataFrame(rows) if randomisation else None,
                      faithfulness=pd.DataFrame(faithful) if deletion else None)


def verdict_of(importance, evaluation):
    return judge(importance, evaluation, method_labels=LABELS, band_groups=S2.groups())


def sentence(verdict, cls: str) -> str:
    return next(c.sentence for c in verdict.classes if c.name == cls)


def test_trusted_methods_are_those_that_pass_both_checks(importance):
    verdict = verdict_of(importance, checks())
    assert verdict.checked and verdict.trusted == ("m1", "m2", "m3")
    why = verdict.excluded
    assert set(why) == {"flagged", "unfaithful"}
    assert "every layer random" in why["flagged"] and "ρ 0.90" in why["flagged"]
    assert "no faster than random orders" in why["unfaithful"] and "0.95" in why["unfaithful"]
    assert "z 0.20" in why["unfaithful"]
    assert "every layer random (ρ ≥ 0.5): Flagged (ρ 0.90)." in verdict.status()


def test_each_check_excludes_on_its_own(importance):
    only_randomisation = verdict_of(importance, checks(deletion=False))
    assert only_randomisation.trusted == ("m1", "m2", "m3", "unfaithful")
    assert list(only_randomisation.checks_run) == [RANDOMISATION]
    assert not only_randomisation.checked
    assert DELETION in only_randomisation.status().split("Not run:")[1]
    only_deletion = verdict_of(importance, checks(randomisation=False))
    assert only_deletion.trusted == ("m1", "m2", "m3", "flagged")


def test_agreement_sentence_names_band_with_wavelength_and_the_next_band(importance):
    verdict = verdict_of(importance, checks())
    assert sentence(verdict, "Forest") == (
        "Forest: B08 (NIR, 842 nm) first for 3 of 3 trusted methods; then B11 (SWIR)")
    assert sentence(verdict, "Water").startswith("Water: B02 (visible, 490 nm) first for 3 of 3")
    forest = next(c for c in verdict.classes if c.name == "Forest")
    assert forest.agreed and forest.first == "B08" and forest.mean_rank[0] == ("B08", 1.0)


def test_no_agreement_sentence_lists_the_rival_bands(importance):
    verdict = verdict_of(importance, checks())
    urban = next(c for c in verdict.classes if c.name == "Urban")
    assert not urban.agreed
    # equal votes: in consensus order (B12 is first or second for all three)
    assert urban.sentence == ("Urban: no agreement: B12 (1 method) vs B04 (1 method) vs "
                              "B11 (1 method)")


def test_unchecked_verdict_uses_every_method_and_offers_the_command(importance):
    verdict = verdict_of(importance, None)
    assert verdict.trusted == tuple(METHODS) and not verdict.checks_run and not verdict.excluded
    # the methods that fail the checks outvote the trusted ones here
    assert sentence(verdict, "Urban") == ("Urban: B12 (SWIR, 2190 nm) first for 3 of 5 methods; "
                                          "then B04 (visible)")
    assert "trusted" not in sentence(verdict, "Forest")
    status = verdict.status()
    assert "not checked" in status and "M1, M2, M3, Flagged, Unfaithful" in status
    assert "--evaluate" in status and "xband evaluate" in status
    assert verdict.as_dict()["how_to_check"] == CHECK_COMMAND
    assert verdict.text().splitlines()[0] == "Verdict per class (from 5 methods, not checked):"


def test_one_trusted_method_is_said_plainly_and_none_gives_no_verdict(importance):
    ev = checks()
    ev.randomisation["flagged"] = ev.randomisation["method"].isin(["m2", "m3", "flagged"])
    one = verdict_of(importance, ev)
    assert one.trusted == ("m1",)
    assert sentence(one, "Forest").startswith(
        "Forest: B08 (NIR, 842 nm) first for the only trusted method (M1); then")
    ev.randomisation["flagged"] = True
    none = verdict_of(importance, ev)
    assert none.trusted == () and none.figure() is None
    assert sentence(none, "Forest") == "Forest: no verdict: no method passed the checks"
    assert all(c.first is None for c in none.classes)


def test_multi_label_verdict_says_checks_are_not_available(importance):
    status = judge(importance, None, method_labels=LABELS, checkable=False).status()
    assert "single-label" in status and "--evaluate" not in status


def test_every_class_as_target_uses_each_class_s_own_rows():
    """target="all": each class's row is its images explained for their own class."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(2), 5)
    values = rng.uniform(0, 0.1, (len(labels), 2, 4))
    values[labels == 0, 0, 1] += 1.0  # class 0's images, explained for class 0: band b1
    values[labels == 0, 1, 3] += 1.0  # … explained for class 1: band b3, not a verdict row
    values[labels == 1, 1, 2] += 1.0
    table = aggregate.importance_table({"m": values}, labels=labels, predictions=labels,
                                       class_names=["a", "b"], band_names=["b0", "b1", "b2", "b3"],
                                       target_mode="all", n_boot=10)
    verdict = judge(table, None, method_labels={})
    assert [c.first for c in verdict.classes] == ["b1", "b2"]


def test_band_names_alone_without_sensor(importance):
    verdict = judge(importance.assign(wavelength_nm=np.nan), checks(), method_labels=LABELS)
    assert sentence(verdict, "Forest") == ("Forest: B08 first for 3 of 3 trusted methods; "
                                           "then B11")


def test_report_puts_the_verdict_before_the_model_card(importance):
    verdict = verdict_of(importance, None)
    summary = {"model": {"path": "m.onnx"}, "verdict": verdict.as_dict()}
    html = report.render_report(summary, figures={}, tables={}, verdict_figure=verdict.figure())
    block = html.index('id="s-verdict"')
    assert block < html.index("<h3>Model</h3>") < html.index("<nav>")
    assert html.index("data:image/png", block) < html.index("<h3>Model</h3>")
    assert "<b>Forest</b>: B08 (NIR, 842 nm) first for 3 of 5 methods" in html
    assert "xband evaluate" in html[block:html.index("<h3>Model</h3>")]


def test_attaching_checks_changes_the_verdict_and_summary_json_has_it(tmp_path):
    x, y = planted_images(n_per_class=4, seed=1)
    model = as_loaded(small_cnn().eval(), N_BANDS, N_CLASSES)
    result = explain(model, image_set(x, y), methods="saliency,feature_ablation", progress=False,
                     n_boot=20)
    assert result.verdict().trusted == ("saliency", "feature_ablation")
    result.evaluation = Evaluation(
        method_info=result.method_info,
        settings={"randomisation_threshold": 0.5, "primary_baseline": "mean"},
        randomisation=pd.DataFrame([{"method": m, "stage": "all layers", "layers_randomised": 1,
                                     "n_layers": 1, "rank_rho": rho, "rank_rho_min": rho,
                                     "image_rank_rho": rho, "map_rho": np.nan,
                                     "flagged": rho >= 0.5}
                                    for m, rho in (("saliency", 0.8), ("feature_ablation", 0.1))]))
    assert result.verdict().trusted == ("feature_ablation",)
    folder = result.save(tmp_path / "out")
    saved = json.loads((folder / "summary.json").read_text())["verdict"]
    assert saved["trusted"] == ["feature_ablation"] and "saliency" in saved["excluded"]
    assert [c["class"] for c in saved["classes"]] == [f"class {c}" for c in range(N_CLASSES)]
    assert (folder / "figures" / "verdict_consensus.png").is_file()


def test_cli_prints_the_verdict_first_and_writes_it(onnx_model, tmp_path, capsys):  # noqa: F811
    x, y = planted_images(n_per_class=6, seed=1)
    code = explain_cli(onnx_model, write_data(tmp_path, x, y), tmp_path / "out",
                       "--methods", "saliency,feature_ablation", "--evaluate",
                       "--checks", "randomisation,faithfulness", "--eval-images", "24",
                       "--random-orders", "4", "--cascade-stages", "2")
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.index("Verdict per class (from ") < printed.index("accuracy on these")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"]["checked"]
    assert summary["verdict"]["classes"][0]["sentence"] in printed
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.index('id="s-verdict"') < html.index("<h3>Model</h3>")
