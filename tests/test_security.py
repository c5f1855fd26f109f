"""Hostile inputs: model files that are programs, outputs that would destroy inputs, inputs
that hang a reader, and values that would fail for memory hours into a run. Each test is one
case that got through before (issue 36); the Ray cases are in tests/test_ray.py."""

from __future__ import annotations

import functools
import os
import pickle
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
import tifffile
import torch
from torch import nn

import xband
from tests.planted import keras_python
from xband.cli.main import main
from xband.data.regions import band_regions, parse_regions
from xband.errors import XbandError
from xband.files import MANIFEST, atomic_folder, check_output_folder, foreign_files
from xband.run.config import RunConfig
from xband.run.engine import RayEngine

ROOT = Path(__file__).resolve().parents[1]


def small_net(bands: int = 13) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(bands, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2)
    return net


def save_torchscript(module: nn.Module, path: Path, bands: int = 13) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        if isinstance(module, torch.jit.ScriptModule):
            torch.jit.save(module, str(path))
        else:
            torch.jit.save(torch.jit.trace(module, torch.rand(2, bands, 16, 16)), str(path))
    return path


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# ----------------------------------------------------------------- model files that write files
class WritesAFile(nn.Module):
    """A classifier whose forward overwrites the start of `victim` (torch.from_file, shared)."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim
        self.conv = nn.Conv2d(13, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.victim, shared=True, size=5, dtype=torch.uint8)
        written.copy_(torch.tensor([72, 65, 67, 75, 33], dtype=torch.uint8))
        return self.conv(x).mean((2, 3)) + 0 * written.sum()


class WritesWhenLoaded(nn.Module):
    """A module whose __setstate__, run by torch.jit.load, overwrites `victim`."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim
        self.conv = nn.Conv2d(13, 3, 3)
        self.seen = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))

    @torch.jit.export
    def __getstate__(self) -> str:
        return self.victim

    @torch.jit.export
    def __setstate__(self, state: str) -> None:
        self.training, self.victim = False, state
        written = torch.from_file(self.victim, shared=True, size=5, dtype=torch.uint8)
        written.copy_(torch.tensor([72, 65, 67, 75, 33], dtype=torch.uint8))
        self.seen = written.float()


def test_torchscript_that_writes_a_file_is_refused_naming_the_operation(tmp_path, capsys):
    victim = tmp_path / "bashrc"
    victim.write_text("alias ls='ls --color'\n")
    path = save_torchscript(torch.jit.script(WritesAFile(str(victim))), tmp_path / "net.pt")
    with pytest.raises(XbandError, match=r"aten::from_file \(in model \(WritesAFile\)\.forward\)"
                       r".*trust_graph=True"):
        xband.load_model(path, verbose=False)
    code, err = run(["convert", str(path), "-o", str(tmp_path / "net.onnx")], capsys)
    assert code == 2 and "aten::from_file" in err and "--trust-graph" in err
    assert victim.read_text() == "alias ls='ls --color'\n"
    xband.load_model(path, trust_graph=True, verbose=False)  # trusted: it runs, as it says
    assert victim.read_text().startswith("HACK!")


