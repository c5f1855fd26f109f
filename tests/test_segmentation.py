"""Segmentation networks (a class score per pixel): detected from the output shape, each (image,
class present) pair explained for the class's mean output over its pixels, the class mask an
input channel that is never a band; masks from arrays, .npz, GeoTIFF folders and torch dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn
from torch.utils.data import Dataset

from tests.planted import (
    SEG_BANDS,
    SEG_IGNORE,
    SEG_PLANTED,
    keras_python,
    planted_segmentation,
    train_unet,
)
from xband import XbandError, evaluate, explain, from_torch, image_set, load_model, read_data
from xband.cli.main import main
from xband.report.sections import explanation_drawings
from xband.run.config import RunConfig
from xband.run.pipeline import run_explanation

EFFECT_METHODS = ["feature_ablation", "shapley", "permutation", "integrated_gradients"]
CLASSES = ["field", "forest", "water"]


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    """A small U-Net ending in a softmax over the classes, trained on planted images."""
    return train_unet(*planted_segmentation(n=96, seed=0), epochs=60)


@pytest.fixture(scope="module")
def test_data() -> tuple[np.ndarray, np.ndarray]:
    return planted_segmentation(n=24, seed=1)


@pytest.fixture(scope="module")
def run(unet, test_data):
    """The explanation of the planted U-Net on label masks, and the cost estimate it said."""
    x, masks = test_data
    said: list[str] = []
    data = image_set(x, masks=masks, ignore_index=SEG_IGNORE, classes=CLASSES)
    result = run_explanation(load_model(unet, verbose=False), data,
                             RunConfig.build(EFFECT_METHODS, n_boot=50), progress=False,
                             announce=said.append)
    return result, said[0]


def top_bands(result) -> dict[str, list[int]]:
    """Per method, the top band of each class."""
    out = {}
    for method in result.methods:
        table = result.table(method)
        out[method] = [table.loc[(table["class"] == name) & (table["rank"] == 1),
                                 "band_index"].item() for name in CLASSES]
    return out


def test_planted_unet_every_effect_method_puts_the_class_band_first(run, test_data):
    result, _ = run
    _, masks = test_data
    assert result.plan.segmentation and result.plan.multi_label
    assert top_bands(result) == {m: [SEG_PLANTED[c] for c in range(3)] for m in EFFECT_METHODS}
    accuracy = result.summary["accuracy"]
    print("per-class IoU:", {n: round(r["iou"], 3) for n, r in accuracy["per_class"].items()})
    assert accuracy["segmentation"] and accuracy["mean_iou"] > 0.9
    for c, name in enumerate(CLASSES):
        assert accuracy["per_class"][name]["pixels"] == (masks == c).sum()
    present = np.stack([(masks == c).any(axis=(1, 2)) for c in range(3)], axis=1)
    assert len(result.pairs) == present.sum()  # every (image, class present) pair
    assert present[result.pairs.image, result.pairs.target].all()


def test_the_mask_channel_is_never_a_band(run):
    result, _ = run
    assert len(result.band_names) == SEG_BANDS == len(result.record.baseline)
    assert set(result.importance["band_index"]) == set(range(SEG_BANDS))
    for method in EFFECT_METHODS:
        assert result.scores[method].shape == (len(result.pairs), SEG_BANDS)
    ex = result.examples
    assert ex.maps["integrated_gradients"].shape[1] == SEG_BANDS
    assert ex.masks.shape == (len(ex.index), *ex.image.shape[2:])


def test_a_pair_is_explained_for_the_class_mean_over_its_pixels(run, unet, test_data):
    """Integrated Gradients of a pair sums (completeness) to the change of the class's mean
    logit over its pixels from the baseline to the image: the pooled target, computed here."""
    result, _ = run
    x, masks = test_data
    row = 0
    image, target = int(result.pairs.image[row]), int(result.pairs.target[row])
    pixels = torch.from_numpy(masks[image] == target)
    baseline = torch.from_numpy(result.record.baseline).view(1, -1, 1, 1).expand(1, SEG_BANDS,
                                                                                 16, 16)

    def pooled(bands: torch.Tensor) -> float:
        return float(unet[0](bands)[0, target][pixels].mean())

    gap = pooled(torch.from_numpy(x[image][None])) - pooled(baseline)
    ig = run_explanation(load_model(unet, verbose=False),
                         image_set(x, masks=masks, ignore_index=SEG_IGNORE, classes=CLASSES),
                         RunConfig.build("integrated_gradients", baseline="mean", n_boot=10),
                         progress=False)
    assert ig.pairs.image[row] == image and ig.pairs.target[row] == target
    assert ig.scores["integrated_gradients"][row].sum() == pytest.approx(gap, rel=0.05)


def test_example_maps_outline_the_class_pixels(run):
    result, _ = run
    ex = result.examples
    drawings = next(items for title, items in explanation_drawings(result).items()
                    if title.startswith("Per-band maps"))
    stem, caption, draw = drawings[0]
    assert stem == f"maps_image{ex.index[0]}_class{ex.label[0]}"
    assert f"pixels of {CLASSES[ex.label[0]]} (outlined, label mask)" in caption
    figure = draw()
    assert all(ax.collections for ax in figure.axes[:2])  # the contour on each row


def test_the_trust_checks_say_they_are_not_for_segmentation(run, unet, test_data):
    result, _ = run
    x, masks = test_data
    data = image_set(x, masks=masks, ignore_index=SEG_IGNORE, classes=CLASSES)
    with pytest.raises(XbandError, match="explanation is of a segmentation network"):
        evaluate(load_model(unet, verbose=False), data, result)


def test_the_cost_estimate_counts_image_class_pairs(run):
    result, said = run
    assert f"first round {len(result.pairs)} (image, class) pairs" in said
    assert "segmentation: each image is explained for each class with pixels in its label mask" \
        in said


def test_predicted_masks_without_labels(unet, test_data):
    x, masks = test_data
    result = explain(load_model(unet, verbose=False), x, methods="feature_ablation",
                     classes=CLASSES, progress=False, n_boot=10)
    assert result.plan.segmentation and result.plan.target == "predicted"
    assert result.summary["accuracy"]["per_class"] == {}  # no label masks: nothing to count
    assert top_bands(result)["feature_ablation"] == [SEG_PLANTED[c] for c in range(3)]


class Chips(Dataset):
    """A torchgeo-style segmentation data set: {"image": (B, H, W), "mask": (H, W)} samples."""

    bands = tuple(f"b{i}" for i in range(SEG_BANDS))

    def __init__(self, x: np.ndarray, masks: np.ndarray):
        self.x, self.masks = x, masks

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.x[i]),
                "mask": torch.from_numpy(self.masks[i].astype(np.int64))}


def test_torchgeo_style_dict_samples_with_masks(unet, test_data):
    x, masks = test_data
    labelled = np.where(masks == SEG_IGNORE, masks[:, 1:2], masks)  # no ignored pixels
    result = explain(load_model(unet, verbose=False), Chips(x, labelled),
                     methods="integrated_gradients", classes=CLASSES, progress=False, n_boot=10)
    assert result.band_names == list(Chips.bands)
    assert top_bands(result)["integrated_gradients"] == [SEG_PLANTED[c] for c in range(3)]
    with_ignored = from_torch(Chips(x, masks), ignore_index=SEG_IGNORE, classes=CLASSES)
    assert with_ignored.read_masks(np.array([0]), 3)[0, 0].tolist() == [-1] * 16


def test_npz_with_masks_through_the_cli(unet, test_data, tmp_path, capsys):
    x, masks = test_data
    np.savez(tmp_path / "seg.npz", x=x, masks=masks)
    onnx_path = tmp_path / "unet.onnx"
    torch.onnx.export(unet[0], (torch.from_numpy(x[:2]),), str(onnx_path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    code = main(["explain", "--model", str(onnx_path), "--data", str(tmp_path / "seg.npz"),
                 "--ignore-index", str(SEG_IGNORE), "--classes", ",".join(CLASSES),
                 "--methods", "feature_ablation", "--quiet", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "per-class pixel scores on these 24 images" in printed and "iou" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["accuracy"]["mean_iou"] > 0.9
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Accuracy per pixel" in html and "IoU" in html


def write_tifs(folder, arrays: np.ndarray, nodata: int | None = None) -> None:
    folder.mkdir()
    for i, a in enumerate(arrays):
        extra = [] if nodata is None else [(42113, "s", 0, f"{nodata}\x00", True)]
        tifffile.imwrite(folder / f"chip{i}.tif", a if a.ndim == 2 else np.moveaxis(a, 0, 2),
                         photometric="minisblack", planarconfig="contig", extratags=extra)


def test_geotiff_image_and_mask_folders(test_data, tmp_path):
    x, masks = test_data
    write_tifs(tmp_path / "images", x[:4])
    write_tifs(tmp_path / "masks", masks[:4], nodata=SEG_IGNORE)
    data = read_data(tmp_path / "images", masks=tmp_path / "masks", classes=CLASSES)
    assert data.ignore_index == SEG_IGNORE  # the masks' nodata value
    read = data.read_masks(np.arange(4), 3)
    assert np.array_equal(read, np.where(masks[:4] == SEG_IGNORE, -1, masks[:4].astype(int)))
    (tmp_path / "masks" / "chip3.tif").unlink()
    with pytest.raises(XbandError, match="chip3.tif: no mask of that name"):
        read_data(tmp_path / "images", masks=tmp_path / "masks")


def test_a_mask_value_of_no_class_names_the_image(unet, test_data):
    x, masks = test_data
    bad = masks.copy()
    bad[5, 3, 3] = 7
    with pytest.raises(XbandError, match=r"image 5.*value 7.*ignore index 255"):
        explain(load_model(unet, verbose=False),
                image_set(x, masks=bad, ignore_index=SEG_IGNORE, classes=CLASSES),
                methods="feature_ablation", progress=False)


class ChannelsLast(nn.Module):
    """The U-Net's outputs as (N, H, W, C), as a Keras-style segmentation network gives them."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).permute(0, 2, 3, 1)


