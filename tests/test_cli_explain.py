"""`xband explain` end to end, and one clear message for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.planted import N_BANDS, N_CLASSES, PLANTED, planted_images, train_torch
from xband.cli import main


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """The planted-band CNN as an ONNX file with a fixed image size and a dynamic batch axis."""
    x, y = planted_images(n_per_class=80, seed=0)
    net = torch.nn.Sequential(train_torch(x, y), torch.nn.Softmax(dim=1))
    path = tmp_path_factory.mktemp("model") / "planted.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    return path


def write_data(folder: Path, x: np.ndarray, y: np.ndarray, name: str = "data.npz") -> Path:
    path = folder / name
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    return planted_images(n_per_class=12, seed=1)


def explain_cli(model: Path, data_path: Path, out: Path, *extra: str) -> int:
    return main(["explain", "--model", str(model), "--data", str(data_path), "--out", str(out),
                 "--quiet", *extra])


def test_explain_writes_report_and_prints_top_bands(onnx_model, data, tmp_path, capsys):
    x, y = data
    bands = ",".join(f"band{i}" for i in range(N_BANDS))
    classes = ",".join(f"kind{i}" for i in range(N_CLASSES))
    code = explain_cli(onnx_model, write_data(tmp_path, x, y), tmp_path / "out",
                       "--methods", "saliency,feature_ablation,permutation", "--bands", bands,
                       "--classes", classes)
    printed = capsys.readouterr().out
    assert code == 0
    assert "Top bands per class" in printed
    for c, band in PLANTED.items():
        line = next(line for line in printed.splitlines() if line.startswith(f"kind{c} "))
        assert line.split()[1].rstrip(",") == f"band{band}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["format"] == "onnx" and len(summary["model"]["sha256"]) == 64
    assert summary["fidelity"]["passed"] and summary["fidelity"]["reference"] == "onnxruntime"
    assert summary["model"]["output_space"] == "logits"
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000


BAD_INPUTS = {
    "band count": (lambda x, y: (x[:, :5], y), [], "5 bands on axis 1"),
    "image size": (lambda x, y: (x[:, :, :10, :10], y), [], "10×10 pixels"),
    "label outside classes": (lambda x, y: (x, np.where(np.arange(len(y)) == 3, 9, y)), [],
                              "label 9 (image 3"),
    "class names": (lambda x, y: (x, y), ["--classes", "a,b"], "2 class names"),
    "band names": (lambda x, y: (x, y), ["--bands", "B1,B2,B3"], "3 band names"),
    "not finite": (lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 5, np.nan, x),
                                 y), [], "NaN or infinite values"),
    "empty class": (lambda x, y: (x[y != 2], y[y != 2]), [],
                    "the data holds no images of class 'class 2' (model output 2)"),
    "unknown method": (lambda x, y: (x, y), ["--methods", "saliency,shap"], "unknown method 'shap'"),
    "labels count": (lambda x, y: (x, y[:-1]), [], "labels"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_message_and_writes_nothing(case, onnx_model, data, tmp_path, capsys):
    change, options, message = BAD_INPUTS[case]
    x, y = change(*data)
    path = write_data(tmp_path, x.astype(np.float32), y)
    out = tmp_path / "out"
    code = explain_cli(onnx_model, path, out, *options)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.count("xband: error:") == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


def test_missing_class_says_which_and_what_to_do(onnx_model, data, tmp_path, capsys):
    x, y = data
    code = explain_cli(onnx_model, write_data(tmp_path, x[y != 2], y[y != 2]), tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "no images of class 'class 2' (model output 2)" in err
    assert "Add images of that class" in err and "--max-images" not in err
    bad = np.where((y == 2)[:, None, None, None], np.nan, x).astype(np.float32)
    code = explain_cli(onnx_model, write_data(tmp_path, bad, y, "bad.npz"), tmp_path / "out",
                       "--skip-bad")
    err = capsys.readouterr().err
    assert code == 2 and "every image of class 'class 2' (model output 2) was left out" in err
    assert "--max-images" not in err


def test_unwritable_output_is_refused_before_any_work(onnx_model, data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = explain_cli(onnx_model, write_data(tmp_path, *data), blocker / "report")
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the report" in err


def test_rerun_replaces_the_report_whole(onnx_model, data, tmp_path, capsys):
    path = write_data(tmp_path, *data)
    out = tmp_path / "out"
    assert explain_cli(onnx_model, path, out, "--methods", "saliency") == 0
    stale = out / "stale.txt"
    stale.write_text("from an earlier run")
    assert explain_cli(onnx_model, path, out, "--methods", "feature_ablation") == 0
    assert not stale.exists()
    assert set(json.loads((out / "summary.json").read_text())["methods"]) == {"feature_ablation"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
