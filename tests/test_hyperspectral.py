"""Hyperspectral images: wavelengths from files and metadata, spectral regions as features, and
the planted 200-band set whose classes differ by absorption features at known wavelengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xband
from xband.data.regions import band_regions, parse_regions
from xband.data.sensors import get_sensor
from xband.data.wavelengths import read_wavelengths
from xband.demo.spectra import ABSORPTION_NM, CLASS_NAMES, spectral_images, train_spectral
from xband.errors import XbandError
from xband.methods import METHODS
from xband.report import plots

GRADIENT_METHODS = [m for m, cls in METHODS.items() if not cls.grouped]
# sensitivities and the all-zero reference do not measure the effect of a region (README, "The
# raw-gradient trap"); every other method must find the planted absorption
EFFECT_METHODS = [m for m in METHODS if m not in ("saliency", "scaled_saliency", "input_x_gradient")]


@pytest.fixture(scope="module")
def spectral():
    """A small CNN trained on the planted 200-band set, and held-out images of it."""
    torch.set_num_threads(2)
    x, y, wavelength = spectral_images(24, seed=0)
    net = train_spectral(x, y)
    test_x, test_y, _ = spectral_images(6, seed=1)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean()
    assert accuracy >= 0.9  # the planted features are learnt; otherwise the test says nothing
    return xband.load_model(net), test_x, test_y, wavelength


@pytest.fixture(scope="module")
def by_region(spectral):
    """Every method on the planted set, by the automatic regions."""
    model, x, y, wavelength = spectral
    return xband.explain(model, (x, y), classes=CLASS_NAMES, wavelengths=wavelength,
                         regions="auto", all_images=True, n_boot=100, examples_per_class=0,
                         background_images=4, progress=False)


def _top(importance, method: str) -> dict[str, str]:
    rows = importance[(importance["method"] == method) & (importance["grouping"] == "true_class")
                      & (importance["rank"] == 1)]
    return dict(zip(rows["class"], rows["band"], strict=True))


def _band_at(wavelength: np.ndarray, nm: float) -> str:
    return f"B{int(np.argmin(np.abs(wavelength - nm))) + 1}"


def test_every_effect_method_puts_the_region_of_the_planted_absorption_first(by_region,
                                                                            spectral):
    wavelength = spectral[3]
    assert set(by_region.methods) == set(METHODS)
    for method in EFFECT_METHODS:
        top = _top(by_region.importance_of(), method)
        for c in ABSORPTION_NM:
            name = CLASS_NAMES[c]
            planted = _band_at(wavelength, ABSORPTION_NM[c])
            assert planted in by_region.members()[top[name]], (method, name, top[name])


def test_with_the_standardisation_given_as_preprocessing_every_method_finds_it(by_region,
                                                                                spectral):
    """The same weights with the network's per-band standardisation given to xband instead
    (what --norm-stats does): raw saliency and Input × Gradient, which depend on the units the
    gradient is taken in, then find every dip too; the effect methods' scores do not change."""
    model, x, y, wavelength = spectral
    standardise, rest = model.module[0], model.module[1:]
    stats = xband.Preprocess(mean=standardise.mean.flatten().numpy(),
                             std=standardise.std.flatten().numpy())
    data = xband.image_set(x, y, classes=CLASS_NAMES, wavelengths=wavelength, preprocess=stats)
    methods = ["saliency", "input_x_gradient", "integrated_gradients", "feature_ablation"]
    outside = xband.explain(xband.load_model(rest, verbose=False), data, methods=methods,
                            regions="auto", all_images=True, n_boot=100, examples_per_class=0,
                            background_images=4, progress=False)
    for method in ("saliency", "input_x_gradient"):
        top = _top(outside.importance_of(), method)
        for c in ABSORPTION_NM:
            planted = _band_at(wavelength, ABSORPTION_NM[c])
            assert planted in outside.members()[top[CLASS_NAMES[c]]], (method, CLASS_NAMES[c])
    for method in ("integrated_gradients", "feature_ablation"):
        inside = by_region.scores[method]
        np.testing.assert_allclose(outside.scores[method], inside, rtol=1e-3,
                                   atol=1e-4 * np.abs(inside).max())