class Downsampled(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(self.net(x), 2)


def test_output_shapes_are_told_apart(unet, test_data):
    x, masks = test_data
    model = load_model(ChannelsLast(unet[0]), verbose=False)
    assert model.class_axis == 3 and model.n_classes == 3
    result = explain(model, image_set(x, masks=masks, ignore_index=SEG_IGNORE, classes=CLASSES),
                     methods="feature_ablation", progress=False, n_boot=10)
    assert top_bands(result)["feature_ablation"] == [SEG_PLANTED[c] for c in range(3)]
    with pytest.raises(XbandError, match="must have the images' size"):
        load_model(Downsampled(unet[0]), verbose=False)


def test_masks_and_labels_go_with_the_right_model(unet, planted_torch, test_data):
    x, masks = test_data
    with pytest.raises(XbandError, match="labels per image: give class masks"):
        explain(load_model(unet, verbose=False), (x, np.zeros(len(x), int)),
                methods="feature_ablation", progress=False)
    with pytest.raises(XbandError, match="either labels .* or masks"):
        image_set(x, np.zeros(len(x), int), masks=masks)


KERAS_UNET = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
data, out = np.load(sys.argv[1]), sys.argv[2]
x, y = data["x"], data["masks"].astype("int64")
weight = (y != 255).astype("float32")  # unlabelled pixels left out
y = np.where(y == 255, 0, y)
inputs = keras.Input(x.shape[1:])
skip = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(inputs)
low = keras.layers.Conv2D(24, 3, padding="same", activation="relu")(
    keras.layers.MaxPooling2D()(skip))
up = keras.layers.Conv2DTranspose(12, 2, strides=2)(low)
mixed = keras.layers.Conv2D(12, 3, padding="same", activation="relu")(
    keras.layers.Concatenate()([skip, up]))
outputs = keras.layers.Conv2D(3, 1, activation="softmax")(mixed)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x, y, sample_weight=weight, epochs=60, batch_size=len(x), verbose=0)
model.save(f"{out}/unet.keras")
"""


@pytest.mark.keras
def test_planted_keras_unet(test_data, tmp_path, keras_cache, monkeypatch):
    monkeypatch.setenv("XBAND_CACHE_DIR", str(keras_cache))
    x, masks = planted_segmentation(n=96, seed=0)
    np.savez(tmp_path / "train.npz", x=np.moveaxis(x, 1, 3), masks=masks)
    keras_python(KERAS_UNET, str(tmp_path / "train.npz"), str(tmp_path))
    model = load_model(tmp_path / "unet.keras", verbose=False)
    assert model.segmentation is not None and model.class_axis == 3
    assert model.final_activation == "softmax" and model.logits_module is not None  # stripped
    x, masks = test_data
    result = explain(model, image_set(np.moveaxis(x, 1, 3), masks=masks, ignore_index=SEG_IGNORE,
                                      classes=CLASSES),
                     methods=EFFECT_METHODS, progress=False, n_boot=50)
    print("Keras U-Net per-class IoU:",
          {n: round(r["iou"], 3) for n, r in result.summary["accuracy"]["per_class"].items()})
    assert result.summary["accuracy"]["mean_iou"] > 0.9
    assert top_bands(result) == {m: [SEG_PLANTED[c] for c in range(3)] for m in EFFECT_METHODS}
