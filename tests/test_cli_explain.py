"""`xband explain` end to end, and one clear message for each kind of bad input."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.planted import N_BANDS, N_CLASSES, PLANTED, planted_images
from xband.cli import main


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, planted_torch, planted_train) -> Path:
    """The planted-band CNN as an ONNX file with a fixed image size and a dynamic batch axis."""
    x = planted_train[0]
    net = torch.nn.Sequential(planted_torch, torch.nn.Softmax(dim=1))
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


def test_no_figures_writes_the_tables_and_a_report_without_images(onnx_model, data, tmp_path,
                                                                    capsys):
    x, y = data
    out = tmp_path / "out"
    code = explain_cli(onnx_model, write_data(tmp_path, x, y), out, "--methods", "saliency",
                       "--no-figures")
    assert code == 0, capsys.readouterr().err
    assert not (out / "figures").exists()
    assert {"importance.csv", "summary.json", "report.html", "top_bands.csv"} <= {
        p.name for p in out.iterdir()}
    html = (out / "report.html").read_text()
    assert "<img" not in html and "Top bands per class" in html


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


def _npz_header_only(path: Path, shape: tuple) -> None:
    """A .npz whose images declare `shape` but hold a few bytes (10^9 images: 3 TiB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(4096))


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _with(x, y, folder: Path, **arrays) -> Path:
    np.savez(folder / "data.npz", **{"x": x, "y": y, **arrays})
    return folder / "data.npz"


def _labels_text(x, y, folder: Path) -> tuple[Path, list[str]]:
    np.save(folder / "x.npy", x)
    lines = [str(float(v)) for v in y]
    lines[7] = "nan"
    (folder / "labels.txt").write_text("\n".join(lines))
    return folder / "x.npy", ["--labels", str(folder / "labels.txt")]


def _stats(folder: Path, n: int) -> str:
    (folder / "stats.json").write_text(json.dumps({"mean": [0] * n, "std": [1] * n}))
    return str(folder / "stats.json")


# case → (write the data: (x, y, folder) → path or (path, options), options, message, and
# whether it is found before the model is loaded)
BAD_FILES_AND_OPTIONS = {
    "0-byte .npz": (lambda x, y, d: _file(d / "e.npz", b""), [],
                    "is empty (0 bytes)", True),
    "0-byte .npy": (lambda x, y, d: _file(d / "e.npy", b""), [],
                    "is empty (0 bytes)", True),
    "truncated .npz": (lambda x, y, d: _file(d / "t.npz", _with(x, y, d).read_bytes()[:5000]),
                       [], "damaged or truncated", True),
    "random bytes .npz": (lambda x, y, d: _file(d / "r.npz", np.random.default_rng(0).bytes(3000)),
                          [], "is not a NumPy .npz file", True),
    "pickled .npz": (lambda x, y, d: _with(x, y, d, extra=np.array([{}], dtype=object)), [],
                     "holds Python objects", True),
    "10^9 images declared": (lambda x, y, d: _npz_header_only(d / "h.npz", (10**9, 6, 12, 12))
                             or d / "h.npz", [], "it is truncated or damaged", True),
    "images as text": (lambda x, y, d: _with(x.astype(str), y, d), [], "images hold text",
                       True),
    "complex images": (lambda x, y, d: _with(x * (1 + 1j), y, d), [],
                       "images hold complex numbers", True),
    "NaN label in a text file": (lambda x, y, d: _labels_text(x, y, d), [],
                                 "image 7 has label nan", True),
    "--norm-stats of 3 bands": (lambda x, y, d: (_with(x, y, d), ["--norm-stats", _stats(d, 3)]),
                                [], "3 means for 6 bands", True),
    "--norm-stats uncreatable": (lambda x, y, d: _with(x, y, d),
                                 ["--norm-stats", "/proc/no-such-folder/stats.json"],
                                 "--norm-stats /proc/no-such-folder/stats.json: cannot be "
                                 "created", True),
    "--scale 0": (lambda x, y, d: _with(x, y, d), ["--scale", "0"], "--scale must be", True),
    "--scale -1": (lambda x, y, d: _with(x, y, d), ["--scale", "-1"], "--scale must be", True),
    "--scale nan": (lambda x, y, d: _with(x, y, d), ["--scale", "nan"], "--scale must be", True),
    "empty band name": (lambda x, y, d: _with(x, y, d), ["--bands", "B1,,B3"],
                        "--bands 'B1,,B3': name 2 is empty", True),
    "duplicated --classes": (lambda x, y, d: _with(x, y, d), ["--classes", "a,a,b,c"],
                             "a repeated", True),
    "--evaluate --checks unknown": (lambda x, y, d: _with(x, y, d),
                                    ["--evaluate", "--checks", "nonsense"],
                                    "check nonsense: choose from", True),
    "--evaluate --deletion-baselines unknown": (
        lambda x, y, d: _with(x, y, d), ["--evaluate", "--deletion-baselines", "pink"],
        "deletion baseline pink", True),
    **{f"{flag} {value}": (lambda x, y, d: _with(x, y, d),
                           [*extra, flag, value], f"{flag} must be at least", True)
       for flag, value, extra in [
           ("--max-per-class", "-1", []), ("--max-per-class", "0", []),
           ("--max-images", "0", []), ("--batch-size", "0", []), ("--batch-size", "-5", []),
           ("--seed", "-1", []), ("--examples-per-class", "-1", []),
           ("--background-images", "0", []),
           ("--eval-images", "0", ["--evaluate"]), ("--random-orders", "1", ["--evaluate"])]},
}


