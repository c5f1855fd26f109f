"""PyTorch users' sessions (issue 37): the user's module is never changed, a DataLoader's sampler
and collate_fn and a torchgeo DataModule's normalisation are honoured, torch objects are taken
as they are, the output space is told from the network's structure, and TorchScript and .pt2
files run on Ray."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, SubsetRandomSampler, TensorDataset

import xband
from tests.planted import N_BANDS, PLANTED, planted_images
from xband.cli.main import main
from xband.data.sensors import SENSORS
from xband.errors import XbandError
from xband.run.forward import prepare_networks
from xband.run.ray_engine import network_bytes, ray_session, worker_environment

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(methods="saliency", progress=False, n_boot=10)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return planted_images(n_per_class=25, seed=1)


@pytest.fixture(scope="module")
def model(planted_torch) -> xband.LoadedModel:
    """The planted CNN loaded (a copy of the shared module)."""
    return xband.load_model(planted_torch, verbose=False)


def state(module: nn.Module) -> dict:
    """What a user would notice changed: modes, requires_grad flags, devices, a weight checksum
    (parameters and buffers, BatchNorm's running statistics among them)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return {"modes": [m.training for m in module.modules()],
            "flags": {n: p.requires_grad for n, p in module.named_parameters()},
            "devices": {str(t.device) for t in module.state_dict().values()},
            "dtypes": {str(t.dtype) for t in module.state_dict().values()},
            "weights": digest.hexdigest()}


# ------------------------------------------------------------------ the user's model, unchanged
def test_the_users_module_is_unchanged_by_load_explain_and_evaluate(planted_torch, data):
    net = nn.Sequential(copy.deepcopy(planted_torch), nn.BatchNorm1d(4)).train()
    net[0][0].weight.requires_grad_(False)  # a user's partly frozen network, mid-training
    before = state(net)
    model = xband.load_model(net, verbose=False)
    result = xband.explain(model, data, methods="saliency,feature_ablation", progress=False,
                           n_boot=10, accept_low_accuracy=True)
    xband.evaluate(model, xband.image_set(*data), result, checks="randomisation",
                   max_images=16, cascade_stages=1)
    assert state(net) == before
    assert model.module is not net and not model.module.training  # xband's copy, in eval mode
    xband.explain(net, data, **FAST, accept_low_accuracy=True)  # the module itself, too
    assert state(net) == before


