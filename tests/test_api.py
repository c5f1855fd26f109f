"""The Python API as users call it: the two-line path, configured methods, one batch runner for
the explanation and the checks, immutable image sets, and the old spellings that still work."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import xband
from tests.planted import N_BANDS, N_CLASSES, PLANTED, planted_images
from xband.checks._common import Setup
from xband.cli.main import main
from xband.errors import XbandError
from xband.methods import GradientShap, IntegratedGradients, Shapley
from xband.run.config import RunConfig


@pytest.fixture(scope="module")
def model(planted_torch):
    return xband.load_model(torch.nn.Sequential(planted_torch, torch.nn.Softmax(dim=1)),
                            verbose=False)


@pytest.fixture(scope="module")
def data():
    return planted_images(n_per_class=10, seed=1)


def test_two_line_path_with_arrays(model, data):
    bands = [f"b{i}" for i in range(N_BANDS)]
    result = xband.explain(model, data, methods="saliency,feature_ablation", bands=bands,
                           progress=False, n_boot=20)
    assert result.band_names == bands and result.target_mode == "true"
    table = result.table("feature_ablation")
    for c, band in PLANTED.items():
        rows = table[table["class"] == f"class {c}"]
        assert rows.loc[rows["rank"] == 1, "band"].item() == bands[band]


def test_paths_and_torch_datasets_are_data_too(model, data, tmp_path):
    x, y = data
    np.savez(tmp_path / "d.npz", x=x, y=y)
    from_file = xband.explain(model, tmp_path / "d.npz", methods="saliency", progress=False,
                              n_boot=10)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    from_torch = xband.explain(model, dataset, methods="saliency", progress=False, n_boot=10)
    np.testing.assert_allclose(from_file.scores["saliency"], from_torch.scores["saliency"])
    with pytest.raises(XbandError, match="cannot read images from a dict"):
        xband.explain(model, {"x": x}, methods="saliency", progress=False)


def test_configured_methods_equal_method_options(model, data):
    by_object = xband.explain(model, data, methods=[IntegratedGradients(n_steps=8), "saliency"],
                              progress=False, n_boot=10)
    by_options = xband.explain(model, data, methods="integrated_gradients,saliency",
                               method_options={"integrated_gradients": {"n_steps": 8}},
                               progress=False, n_boot=10)
    assert by_object.summary["methods"]["integrated_gradients"]["n_steps"] == 8
    np.testing.assert_allclose(by_object.scores["integrated_gradients"],
                               by_options.scores["integrated_gradients"], rtol=1e-5, atol=1e-6)
    assert list(by_object.scores) == ["integrated_gradients", "saliency"]


def test_method_options_are_checked_and_named():
    with pytest.raises(XbandError, match="integrated_gradients has no option steps; its options: "
                                         "n_steps"):
        IntegratedGradients().with_options(steps=3)
    with pytest.raises(XbandError, match="shapley.n_samples must be at least 1, not 0"):
        Shapley(n_samples=0)
    with pytest.raises(XbandError, match="gradient_shap.n_samples must be a whole number"):
        GradientShap(n_samples=2.5)
    assert GradientShap(n_samples=4.0).n_samples == 4  # R's numbers are doubles
    with pytest.raises(dataclasses.FrozenInstanceError):
        Shapley().n_samples = 3


def test_run_config_names_the_bad_setting():
    for kwargs, message in [({"batch_size": 0}, "batch_size must be at least 1"),
                            ({"seed": -1}, "seed must be at least 0"),
                            ({"max_images": 2.5}, "max_images must be a whole number"),
                            ({"target": "mine"}, "target 'mine' is not one of"),
                            ({"baseline": [1.0, np.nan]}, "baseline values must be finite")]:
        with pytest.raises(XbandError, match=message):
            RunConfig.build("saliency", **kwargs)
    config = RunConfig.build("saliency", batch_size=32.0, max_per_class=20.0)
    assert config.batch_size == 32 and config.max_per_class == 20


def test_checks_attribute_through_the_same_runner_as_the_explanation(model, data):
    """GradientShap draws donors and points at random: with every explained image in the
    checks' subset, the same seeds give the explanation's scores again."""
    x, y = data
    result = xband.explain(model, (x, y), methods=[GradientShap(n_samples=4)], seed=4,
                           batch_size=16, progress=False, n_boot=10)
    setup = Setup.of(model, xband.image_set(x, y), result, max_images=None)
    every = np.arange(len(setup.rows))
    again = setup.attribute(result.plan.methods, setup.context(setup.forward), every)
    np.testing.assert_allclose(again["gradient_shap"].scores,
                               result.scores["gradient_shap"][setup.rows], rtol=1e-5, atol=1e-6)


def test_image_set_is_model_free_immutable_and_checked_against_the_model(model, data):
    x, y = data
    names = np.array([f"kind{c}" for c in y])
    images = xband.image_set(x, names)
    assert images.class_names == tuple(f"kind{c}" for c in range(N_CLASSES))
    assert images.labels.tolist() == y.tolist() and images.n_bands == N_BANDS
    assert any("classes from the labels, sorted" in n for n in images.notes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        images.labels = None
    three = xband.image_set(x, y % 3, classes=["a", "b", "c"])
    with pytest.raises(XbandError, match="3 class names given .* the model has 4 outputs"):
        three.for_model(model)
    with pytest.raises(XbandError, match="a repeated"):
        xband.image_set(x, y, classes=["a", "a", "b", "c"])


def test_old_spellings_still_work_with_a_deprecation_line(model, data, tmp_path, capsys):
    x, y = data
    with pytest.warns(DeprecationWarning, match="no longer needed"):
        images = xband.image_set(x, y, n_bands=N_BANDS, n_classes=N_CLASSES,
                                 model_layout="channels_first", spatial_size=None,
                                 band_names=[f"b{i}" for i in range(N_BANDS)])
    assert images.band_names[0] == "b0"
    with pytest.warns(DeprecationWarning, match="method_options"):
        old = xband.explain(model, images, methods="integrated_gradients", progress=False,
                            n_boot=10, settings={"integrated_gradients": {"n_steps": 6}})
    assert old.summary["methods"]["integrated_gradients"]["n_steps"] == 6
    np.savez(tmp_path / "d.npz", x=x, y=y)
    onnx = tmp_path / "m.onnx"
    torch.onnx.export(model.module, (torch.from_numpy(x[:2]),), str(onnx), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    capsys.readouterr()
    assert main(["explain", "--model", str(onnx), "--data", str(tmp_path / "d.npz"), "--out",
                 str(tmp_path / "out"), "--methods", "saliency", "--quiet", "--output",
                 "probabilities", "--method-option", "saliency.x=1"]) == 2
    err = capsys.readouterr().err
    assert "--output is deprecated and will be removed; use --output-space" in err
    assert "method saliency has no option x" in err  # options are checked before any work
    assert main(["explain", "--model", str(onnx), "--data", str(tmp_path / "d.npz"), "--out",
                 str(tmp_path / "out"), "--methods", "integrated_gradients", "--quiet",
                 "--output", "probabilities", "--method-option",
                 "integrated_gradients.n_steps=5"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["output"] == "probabilities"
    assert summary["methods"]["integrated_gradients"]["n_steps"] == 5
    assert main(["convert", str(onnx), "--output", str(tmp_path / "copy.onnx"), "--layout",
                 "channels_first"]) == 0
    err = capsys.readouterr().err
    assert "use -o/--onnx" in err and "use --model-layout" in err
    assert (tmp_path / "copy.onnx").is_file()


def test_explain_help_is_grouped_and_lists_every_method_option(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    for group in ("model:", "data and bands:", "preprocessing", "what to explain:", "run:",
                  "checks (can the answer be trusted?):"):
        assert group in text
    for option in ("integrated_gradients.n_steps=32", "shapley.max_exact_bands=5",
                   "kernel_shap.n_samples=128", "permutation.n_repeats=5"):
        assert option in text
    assert "--output " not in text and "--layout " not in text  # old spellings are hidden


@pytest.mark.keras
def test_the_getting_started_python_example_runs_as_written(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "getting-started.md").read_text()
    block = re.search(r"The same from Python.*?```python\n(.*?)```", page, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(block + "\nprint(result.top_bands().loc['Urban', 'shapley'])\n")
    root = str(Path(__file__).resolve().parents[1])
    env = {**__import__("os").environ, "XBAND_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": root}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] in {"B04", "B12"}  # Urban's planted pair
    assert (tmp_path / "xband-report" / "report.html").is_file()