def test_perturbation_methods_run_on_regions_gradient_methods_add_bands(by_region):
    n_regions = len(by_region.regions)
    assert n_regions == 21  # 100 nm windows over 400–2500 nm
    assert all(s.shape[1] == n_regions for s in by_region.scores.values())
    assert set(by_region.feature_scores["bands"]) == set(GRADIENT_METHODS)
    assert all(s.shape[1] == 200 for s in by_region.feature_scores["bands"].values())
    # a region's score of a gradient method is the sum of its bands' scores
    ig = by_region.scores["integrated_gradients"]
    bands = by_region.feature_scores["bands"]["integrated_gradients"]
    members = [[by_region.band_names.index(b) for b in m] for m in by_region.members().values()]
    np.testing.assert_allclose(ig, np.stack([bands[:, m].sum(axis=1) for m in members], axis=1))


def test_gradient_curves_peak_at_the_planted_absorption(by_region, spectral):
    wavelength = spectral[3]
    table = by_region.importance_of("bands")
    for method in ("integrated_gradients", "gradient_shap"):
        top = _top(table, method)
        for c in ABSORPTION_NM:
            name = CLASS_NAMES[c]
            peak = wavelength[int(top[name][1:]) - 1]
            assert abs(peak - ABSORPTION_NM[c]) <= 60, (method, name, peak)


def test_named_ranges_and_the_bands_between_them(spectral):
    model, x, y, wavelength = spectral
    result = xband.explain(
        model, (x, y), methods=["feature_ablation", "integrated_gradients"], classes=CLASS_NAMES,
        wavelengths=wavelength,
        regions="VIS=400-700;RE=700-750;NIR=750-1300;SWIR1=1500-1800;SWIR2=2000-2500",
        all_images=True, n_boot=50, examples_per_class=0, background_images=4, progress=False)
    assert list(result.regions)[:3] == ["VIS", "RE", "NIR"]
    gaps = [r for r in result.regions if r not in ("VIS", "RE", "NIR", "SWIR1", "SWIR2")]
    assert len(gaps) == 2 and all(1300 <= result.regions[g][0] < 2000 for g in gaps)
    expected = {"red dip": "VIS", "NIR dip": "NIR", "SWIR1 dip": "SWIR1", "SWIR2 dip": "SWIR2"}
    for method in result.methods:
        top = _top(result.importance_of(), method)
        assert {name: top[name] for name in expected} == expected, method


def test_report_of_a_region_run(spectral, tmp_path):
    model, x, y, wavelength = spectral
    result = xband.explain(model, (x[:10], y[:10]), methods=["integrated_gradients", "shapley"],
                           classes=CLASS_NAMES, wavelengths=wavelength, regions="auto",
                           all_images=True, n_boot=20, examples_per_class=1, background_images=2,
                           progress=False)
    # per band for a gradient method (200 points), per region for the others (two per region)
    for method, table, points in (("integrated_gradients", result.importance_of("bands"), 200),
                                  ("shapley", result.importance_of(), 2 * len(result.regions))):
        fig = plots.region_spectrum(table, method, result.regions, per_band=points == 200)
        assert len(fig.axes[0].lines[0].get_xdata()) == points
    out = result.save(tmp_path / "report")
    page = (out / "report.html").read_text()
    assert "Spectral region × class heat maps" in page and "Per-region maps" in page
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"spectrum_integrated_gradients.png", "spectrum_shapley.png"} <= figures
    band_table = (out / "band_importance.csv").read_text()
    assert "B200" in band_table and "shapley" not in band_table
    saved = np.load(out / "scores.npz")
    assert saved["scores_shapley"].shape[1] == len(result.regions)
    assert saved["band_scores_integrated_gradients"].shape[1] == 200


