"""Real data in: GeoTIFF class folders, CSV lists, HDF5, torch datasets; sensors, band groups,
preprocessing, sampling, and one clear message for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch

import xband
from tests.planted import N_BANDS, N_CLASSES, PLANTED, planted_images, train_torch
from xband import XbandError, explain, from_torch, image_set
from xband.cli.main import main
from xband.data.images import Preprocess
from xband.data.sensors import SENSORS, parse_groups, partition

BANDS = [f"band{i}" for i in range(N_BANDS)]
CLASSES = [f"kind{c}" for c in range(N_CLASSES)]
FAST = ["--methods", "saliency,feature_ablation", "--quiet"]


def export_onnx(net: torch.nn.Module, x: np.ndarray, path: Path) -> Path:
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, planted_torch, planted_train) -> Path:
    """The planted-band CNN (6 bands, 12×12, 4 classes) as ONNX."""
    return export_onnx(planted_torch, planted_train[0],
                       tmp_path_factory.mktemp("model") / "planted.onnx")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return planted_images(n_per_class=10, seed=1)


def write_tiff(path: Path, image: np.ndarray) -> None:
    """A (height, width, bands) GeoTIFF, bands interleaved per pixel as GDAL writes them."""
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig")


def write_folders(root: Path, x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> Path:
    """Class folders of (height, width, bands) GeoTIFFs, values multiplied by `scale`."""
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        write_tiff(folder / f"{CLASSES[label]}_{i}.tif",
                   np.moveaxis(image * scale, 0, 2).astype(np.float32))
    return root


def run(model: Path, data_path: Path, out: Path, *extra: str) -> int:
    return main(["explain", "--model", str(model), "--data", str(data_path), "--out", str(out),
                 *FAST, *extra])


def top_band(out: Path, cls: str, method: str = "feature_ablation", table: str = "importance"):
    rows = [r for r in _csv(out / f"{table}.csv") if r["method"] == method
            and r["grouping"] == "true_class" and r["class"] == cls]
    return max(rows, key=lambda r: float(r["share"]))["band"]


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_planted(out: Path) -> None:
    for c, band in PLANTED.items():
        assert top_band(out, CLASSES[c]) == BANDS[band]


def test_geotiff_class_folders_with_scale_groups_and_stats(onnx_model, data, tmp_path, capsys):
    root = write_folders(tmp_path / "patches", *data, scale=1000.0)
    stats = tmp_path / "stats.json"
    out = tmp_path / "out"
    code = run(onnx_model, root, out, "--bands", ",".join(BANDS), "--scale", "0.001",
               "--band-groups", "odd=band1,band3,band5;A=band0", "--norm-stats", str(stats),
               "--max-per-class", "8")
    assert code == 0, capsys.readouterr().err
    assert_planted(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["layout_on_disk"] == "channels_first"  # GDAL reads bands first
    assert summary["classes"] == CLASSES and summary["data"]["n_images"] == 8 * N_CLASSES
    assert "× 0.001" in summary["data"]["preprocessing"]
    assert "(x − mean) / std" in summary["data"]["preprocessing"]
    assert summary["band_groups"] == {"odd": ["band1", "band3", "band5"], "A": ["band0"],
                                      "other": ["band2", "band4"]}
    saved = json.loads(stats.read_text())
    assert saved["bands"] == BANDS and len(saved["std"]) == N_BANDS
    # group methods score groups with grouped masks: class 0's planted band0 is group A
    assert top_band(out, CLASSES[0], table="group_importance") == "A"
    assert {r["method"] for r in _csv(out / "group_importance.csv")} == {"saliency",
                                                                         "feature_ablation"}
    # the saved statistics are read back on the next run
    assert run(onnx_model, root, tmp_path / "again", "--bands", ",".join(BANDS), "--scale",
               "0.001", "--norm-stats", str(stats), "--max-per-class", "8") == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert f"from {stats}" in again["data"]["preprocessing"]


def test_csv_list_with_relative_paths_and_class_numbers(onnx_model, data, tmp_path):
    x, y = data
    (tmp_path / "img").mkdir()
    lines = ["path,label"]
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        tifffile.imwrite(tmp_path / "img" / f"p{i}.tiff", image)  # (bands, height, width)
        lines.append(f"img/p{i}.tiff,{label}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert run(onnx_model, tmp_path / "list.csv", out, "--bands", ",".join(BANDS), "--classes",
               ",".join(CLASSES)) == 0
    assert_planted(out)
    assert json.loads((out / "summary.json").read_text())["data"]["layout_on_disk"] == \
        "channels_first"


def test_hdf5_with_keys(onnx_model, data, tmp_path):
    x, y = data
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["group/images"] = np.moveaxis(x, 1, 3)
        f["group/labels"] = y
    out = tmp_path / "out"
    assert run(onnx_model, path, out, "--x-key", "group/images", "--y-key", "group/labels",
               "--bands", ",".join(BANDS), "--classes", ",".join(CLASSES)) == 0
    assert_planted(out)


def test_eurosat_order_labels_the_planted_band_b8a(tmp_path):
    """Class 1's signal sits in the 13th band of the file, which EuroSAT's order calls B8A."""
    rng = np.random.default_rng(0)
    n = 120
    y = np.arange(n) % 2
    x = rng.normal(1500, 300, size=(n, 13, 8, 8)).astype(np.float32)
    x[y == 1, 12, 2:6, 2:6] += 2000
    x[:, 3, 2:6, 2:6] += rng.choice([0, 2000], size=(n, 1, 1))  # a distractor in B04
    net = train_torch((x - 1500) / 300, y, epochs=80)
    # the model standardises its input itself, as many do
    model = torch.nn.Sequential(_Standardise(1500, 300), net).eval()
    onnx_path = export_onnx(model, x, tmp_path / "eurosat.onnx")
    root = tmp_path / "EuroSAT"
    for i in range(40):
        folder = root / ["AnnualCrop", "Forest"][y[i]]
        folder.mkdir(parents=True, exist_ok=True)
        write_tiff(folder / f"{folder.name}_{i}.tif", np.moveaxis(x[i], 0, 2).astype(np.uint16))
    out = tmp_path / "out"
    assert run(onnx_path, root, out, "--sensor", "eurosat") == 0
    assert top_band(out, "Forest") == "B8A"
    assert top_band(out, "Forest", table="group_importance") == "NIR"
    summary = json.loads((out / "summary.json").read_text())
    assert [b["band"] for b in summary["bands"]][-1] == "B8A"
    assert summary["bands"][-1]["wavelength_nm"] == 865
    assert (out / "figures" / "spectrum_saliency.png").exists()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _retile(path: Path, shape_change) -> None:
    write_tiff(path, shape_change(tifffile.imread(path)))


FOLDER_CASES = {
    "truncated TIFF": (lambda f: _truncate(f), "cannot be read as an image"),
    "band count": (lambda f: _retile(f, lambda a: a[..., :5]), "has 5 bands of 12×12 pixels"),
    "image size": (lambda f: _retile(f, lambda a: a[:10, :10]), "has 6 bands of 10×10 pixels"),
    "non-image file": (lambda f: (f.parent / "notes.txt").write_text("hi"),
                       "not a .tif/.tiff/.jp2 image"),
    "NaN": (lambda f: _retile(f, lambda a: np.where(a > 1, np.nan, a)),
            "NaN or infinite values"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_bad_file_in_class_folders_is_named_and_can_be_skipped(case, onnx_model, data, tmp_path,
                                                               capsys):
    root = write_folders(tmp_path / "patches", *data)
    change, message = FOLDER_CASES[case]
    bad = sorted((root / CLASSES[1]).iterdir())[3]
    change(bad)
    named = bad if case != "non-image file" else bad.parent / "notes.txt"
    out = tmp_path / "out"
    assert run(onnx_model, root, out, "--bands", ",".join(BANDS)) == 2
    err = capsys.readouterr().err
    assert message in err and str(named) in err and "--skip-bad" in err, err
    assert "Traceback" not in err and not out.exists()

    assert run(onnx_model, root, out, "--bands", ",".join(BANDS), "--skip-bad") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["image"] for s in summary["skipped"]] == [str(named)]
    assert any(note.startswith(f"skipped {named}") for note in summary["notes"])
    assert summary["data"]["images_skipped"] == 1


def test_nodata_value_is_named(onnx_model, data, tmp_path, capsys):
    x, y = data
    x = x.copy()
    x[4, 2, 0, 0] = -9999
    root = write_folders(tmp_path / "patches", x, y)
    assert run(onnx_model, root, tmp_path / "out", "--nodata", "-9999") == 2
    err = capsys.readouterr().err
    assert "nodata pixels (value -9999) in band B3" in err and "_4.tif" in err


def test_empty_class_folder(onnx_model, data, tmp_path, capsys):
    root = write_folders(tmp_path / "patches", *data)
    (root / "kind9").mkdir()
    assert run(onnx_model, root, tmp_path / "out") == 2
    assert "class folder 'kind9' holds no .tif/.tiff/.jp2 images" in capsys.readouterr().err


def test_csv_rows_unknown_labels_and_missing_files(onnx_model, data, tmp_path, capsys):
    x, y = data
    tifffile.imwrite(tmp_path / "a.tif", x[0])
    (tmp_path / "missing.csv").write_text("a.tif,kind0\nb.tif,kind1\n")
    assert run(onnx_model, tmp_path / "missing.csv", tmp_path / "out") == 2
    assert "missing.csv, row 2:" in (err := capsys.readouterr().err) and "no such file" in err
    (tmp_path / "short.csv").write_text("a.tif\n")
    assert run(onnx_model, tmp_path / "short.csv", tmp_path / "out") == 2
    assert "short.csv, row 1: expected 'path,label'" in capsys.readouterr().err
    (tmp_path / "labels.csv").write_text("a.tif,kind0\na.tif,cat\n")
    assert run(onnx_model, tmp_path / "labels.csv", tmp_path / "out", "--classes",
               ",".join(CLASSES)) == 2
    assert "label 'cat' (image 1) is not among the class names" in capsys.readouterr().err


def test_hdf5_missing_key_and_mismatched_counts(onnx_model, data, tmp_path, capsys):
    x, y = data
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = x
        f["y"] = y[:-1]
    assert run(onnx_model, path, tmp_path / "out", "--x-key", "images") == 2
    err = capsys.readouterr().err
    assert "no dataset 'images' (datasets: x, y)" in err and "--x-key" in err
    assert run(onnx_model, path, tmp_path / "out") == 2
    assert f"{len(x)} images but {len(x) - 1} labels" in capsys.readouterr().err


def test_sensor_presets_and_groups(capsys):
    assert main(["sensors"]) == 0
    listed = capsys.readouterr().out
    for name in ("sentinel2", "eurosat", "sentinel2-l2a", "landsat8", "rgb", "rgbn"):
        assert f"{name}:" in listed
    assert SENSORS["eurosat"].band_names[-1] == "B8A"
    assert SENSORS["sentinel2"].band_names[8] == "B8A"
    assert len(SENSORS["sentinel2-l2a"].bands) == 12 and "B10" not in SENSORS["sentinel2-l2a"].band_names
    groups = parse_groups("VIS=B02,B03,B04; NIR=B08,B8A")
    assert partition(groups, SENSORS["sentinel2"].band_names)["NIR"] == [7, 8]
    with pytest.raises(XbandError, match="groups 'A' and 'B'"):
        partition({"A": ["B02"], "B": ["B02"]}, SENSORS["sentinel2"].band_names)
    with pytest.raises(XbandError, match="not NAME=BAND"):
        parse_groups("VIS")
    with pytest.raises(XbandError, match="Presets with 12 bands: sentinel2-l2a"):
        image_set(np.zeros((2, 12, 4, 4)), sensor="eurosat")


def test_torch_dataloader_from_python(data):
    x, y = data
    net = train_torch(*planted_images(n_per_class=40, seed=0), epochs=40)
    from tests.test_explain import as_loaded

    model = as_loaded(net, N_BANDS, N_CLASSES)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x * 10), torch.from_numpy(y)),
        batch_size=8)
    data_set = from_torch(loader, preprocess=Preprocess(scale=0.1))
    result = explain(model, data_set, methods="saliency", progress=False, n_boot=10)
    assert result.summary["accuracy"]["overall"] > 0.8
    assert result.summary["data"]["preprocessing"] == "× 0.1"


# ------------------------------------------------------- files as GDAL, rasterio and terra write them
GDAL_VARIANTS = {
    "LZW": dict(compress="lzw"),
    "DEFLATE": dict(compress="deflate", predictor=2),
    "ZSTD": dict(compress="zstd"),
    "tiled": dict(tiled=True, blockxsize=16, blockysize=16, compress="lzw"),
    "BigTIFF": dict(BIGTIFF="YES", compress="lzw"),
    "Cloud-Optimized": dict(driver="COG", compress="lzw", blocksize=16),
    "JPEG2000": dict(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES"),
}


def write_gdal(path: Path, image: np.ndarray, **options) -> None:
    """A (bands, height, width) raster written by GDAL (through rasterio) with `options`."""
    import rasterio
    from rasterio.transform import from_origin

    options = dict(options)
    driver = options.pop("driver", "GTiff")
    with rasterio.open(path, "w", driver=driver, width=image.shape[2], height=image.shape[1],
                       count=image.shape[0], dtype=image.dtype.name, crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 10, 10), **options) as dst:
        dst.write(image)


def test_every_gdal_compression_and_layout_reads_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 10000, size=(3, 6, 40, 40)).astype(np.uint16)
    for name, options in GDAL_VARIANTS.items():
        root = tmp_path / name
        for i, image in enumerate(images):
            (root / f"kind{i % 2}").mkdir(parents=True, exist_ok=True)
            suffix = ".jp2" if options.get("driver") == "JP2OpenJPEG" else ".tif"
            write_gdal(root / f"kind{i % 2}" / f"p{i}{suffix}", image, **options)
        data = xband.read_data(root)
        order = [0, 2, 1]  # kind0 holds images 0 and 2, kind1 image 1
        np.testing.assert_array_equal(data.read(np.arange(3)), images[order].astype(np.float32),
                                      err_msg=name)


def test_a_cloud_optimized_geotiff_folder_explains(onnx_model, data, tmp_path):
    x, y = data
    root = tmp_path / "cogs"
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        write_gdal(root / CLASSES[label] / f"p{i}.tif", image, driver="COG", compress="zstd")
    out = tmp_path / "out"
    assert run(onnx_model, root, out, "--bands", ",".join(BANDS)) == 0
    assert_planted(out)


def test_gdal_metadata_gives_band_names_nodata_and_a_scale_note(onnx_model, data, tmp_path,
                                                               capsys):
    import rasterio

    x, y = data
    root = tmp_path / "patches"
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        path = root / CLASSES[label] / f"p{i}.tif"
        write_gdal(path, image, compress="lzw", nodata=-9999)
        with rasterio.open(path, "r+") as dst:
            dst.descriptions = tuple(BANDS)
            dst.scales = (0.5,) * N_BANDS
    (root / CLASSES[0] / "p0.tif.aux.xml").write_text("<PAMDataset/>")  # a GDAL sidecar
    data_set = xband.read_data(root)
    assert data_set.band_names == tuple(BANDS) and data_set.nodata == -9999
    assert any("scale 0.5" in note for note in data_set.notes)
    bad = sorted((root / CLASSES[2]).iterdir())[1]
    with rasterio.open(bad, "r+") as dst:
        image = dst.read()
        image[3, 5, 5] = -9999
        dst.write(image)
    assert run(onnx_model, root, tmp_path / "out") == 2
    assert f"{bad}: has nodata pixels (value -9999) in band {BANDS[3]}" in capsys.readouterr().err


def test_pages_written_by_tifffile_are_bands(tmp_path):
    image = np.random.default_rng(0).normal(size=(6, 12, 12)).astype(np.float32)
    (tmp_path / "a").mkdir()
    tifffile.imwrite(tmp_path / "a" / "p.tif", image)  # six single-band pages
    np.testing.assert_array_equal(xband.read_data(tmp_path).read(np.array([0]))[0], image)


def test_when_no_file_reads_the_message_shows_the_first_files_real_cause(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / "k" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "k" / f"{name}.tif").write_bytes(b"II*\x00" + bytes(20))
    with pytest.raises(XbandError) as err:
        xband.read_data(tmp_path)
    message = str(err.value)
    assert "none of the 2 files can be read" in message and f"{tmp_path / 'k' / 'a.tif'}:" in message
    assert "RasterioIOError" in message  # GDAL's own words, not a guess


def test_hdf5_from_r_names_reversed_axes_and_reads_three_axes_as_single_bands(onnx_model, data,
                                                                             tmp_path, capsys):
    x, y = data
    path = tmp_path / "from_r.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.ascontiguousarray(np.transpose(x, (1, 3, 2, 0)))  # (bands, W, H, N), as R
        f["y"] = y
    assert run(onnx_model, path, tmp_path / "out") == 2
    assert "axes look reversed (written from R or MATLAB?)" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.h5"
    with h5py.File(unlabelled, "w") as f:
        f["x"] = np.ascontiguousarray(np.transpose(x, (1, 3, 2, 0)))
    assert run(onnx_model, unlabelled, tmp_path / "out") == 2
    assert "axes look reversed" in capsys.readouterr().err
    # (N, H, W): N single-band images, explained by a one-band model
    one = x[:, PLANTED[0]]
    net = train_torch(one[:, None], (y == 0).astype(np.int64), epochs=40)
    single = export_onnx(net, one[:, None], tmp_path / "one_band.onnx")
    three = tmp_path / "three.h5"
    with h5py.File(three, "w") as f:
        f["x"], f["y"] = one, (y == 0).astype(np.int64)
    assert run(single, three, tmp_path / "single", "--classes", "other,kind0") == 0
    summary = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert summary["data"]["image_shape"] == [1, 12, 12]
    with h5py.File(three, "a") as f:
        del f["y"]
    with pytest.raises(XbandError, match="3 axes"):
        xband.read_data(three)


EUROSAT_DIR = ("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")


def torchgeo_eurosat(root: Path, per_class: int = 3):
    """torchgeo's EuroSAT read from a folder laid out as its download unpacks (no download):
    13-band uint16 GeoTIFFs in class folders, and the test split's list of files."""
    eurosat = pytest.importorskip("torchgeo.datasets").EuroSAT
    rng = np.random.default_rng(0)
    names = []
    for c, cls in enumerate(["AnnualCrop", "Forest", "River"]):
        folder = root.joinpath(*EUROSAT_DIR, cls)
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(500, 3000, (16, 16, 13)).astype(np.uint16)
            image[4:12, 4:12, 2 + 3 * c] += 4000  # a bright square in one band per class
            write_tiff(folder / f"{cls}_{i + 1}.tif", image)
            names.append(f"{cls}_{i + 1}.jpg")  # the split lists name .jpg files
    (root / "eurosat-test.txt").write_text("\n".join(names) + "\n")
    return eurosat(str(root), split="test")


