"""Hyperspectral data as its users hold it: per-pixel spectrum models (torch 1-D CNN, Keras
Dense), spectra as arrays, CSV tables and scenes with a label map (ENVI, MATLAB .mat), regions
that break at gaps in the band centres, and the spectrum figures."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch import nn

import xband
from tests.planted import keras_python
from xband.data.regions import band_regions, parse_regions
from xband.data.sensors import get_sensor
from xband.data.wavelengths import spectral_gaps
from xband.demo.spectra import (
    ABSORPTION_NM,
    CLASS_NAMES,
    gapped_wavelengths,
    pixel_spectra,
    train_conv1d,
)
from xband.errors import XbandError
from xband.layout import Layout
from xband.methods import METHODS
from xband.report import plots

# the methods that measure an effect (README, "The raw-gradient trap")
EFFECT_METHODS = [m for m in METHODS if m not in ("saliency", "scaled_saliency", "input_x_gradient")]
RUN = dict(classes=CLASS_NAMES, all_images=True, n_boot=50, background_images=4,
           examples_per_class=1, progress=False)


@pytest.fixture(scope="module")
def spectra():
    """The planted per-pixel set: training spectra (N, B) with water-vapour gaps in the band
    centres, held-out spectra, and the centres."""
    torch.set_num_threads(2)
    x, y, wavelength = pixel_spectra(40, seed=0)
    test_x, test_y, _ = pixel_spectra(6, seed=1)
    return x, y, test_x, test_y, wavelength


@pytest.fixture(scope="module")
def conv1d(spectra):
    """A torch 1-D CNN on (N, 1, B) spectra, trained on the planted set."""
    x, y, test_x, test_y, _ = spectra
    net = train_conv1d(x, y)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(test_x[:, None])).argmax(1).numpy() == test_y).mean()
    assert accuracy >= 0.9  # the dips are learnt; otherwise the tests say nothing
    return net


KERAS_DENSE = """
import sys
import keras
import numpy as np