def test_many_bands_with_wavelengths_go_by_region_unless_told(spectral):
    model, x, y, wavelength = spectral
    run = dict(methods=["saliency"], classes=CLASS_NAMES, wavelengths=wavelength,
               all_images=True, n_boot=20, examples_per_class=0, progress=False)
    auto = xband.explain(model, (x[:8], y[:8]), **run)
    assert auto.regions is not None and any("spectral region" in n for n in auto.summary["notes"])
    per_band = xband.explain(model, (x[:8], y[:8]), regions="none", **run)
    assert per_band.regions is None and per_band.scores["saliency"].shape[1] == 200


def test_checks_delete_and_compare_by_region(by_region, spectral):
    """In a run by region the checks delete whole regions in each method's region order and
    rank regions by consensus: band ablation's deletion beats random region orders."""
    model, x, y, wavelength = spectral
    data = xband.image_set(x, y, classes=CLASS_NAMES, wavelengths=wavelength)
    checked = xband.evaluate(model, data, by_region, checks="faithfulness,agreement",
                             baselines="data", random_orders=4, n_boot=20)
    n_regions = len(by_region.regions)
    curves = checked.curves[(checked.curves["order"] == "feature_ablation")
                            & (checked.curves["curve"] == "deletion")]
    assert curves.groupby("class")["step"].max().eq(n_regions).all()
    rows = checked.faithfulness[(checked.faithfulness["method"] == "feature_ablation")
                                & (checked.faithfulness["curve"] == "deletion")
                                & (checked.faithfulness["metric"] == "accuracy")]
    dipped = rows[rows["class"] != "no dip"]
    assert (dipped["auc"] < dipped["auc_random"]).all(), dipped
    assert set(checked.consensus["band"]) == set(by_region.regions)


def test_wavelengths_from_text_and_envi_header(tmp_path):
    text = tmp_path / "wl.txt"
    text.write_text("# nm\n450\n550.5\n650\n")
    assert read_wavelengths(text) == (450.0, 550.5, 650.0)
    header = tmp_path / "cube.hdr"
    header.write_text("ENVI\nsamples = 8\nbands = 3\nwavelength units = Micrometers\n"
                      "wavelength = {\n 0.45, 0.55,\n 0.65}\n")
    assert read_wavelengths(header) == pytest.approx((450.0, 550.0, 650.0))
    micrometres = tmp_path / "um.txt"
    micrometres.write_text("0.45\n0.55\n")
    with pytest.raises(XbandError, match="look like micrometres"):
        read_wavelengths(micrometres)
    two = tmp_path / "two.txt"
    two.write_text("450\n550\n")
    with pytest.raises(XbandError, match=r"two.txt gives 2 wavelengths but the images have 3"):
        xband.image_set(np.zeros((2, 4, 4, 3), np.float32), bands=["a", "b", "c"],
                        wavelengths=two)
    no_field = tmp_path / "bare.hdr"
    no_field.write_text("ENVI\nbands = 3\n")
    with pytest.raises(XbandError, match="bare.hdr: the ENVI header has no 'wavelength"):
        read_wavelengths(no_field)


