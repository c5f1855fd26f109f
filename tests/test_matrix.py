"""Every model format × every data source × both entry points (`xband explain`, `xband.explain`).

One planted model per framework (tests/conftest.py: class k bright in band PLANTED[k]), saved in
every format xband reads, explained on the same planted images stored in every way xband reads
them. Every cell asserts that each method puts the planted band first for each planted class,
and that the conversion's fidelity passed without --accept-mismatch. The combinations that
cannot exist are listed in IMPOSSIBLE with the reason, and a test checks that every combination
is either a cell or listed there.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from torch import nn
from torch.utils.data import Dataset

import xband
from tests.planted import PLANTED, planted_images
from xband.cli.main import main

CLASSES = ["Water", "Crop", "Forest", "Bare soil"]  # model output order; not sorted, one space
BANDS = ["coastal", "blue", "green", "red", "nir", "swir"]
METHODS = ("saliency", "feature_ablation")  # a gradient method and an effect method

MODEL_FORMATS = ("keras", "h5", "savedmodel", "onnx_from_keras", "onnx_from_torch", "torchscript",
                 "pt2", "module")
DATA_SOURCES = ("npz", "npy", "hdf5", "csv", "geotiff_folders", "arrays", "torch_dataset")
ENTRY_POINTS = ("cli", "api")

IMPOSSIBLE = {
    **{("cli", fmt, "arrays"): "arrays in memory have no path for --data"
       for fmt in MODEL_FORMATS},
    **{("cli", fmt, "torch_dataset"): "a torch Dataset object has no path for --data"
       for fmt in MODEL_FORMATS},
    **{("cli", "module", src): "an nn.Module object has no path for --model"
       for src in DATA_SOURCES},
}
CELLS = [(entry, fmt, src) for entry in ENTRY_POINTS for fmt in MODEL_FORMATS
         for src in DATA_SOURCES if (entry, fmt, src) not in IMPOSSIBLE]


# --------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def models(planted_keras, planted_torch, tmp_path_factory) -> dict[str, Path | nn.Module]:
    """Every model format, from the two planted models. The torch forms end in a softmax, as
    trained classifiers are often saved: xband strips it to explain logits."""
    folder = tmp_path_factory.mktemp("torch_formats")
    net = nn.Sequential(planted_torch, nn.Softmax(dim=1)).eval()
    example = torch.from_numpy(planted_images(n_per_class=1, seed=5)[0])
    torch.onnx.export(net, (example,), str(folder / "planted.onnx"), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    with warnings.catch_warnings():  # torch.jit is deprecated, and still what many users have
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, example), str(folder / "planted.pt"))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "planted.pt2"))
    return {"keras": planted_keras.keras, "h5": planted_keras.h5,
            "savedmodel": planted_keras.savedmodel, "onnx_from_keras": planted_keras.onnx,
            "onnx_from_torch": folder / "planted.onnx", "torchscript": folder / "planted.pt",
            "pt2": folder / "planted.pt2", "module": net}


@pytest.fixture(scope="module")
def loaded(models, sources) -> dict[str, xband.LoadedModel]:
    """`xband.load_model` of each format, once, as a notebook user loads a model and then
    explains it on several data sets; the fidelity check runs on the user's images."""
    probe = sources["arrays"][0][:32]
    return {fmt: xband.load_model(path, probe=probe, probe_layout="channels_first",
                                  verbose=False) for fmt, path in models.items()}


@pytest.fixture(scope="module", autouse=True)
def conversion_cache(keras_cache):
    """One Keras conversion cache for every cell: each Keras file converts once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XBAND_CACHE_DIR", str(keras_cache))
        yield


# --------------------------------------------------------------------------- data
class DictSamples(Dataset):
    """A torchgeo-style data set: {"image": (B, H, W) tensor, "label": class number} items."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.x[i]), "label": int(self.y[i])}


