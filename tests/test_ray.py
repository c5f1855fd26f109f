"""The Ray engine: the same files as the single-process run, images read on the workers, the
workers running this xband, and clear messages for what cannot run on Ray."""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import tifffile
import torch

import xband
from tests.planted import DiesOnWorkers, planted_images
from xband.cli.main import main
from xband.data.readers import RasterFiles
from xband.errors import XbandError
from xband.run import ray_engine
from xband.run.engine import RayEngine, import_ray
from xband.run.ray_engine import NpyFile, portable, ray_session, worker_environment

METHODS = "integrated_gradients,feature_ablation,shapley,permutation"
SMALL = ["--method-option", "integrated_gradients.n_steps=8", "--method-option",
         "shapley.n_samples=2", "--method-option", "permutation.n_repeats=2",
         "--background-images", "2", "--batch-size", "50", "--untuned"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (runs reuse it), shut down at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env=worker_environment(remote=False))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, planted_torch, planted_train) -> Path:
    x = planted_train[0]
    net = torch.nn.Sequential(planted_torch, torch.nn.Softmax(dim=1))
    path = tmp_path_factory.mktemp("model") / "planted.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["probabilities"],
                      dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    return path


def explain(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["explain", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--quiet", "--methods", METHODS, "--all-images", *SMALL, *extra])


def write_folders(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Class folders of (height, width, bands) GeoTIFFs."""
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / f"kind{label}"
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"p{i}.tif", np.moveaxis(image, 0, 2),
                         photometric="minisblack", planarconfig="contig")
    return root


@pytest.fixture(scope="module")
def tif_folder(tmp_path_factory) -> Path:
    x, y = planted_images(n_per_class=50, seed=1)  # 200 images
    return write_folders(tmp_path_factory.mktemp("data") / "tifs", x, y)


@pytest.fixture(scope="module")
def reports(local_ray, onnx_model, tif_folder, tmp_path_factory) -> tuple[Path, Path]:
    """The same explanation of 200 GeoTIFFs by one process and by 2 Ray workers."""
    out = tmp_path_factory.mktemp("reports")
    assert explain(onnx_model, tif_folder, out / "single") == 0
    assert explain(onnx_model, tif_folder, out / "ray", "--engine", "ray", "--workers", "2") == 0
    return out / "single", out / "ray"


def test_ray_gives_the_single_process_files(reports):
    single, on_ray = reports
    pd.testing.assert_frame_equal(pd.read_csv(single / "importance.csv"),
                                  pd.read_csv(on_ray / "importance.csv"))
    assert set(pd.read_csv(single / "importance.csv")["method"]) == set(METHODS.split(","))
    with np.load(single / "scores.npz") as a, np.load(on_ray / "scores.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert np.isfinite(a["scores_permutation"]).all() and len(a["scores_shapley"]) == 200
    maps = sorted(p.name for p in (single / "figures").glob("maps_*"))
    assert maps and maps == sorted(p.name for p in (on_ray / "figures").glob("maps_*"))


def test_a_geotiff_folder_is_read_on_the_workers(reports, tif_folder):
    shipped = portable(xband.read_data(tif_folder))
    assert isinstance(shipped.images, RasterFiles)  # what workers get: paths, not pixels
    assert len(pickle.dumps(shipped.images)) < np.prod(shipped.images.shape) * 4 / 10
    notes = json.loads((reports[1] / "summary.json").read_text())["notes"]
    note = next(n for n in notes if n.startswith("engine: Ray, 2 workers"))
    read = int(note.split("read ")[1].split()[0])
    assert read >= 200 * 3  # each image and its two donor images, read by the workers


def test_arrays_reach_workers_without_the_driver_copying_them(local_ray, tmp_path):
    x, y = planted_images(n_per_class=3, seed=3)
    np.save(tmp_path / "x.npy", x)
    from_file = portable(xband.read_data(tmp_path / "x.npy", labels=y))
    assert isinstance(from_file.images, NpyFile)
    np.testing.assert_array_equal(from_file.take(np.array([2, 5])), x[[2, 5]])
    in_memory = portable(xband.image_set(x, y))
    copy = pickle.loads(pickle.dumps(in_memory.images))  # as an actor receives it
    assert len(pickle.dumps(in_memory.images)) < x[0].nbytes
    np.testing.assert_array_equal(copy[np.array([0, 7])], x[[0, 7]])


def test_workers_run_the_drivers_xband(local_ray):
    @ray.remote(runtime_env=worker_environment(remote=False))
    def where() -> str:
        import xband as on_worker

        return on_worker.__file__

    assert ray.get(where.remote()) == xband.__file__


def test_without_ray_the_message_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(XbandError, match=r'pip install -c constraints.txt -e "\.\[ray\]"'):
        import_ray()
    code = main(["explain", "--model", "m.onnx", "--data", "d.npz", "--out", str(tmp_path / "o"),
                 "--engine", "ray"])
    assert code == 2 and "--engine ray needs Ray Data" in capsys.readouterr().err


def test_ray_options_are_checked(capsys, tmp_path):
    base = ["explain", "--model", "m.onnx", "--data", "d.npz", "--out", str(tmp_path / "o")]
    assert main([*base, "--workers", "2"]) == 2
    assert "--workers need --engine ray" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--budget", "5m"]) == 2
    assert "--budget" in capsys.readouterr().err
    with pytest.raises(XbandError, match="gpus_per_worker"):
        RayEngine(gpus_per_worker=-1)


def test_workers_are_capped_by_what_the_cluster_can_run(local_ray):
    with ray_session(RayEngine(workers=12)) as engine:
        assert engine.workers == 2  # the cluster's CPUs, not 12 actors queued on 2 CPUs
    with pytest.raises(XbandError, match="gpus_per_worker 1: the Ray cluster has 0 GPUs, so no "
                       "worker could start"):
        with ray_session(RayEngine(gpus_per_worker=1)):
            pass


def test_a_worker_that_dies_on_every_try_stops_the_run(local_ray, planted_torch, monkeypatch):
    monkeypatch.setattr(ray_engine, "RETRIES", 1)
    x, y = planted_images(n_per_class=2, seed=4)
    data = xband.image_set(DiesOnWorkers(x), y)
    model = xband.load_model(planted_torch, verbose=False)
    started = time.perf_counter()
    with pytest.raises(XbandError, match=r"the Ray run stopped: job 1 of 2 \(4 images\) and 1 "
                       r"more did not finish, although Ray restarted its worker and tried it "
                       r"again 1 times\. Last error: ActorDiedError: The actor died "
                       r"unexpectedly before finishing this task"):
        xband.explain(model, data, "saliency", engine=RayEngine(workers=1), batch_size=4,
                      progress=False, accept_low_accuracy=True)
    assert time.perf_counter() - started < 300