keras.utils.set_random_seed(0)
data, out = np.load(sys.argv[1]), sys.argv[2]
x, y = data["x"], data["y"]
norm = keras.layers.Normalization()
norm.adapt(x)
model = keras.Sequential([
    keras.Input((x.shape[1],)), norm,
    keras.layers.Dense(32, activation="relu"),
    keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x, y, epochs=60, batch_size=64, verbose=0)
model.save(f"{out}/dense.keras")
steps = keras.layers.Normalization(axis=1)  # per band of (N, B, 1)
steps.adapt(x[:, :, None])
conv = keras.Sequential([
    keras.Input((x.shape[1], 1)), steps,
    keras.layers.Conv1D(8, 7, padding="same", activation="relu"),
    keras.layers.MaxPooling1D(4), keras.layers.Flatten(),
    keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
])
conv.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
conv.fit(x[:, :, None], y, epochs=40, batch_size=64, verbose=0)
conv.save(f"{out}/conv1d.keras")
"""


@pytest.fixture(scope="module")
def keras_spectra(spectra, tmp_path_factory):
    """Keras models of spectra, trained in TensorFlow's own process on the planted set: a
    Dense network (input (None, B)) and a Conv1D network (input (None, B, 1))."""
    folder = tmp_path_factory.mktemp("keras_spectra")
    x, y, *_ = spectra
    np.savez(folder / "train.npz", x=x, y=y)
    keras_python(KERAS_DENSE, str(folder / "train.npz"), str(folder))
    return folder


@pytest.fixture(scope="module")
def keras_dense(keras_spectra, keras_cache):
    return xband.load_model(keras_spectra / "dense.keras", cache_dir=keras_cache, verbose=False)


@pytest.mark.keras
def test_keras_conv1d_takes_the_bands_as_steps(keras_spectra, keras_cache, spectra):
    _, _, test_x, test_y, wavelength = spectra
    model = xband.load_model(keras_spectra / "conv1d.keras", cache_dir=keras_cache,
                             probe=test_x[:8], verbose=False)
    assert (model.layout, model.n_bands) == (Layout.SPECTRA_CHANNELS_LAST, len(wavelength))
    assert model.fidelity.passed
    result = xband.explain(model, (test_x, test_y), wavelengths=wavelength,
                           **{**RUN, "methods": ["feature_ablation", "integrated_gradients"]})
    _assert_each_dip_first(result, wavelength, ["feature_ablation", "integrated_gradients"])


def _top(importance, method: str) -> dict[str, str]:
    rows = importance[(importance["method"] == method) & (importance["grouping"] == "true_class")
                      & (importance["rank"] == 1)]
    return dict(zip(rows["class"], rows["band"], strict=True))


def _assert_each_dip_first(result, wavelength, methods):
    for method in methods:
        top = _top(result.importance_of(), method)
        for c, nm in ABSORPTION_NM.items():
            planted = result.band_names[int(np.argmin(np.abs(wavelength - nm)))]
            assert planted in result.members()[top[CLASS_NAMES[c]]], (method, CLASS_NAMES[c],
                                                                   top[CLASS_NAMES[c]])


@pytest.mark.parametrize("which", ["torch_conv1d", pytest.param("keras_dense",
                                                                marks=pytest.mark.keras)])
def test_every_effect_method_finds_each_class_absorption_region_first(which, spectra, request):
    _, _, test_x, test_y, wavelength = spectra
    if which == "torch_conv1d":
        model = xband.load_model(request.getfixturevalue("conv1d"), n_bands=len(wavelength),
                                 verbose=False)
        assert model.layout is Layout.SPECTRA_CHANNELS_FIRST
    else:
        model = request.getfixturevalue("keras_dense")
        assert model.layout is Layout.SPECTRA and model.spatial_size == (1, 1)
        assert "told from the graph's input" in " ".join(model.notes)
    result = xband.explain(model, (test_x, test_y), wavelengths=wavelength, **RUN)
    assert result.regions is not None  # 197 bands with wavelengths: by spectral region
    _assert_each_dip_first(result, wavelength, EFFECT_METHODS)


def _write_envi(stem, cube: np.ndarray, header: dict[str, str], interleave: str = "bsq") -> None:
    """An ENVI image: `cube` (H, W, B) in `interleave` order beside its header."""
    order = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    stored = np.ascontiguousarray(cube.transpose(order))
    stored.tofile(stem.with_suffix(".img"))
    types = {np.dtype("float32"): 4, np.dtype("uint8"): 1, np.dtype("int16"): 2}
    fields = {"samples": cube.shape[1], "lines": cube.shape[0], "bands": cube.shape[2],
              "header offset": 0, "data type": types[cube.dtype], "interleave": interleave,
              "byte order": 0, **header}
    stem.with_suffix(".hdr").write_text(
        "ENVI\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))


def _scene(test_x, test_y, size=(8, 9), seed=3):
    """A cube (H, W, B) holding the spectra at random positions (in row-major order), noise
    elsewhere, and its label map (class + 1; 0 elsewhere)."""
    rng = np.random.default_rng(seed)
    height, width = size
    positions = np.sort(rng.choice(height * width, len(test_x), replace=False))
    cube = rng.uniform(0.1, 0.3, (height * width, test_x.shape[1])).astype(np.float32)
    labels = np.zeros(height * width, dtype=np.uint8)
    cube[positions], labels[positions] = test_x, test_y + 1
    return cube.reshape(height, width, -1), labels.reshape(height, width)


def _wavelength_list(wavelength) -> str:
    return "{" + ", ".join(f"{v:.4f}" for v in wavelength) + "}"


def test_csv_table_and_envi_scene_give_the_same_answer(spectra, conv1d, tmp_path):
    """The held-out spectra as arrays, as a CSV table of spectra (a column per band named by
    its wavelength, class names as labels) and as an ENVI scene with an ENVI classification
    label map give the same pixels, wavelengths, classes and scores."""
    _, _, test_x, test_y, wavelength = spectra
    table = tmp_path / "spectra.csv"
    header = ",".join(f"{v:.4f}" for v in wavelength) + ",label"
    rows = [",".join(f"{v:.9g}" for v in x) + f",{CLASS_NAMES[c]}" for x, c in zip(
        test_x, test_y, strict=True)]
    table.write_text(header + "\n" + "\n".join(rows) + "\n")
    cube, label_map = _scene(test_x, test_y)
    _write_envi(tmp_path / "cube", cube, {"wavelength units": "Nanometers",
                                          "wavelength": _wavelength_list(wavelength)})
    _write_envi(tmp_path / "gt", label_map[:, :, None], {
        "file type": "ENVI Classification", "classes": len(CLASS_NAMES) + 1,
        "class names": "{Unclassified, " + ", ".join(CLASS_NAMES) + "}"})
    from_csv = xband.read_data(table, classes=CLASS_NAMES)
    from_envi = xband.read_data(tmp_path / "cube.hdr", labels=tmp_path / "gt.hdr")
    assert from_envi.class_names == CLASS_NAMES  # from the classification header
    assert from_csv.wavelengths == pytest.approx(wavelength, abs=1e-4)
    assert from_envi.wavelengths == pytest.approx(wavelength, abs=1e-4)
    model = xband.load_model(conv1d, n_bands=len(wavelength), verbose=False)
    run = {**RUN, "methods": ["feature_ablation", "integrated_gradients", "permutation"]}
    run.pop("classes")
    results = [xband.explain(model, data, **run) for data in (from_csv, from_envi)]
    results.append(xband.explain(model, (test_x, test_y), wavelengths=wavelength,
                                 classes=CLASS_NAMES, **run))
    for other in results[1:]:
        assert list(other.regions) == list(results[0].regions)
        for method in run["methods"]:
            np.testing.assert_allclose(other.scores[method], results[0].scores[method],
                                       rtol=1e-5, atol=1e-6)
        assert _top(other.importance_of(), "feature_ablation") == _top(results[0].importance_of(),
                                                                  "feature_ablation")
    _assert_each_dip_first(results[1], wavelength, ["feature_ablation", "integrated_gradients"])


def _matlab_73(path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file: HDF5 behind a 512-byte MATLAB header, arrays stored column-major
    (h5py sees their axes reversed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in arrays.items():
            f[name] = np.ascontiguousarray(array.T)
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(head.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


def test_mat_files_as_the_benchmarks_ship_them(spectra, tmp_path):
    """Indian Pines ships as two MATLAB files ('indian_pines_corrected' (H, W, B) and
    'indian_pines_gt' (H, W)); v7.3 files are HDF5 with the axes reversed. Both read to the
    labelled pixels, unlabelled ones left out, classes by label value."""
    _, _, test_x, test_y, wavelength = spectra
    cube, label_map = _scene(test_x, test_y)
    scipy.io.savemat(tmp_path / "Indian_pines_corrected.mat", {"indian_pines_corrected": cube})
    scipy.io.savemat(tmp_path / "Indian_pines_gt.mat", {"indian_pines_gt": label_map})
    _matlab_73(tmp_path / "scene73.mat", {"cube": cube, "gt": label_map.astype(np.float64)})
    (tmp_path / "wl.txt").write_text("\n".join(map(str, wavelength)))
    v5 = xband.read_data(tmp_path / "Indian_pines_corrected.mat",
                         labels=tmp_path / "Indian_pines_gt.mat", wavelengths=tmp_path / "wl.txt")
    v73 = xband.read_data(tmp_path / "scene73.mat", x_key="cube", y_key="gt",
                          classes=CLASS_NAMES)
    for data in (v5, v73):
        assert len(data) == len(test_x)
        np.testing.assert_array_equal(data.take(np.arange(len(data)))[:, :, 0, 0], test_x)
        np.testing.assert_array_equal(data.labels, test_y)
    assert v5.class_names == tuple(f"class {v}" for v in range(1, 6))
    assert any("label-map values 1, 2, 3, 4, 5 → model outputs 0-4" in n for n in v5.notes)
    scipy.io.savemat(tmp_path / "two.mat", {"a": cube, "b": cube, "gt": label_map})
    with pytest.raises(XbandError, match=r"two.mat: holds 'a' \(8, 9, 197\), 'b' .*2 of them "
                                         r"have 3 axes. Name the cube with cube_key=") as err:
        xband.read_data(tmp_path / "two.mat")
    assert "Name the cube with --x-key." in err.value.cli


def test_patch_sets_and_a_reproducible_held_out_split():
    """Patches around labelled pixels (mirrored past the edge), the labelled pixel in the
    middle; a held-out split draws the same pixels with the same seed, and the training part
    is the rest."""
    rng = np.random.default_rng(0)
    cube = rng.random((6, 7, 5)).astype(np.float32)
    label_map = rng.integers(0, 4, (6, 7))
    label_map[0, 0] = 2
    patches = xband.read_scene(cube, label_map, patch_size=3, border="reflect")
    rows, cols = np.nonzero(label_map)
    x = patches.take(np.arange(len(patches)))
    assert x.shape == (len(rows), 5, 3, 3)
    np.testing.assert_array_equal(x[:, :, 1, 1], cube[rows, cols])
    np.testing.assert_array_equal(x[0, :, 0, 0], cube[1, 1])  # row -1, column -1 mirrored
    zeros = xband.read_scene(cube, label_map, patch_size=3, border="zero")
    assert (zeros.take(np.array([0]))[0, :, 0, :] == 0).all()
    held = xband.read_scene(cube, label_map, held_out=0.3, split_seed=4)
    again = xband.read_scene(cube, label_map, held_out=0.3, split_seed=4)
    train = xband.read_scene(cube, label_map, held_out=0.3, split_seed=4, part="train")
    pixels = {tuple(p) for p in zip(held.images.rows, held.images.cols, strict=True)}
    assert pixels == set(zip(again.images.rows, again.images.cols, strict=True))
    rest = set(zip(train.images.rows, train.images.cols, strict=True))
    assert not pixels & rest and pixels | rest == set(zip(rows, cols, strict=True))
    for value in (1, 2, 3):  # about 30% of each class
        n = int((label_map == value).sum())
        assert int((held.labels == value - 1).sum()) == max(1, round(0.3 * n))
    with pytest.raises(XbandError, match="patch_size must be an odd whole number .*not 4"):
        xband.read_scene(cube, label_map, patch_size=4)
    with pytest.raises(XbandError, match="the label map label map array is 5×7 pixels"):
        xband.read_scene(cube, label_map[:5])


def _avirislike() -> np.ndarray:
    """224 centres at ~9.4 nm over 400–2500 nm without channels 104–108, 150–163 and 220–224
    (the ones the corrected scenes drop): gaps near 1400 and 1900 nm, and at the end."""
    centres = np.linspace(400, 2500, 224)
    return np.delete(centres, np.r_[103:108, 149:163, 219:224])


@pytest.mark.parametrize("spec", ["auto", "50nm", "200nm", "VIS=400-700;NIR=750-1300"])
def test_regions_never_span_a_gap_in_the_band_centres(spec):
    """Windows ('auto', '50nm') and the runs of bands outside named ranges never hold bands on
    both sides of a gap (a range the user names holds what it names)."""
    rng = np.random.default_rng(1)
    band_lists = [_avirislike(), gapped_wavelengths(), np.array(get_sensor(
        "enmap-hyspecnet").wavelengths), np.delete(np.linspace(400, 2500, 200), np.r_[90:97])]
    for _ in range(5):  # random gaps
        centres = np.linspace(400, 2500, 210)
        cut = rng.choice(200, 3, replace=False)
        band_lists.append(np.delete(centres, np.concatenate([np.arange(c, c + rng.integers(
            2, 12)) for c in cut])))
    for wavelength in band_lists:
        gaps = spectral_gaps(wavelength)
        assert gaps, "each list has gaps"
        regions = band_regions(parse_regions(spec), wavelength,
                               [f"B{i}" for i in range(len(wavelength))])
        assert sorted(b for m in regions.values() for b in m) == list(range(len(wavelength)))
        named = parse_regions(spec).ranges or {}
        for name, members in regions.items():
            if name in named:
                continue
            low, high = wavelength[list(members)].min(), wavelength[list(members)].max()
            assert not any(low <= before and high >= after for before, after in gaps), (name,
                                                                                        gaps)


def test_gaps_are_the_removed_bands_not_uneven_spacing():
    assert spectral_gaps(np.linspace(400, 2500, 200)) == []
    enmap = get_sensor("enmap").wavelengths  # two detectors overlapping near 950 nm
    assert [round(a) for a, _ in spectral_gaps(enmap)] == [1390, 1760]
    aviris = _avirislike()
    assert [(round(a), round(b)) for a, b in spectral_gaps(aviris)] == [(1361, 1417), (1794,
                                                                                      1935)]
    regions = band_regions(parse_regions("auto"), aviris, [str(i) for i in range(len(aviris))])
    assert "1300-1361" in regions and "1417-1500" in regions  # named by the centre at the gap
    assert "1700-1794" in regions and not any(n.startswith("1800") for n in regions)


def test_spectrum_figure_stops_at_gaps_shows_class_means_and_warns(spectra, conv1d, tmp_path):
    """The report's spectrum figures: no line or interval across removed bands, each class's
    mean spectrum under its importance curve, the water-vapour windows marked and a caption
    warning where a class's top region lies next to one; single spectra get their attribution
    drawn along the spectrum; region runs say "regions"; wavelengths print in nm."""
    from xband.report.sections import explanation_drawings

    _, _, test_x, test_y, wavelength = spectra
    model = xband.load_model(conv1d, n_bands=len(wavelength), verbose=False)
    result = xband.explain(model, (test_x, test_y), methods=["integrated_gradients", "shapley"],
                           wavelengths=wavelength, **RUN)
    gaps = spectral_gaps(wavelength)
    assert len(gaps) == 2
    sections = explanation_drawings(result)
    drawings = {stem: (caption, draw) for items in sections.values()
                for stem, caption, draw in items}
    caption, draw = drawings["spectrum_integrated_gradients"]
    assert "⚠ Top feature next to a water-vapour absorption" in caption
    assert re.search(r"SWIR1 dip: B\d+ \(17\d\d nm\), next to the ~1900 nm absorption",
                     caption)  # the planted dip at 1750 nm
    assert "SWIR1 dip: 1700-1794 nm, next to the ~1900 nm" in drawings["spectrum_shapley"][0]
    fig = draw()
    line = fig.axes[0].lines[0].get_xdata()  # the importance curve of the first panel
    assert np.isnan(line).sum() == len(gaps)
    for before, after in gaps:
        finite = line[np.isfinite(line)]
        assert before in finite and after in finite
        i = int(np.flatnonzero(line == before)[0])
        assert np.isnan(line[i + 1]) and line[i + 2] == after  # broken between the two sides
    twins = [ax for ax in fig.axes if ax.get_ylabel() == "mean spectrum"]
    assert len(twins) == len(CLASS_NAMES)  # one class-mean spectrum per class panel
    mean_line = twins[0].lines[0].get_ydata()
    assert np.nanmax(mean_line) == pytest.approx(
        test_x[test_y == 0].mean(axis=0).max(), rel=1e-5)
    assert "Example spectra: each method's attribution along the spectrum" in sections
    example = next(iter(sections["Example spectra: each method's attribution along the spectrum"]))
    assert len(example[2]().axes) >= 2
    note = next(n for n in result.summary["notes"] if n.startswith("shapley:"))
    assert "regions → sampled Shapley values" in note and "antithetic region orders" in note
    assert "Spectral region rank by every method" in next(
        c for c, _ in drawings.values() if "rank by every method" in c)
    out = result.save(tmp_path / "report")
    page = (out / "report.html").read_text()
    assert f"<td>{wavelength[-1]:.1f}</td>" in page and "e+03" not in page.split(
        "Bands: spread")[1].split("</table>")[0]


def test_spectrum_lines_are_whole_without_gaps():
    table = xband.image_set(np.random.default_rng(0).random((4, 30), dtype=np.float32))
    assert table.images.shape == (4, 30, 1, 1)  # spectra held as 1×1 images
    x = np.linspace(400, 1000, 5)
    xs, (ys,) = plots._broken(x, (np.arange(5.0),), [])
    assert not np.isnan(xs).any() and len(xs) == 5


def test_model_input_is_told_from_the_first_layer_or_the_graph(tmp_path):
    """Spectra models in every form: torch MLP (Linear first), 1-D CNN (Conv1d, one channel),
    a Transformer embedding each band (Linear(1 → d), run to tell (N, B) from (N, B, 1)), and
    an ONNX file of (N, B) written by xband; the note says what was detected."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 3))
    loaded = xband.load_model(mlp, verbose=False)
    assert (loaded.layout, loaded.n_bands, loaded.spatial_size) == (Layout.SPECTRA, 30, (1, 1))
    assert ("input: spectra (batch, bands), 30 bands (told from the first layer, "
            "nn.Linear(30 → 16))") in loaded.notes
    conv = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                         nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(XbandError, match=r"nn.Conv1d\(1 → 4\). does not fix the number of bands"):
        xband.load_model(conv, verbose=False)
    spectra = np.random.default_rng(0).random((6, 30), dtype=np.float32)
    assert xband.load_model(conv, probe=spectra, verbose=False).layout is \
        Layout.SPECTRA_CHANNELS_FIRST

    class Tokens(nn.Module):
        def __init__(self, last: bool):
            super().__init__()
            self.last, self.embed, self.head = last, nn.Linear(1, 8), nn.Linear(8, 3)

        def forward(self, x):
            tokens = self.embed(x if self.last else x.unsqueeze(-1))  # (N, B, 8)
            return self.head(tokens.mean(dim=1))

    for last, layout in ((True, Layout.SPECTRA_CHANNELS_LAST), (False, Layout.SPECTRA)):
        assert xband.load_model(Tokens(last), n_bands=30, verbose=False).layout is layout
    from xband.models.load import write_onnx

    write_onnx(loaded, tmp_path / "mlp.onnx")
    again = xband.load_model(tmp_path / "mlp.onnx", verbose=False)
    assert (again.layout, again.n_bands) == (Layout.SPECTRA, 30)
    assert "told from the graph's input, (None, 30)" in again.notes[0]
    result = xband.explain(again, (spectra, np.array([0, 1, 2, 0, 1, 2])), methods="saliency",
                           all_images=True, n_boot=10, progress=False)
    assert result.scores["saliency"].shape == (6, 30)


def test_per_pixel_models_and_patch_models_say_what_data_they_need():
    spectra_model = xband.load_model(nn.Sequential(nn.Linear(5, 2)), verbose=False)
    patches = np.zeros((4, 5, 3, 3), np.float32)
    with pytest.raises(XbandError, match=r"images of 3×3 pixels, but the model classifies single "
                                         r"spectra .*patch size 1 \(patch_size=1"):
        xband.image_set(patches, [0, 1, 0, 1]).for_model(spectra_model)
    patch_model = xband.load_model(nn.Sequential(nn.Conv2d(5, 2, 3), nn.Flatten()),
                                   input_size=(3, 3), verbose=False)
    with pytest.raises(XbandError, match=r"single spectra \(1×1 pixels\), but the model takes "
                                         r"3×3-pixel patches. Read the scene as patches"):
        xband.image_set(np.zeros((4, 5), np.float32), [0, 1, 0, 1]).for_model(patch_model)


@pytest.mark.parametrize("name", ["aviris", "AVIRIS-NG", "prisma", "desis", "hymap"])
def test_hyperspectral_sensors_say_where_their_band_centres_are(name):
    with pytest.raises(XbandError, match=rf"sensor '{name}': xband ships no band-centre list "
                                         r"for .*Give them with wavelengths=FILE \(the scene's "
                                         r"ENVI .hdr"):
        get_sensor(name)
    with pytest.raises(XbandError, match="unknown sensor 'avirisx'"):
        get_sensor("avirisx")


def test_command_line_explains_an_envi_scene(spectra, conv1d, tmp_path, capsys):
    """`xband explain` on an ENVI scene and label map: a TorchScript 1-D CNN (told from its
    first layer), the held-out half of each class, by region, the report with the spectra."""
    from xband.cli.main import main

    _, _, test_x, test_y, wavelength = spectra
    cube, label_map = _scene(test_x, test_y)
    _write_envi(tmp_path / "cube", cube, {"wavelength": _wavelength_list(wavelength)},
                interleave="bil")
    _write_envi(tmp_path / "gt", label_map[:, :, None], {})
    scripted = torch.jit.script(conv1d)
    scripted.save(str(tmp_path / "net.pt"))
    run = ["explain", "--model", str(tmp_path / "net.pt"), "--data", str(tmp_path / "cube.hdr"),
           "--labels", str(tmp_path / "gt.hdr"), "--held-out", "0.5", "--classes",
           ",".join(CLASS_NAMES), "--methods", "feature_ablation", "--all-images", "--quiet",
           "--out", str(tmp_path / "out")]
    assert main(run) == 0
    printed = capsys.readouterr().out
    assert "split: the held-out 50% of each class's labelled pixels (15 pixels)" in printed
    assert "input: spectra (batch, 1, bands)" in printed
    assert "Top regions per class" in printed
    figures = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert "spectrum_feature_ablation.png" in figures
    assert main([*run[:-1], str(tmp_path / "patches"), "--patch-size", "3"]) == 2
    assert "images of 3×3 pixels, but the model classifies single spectra" in \
        capsys.readouterr().err


def test_the_documented_example_runs(tmp_path, monkeypatch):
    """docs/hyperspectral.md's example, as written: a scene in the Indian Pines format (two
    .mat files), a 1-D CNN trained on the training part of a split, the held-out part
    explained by region; every effect method puts each planted dip's region first."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "hyperspectral.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/hyperspectral.md", "exec"), scope)  # noqa: S102 - our own page
    result = scope["result"]
    assert (tmp_path / "indian_pines_report" / "report.html").exists()
    assert len(result.indices) == 45 and result.regions is not None  # 30% of 150 pixels
    _assert_each_dip_first(result, scope["wavelengths"], EFFECT_METHODS)