def test_torchgeo_eurosat_dataset_and_loader_match_the_folder_reader(tmp_path):
    dataset = torchgeo_eurosat(tmp_path / "eurosat")
    assert isinstance(dataset[0], dict) and set(dataset[0]) == {"image", "label"}
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(13, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    from xband import load_model

    model = load_model(net, verbose=False)
    folder = tmp_path.joinpath("eurosat", *EUROSAT_DIR)
    runs = [explain(model, source, methods="saliency", sensor="eurosat", progress=False,
                    n_boot=10)
            for source in (dataset, torch.utils.data.DataLoader(dataset, batch_size=4), folder)]
    for result in runs[:2]:
        assert result.class_names == ["AnnualCrop", "Forest", "River"]  # dataset.classes
        assert result.band_names[-1] == "B8A"  # torchgeo's order, checked against the preset
        np.testing.assert_array_equal(result.labels, runs[2].labels)
        np.testing.assert_allclose(result.scores["saliency"], runs[2].scores["saliency"],
                                   rtol=1e-6)
    summary = runs[0].summary
    assert summary["model"]["final_activation"] == "none"
    assert summary["model"]["output_space"] == "logits"
    assert not any("could not be stripped" in note for note in summary["notes"])
    with pytest.raises(XbandError, match="names its bands .* B8A.*eurosat puts B8A last"):
        from_torch(dataset, sensor="sentinel2")


class DictItems(torch.utils.data.Dataset):
    """Items as dicts, as torchgeo gives them."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def test_dict_items_with_named_keys_multi_hot_labels_and_segmentation_masks():
    image = torch.rand(N_BANDS, 8, 8)
    segmentation = from_torch(DictItems([{"image": image, "mask": torch.ones(8, 8)}]))
    assert segmentation.segmentation and segmentation.labels is None  # masks, read on demand
    assert segmentation.read_masks(np.array([0]), 2).tolist() == [[[1] * 8] * 8]
    with pytest.raises(XbandError, match="keys img, y and no 'image'; name the image's key"):
        from_torch(DictItems([{"img": image, "y": torch.tensor(1)}]))
    named = from_torch(DictItems([{"img": image, "y": torch.tensor(c)} for c in (1, 0)]),
                       image_key="img", label_key="y")
    np.testing.assert_array_equal(named.labels, [1, 0])
    np.testing.assert_allclose(named.take(np.array([0]))[0], image.numpy())
    multi = from_torch(DictItems([{"image": image, "label": torch.tensor([0, 1, 1])},
                                  {"image": image, "label": torch.tensor([1, 0, 0])}]))
    assert multi.multi_label and multi.labels.tolist() == [[False, True, True],
                                                            [True, False, False]]
    unlabelled = from_torch(DictItems([{"image": image}]))
    assert unlabelled.labels is None