# ---------------------------------------------------------------- DataLoaders and DataModules
def standardise(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """A collate_fn that does the model's normalisation: stored values (x·1000 + 2000) back to x."""
    images = torch.stack([image for image, _ in items])
    return (images - 2000) / 1000, torch.stack([label for _, label in items])


def stored(data) -> TensorDataset:
    x, y = data
    return TensorDataset(torch.from_numpy(x * 1000 + 2000), torch.from_numpy(y))


def test_a_dataloaders_collate_fn_and_sampler_are_honoured(model, data):
    loader = DataLoader(stored(data), batch_size=16, collate_fn=standardise)
    result = xband.explain(model, loader, **FAST)
    assert result.summary["accuracy"]["overall"] > 0.9  # the inputs the model was trained on
    assert max(abs(b["mean"]) for b in result.summary["bands"]) < 1  # not ~2000
    preprocessing = result.summary["data"]["preprocessing"]
    assert "collate_fn (" in preprocessing and "standardise)" in preprocessing
    assert "as stored" not in preprocessing
    picked = np.random.default_rng(0).choice(100, 20, replace=False)
    sampled = DataLoader(stored(data), batch_size=16, collate_fn=standardise,
                         sampler=SubsetRandomSampler(picked.tolist()))
    result = xband.explain(model, sampled, **FAST, all_images=True)
    assert len(result.indices) == 20
    assert any("SubsetRandomSampler picks 20 of the dataset's 100" in n
               for n in result.summary["notes"])
    np.testing.assert_array_equal(result.labels, data[1][np.sort(picked)][result.indices])


def test_a_sampler_that_draws_other_images_each_pass_is_refused(data):
    weighted = torch.utils.data.WeightedRandomSampler(np.ones(100), num_samples=30)
    with pytest.raises(XbandError, match="WeightedRandomSampler gives other images on each pass"):
        xband.from_torch(DataLoader(stored(data), sampler=weighted, collate_fn=standardise))


class Noisy(TensorDataset):
    """A dataset with a random transform (augmentation noise) and class names."""

    classes = ["dark", "mid", "bright", "plain"]

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__(torch.from_numpy(x), torch.from_numpy(y))
        self.targets = y

    def __getitem__(self, i: int):
        image, label = super().__getitem__(i)
        return image + 0.01 * torch.randn_like(image), label


def test_a_random_transform_is_named_and_a_subset_keeps_its_class_names(model, data):
    subset = Subset(Noisy(*data), list(range(0, 100, 2)))
    result = xband.explain(model, subset, **FAST)
    assert result.class_names == Noisy.classes
    assert any("a transform is random" in note for note in result.summary["notes"])
    np.testing.assert_array_equal(xband.from_torch(subset).labels, data[1][::2])


EUROSAT_DIR = ("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "Pasture", "River"]  # sorted: the planted classes
MODEL_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]  # the six bands the planted model takes


def eurosat_folder(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """A EuroSAT folder as its download unpacks (13-band uint16 GeoTIFFs in class folders, split
    lists), whose MODEL_BANDS hold the planted images in EuroSAT's units: x · std + mean."""
    from torchgeo.datamodules.eurosat import MEAN, STD
    from torchgeo.datasets import EuroSAT

    names = []
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        full = np.array([np.full(image.shape[1:], MEAN[b]) for b in EuroSAT.all_band_names])
        for band, name in zip(image, MODEL_BANDS, strict=True):
            full[EuroSAT.all_band_names.index(name)] = band * STD[name] + MEAN[name]
        folder = root.joinpath(*EUROSAT_DIR, EUROSAT_CLASSES[label])
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{EUROSAT_CLASSES[label]}_{i}"
        tifffile.imwrite(folder / f"{name}.tif", np.round(full).astype(np.uint16).transpose(1, 2, 0),
                         photometric="minisblack", planarconfig="contig")
        names.append(f"{name}.jpg")  # the split lists name .jpg files
    for split in ("train", "val", "test"):
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_a_torchgeo_datamodules_normalisation_and_sensor_are_honoured(model, data,
                                                                      tmp_path):
    datamodules = pytest.importorskip("torchgeo.datamodules")
    root = eurosat_folder(tmp_path / "eurosat", *data)
    module = datamodules.EuroSATDataModule(root=str(root), bands=MODEL_BANDS, batch_size=16)
    result = xband.explain(model, module, **FAST)
    bands = result.summary["bands"]
    assert max(abs(b["mean"]) for b in bands) < 0.5 and max(b["std"] for b in bands) < 2
    assert result.summary["accuracy"]["overall"] > 0.9
    assert result.summary["data"]["preprocessing"] == "the EuroSATDataModule's aug (Normalize)"
    assert result.class_names == EUROSAT_CLASSES
    s2 = {b.name: b for b in SENSORS["sentinel2"].bands}  # no sensor= given: the data set's
    assert [b["wavelength_nm"] for b in bands] == [s2[b].wavelength_nm for b in MODEL_BANDS]
    assert result.members("band groups") == {"visible": ["B02", "B03", "B04"], "NIR": ["B08"],
                             "SWIR": ["B11", "B12"]}
    for k, band in PLANTED.items():  # the planted band first, as on the planted arrays
        assert result.top_bands().loc[EUROSAT_CLASSES[k], "saliency"] == MODEL_BANDS[band]


def test_a_torchgeo_eurosat_dataset_names_its_sensor(tmp_path, data):
    datasets = pytest.importorskip("torchgeo.datasets")
    root = eurosat_folder(tmp_path / "eurosat", *data)
    described = xband.from_torch(datasets.EuroSAT(str(root), split="test"))
    assert described.sensor == "eurosat"
    assert described.wavelengths == tuple(SENSORS["eurosat"].wavelengths)


class Spectral(TensorDataset):
    """A dataset that says its bands' centre wavelengths, in micrometres as torchgeo's do."""

    def __init__(self, bands: list[str], wavelengths: dict[str, float]):
        super().__init__(torch.zeros(2, len(bands), 8, 8), torch.tensor([0, 1]))
        self.bands, self.wavelengths = bands, wavelengths


def test_a_datasets_wavelengths_are_picked_up_in_nanometres():
    landsat = SENSORS["landsat8"]
    exact = Spectral(landsat.band_names, {b.name: b.wavelength_nm / 1000 for b in landsat.bands})
    assert xband.from_torch(exact).sensor == "landsat8"  # its bands: the preset, with groups
    other = xband.from_torch(Spectral(["a", "b", "c"], {"a": 0.5, "b": 0.6, "c": 0.8}))
    assert other.sensor is None and other.wavelengths == (500.0, 600.0, 800.0)


# ------------------------------------------------------------------ torch objects as they are
def test_tensors_and_modules_are_taken_as_they_are(model, planted_torch, data):
    x, y = data
    arrays = xband.explain(model, (x, y), **FAST)
    tensors = xband.explain(model, (torch.from_numpy(x), torch.from_numpy(y)), **FAST)
    bare = xband.explain(planted_torch, (x, y), **FAST)  # no load_model
    for result in (tensors, bare):
        np.testing.assert_array_equal(result.scores["saliency"], arrays.scores["saliency"])
        np.testing.assert_array_equal(result.labels, arrays.labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_double_and_half_models_run_in_their_own_type(planted_torch, data, dtype):
    x, y = data
    net = copy.deepcopy(planted_torch).to(dtype)
    model = xband.load_model(net, verbose=False)
    assert any(f"weights in {dtype}" in note for note in model.notes)
    expected = net(torch.from_numpy(x[:4]).to(dtype)).float()
    torch.testing.assert_close(model(torch.from_numpy(x[:4])), expected)
    result = xband.explain(model, (x, y), **FAST)
    assert result.summary["accuracy"]["overall"] > 0.9


def test_a_fixed_batch_export_says_how_to_export_a_dynamic_one(planted_torch, data, tmp_path):
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(planted_torch, (torch.from_numpy(data[0][:2]),)), path)
    model = xband.load_model(path, verbose=False)
    note = next(n for n in model.notes if "exported for batch size 2" in n)
    assert "dynamic_shapes=({0: torch.export.Dim('batch')},)" in note


# ------------------------------------------------------------------------------- output space
def test_a_final_log_softmax_is_stripped_to_logits(model, planted_torch, data):
    x, y = data
    ending = nn.Sequential(planted_torch, nn.LogSoftmax(dim=1))
    log_softmax = xband.load_model(ending, verbose=False)
    assert log_softmax.logits_module is not None and log_softmax.output_space() == "logits"
    assert "as log-probabilities: nn.LogSoftmax" in log_softmax.summary()
    batch = torch.from_numpy(x[:4])
    torch.testing.assert_close(log_softmax(batch), planted_torch(batch))
    torch.testing.assert_close(log_softmax(batch, output="probabilities"),
                               torch.softmax(planted_torch(batch), dim=1))
    methods = dict(methods="feature_ablation", baseline="mean", progress=False, n_boot=10,
                   all_images=True)
    logits = xband.explain(model, (x, y), **methods)
    stripped = xband.explain(log_softmax, (x, y), **methods)
    np.testing.assert_allclose(stripped.scores["feature_ablation"],
                               logits.scores["feature_ablation"], rtol=1e-5, atol=1e-6)


class ToUnitRange(nn.Module):
    """Logits squeezed into [0, 1] by an affine map: no sigmoid, whatever the range says."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.001 * z


def test_a_logit_model_with_outputs_in_0_1_stays_single_label(planted_torch, data):
    net = nn.Sequential(planted_torch, ToUnitRange())
    out = net(torch.from_numpy(data[0])).detach()
    assert 0 <= out.min() and out.max() <= 1
    model = xband.load_model(net, verbose=False)
    assert model.final_activation == "none"
    assert model.activation_seen == "add() at the end of forward, traced with torch.fx"
    result = xband.explain(model, data, **FAST)
    assert not result.config.multi_label and result.summary["accuracy"]["overall"] > 0.9


# ------------------------------------------------------------------------------------- Ray
def test_torchscript_and_export_networks_travel_to_workers_as_their_files(planted_torch, data,
                                                                         tmp_path):
    x = torch.from_numpy(data[0][:2])
    net = nn.Sequential(planted_torch, nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        torch.jit.save(torch.jit.trace(net, x), tmp_path / "net.pt")
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "net.pt2")  # fixed batch of 2
    images = torch.from_numpy(data[0][:5])
    for name in ("net.pt", "net.pt2"):
        model = xband.load_model(tmp_path / name, verbose=False)
        forward = prepare_networks(model.network(), model.layout, "cpu", images[:2],
                                   tuned=True).forward
        on_worker = torch.load(io.BytesIO(network_bytes(forward)), weights_only=False)
        torch.testing.assert_close(on_worker(images), forward(images), rtol=0, atol=0)
        torch.testing.assert_close(on_worker(images), planted_torch(images))  # logits


def test_a_cluster_gets_the_packages_by_path_and_ray_client_is_refused_plainly():
    environment = worker_environment(remote=True)
    assert pickle.loads(pickle.dumps(environment)) == environment  # Ray pickles it
    assert environment["py_modules"] == [str(ROOT / "xband"), str(ROOT / "converters")]
    with pytest.raises(XbandError, match=r"Ray Client \(ray://127.0.0.1:1\) cannot run Ray Data"), \
            ray_session(xband.RayEngine(address="ray://127.0.0.1:1")):
        pass


def test_a_torchscript_file_on_ray_matches_one_process_and_ray_stays_quiet(planted_torch,
                                                                          data, tmp_path):
    x, y = data
    np.savez(tmp_path / "data.npz", x=x[:40], y=y[:40])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(planted_torch, torch.from_numpy(x[:2])), tmp_path / "m.pt")
    run = ["explain", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data.npz"),
           "--quiet", "--methods", "saliency,feature_ablation", "--all-images", "--untuned"]
    assert main([*run, "--out", str(tmp_path / "single")]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "xband", *run, "--out", str(tmp_path / "ray"),
                           "--engine", "ray", "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: engine: Ray, 1 worker;" in proc.stdout
    assert "Token authentication" not in proc.stderr and "max_restarts" not in proc.stderr
    with np.load(tmp_path / "single" / "scores.npz") as a, \
            np.load(tmp_path / "ray" / "scores.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------------------------ reading results
def test_printing_a_verdict_or_an_explanation_shows_sentences(model, data):
    result = xband.explain(model, data, **FAST)
    verdict = result.verdict()
    assert repr(verdict) == str(verdict) == verdict.text()
    assert repr(result).startswith("Explanation of arrays: 100 images, 6 bands, 4 classes")
    assert verdict.text() in repr(result) and len(repr(result)) < 2000
    assert N_BANDS == len(result.band_names)