@pytest.mark.parametrize("case", list(BAD_FILES_AND_OPTIONS))
def test_bad_file_or_option_is_one_message_before_any_work(case, onnx_model, data, tmp_path,
                                                           capsys):
    make, options, message, before_model = BAD_FILES_AND_OPTIONS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    made = make(*data, folder)
    path, extra = made if isinstance(made, tuple) else (made, [])
    out = tmp_path / "out"
    code = explain_cli(onnx_model, path, out, *extra, *options)
    printed = capsys.readouterr()
    assert code == 2, printed.err
    assert message in printed.err, printed.err
    assert printed.err.count("xband: error:") == 1 and "Traceback" not in printed.err
    assert "allow_pickle" not in printed.err
    assert "verdict" not in printed.out or not before_model  # stopped before loading the model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written


def test_npz_larger_than_memory_is_refused_before_reading(onnx_model, data, tmp_path, capsys,
                                                          monkeypatch):
    import xband.readers

    monkeypatch.setattr(xband.readers, "available_memory", lambda: 100_000)
    code = explain_cli(onnx_model, write_data(tmp_path, *data), tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 2 and "more than the memory available" in err and ".npy" in err


def test_class_order_that_fits_far_better_is_named(onnx_model, data, tmp_path, capsys):
    x, y = data
    names = np.array(["Water", "Crop", "Forest", "Bare soil"])  # the model's output order
    path = tmp_path / "named.npz"
    np.savez(path, x=x, y=names[y])  # text labels: classes sorted by name unless given
    code = explain_cli(onnx_model, path, tmp_path / "out", "--methods", "saliency")
    err = capsys.readouterr().err
    assert code == 2 and "far better under another class order" in err
    assert "--classes 'Water,Crop,Forest,Bare soil'" in err and "--accept-low-accuracy" in err
    assert not (tmp_path / "out").exists()
    assert explain_cli(onnx_model, path, tmp_path / "out", "--methods", "saliency",
                       "--accept-low-accuracy") == 0
    assert explain_cli(onnx_model, path, tmp_path / "out2", "--methods", "saliency",
                       "--classes", "Water,Crop,Forest,Bare soil") == 0
    accuracy = json.loads((tmp_path / "out2" / "summary.json").read_text())["accuracy"]
    assert accuracy["overall"] > 0.9


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


def test_rerun_replaces_xbands_report_but_never_a_file_it_did_not_write(onnx_model, data,
                                                                         tmp_path, capsys):
    path = write_data(tmp_path, *data)
    out = tmp_path / "out"
    assert explain_cli(onnx_model, path, out, "--methods", "saliency") == 0
    assert explain_cli(onnx_model, path, out, "--methods", "feature_ablation") == 0  # replaced
    assert set(json.loads((out / "summary.json").read_text())["methods"]) == {"feature_ablation"}
    mine = out / "my-notes.txt"
    mine.write_text("written by the user")
    capsys.readouterr()
    assert explain_cli(onnx_model, path, out, "--methods", "saliency") == 2
    err = capsys.readouterr().err
    assert "holds files xband did not write (my-notes.txt)" in err and "--overwrite" in err
    assert mine.exists()
    assert explain_cli(onnx_model, path, out, "--methods", "saliency", "--overwrite") == 0
    assert not mine.exists()
    assert set(json.loads((out / "summary.json").read_text())["methods"]) == {"saliency"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_out_never_replaces_a_users_folder_or_the_inputs(onnx_model, data, tmp_path, capsys):
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "thesis.tex").write_text("years of work")
    path = write_data(project, *data)  # the data inside the folder named as --out
    model = project / "model.onnx"
    model.write_bytes(onnx_model.read_bytes())
    cases = [(project, path, onnx_model, "holds --data"),
             (project, tmp_path / "elsewhere.npz", model, "holds --model")]
    write_data(tmp_path, *data, name="elsewhere.npz")
    for out, data_path, model_path, message in cases:
        assert explain_cli(model_path, data_path, out, "--overwrite") == 2
        assert message in capsys.readouterr().err
    (project / "report").mkdir()
    assert explain_cli(onnx_model, tmp_path / "elsewhere.npz", project) == 2
    assert "holds files xband did not write" in capsys.readouterr().err
    assert sorted(p.name for p in project.iterdir()) == ["data.npz", "model.onnx", "report",
                                                         "thesis.tex"]


SLOW_STEP = {  # patched into the child so that the signal arrives while it runs or saves
    "running": "import xband.methods.saliency as m; real = m.Saliency.attribute\n"
               "def slow(self, *a, **k):\n    flag.write_text('x'); time.sleep(60)\n"
               "m.Saliency.attribute = slow\n",
    "saving": "import xband.report as m; real = m.render_report\n"
              "def slow(*a, **k):\n    flag.write_text('x'); time.sleep(60)\n"
              "m.render_report = slow\n",
}


@pytest.mark.parametrize("signum,when", [(signal.SIGTERM, "saving"), (signal.SIGINT, "saving"),
                                         (signal.SIGTERM, "running"),
                                         (signal.SIGINT, "running")])
def test_interrupt_ends_in_one_line_and_leaves_nothing(signum, when, onnx_model, data, tmp_path):
    path = write_data(tmp_path, *data)
    work = tmp_path / "work"
    work.mkdir()
    flag = tmp_path / "flag"
    code = (f"import sys, time, pathlib\nflag = pathlib.Path({str(flag)!r})\n{SLOW_STEP[when]}"
            "from xband.cli import main\n"
            f"sys.exit(main(['explain', '--model', {str(onnx_model)!r}, '--data', {str(path)!r}, "
            f"'--out', {str(work / 'out')!r}, '--quiet', '--methods', 'saliency']))\n")
    # as from a terminal: a test run started in the background (`cmd &`) ignores SIGINT, and
    # Python keeps an inherited "ignore" (so would xband, rightly, under nohup)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not flag.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(child.pid, signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert err.strip().splitlines() == ["xband: interrupted; nothing written"]
    assert list(work.iterdir()) == []
