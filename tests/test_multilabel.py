"""Multi-label models (a sigmoid per class, several labels per image): detection, one explanation
per (image, label) pair, per-label precision/recall/F1, labels as multi-hot arrays or ';' lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from captum.attr import IntegratedGradients

from tests.planted import ML_PLANTED, N_BANDS, planted_multilabel, train_multilabel
from xband import XbandError, evaluate, explain, image_set, load_model, read_data
from xband.cli.main import main
from xband.data.images import stratified_subset
from xband.methods import Context, GradientShap
from xband.methods._base import PassSizes
from xband.run.config import RunConfig
from xband.run.pipeline import run_explanation
from xband.run.plan import BANDS
from xband.run.runner import BatchRunner, Donors, Pairs

METHODS = ["integrated_gradients", "feature_ablation", "shapley", "permutation"]
CLASSES = ["crop", "forest", "water", "urban"]


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    """A small CNN ending in nn.Sigmoid, trained on images with two planted classes each."""
    return train_multilabel(*planted_multilabel(n=200, seed=0), epochs=60)


@pytest.fixture(scope="module")
def test_data() -> tuple[np.ndarray, np.ndarray]:
    return planted_multilabel(n=48, seed=1)


@pytest.fixture(scope="module")
def result(net, test_data):
    x, present = test_data
    return explain(load_model(net, verbose=False), (x, present), methods=METHODS,
                   classes=CLASSES, progress=False, n_boot=50)


def test_planted_multilabel_model_recovers_each_class_band(result, test_data):
    _, present = test_data
    assert result.plan.multi_label  # told from the final sigmoid (and the multi-hot labels)
    for method in METHODS:
        table = result.table(method)
        for c, band in ML_PLANTED.items():
            rows = table[table["class"] == CLASSES[c]]
            assert rows.loc[rows["rank"] == 1, "band_index"].tolist() == [band], (method, c)
            assert rows["n"].iloc[0] == present[:, c].sum()  # images with the label
    accuracy = result.summary["accuracy"]
    assert accuracy["multi_label"] and accuracy["overall"] is None
    for name in CLASSES:
        assert accuracy["per_class"][name]["f1"] > 0.9
    assert accuracy["micro"]["support"] == present.sum()
    groupings = set(result.importance["grouping"])  # misclassified: images missing a label
    assert {"true_class", "correct"} <= groupings <= {"true_class", "correct", "misclassified"}


def test_each_image_is_explained_for_each_of_its_labels(result, net, test_data):
    x, present = test_data
    pairs = result.pairs
    assert len(pairs) == present.sum() == len(result.scores["integrated_gradients"])
    assert present[pairs.image, pairs.target].all()
    result = explain(load_model(net, verbose=False), (x, present), methods="integrated_gradients",
                     classes=CLASSES, baseline="mean", progress=False, n_boot=10)
    assert np.array_equal(result.pairs.image, pairs.image)
    ig = IntegratedGradients(net[0])  # the logits, as explained; Captum's own computation
    baseline = torch.from_numpy(result.record.baseline).view(1, -1, 1, 1).expand(1, N_BANDS,
                                                                                 *x.shape[2:])
    for row in (0, 1, len(pairs) - 1):
        image = torch.from_numpy(x[pairs.image[row]][None])
        attr = ig.attribute(image, baseline, target=int(pairs.target[row]), n_steps=32,
                            method="gausslegendre")
        np.testing.assert_allclose(result.scores["integrated_gradients"][row],
                                   attr.sum(dim=(2, 3))[0].numpy(), rtol=1e-4, atol=1e-6)


def test_same_seed_same_draws_and_report(result, net, test_data, tmp_path):
    x, present = test_data
    again = explain(load_model(net, verbose=False), (x, present), methods=["permutation"],
                    classes=CLASSES, progress=False, n_boot=50)
    np.testing.assert_array_equal(again.scores["permutation"], result.scores["permutation"])
    result.save(tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Accuracy per label" in html and "F1 1.00" in html
    assert "explained for" in html and "one sigmoid per label" not in html
    assert "sigmoid was stripped" in html
    saved = np.load(tmp_path / "report" / "scores.npz")
    np.testing.assert_array_equal(saved["pair_class"], result.pairs.target)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["model"]["final_activation"] == "sigmoid"
    assert summary["model"]["multi_label"] and summary["settings"]["multi_label"]
    verdict = summary["verdict"]  # per label, from the images with it; unchecked
    assert [c["class"] for c in verdict["classes"]] == CLASSES and not verdict["checked"]
    assert "single-label" in verdict["status"] and verdict["how_to_check"] is None


def test_multilabel_refusals(net, test_data):
    x, present = test_data
    model = load_model(net, verbose=False)
    with pytest.raises(XbandError, match="several classes per image, but multi_label is False"):
        explain(model, (x, present), methods="saliency", multi_label=False, progress=False)
    with pytest.raises(XbandError, match="target 'all'.* single-label"):
        explain(model, (x, present), methods="saliency", target="all", progress=False)
    with pytest.raises(XbandError, match="values other than 0 and 1"):
        image_set(x, present * 2)
    with pytest.raises(XbandError, match="3 columns but the model has 4 outputs"):
        explain(model, (x, present[:, :3]), methods="saliency", progress=False)
    small = explain(model, (x, present), methods="saliency", progress=False, n_boot=10)
    with pytest.raises(XbandError, match="trust checks .* multi-label"):
        evaluate(model, (x, present), small)


def test_every_pair_is_explained_counted_in_the_estimate_and_a_budget_is_refused(result, net,
                                                                                  test_data):
    x, present = test_data
    assert result.plan.all_images  # multi-label: every pair, no rounds until settled
    sampling = result.summary["sampling"]
    assert sampling["mode"] == "all (image, label) pairs"
    for c, name in enumerate(CLASSES):
        assert sampling["stops"]["shapley"][name] == {"n": int(present[:, c].sum()),
                                                      "reason": "all images",
                                                      "change_chance": None}
    assert any(f"all {present.sum()} (image, label) pairs of the {len(x)} images" in note
               for note in result.summary["notes"])
    assert "Pairs explained per class (multi-label" in result.sampling_text()
    model = load_model(net, verbose=False)
    said: list[str] = []
    run_explanation(model, image_set(x, present, classes=CLASSES),
                    RunConfig.build("saliency", n_boot=10), progress=False, announce=said.append)
    assert f"× (image, label) pairs; first round {present.sum()} (image, label) pairs" in said[0]
    with pytest.raises(XbandError, match="budget applies to single-label runs") as refused:
        explain(model, (x, present), methods="saliency", budget="1m", progress=False)
    assert "max_images" in str(refused.value) and "--budget" not in str(refused.value)
    assert "--budget applies" in refused.value.cli and "--max-images" in refused.value.cli


def test_pairs_run_in_parts_draw_as_one_run(net, test_data):
    x, present = test_data
    images = torch.from_numpy(x)

    def take(positions):
        return images[torch.from_numpy(np.asarray(positions))]

    ctx = Context(forward=net[0].eval(), baseline=torch.zeros(1, N_BANDS, 1, 1),
                  band_std=torch.ones(N_BANDS), donors=Donors(len(x), 0, take),
                  passes=PassSizes(), threshold=0.0)
    runner = BatchRunner(ctx, take, seed=0, batch_size=8, n_classes=len(CLASSES))
    pairs, method = Pairs.of(present), GradientShap(n_samples=4)  # random draws per batch
    every = np.arange(len(pairs))

    def run(rows, first_batch=0):
        return runner.run(method, rows, known=present, targets=pairs, keep_maps=np.array([3, 20]),
                          first_batch=first_batch)

    whole = run(every)
    assert whole.scores[BANDS].shape == (len(pairs), N_BANDS) and sorted(whole.maps) == [3, 20]
    first, rest = run(every[:16]), run(every[16:], first_batch=2)  # batches 0-1, then 2…
    assert first.batches == 2
    np.testing.assert_array_equal(np.concatenate([first.scores[BANDS], rest.scores[BANDS]]),
                                  whole.scores[BANDS])
    np.testing.assert_array_equal(rest.maps[20], whole.maps[20])
    other_draws = run(every[16:], first_batch=3).scores[BANDS]
    assert not np.allclose(other_draws, rest.scores[BANDS])


def test_multilabel_subsets_keep_every_class():
    present = np.zeros((100, 3), dtype=bool)
    present[:, 0] = True
    present[90:, 1] = True
    present[97:, 2] = True
    per_class = stratified_subset(present, 100, None, seed=0, max_per_class=5)
    assert (present[per_class].sum(axis=0) >= [5, 5, 3]).all() and len(per_class) <= 15
    few = stratified_subset(present, 100, 4, seed=0)
    assert len(few) == 4 and present[few].any(axis=0).all()


def test_labels_from_csv_with_semicolons_through_the_cli(net, test_data, tmp_path, capsys):
    x, present = test_data
    rows = ["path,label"]
    for i, image in enumerate(x):
        tifffile.imwrite(tmp_path / f"p{i}.tif", np.moveaxis(image, 0, 2),
                         photometric="minisblack", planarconfig="contig")
        rows.append(f"p{i}.tif," + ";".join(CLASSES[c] for c in np.flatnonzero(present[i])))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = read_data(tmp_path / "labels.csv", classes=CLASSES)
    assert data.multi_label and (data.labels == present.astype(bool)).all()
    onnx_path = tmp_path / "ml.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(onnx_path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["scores"],
                      dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    code = main(["explain", "--model", str(onnx_path), "--data", str(tmp_path / "labels.csv"),
                 "--classes", ",".join(CLASSES), "--methods", "feature_ablation", "--quiet",
                 "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "per-label scores on these 48 images" in printed and "micro average" in printed
    top = printed.split("Top bands per class")[1].splitlines()
    for c, band in ML_PLANTED.items():
        line = next(line for line in top if line.startswith(f"{CLASSES[c]} "))
        assert line.split()[1].rstrip(",") == f"B{band + 1}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["final_activation"] == "sigmoid"  # the ONNX Sigmoid, stripped
    assert summary["data"]["class_counts"] == {n: int(present[:, c].sum())
                                               for c, n in enumerate(CLASSES)}
    assert Path(tmp_path / "out" / "report.html").exists()