def _write_geotiff(path: Path, image: np.ndarray) -> None:
    """One patch (B, H, W) as GDAL writes it: bands first, LZW, tiled, band descriptions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=image.shape[2], height=image.shape[1],
                           count=image.shape[0], dtype="float32", compress="lzw", tiled=True,
                           blockxsize=16, blockysize=16) as dst:
            dst.write(image)
            dst.descriptions = tuple(BANDS)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, object]:
    """The same planted images in every data source. They are stored in the order the class
    folders are read (class names sorted, then file names), so that every source's first images
    are the same and the Keras conversion of each file runs once for all of them."""
    folder = tmp_path_factory.mktemp("sources")
    x, y = planted_images(n_per_class=10, seed=1)
    order = np.lexsort((np.arange(len(y)), np.array(CLASSES)[y]))
    x, y = x[order], y[order]
    last = np.ascontiguousarray(np.moveaxis(x, 1, 3))  # (N, H, W, B), as Keras users keep them
    np.savez(folder / "patches.npz", x=last, y=y, band_names=np.array(BANDS))
    np.save(folder / "patches.npy", x)
    np.save(folder / "labels.npy", y)
    with h5py.File(folder / "patches.h5", "w") as f:
        f["x"], f["y"] = last, y
    rows = []
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        name = CLASSES[label]
        (folder / "tifs" / name).mkdir(parents=True, exist_ok=True)
        _write_geotiff(folder / "tifs" / name / f"patch_{i:03d}.tif", image)
        rows.append([f"tifs/{name}/patch_{i:03d}.tif", name])
    with open(folder / "patches.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    return {"npz": folder / "patches.npz", "npy": folder / "patches.npy",
            "hdf5": folder / "patches.h5", "csv": folder / "patches.csv",
            "geotiff_folders": folder / "tifs", "arrays": (x, y),
            "torch_dataset": DictSamples(x, y), "labels": folder / "labels.npy"}


def _cli_data_options(source: str, sources: dict) -> list[str]:
    options = ["--data", str(sources[source]), "--classes", ",".join(CLASSES)]
    if source == "npy":
        options += ["--labels", str(sources["labels"])]
    if source in ("npy", "hdf5"):  # the other sources carry their band names
        options += ["--bands", ",".join(BANDS)]
    return options


def _api_data(source: str, sources: dict) -> tuple[object, dict]:
    """`data` as a user hands it to `xband.explain`, and the description it needs beside it."""
    if source == "npy":  # labels in a second file: read_data takes them
        return xband.read_data(sources["npy"], labels=sources["labels"], bands=BANDS,
                               classes=CLASSES), {}
    carries_bands = source in ("npz", "csv", "geotiff_folders")
    data = str(sources[source]) if isinstance(sources[source], Path) else sources[source]
    return data, {"classes": CLASSES, **({} if carries_bands else {"bands": BANDS})}


# --------------------------------------------------------------------------- the cells
def _top_bands(importance: pd.DataFrame) -> dict[tuple[str, str], list[int]]:
    """(method, class) → the band positions ranked first, for each planted class."""
    rows = importance[(importance["grouping"] == "true_class")
                      & importance["class"].isin([CLASSES[c] for c in PLANTED])]
    first = rows[rows["rank"] == 1]
    return {key: sorted(group["band_index"]) for key, group in first.groupby(["method", "class"])}


def _check_answer(importance: pd.DataFrame, summary: dict, fmt: str) -> None:
    top = _top_bands(importance)
    expected = {(m, CLASSES[c]): [band] for m in METHODS for c, band in PLANTED.items()}
    assert top == expected
    fidelity = summary["fidelity"]
    if fmt in ("keras", "h5", "savedmodel", "onnx_from_keras", "onnx_from_torch"):
        assert fidelity["passed"] and not fidelity["accepted_mismatch"], fidelity
        assert fidelity["grad_rel_diff"] is not None, fidelity
    assert summary["classes"] == CLASSES
    assert [b["band"] for b in summary["bands"]] == BANDS


FORMAT_NAMES = {"keras": "keras", "h5": "h5", "savedmodel": "savedmodel",
                "onnx_from_keras": "onnx", "onnx_from_torch": "onnx",
                "torchscript": "torchscript", "pt2": "torch-export", "module": "torch-module"}


@pytest.mark.keras
@pytest.mark.parametrize(("entry", "fmt", "source"), CELLS,
                         ids=["-".join(cell) for cell in CELLS])
def test_matrix(entry, fmt, source, models, loaded, sources, tmp_path, capsys):
    if entry == "cli":
        out = tmp_path / "report"
        code = main(["explain", "--model", str(models[fmt]), *_cli_data_options(source, sources),
                     "--methods", ",".join(METHODS), "--no-figures", "--out", str(out),
                     "--quiet"])  # figures do not depend on the cell; tests/test_plots_report.py
        printed = capsys.readouterr()
        assert code == 0, printed.err[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        importance = pd.read_csv(out / "importance.csv")
    else:
        data, description = _api_data(source, sources)
        result = xband.explain(loaded[fmt], data, methods=",".join(METHODS), progress=False,
                               examples_per_class=1, n_boot=200, **description)
        summary, importance = result.summary, result.importance_of()
    assert summary["model"]["format"] == FORMAT_NAMES[fmt]
    _check_answer(importance, summary, fmt)


def test_every_combination_is_a_cell_or_says_why_not():
    every = {(e, f, s) for e in ENTRY_POINTS for f in MODEL_FORMATS for s in DATA_SOURCES}
    assert set(CELLS) | set(IMPOSSIBLE) == every
    assert not set(CELLS) & set(IMPOSSIBLE)
    assert len(CELLS) == 91


# --------------------------------------------------------------------------- the reproductions
def _xband(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `xband` command, in its own process, as a user runs it."""
    command = Path(sys.executable).parent / "xband"
    return subprocess.run([str(command), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.keras
def test_keras_model_on_geotiff_class_folders_from_the_command_line(models, sources, tmp_path):
    """The README's headline use: a Keras model (bands last) on GeoTIFF class folders (bands
    first on disk); the probe handed to the Keras conversion used to stay bands-first."""
    done = _xband("explain", "--model", str(models["keras"]),
                  "--data", str(sources["geotiff_folders"]), "--classes", ",".join(CLASSES),
                  "--methods", "saliency", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["fidelity"]["probe"] == "user data (32 images)"
    assert summary["fidelity"]["passed"]


@pytest.mark.keras
def test_onnx_file_written_by_xband_convert_is_explained_without_a_flag(models, sources,
                                                                         tmp_path):
    """`xband convert` writes an ONNX file and passes it; `xband explain` on that file must pass
    too (the gradient check used central differences in onnxruntime, which ReLU and max-pool
    kinks broke), and onnxruntime's own warnings stay off the terminal."""
    converted = _xband("convert", str(models["keras"]), "-o", str(tmp_path / "model.onnx"),
                       cwd=tmp_path)
    assert converted.returncode == 0 and "conversion: PASS" in converted.stdout, converted.stderr
    done = _xband("explain", "--model", str(tmp_path / "model.onnx"),
                  "--data", str(sources["npz"]), "--classes", ",".join(CLASSES),
                  "--methods", "saliency", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime" not in done.stderr and "[W:" not in done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["fidelity"]["passed"] and not summary["fidelity"]["accepted_mismatch"]