def test_wavelengths_from_geotiff_band_metadata(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    root = tmp_path / "patches"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        with rasterio.open(root / cls / "p.tif", "w", driver="GTiff", width=4, height=4,
                           count=3, dtype="float32") as dst:
            dst.write(np.random.default_rng(0).random((3, 4, 4), dtype=np.float32))
            for band, nm in enumerate((0.5, 0.6, 0.7), start=1):
                dst.update_tags(band, wavelength=str(nm), wavelength_units="Micrometers")
    data = xband.read_data(root)
    assert data.wavelengths == pytest.approx((500.0, 600.0, 700.0))


def test_region_specifications_are_checked():
    wavelength, names = [450.0, 550.0, 650.0, 800.0], ["b1", "b2", "b3", "b4"]
    regions = band_regions(parse_regions("VIS=400-600"), wavelength, names)
    assert regions == {"VIS": (0, 1), "650-800": (2, 3)}
    assert band_regions(parse_regions("200nm"), wavelength, names) == {
        "400-600": (0, 1), "600-800": (2, 3)}  # the last window is closed at its top
    with pytest.raises(XbandError, match="band b2 .550 nm. is in regions 'A' and 'B'"):
        band_regions(parse_regions("A=400-600;B=500-700"), wavelength, names)
    with pytest.raises(XbandError, match="region 'SWIR' .1500-1800 nm. holds no band"):
        band_regions(parse_regions("SWIR=1500-1800"), wavelength, names)
    with pytest.raises(XbandError, match="is not NAME=LOW-HIGH"):
        parse_regions("VIS=700-400")


def test_regions_need_wavelengths(spectral):
    model, x, y, _ = spectral
    with pytest.raises(XbandError, match="needs each band's wavelength"):
        xband.explain(model, (x[:4], y[:4]), classes=CLASS_NAMES, regions="auto", progress=False)


def test_command_line_reads_wavelengths_and_goes_by_region(spectral, tmp_path, capsys):
    from xband.cli.main import main

    model, x, y, wavelength = spectral
    torch.jit.save(torch.jit.trace(model.module, torch.from_numpy(x[:2])), tmp_path / "net.pt")
    np.savez(tmp_path / "cubes.npz", x=x[:10], y=y[:10])
    (tmp_path / "wl.txt").write_text("\n".join(f"{v:.2f}" for v in wavelength))
    run = ["explain", "--model", str(tmp_path / "net.pt"), "--data", str(tmp_path / "cubes.npz"),
           "--classes", ",".join(CLASS_NAMES), "--wavelengths", str(tmp_path / "wl.txt"),
           "--regions", "VIS=400-700;NIR=750-1300", "--methods", "feature_ablation",
           "--all-images", "--quiet", "--trust-pickle"]
    assert main([*run, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "regions: perturbation methods remove or shuffle each of the" in printed
    assert "Top regions per class" in printed
    assert "Top regions per class" in (tmp_path / "out" / "report.html").read_text()
    assert "VIS" in (tmp_path / "out" / "importance.csv").read_text()
    assert main([*run, "--out", str(tmp_path / "checked"), "--evaluate", "--checks",
                 "faithfulness"]) == 0
    curves = (tmp_path / "checked" / "deletion_curves.csv")
    assert curves.exists() and "feature_ablation" in curves.read_text()


def test_enmap_presets_name_the_bands_and_give_their_wavelengths():
    full, hyspecnet = get_sensor("enmap"), get_sensor("enmap-hyspecnet")
    assert len(full.bands) == 224 and len(hyspecnet.bands) == 202
    assert full.wavelengths[0] == pytest.approx(418.416) and full.wavelengths[-1] == pytest.approx(
        2445.3)
    assert full.wavelengths[90] > full.wavelengths[91]  # B91 (VNIR) lies past B92 (SWIR)
    left_out = set(full.band_names) - set(hyspecnet.band_names)
    assert left_out == {f"B{n}" for n in [*range(127, 142), *range(161, 168)]}
    regions = band_regions(parse_regions("auto"), hyspecnet.wavelengths, hyspecnet.band_names)
    assert "1300-1400" not in regions and "1800-1900" not in regions  # the water-vapour gaps
    assert len(regions["900-1000"]) > 10  # both detectors' bands, by wavelength
    cubes = np.zeros((2, 4, 4, 202), np.float32)
    with pytest.raises(XbandError, match="'enmap' has 224 bands but the images have 202. Presets "
                                         "with 202 bands: enmap-hyspecnet"):
        xband.image_set(cubes, [0, 1], sensor="enmap")