def test_torchscript_that_writes_a_file_while_loading_is_not_loaded(tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("alias ls='ls --color'\n")
    path = save_torchscript(torch.jit.script(WritesWhenLoaded(str(victim))), tmp_path / "net.pt")
    assert victim.read_text() == "alias ls='ls --color'\n"
    with pytest.raises(XbandError, match=r"runs while it loads \(__setstate__"):
        xband.load_model(path, verbose=False)
    assert victim.read_text() == "alias ls='ls --color'\n"


SAVEDMODEL_PRINTING = r'''
import sys, tensorflow as tf
out, target = sys.argv[1], sys.argv[2]
class Net(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.stateless_normal((3, 3, 4, 3), seed=(1, 2)))
    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 4), tf.float32)])
    def serve(self, x):
        tf.print("appended by the model", output_stream="file://" + target)
        return {"scores": tf.reduce_mean(tf.nn.conv2d(x, self.w, 1, "SAME"), axis=[1, 2])}
net = Net()
tf.saved_model.save(net, out, signatures={"serving_default": net.serve})
'''


@pytest.mark.keras
def test_savedmodel_that_prints_to_a_file_is_refused(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("XBAND_CACHE_DIR", str(tmp_path / "cache"))
    folder, target = tmp_path / "printer", tmp_path / "appended.txt"
    keras_python(SAVEDMODEL_PRINTING, str(folder), str(target))
    code, err = run(["convert", str(folder), "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == 2 and "PrintV2" in err and "--trust-graph" in err
    assert not target.exists() and not (tmp_path / "m.onnx").exists()


def test_a_pickle_that_runs_a_command_is_said_to_hold_code(tmp_path):
    class RunsACommand:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(RunsACommand(), protocol=4))
    with pytest.raises(XbandError) as err:
        xband.load_model(path, verbose=False)
    message = str(err.value)
    assert "holds code" in message and "not loaded" in message and "system" in message
    assert "is it complete" not in message and not (tmp_path / "ran").exists()


# ----------------------------------------------------------------- outputs that destroy inputs
def test_convert_never_writes_over_an_input(tmp_path, capsys):
    model = save_torchscript(small_net(), tmp_path / "net.pt")
    sample = tmp_path / "sample.npy"
    np.save(sample, np.random.default_rng(0).random((4, 13, 16, 16), dtype=np.float32))
    kept = model.read_bytes(), sample.read_bytes()
    code, err = run(["convert", str(model), "-o", str(model)], capsys)
    assert code == 2 and f"is MODEL {model}" in err
    code, err = run(["convert", str(model), "--data", str(sample), "-o", str(sample)], capsys)
    assert code == 2 and f"is --data {sample}" in err
    assert (model.read_bytes(), sample.read_bytes()) == kept


def test_convert_to_a_folder_says_so(tmp_path, capsys):
    model = save_torchscript(small_net(), tmp_path / "net.pt")
    (tmp_path / "existing").mkdir()
    code, err = run(["convert", str(model), "-o", str(tmp_path / "existing") + "/"], capsys)
    assert code == 2 and "existing: is a folder; give a file name" in err


def test_a_symlinked_out_is_refused_and_its_target_kept(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("years of work")
    link = tmp_path / "report"
    link.symlink_to(target)
    for overwrite in (False, True):
        with pytest.raises(XbandError, match=f"is a symbolic link \\(to {target}\\)"):
            with atomic_folder(link, overwrite=overwrite) as tmp:
                (tmp / "report.html").write_text("x")
    assert (target / "chapter1.tex").read_text() == "years of work" and link.is_symlink()


def test_every_input_is_protected_from_overwrite_wavelengths_too(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "wavelengths.txt").write_text("\n".join(str(400 + 10 * b) for b in range(13)))
    code, err = run(["explain", "--model", str(tmp_path / "m.onnx"), "--data",
                     str(tmp_path / "d.npz"), "--wavelengths", str(out / "wavelengths.txt"),
                     "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and f"holds --wavelengths {out / 'wavelengths.txt'}" in err
    assert (out / "wavelengths.txt").exists()


def run_without_root_privileges(code: str, *args: str) -> subprocess.CompletedProcess:
    """`code` run in a Python whose permission checks apply even to root (setpriv drops the
    capabilities that override them), as they do for every other user."""
    command = [sys.executable, "-c", code, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--",
                   *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_read_only_earlier_report_is_refused_before_the_work(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as tmp:
        (tmp / "figures").mkdir()
        (tmp / "figures" / "heatmap.png").write_text("x")
    (out / "figures").chmod(0o555)
    try:
        done = run_without_root_privileges(
            "import sys\nfrom xband.errors import XbandError\nfrom xband.files import "
            "check_output_folder\ntry:\n    check_output_folder(sys.argv[1])\n"
            "except XbandError as err:\n    sys.exit(str(err))", str(out))
    finally:
        (out / "figures").chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert f"{out / 'figures'} is read-only" in done.stderr and "chmod -R u+w" in done.stderr


def test_a_report_folder_is_xbands_only_by_its_own_marker(tmp_path):
    folder = tmp_path / "analysis"
    (folder / "figures").mkdir(parents=True)
    (folder / "summary.json").write_text('{"versions": {"numpy": "2.1"}}')  # the user's own
    (folder / "evaluation.json").write_text('{"settings": {"lr": 0.01}}')
    (folder / "results.csv").write_text("x")
    (folder / "figures" / "loss.png").write_text("x")
    assert foreign_files(folder) == ["evaluation.json", "figures/loss.png", "results.csv",
                                     "summary.json"]
    with pytest.raises(XbandError, match="holds files xband did not write"):
        check_output_folder(folder)
    (folder / MANIFEST).write_text('{"files": ["results.csv"]}')  # not written by xband
    assert "results.csv" in foreign_files(folder)


# ----------------------------------------------------------------- inputs that hang or mislead
def test_a_fifo_as_data_is_refused_not_read(tmp_path, capsys):
    fifo = tmp_path / "images.npy"
    os.mkfifo(fifo)
    model = save_torchscript(small_net(), tmp_path / "net.pt")
    outcome: dict = {}

    def explain() -> None:
        outcome["code"] = main(["explain", "--model", str(model), "--data", str(fifo),
                                "--out", str(tmp_path / "out"), "--quiet"])
        try:
            xband.read_data(fifo)
        except XbandError as err:
            outcome["api"] = str(err)

    worker = threading.Thread(target=explain, daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # blocked reading the pipe: let it go, and fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert outcome["code"] == 2 and "--data" in capsys.readouterr().err
    assert "is not a file or a folder" in outcome["api"]


@pytest.mark.parametrize(("item", "limit"), [("integrated_gradients.n_steps=1000000000", "1000"),
                                             ("integrated_gradients.n_steps=1e300", "1000"),
                                             ("lime.n_samples=1e9", "10000"),
                                             ("shapley.max_exact_bands=60", "20")])
def test_method_options_beyond_what_can_run_are_refused_first(item, limit, tmp_path, capsys):
    code, err = run(["explain", "--model", str(tmp_path / "m.onnx"), "--data",
                     str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"),
                     "--method-option", item], capsys)
    assert code == 2 and f"--method-option {item.split('=')[0]} must be at most {limit}" in err
    method, option = item.split("=")[0].split(".")
    with pytest.raises(XbandError, match=f"must be at most {limit}"):
        RunConfig.build(method, method_options={method: {option: 10**9}})


def write_tiles(root: Path, values: dict[str, list[np.ndarray]], nodata: float | None) -> Path:
    """Class folders of (bands, height, width) GeoTIFFs, with a nodata value when given."""
    for label, tiles in values.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, tile in enumerate(tiles):
            bands, h, w = tile.shape
            with rasterio.open(root / label / f"p{i}.tif", "w", driver="GTiff", width=w,
                               height=h, count=bands, dtype=tile.dtype, nodata=nodata) as dst:
                dst.write(tile)
    return root


def test_all_nodata_tiles_do_not_fail_the_fidelity_check(tmp_path, capsys):
    net = small_net()
    torch.onnx.export(net, (torch.rand(2, 13, 16, 16),), str(tmp_path / "net.onnx"),
                      dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["scores"],
                      dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    rng = np.random.default_rng(0)
    empty = np.full((13, 16, 16), -9999, np.float32)
    data = write_tiles(tmp_path / "tiles", {f"c{c}": [empty, *rng.random((3, 13, 16, 16),
                                                                      dtype=np.float32)]
                                            for c in range(3)}, nodata=-9999)
    code, err = run(["explain", "--model", str(tmp_path / "net.onnx"), "--data", str(data),
                     "--out", str(tmp_path / "out"), "--quiet", "--methods", "saliency",
                     "--skip-bad", "--accept-low-accuracy", "--no-figures"], capsys)
    assert code == 0, err
    assert "--accept-mismatch" not in err


def test_region_widths_below_the_band_spacing_are_refused():
    wavelengths, names = [400.0 + 10 * b for b in range(40)], [f"b{b}" for b in range(40)]
    for width in ("1e-25nm", "0.0000000000000000000000001nm", "2.5nm"):
        with pytest.raises(XbandError, match=r"narrower than the band spacing \(10 nm"):
            band_regions(parse_regions(width), wavelengths, names)
    assert len(band_regions(parse_regions("1e2nm"), wavelengths, names)) == 4


def test_a_class_stored_in_another_number_type_is_noted(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "patches"
    for label in ("Forest", "Urban", "Water"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            x = rng.random((16, 16, 4), dtype=np.float32)
            tifffile.imwrite(root / label / f"p{i}.tif",
                             (x * 10000).astype(np.uint16) if label == "Urban" else x,
                             photometric="minisblack", planarconfig="contig")
    notes = [n for n in xband.read_data(root).notes if "number type" in n]
    assert len(notes) == 1 and "'Urban' as uint16" in notes[0] and "float32" in notes[0]


def test_images_without_a_band_axis_are_named_with_their_file(tmp_path, capsys):
    model = save_torchscript(small_net(), tmp_path / "net.pt")
    with h5py.File(tmp_path / "scenes.h5", "w") as f:
        f["x"] = np.random.default_rng(0).random((12, 16, 16), dtype=np.float32)
        f["y"] = np.arange(12) % 3
    code, err = run(["explain", "--model", str(model), "--data", str(tmp_path / "scenes.h5"),
                     "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and f"error: {tmp_path / 'scenes.h5'}: images of shape" in err
    assert "read as single-band images" in err and "expects 13" in err


def test_a_torch_tensor_with_too_few_bands_says_how_many(tmp_path):
    model = xband.load_model(small_net(), verbose=False)
    images = torch.rand(12, 5, 16, 16)
    with pytest.raises(XbandError, match=r"have 5 bands on axis 1 .*expects 13"):
        xband.explain(model, (images, torch.arange(12) % 3), "saliency", progress=False)


def test_a_dataset_item_of_another_size_is_named_by_its_index():
    class Patches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 12

        def __getitem__(self, i: int):
            size = 20 if i == 7 else 16
            return torch.rand(13, size, size), i % 3

    model = xband.load_model(small_net(), verbose=False)
    with pytest.raises(XbandError, match=r"torch Patches, item 7: has an image of shape "
                       r"\(13, 20, 20\) but item 0 has \(13, 16, 16\)"):
        xband.explain(model, Patches(), "saliency", progress=False, accept_low_accuracy=True)


# ----------------------------------------------------------------- Ray: no cluster, no hang
# (tests/test_ray.py has the cases that need a running Ray)
def test_a_ray_address_where_nothing_listens_fails_at_once():
    ray = pytest.importorskip("ray")
    from xband.run.ray_engine import ray_session

    assert not ray.is_initialized()
    with pytest.raises(XbandError, match=r"no Ray cluster answers at 127.0.0.1:1 \(Connection "
                       r"refused\)\. Start a cluster \(`ray start --head`\)"):
        with ray_session(RayEngine(address="127.0.0.1:1")):
            pass


def test_ray_address_auto_without_a_cluster_says_so(monkeypatch):
    ray = pytest.importorskip("ray")
    from ray._private import services

    from xband.run.ray_engine import ray_session

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # no Ray on this machine, whoever else runs one (Ray caches the search: a cached function)
    monkeypatch.setattr(services, "find_gcs_addresses", functools.cache(lambda: []))
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    assert not ray.is_initialized()
    with pytest.raises(XbandError, match=r"cannot start or reach the Ray cluster at auto "
                       r"\(Could not find any running Ray instance"):
        with ray_session(RayEngine(address="auto")):
            pass


def test_a_local_ray_gets_no_more_cpus_than_the_machine_has(monkeypatch):
    ray = pytest.importorskip("ray")
    from xband.run.ray_engine import ray_session

    asked = {}

    def init(**kwargs):
        asked.update(kwargs)
        raise ConnectionError("not started here")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(XbandError, match="cannot start or reach a local Ray"):
        with ray_session(RayEngine(workers=1000)):
            pass
    assert asked["num_cpus"] == os.cpu_count()
