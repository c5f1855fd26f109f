"""Loading classifiers into PyTorch (xband.load_model, converters, `xband convert`).

Keras models are built and run in TensorFlow subprocesses: TensorFlow is never imported here
(triton, which torchvision pulls in, crashes next to it; a subprocess test covers a process that
imported TensorFlow first, as a notebook does).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import xband
from converters.fidelity import compare
from tests.broken import WrongBackward, break_first_conv
from tests.planted import keras_python
from xband import load_model
from xband.cli.main import build_parser, main
from xband.errors import XbandError

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                              reason="the keras extra (TensorFlow, tf2onnx) is not installed")

KERAS_BUILD = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf

out = sys.argv[1]
keras.utils.set_random_seed(0)
L = keras.layers
seq = keras.Sequential([keras.Input((16, 16, 13)), L.Conv2D(8, 3, activation="relu"),
                        L.MaxPooling2D(), L.Conv2D(8, 3, activation="relu"), L.Flatten(),
                        L.Dense(4)])
inp = keras.Input((16, 16, 13))
x = L.Conv2D(8, 3, padding="same")(inp)
bn = L.BatchNormalization()
x = L.Activation("relu")(bn(x))
x = L.GlobalAveragePooling2D()(L.Dropout(0.5)(x))
func = keras.Model(inp, L.Dense(5, activation="softmax")(x))
rng = np.random.default_rng(1)
bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 1, 8), rng.normal(0, 1, 8),
                rng.uniform(0.5, 2, 8)])
refs = {"x": rng.uniform(0, 1, (6, 16, 16, 13)).astype("float32")}
for name, model in {"seq": seq, "func": func}.items():
    model.save(f"{out}/{name}.keras")
    model.save(f"{out}/{name}.h5")
    xt = tf.constant(refs["x"])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = model(xt, training=False)
        score = tf.reduce_sum(y[:, 1])
    refs[name + "_out"], refs[name + "_grad"] = y.numpy(), tape.gradient(score, xt).numpy()
func.export(f"{out}/func_savedmodel", format="tf_saved_model")

keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(
    L.Lambda(lambda t: t * 2, name="scale_by_two")(inp)))).save(f"{out}/lambda.keras")

@keras.saving.register_keras_serializable(package="lab")
class Brighten(L.Layer):
    def call(self, t):
        return t + 1.0

keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(Brighten(name="my_custom")(inp)))).save(
    f"{out}/custom.keras")
keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(L.Conv2D(8, 3)(inp)))).save(
    f"{out}/plain.keras")
keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(
    L.Conv2D(8, 3, groups=4, name="grouped")(L.Conv2D(8, 3)(inp))))).save(f"{out}/grouped.keras")
pooled = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu")(inp))
flat = keras.Model(inp, L.Dense(5, activation="softmax", name="head")(pooled))
flat.get_layer("head").set_weights([w * 1e-7 for w in flat.get_layer("head").get_weights()])
flat.save(f"{out}/flat.keras")  # probabilities constant to 1e-8, as untrained MobileNets'
keras.Model(inp, L.Dense(4, activation="sigmoid")(pooled)).save(f"{out}/sigmoid.keras")
keras.Model(inp, L.Softmax()(L.Dense(4)(pooled))).save(f"{out}/softmax_layer.keras")
np.savez(f"{out}/refs.npz", **refs)
'''


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory) -> Path:
    """Folder of Keras models (.keras, .h5, SavedModel) and their TensorFlow references."""
    folder = tmp_path_factory.mktemp("keras_models")
    keras_python(KERAS_BUILD, str(folder))
    return folder


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XBAND_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def torch_net(softmax: bool = True) -> nn.Sequential:
    """A small 13-band CNN in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(13, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)]
    net = nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else []))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def images(n: int, channels_last: bool = False, size: int = 16) -> torch.Tensor:
    shape = (n, size, size, 13) if channels_last else (n, 13, size, size)
    return torch.rand(shape, generator=torch.Generator().manual_seed(n))


# ------------------------------------------------------------------------------- Keras
@pytest.mark.parametrize("name", ["seq.keras", "seq.h5", "func.keras", "func.h5",
                                  "func_savedmodel"])
@pytest.mark.keras
@needs_tf
def test_keras_sources_match_tensorflow(name, keras_models, keras_cache):
    model = load_model(keras_models / name, cache_dir=keras_cache, verbose=False)
    refs = np.load(keras_models / "refs.npz")
    stem = name.split(".")[0].split("_")[0]
    x = torch.from_numpy(refs["x"]).requires_grad_(True)
    out = model.module(x)  # what the source computes (seq ends in logits, func in a softmax)
    np.testing.assert_allclose(out.detach().numpy(), refs[stem + "_out"], atol=1e-4, rtol=0)
    out[:, 1].sum().backward()
    grad, ref_grad = x.grad.numpy(), refs[stem + "_grad"]
    assert np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad) < 1e-3
    assert (model.layout, model.band_axis, model.n_bands) == ("channels_last", 3, 13)
    assert model.n_classes == (4 if stem == "seq" else 5)
    assert model.spatial_size == (16, 16)
    assert model.final_activation == ("softmax" if stem == "func" else "none")
    assert model.ends_with_softmax == (stem == "func")
    assert not model.module.training
    fid = model.fidelity
    assert fid.reference == "tensorflow" and fid.passed and fid.max_abs_diff <= 1e-4
    assert fid.grad_rel_diff < 1e-3 and fid.grad_target is not None
    # TensorFlow gives the logits of a Keras file, not of a SavedModel's serving signature
    assert fid.compared == ("outputs" if name == "func_savedmodel" else "logits")
    assert fid.rel_diff < 1e-5
    assert len(model.sha256) == 64
    assert model(images(3, channels_last=True)).shape == (3, model.n_classes)  # other batch size


@pytest.mark.keras
@needs_tf
def test_keras_softmax_is_stripped_to_logits(keras_models, keras_cache):
    model = load_model(keras_models / "func.keras", cache_dir=keras_cache, verbose=False)
    x = images(4, channels_last=True)
    logits, probs = model(x, output="logits"), model(x, output="probabilities")
    assert model.logits_module is not None
    assert not torch.allclose(logits.sum(1), torch.ones(4), atol=1e-3)
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs, atol=1e-6, rtol=0)


@pytest.mark.keras
@needs_tf
@pytest.mark.parametrize(("name", "kind"), [("sigmoid.keras", "sigmoid"),
                                            ("softmax_layer.keras", "softmax")])
def test_keras_final_sigmoid_or_softmax_layer_is_stripped_on_both_sides(name, kind, keras_models,
                                                                        keras_cache):
    model = load_model(keras_models / name, cache_dir=keras_cache, verbose=False)
    assert model.final_activation == kind and model.logits_module is not None
    fid = model.fidelity
    assert fid.compared == "logits" and fid.passed and fid.grad_rel_diff < 1e-3
    x = images(3, channels_last=True)
    squash = torch.sigmoid if kind == "sigmoid" else lambda z: torch.softmax(z, dim=1)
    torch.testing.assert_close(squash(model(x)), model.module(x), atol=1e-6, rtol=0)


@pytest.mark.keras
@needs_tf
def test_broken_conversion_of_saturated_keras_model_fails(keras_models, keras_cache,
                                                          monkeypatch):
    import xband.models.load

    good = load_model(keras_models / "flat.keras", cache_dir=keras_cache, verbose=False)
    assert good.fidelity.passed and good.fidelity.compared == "logits"
    real = xband.models.load.onnx_to_torch

    def broken(*args):
        converted = real(*args)
        break_first_conv(converted.module)
        return converted

    monkeypatch.setattr(xband.models.load, "onnx_to_torch", broken)
    with pytest.raises(XbandError, match="logits differ by up to .* x their range"):
        load_model(keras_models / "flat.keras", cache_dir=keras_cache, verbose=False)
    bad = load_model(keras_models / "flat.keras", cache_dir=keras_cache, verbose=False,
                     accept_mismatch=True)
    assert not bad.fidelity.gradient_passed  # the gradient alone would have caught it too
    # version 0.1 compared the probabilities: they still agree within 1e-4
    x = images(4, channels_last=True)
    assert (bad.module(x) - good.module(x)).abs().max() < 1e-4


@pytest.mark.keras
@needs_tf
def test_keras_second_run_uses_cache_without_subprocess(keras_models, keras_cache, monkeypatch):
    load_model(keras_models / "seq.keras", cache_dir=keras_cache, verbose=False)

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    model = load_model(keras_models / "seq.keras", cache_dir=keras_cache, verbose=False)
    assert any("cache hit" in note for note in model.notes)
    assert model.fidelity.passed
    # a new probe needs a new TensorFlow reference: the key includes the probe
    with pytest.raises(AssertionError, match="subprocess was started"):
        load_model(keras_models / "seq.keras", cache_dir=keras_cache, verbose=False,
                   probe=np.load(keras_models / "refs.npz")["x"])


@pytest.mark.keras
@needs_tf
def test_keras_user_probe_and_onnx_written_by_cli(keras_models, isolated_cache, tmp_path,
                                                  capsys):
    refs = np.load(keras_models / "refs.npz")
    np.savez(tmp_path / "sample.npz", x=refs["x"])
    out = tmp_path / "func.onnx"
    code, stdout, _ = run_cli(["convert", str(keras_models / "func.h5"), "-o", str(out),
                               "--data", str(tmp_path / "sample.npz")], capsys)
    assert code == 0
    assert "user data (6 images)" in stdout and "max |diff|" in stdout and "PASS" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: refs["x"]})[0]
    np.testing.assert_allclose(got, refs["func_out"], atol=1e-4, rtol=0)
    # the written ONNX file (channels-last, from tf2onnx) loads on its own too
    model = load_model(out, verbose=False)
    assert model.layout == "channels_last" and model.fidelity.reference == "onnxruntime"
    assert model.logits_module is not None


@pytest.mark.keras
@needs_tf
@pytest.mark.parametrize(("name", "expected"), [
    ("lambda.keras", ["'scale_by_two'", "Lambda", "does not run code"]),
    ("custom.keras", ["'my_custom'", "Brighten", "does not run code"]),
    ("grouped.keras", ["StatefulPartitionedCall", "grouped", "not ONNX operators"]),
])
def test_keras_failures_are_explained(name, expected, keras_models, isolated_cache, capsys):
    code, _, err = run_cli(["convert", str(keras_models / name)], capsys)
    assert code == 2
    assert "Traceback" not in err and str(keras_models / name) in err
    for text in expected:
        assert text in err


@pytest.mark.keras
@needs_tf
def test_keras_without_tensorflow_names_the_extra(keras_models, isolated_cache, tmp_path,
                                                  monkeypatch, capsys):
    fake = tmp_path / "no_tf" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tensorflow')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    code, _, err = run_cli(["convert", str(keras_models / "plain.keras")], capsys)
    assert code == 2
    assert 'pip install -c constraints.txt -e ".[keras]"' in err




# ------------------------------------------------------------------------------- ONNX
def export_onnx(net: nn.Module, path: Path, dynamic: bool) -> Path:
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    torch.onnx.export(net, (images(2),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


@pytest.mark.parametrize("dynamic", [True, False])
def test_onnx_file_matches_onnxruntime(tmp_path, dynamic):
    net = torch_net()
    model = load_model(export_onnx(net, tmp_path / "net.onnx", dynamic), verbose=False)
    assert (model.layout, model.n_bands, model.n_classes) == ("channels_first", 13, 4)
    assert model.spatial_size == (16, 16) and model.source_format == "onnx"
    assert model.fidelity.reference == "onnxruntime" and model.fidelity.max_abs_diff < 1e-5
    for n in (1, 5):  # any batch size, even when the file fixes it to 2
        x = images(n)
        torch.testing.assert_close(model(x, output="probabilities"), net(x), atol=1e-5, rtol=0)
    x = images(3)
    torch.testing.assert_close(torch.softmax(model(x, output="logits"), 1), net(x), atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(model(x, output="logits"), net[:-1](x), atol=1e-5, rtol=0)


def tiny_onnx(path: Path, op: str, domain: str = "") -> Path:
    """Conv -> GlobalAveragePool -> Flatten -> `op` graph on 13-band images."""
    weight = numpy_helper.from_array(np.ones((3, 13, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node(op, ["f"], ["output"], name="last_op", domain=domain)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["N", 13, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])], [weight])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))
    return path


def test_onnx_with_custom_domain_op_is_refused(tmp_path, capsys):
    path = tiny_onnx(tmp_path / "custom.onnx", "MagicBand", domain="com.example")
    code, _, err = run_cli(["convert", str(path)], capsys)
    assert code == 2
    assert "MagicBand" in err and "com.example" in err and "last_op" in err


def test_onnx_op_without_onnx2torch_converter_is_named(tmp_path, capsys):
    code, _, err = run_cli(["convert", str(tiny_onnx(tmp_path / "shrink.onnx", "Shrink"))],
                           capsys)
    assert code == 2
    assert "onnx2torch has no converter for Shrink" in err and "'last_op'" in err


def test_tiny_onnx_without_softmax_converts(tmp_path):
    model = load_model(tiny_onnx(tmp_path / "relu.onnx", "Relu"), verbose=False)
    assert model.logits_module is None and not model.ends_with_softmax
    assert model.spatial_size == (8, 8)


def test_onnx_that_onnxruntime_cannot_run_is_explained(tmp_path, capsys):
    path = tiny_onnx(tmp_path / "new.onnx", "Relu")
    proto = onnx.load(str(path))
    proto.ir_version = 99
    onnx.save(proto, str(path))
    code, _, err = run_cli(["convert", str(path)], capsys)
    assert code == 2 and "new.onnx" in err and "Traceback" not in err


def test_fidelity_mismatch_is_refused_unless_accepted(tmp_path, monkeypatch, capsys):
    import xband.models.load

    path = export_onnx(torch_net(), tmp_path / "net.onnx", dynamic=True)
    real = xband.models.load._onnxruntime

    def shifted(graph, source):  # onnxruntime's logits, 0.01 higher
        run = real(graph, source)
        return lambda x: run(x) + 0.01

    monkeypatch.setattr(xband.models.load, "_onnxruntime", shifted)
    code, _, err = run_cli(["convert", str(path)], capsys)
    assert code == 2
    assert "does not compute the same function" in err and "--accept-mismatch" in err
    assert "logits differ by up to 0.01" in err
    code, out, _ = run_cli(["convert", str(path), "--accept-mismatch"], capsys)
    assert code == 0 and "MISMATCH ACCEPTED" in out


def test_fidelity_tolerance_is_relative_to_the_range():
    ref = np.array([[0.0, 1000.0], [500.0, 2.0]])
    assert compare(ref, ref + 0.5, reference="r", probe="p").passed  # 0.5 <= 1e-3 * 1000
    assert not compare(ref, ref + 2.0, reference="r", probe="p").passed
    # near-constant outputs (an untrained MobileNet's logits span 1e-19): a constant fails
    tiny = np.array([[1e-19, 3e-19], [2e-19, 0.5e-19]])
    assert compare(tiny, tiny * (1 + 1e-6), reference="r", probe="p").passed
    assert not compare(tiny, np.full_like(tiny, tiny.mean()), reference="r", probe="p").passed
    # float32 rounding of large values passes even when the range is smaller than it
    offset = np.array([[100.0, 100.0 + 1e-5]])
    assert compare(offset, offset + 5e-5, reference="r", probe="p").passed
    # the verdict needs the gradient too
    grad = np.ones((2, 3))
    assert not compare(ref, ref, reference="r", probe="p", ref_grad=grad, grad=grad * 1.1).passed
    assert compare(ref, ref, reference="r", probe="p", ref_grad=grad, grad=grad * 1.001).passed
    zero = compare(ref, ref, reference="r", probe="p", ref_grad=grad, grad=grad * 0)
    assert not zero.passed and "input gradients differ by 1" in zero.failures()


def saturated_net() -> nn.Sequential:
    """A softmax CNN whose probabilities are constant to 1e-9 (logits within 1e-8), as
    untrained MobileNets' are: any model within 1e-4 of its outputs passed version 0.1's check."""
    net = torch_net()
    with torch.no_grad():
        net[5].weight.mul_(1e-7)
        net[5].bias.zero_()
    return net


def test_broken_conversion_of_saturated_onnx_model_fails(tmp_path, monkeypatch):
    import xband.models.load

    net = saturated_net()
    path = export_onnx(net, tmp_path / "flat.onnx", dynamic=True)
    good = load_model(path, verbose=False)
    assert good.fidelity.passed and good.fidelity.compared == "logits"
    assert good.fidelity.output_range < 1e-6  # the logits span almost nothing
    real = xband.models.load.onnx_to_torch

    def broken(*args):
        converted = real(*args)
        break_first_conv(converted.module)
        return converted

    monkeypatch.setattr(xband.models.load, "onnx_to_torch", broken)
    with pytest.raises(XbandError, match="logits differ by up to"):
        load_model(path, verbose=False)
    accepted = load_model(path, verbose=False, accept_mismatch=True)
    assert accepted.fidelity.rel_diff > 1e-2 and accepted.fidelity.accepted_mismatch
    # what version 0.1 compared: the probabilities still agree within 1e-4
    x = images(8)
    assert (accepted.module(x) - net(x)).abs().max() < 1e-8


def test_onnx_gradient_check_catches_a_wrong_backward_and_passes_kinks(tmp_path, monkeypatch,
                                                                         planted_torch):
    """onnxruntime has no gradients: the module's autograd gradient is checked against its own
    float64 central differences. A ReLU/max-pool network (kinks everywhere) passes; a module
    whose backward does not follow its forward fails."""
    import xband.models.load
    from tests.planted import planted_images

    x = planted_images(n_per_class=8, seed=3)[0]
    path = tmp_path / "planted.onnx"
    torch.onnx.export(planted_torch, (torch.from_numpy(x[:2]),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    good = load_model(path, probe=x, verbose=False)
    assert good.fidelity.passed and good.fidelity.grad_rel_diff < 1e-4
    assert "float64" in good.fidelity.grad_reference
    real = xband.models.load.onnx_to_torch

    def wrong_backward(*args):
        converted = real(*args)
        converted.module = WrongBackward(converted.module)
        return converted

    monkeypatch.setattr(xband.models.load, "onnx_to_torch", wrong_backward)
    with pytest.raises(XbandError, match="input gradients differ by 0.1"):
        load_model(path, probe=x, verbose=False)


def test_module_that_does_not_compute_in_float64_is_said_not_gradient_checked():
    from converters.fidelity import gradient_against_float64

    class Float32Inside(nn.Module):  # a cast to float32 inside, as some converted graphs have
        def __init__(self):
            super().__init__()
            self.net = torch_net(softmax=False)

        def forward(self, x):
            return self.net(x.float()).to(x.dtype)

    module = Float32Inside().eval()
    exact, autograd = gradient_against_float64(module, images(4).numpy(), 0)
    assert exact is None and autograd.shape == (8,)
    clean, _ = gradient_against_float64(torch_net(softmax=False), images(4).numpy(), 0)
    assert clean is not None


def unused_initializer_onnx(path: Path) -> Path:
    """A tiny graph with an initializer no node uses: onnxruntime warns about it on loading."""
    tiny_onnx(path, "Relu")
    proto = onnx.load(str(path))
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    onnx.save(proto, str(path))
    return path


def test_onnxruntime_warnings_only_with_verbose(tmp_path, capfd):
    path = unused_initializer_onnx(tmp_path / "unused.onnx")
    assert main(["convert", str(path)]) == 0
    assert "unused" not in capfd.readouterr().err
    assert main(["convert", str(path), "--verbose"]) == 0
    assert "Removing initializer 'unused'" in capfd.readouterr().err
    assert "XBAND_VERBOSE" not in os.environ  # verbose for that run only, not for the session
    assert main(["convert", str(path)]) == 0
    assert "unused" not in capfd.readouterr().err


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_torchscript_and_export_files_end_in_softmax_stripped_to_logits(tmp_path, fmt):
    """A traced Sequential and an exported program keep their final softmax visible: it is
    stripped, so gradient methods explain logits, as for an nn.Sequential."""
    net = torch_net()
    path = tmp_path / ("net.pt" if fmt == "torchscript" else "net.pt2")
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, images(2)), str(path))
    else:
        batch = torch.export.Dim("batch", min=1)
        torch.export.save(torch.export.export(net, (images(2),), dynamic_shapes=({0: batch},)),
                          str(path))
    model = load_model(path, verbose=False)
    assert model.final_activation == "softmax" and model.logits_module is not None
    assert not model.notes or all("cannot be stripped" not in n for n in model.notes)
    x = images(3)
    torch.testing.assert_close(model(x, output="logits"), net[:-1](x), atol=1e-5, rtol=0)
    torch.testing.assert_close(model(x, output="probabilities"), net(x), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------- PyTorch
def test_torch_module_object():
    net = torch_net()
    model = load_model(net, verbose=False)
    assert model.module is not net and model.source_format == "torch-module"  # a copy
    assert (model.layout, model.band_axis, model.n_bands, model.n_classes) == (
        "channels_first", 1, 13, 4)
    assert model.ends_with_softmax and model.logits_module is not None
    x = images(3)
    torch.testing.assert_close(torch.softmax(model(x), 1), net(x), atol=1e-6, rtol=0)


def test_torch_module_with_softmax_inside_forward():
    """A softmax at the end of forward is found by tracing and stripped; where forward cannot
    be traced (control flow on values), rows summing to 1 still tell a softmax, kept."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch_net(softmax=False)

        def forward(self, x):
            return torch.softmax(self.body(x), dim=1)

    traced = load_model(Net(), verbose=False)
    assert traced.final_activation == "softmax" and traced.logits_module is not None
    assert "softmax() at the end of forward, traced with torch.fx" in traced.summary()
    torch.testing.assert_close(traced(images(2)), traced.module.body(images(2)))

    class Untraceable(Net):
        def forward(self, x):
            z = self.body(x)
            return torch.softmax(z if z.sum() > -1e9 else -z, dim=1)

    model = load_model(Untraceable(), verbose=False)
    assert model.final_activation == "softmax" and model.logits_module is None
    assert model.network("logits") is model.module
    assert model.output_space("logits") == "probabilities"
    assert any("cannot be stripped" in note for note in model.notes)
    plain = load_model(torch_net(softmax=False), verbose=False)
    assert plain.final_activation == "none" and plain.logits_module is None
    assert plain.output_space("logits") == "logits" and not plain.notes
    x = images(2)  # probabilities of a network that ends in logits: xband applies the softmax
    torch.testing.assert_close(plain(x, output="probabilities"), torch.softmax(plain(x), 1))


def test_torch_sigmoid_is_stripped_even_when_nested():
    body = torch_net(softmax=False)
    for net in (nn.Sequential(body, nn.Sigmoid()),
                nn.Sequential(nn.Sequential(body, nn.Sigmoid())).eval()):
        model = load_model(net, verbose=False)
        assert model.final_activation == "sigmoid" and model.logits_module is not None
        x = images(3)
        torch.testing.assert_close(model(x), body(x))
        torch.testing.assert_close(model(x, output="probabilities"), torch.sigmoid(body(x)))

    class Inside(nn.Module):  # a sigmoid at the end of forward: traced, stripped
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return torch.sigmoid(self.body(x))

    inside = load_model(Inside(), n_bands=13, verbose=False)
    assert inside.final_activation == "sigmoid" and inside.logits_module is not None
    torch.testing.assert_close(inside(images(2)), body(images(2)))

    class Hidden(nn.Module):  # calls a module it does not hold: torch.fx cannot trace it
        def forward(self, x):
            return torch.sigmoid(body(x))

    hidden = load_model(Hidden(), n_bands=13, verbose=False)  # outputs in [0, 1] prove nothing
    assert hidden.final_activation == "none" and hidden.logits_module is None
    assert any("no final sigmoid is visible" in note for note in hidden.notes)


def test_onnx_final_sigmoid_is_stripped_and_compared_as_logits(tmp_path):
    model = load_model(tiny_onnx(tmp_path / "sig.onnx", "Sigmoid"), verbose=False)
    assert model.final_activation == "sigmoid" and model.logits_module is not None
    fid = model.fidelity
    assert fid.compared == "logits" and fid.passed and fid.grad_reference.startswith("central")
    x = images(2, size=8)
    torch.testing.assert_close(torch.sigmoid(model(x)), model.module(x))


@pytest.mark.parametrize("route", ["module", "trace", "script", "export"])
def test_timm_and_torchgeo_models_load_with_logits(route, tmp_path, capsys):
    timm_models = pytest.importorskip("torchgeo.models")
    net = timm_models.resnet18(weights=None, in_chans=13, num_classes=10).eval()
    x = images(2)
    if route == "trace":
        torch.jit.save(torch.jit.trace(net, x), str(tmp_path / "net.pt"))
    elif route == "script":
        torch.jit.save(torch.jit.script(net), str(tmp_path / "net.pt"))
    elif route == "export":
        torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "net.pt2"))
    source = net if route == "module" else next(tmp_path.iterdir())
    model = load_model(source, verbose=False)
    assert model.final_activation == "none" and model.output_space("logits") == "logits"
    assert not model.notes or route == "export"
    torch.testing.assert_close(model(images(3)), net(images(3)), atol=1e-5, rtol=1e-5)


def test_torch_module_without_conv_needs_n_bands():
    net = nn.Sequential(nn.Flatten(), nn.Linear(13 * 8 * 8, 3)).eval()
    with pytest.raises(XbandError, match="n_bands"):
        load_model(net, verbose=False)
    model = load_model(net, n_bands=13, input_size=(8, 8), verbose=False)
    assert model.n_classes == 3 and model.spatial_size == (8, 8)


def test_torch_module_with_wrong_probe_is_refused():
    with pytest.raises(XbandError, match="12 bands on axis 1"):
        load_model(torch_net(), probe=np.zeros((2, 12, 16, 16), np.float32), verbose=False)


def test_probe_in_the_other_layout_is_turned_around():
    loaded = load_model(torch_net(), probe=np.random.rand(3, 16, 16, 13).astype(np.float32),
                        verbose=False)
    assert loaded.fidelity.probe == "user data (3 images)"


def test_torchscript_and_torch_export_files(tmp_path):
    net = torch_net()
    torch.jit.save(torch.jit.trace(net, images(2)), str(tmp_path / "net.ts"))
    torch.export.save(torch.export.export(net, (images(2),)), str(tmp_path / "net.pt2"))
    x = images(5)
    for name, fmt in [("net.ts", "torchscript"), ("net.pt2", "torch-export")]:
        model = load_model(tmp_path / name, verbose=False)
        assert model.source_format == fmt and model.n_bands == 13 and model.ends_with_softmax
        torch.testing.assert_close(model(x, output="probabilities"), net(x), atol=1e-6, rtol=0)
    assert load_model(tmp_path / "net.pt2", verbose=False).spatial_size == (16, 16)


def test_torchscript_cli_writes_checked_onnx(tmp_path, capsys):
    net = torch_net()
    torch.jit.save(torch.jit.trace(net, images(2)), str(tmp_path / "net.pt"))
    code, out, _ = run_cli(["convert", str(tmp_path / "net.pt")], capsys)
    assert code == 0 and (tmp_path / "net.onnx").exists()
    # the written file's figures against onnxruntime, not "no separate reference"
    assert "fidelity of the written file vs onnxruntime" in out and "conversion: PASS" in out
    assert "input gradient of class" in out and "float64" in out
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    x = images(3)
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0],
                               net(x).detach().numpy(), atol=1e-5)


def test_pickles_need_trust_and_state_dicts_are_explained(tmp_path, capsys):
    net = torch_net()
    torch.save(net, tmp_path / "full.pt")
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    code, _, err = run_cli(["convert", str(tmp_path / "full.pt")], capsys)
    assert code == 2 and "--trust-pickle" in err and "full.pt" in err
    model = load_model(tmp_path / "full.pt", trust_pickle=True, verbose=False)
    assert model.source_format == "torch-pickle" and model.n_classes == 4
    code, _, err = run_cli(["convert", str(tmp_path / "weights.pth")], capsys)
    assert code == 2 and "state_dict" in err and "load_state_dict" in err


# ------------------------------------------------------------------------------- files, CLI
@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.keras", None, "no such file"),
    ("model.txt", b"hello", "unknown model format"),
    ("broken.onnx", b"\x08\x07garbage", "not a valid ONNX model"),
    ("broken.keras", b"PK\x03\x04 cut short", "not a valid .keras file"),
    ("broken.h5", b"\x89HD", "not a valid .h5 file"),
    ("broken.pt", b"\x80\x02garbage", "cannot read this file as a PyTorch model"),
    ("folder", "dir", "not a TensorFlow SavedModel"),
])
def test_bad_files_give_one_clear_message(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(["convert", str(path)], capsys)
    assert code == 2 and message in err and name in err and "Traceback" not in err


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "convert" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "--help"])
    text = capsys.readouterr().out
    for option in ["MODEL", "--onnx", "--data", "--opset", "--model-layout", "--input-size",
                   "--accept-mismatch", "--trust-pickle"]:
        assert option in text or option.lower() in text


# ------------------------------------------------------- untrusted code, and valid models
def _evil_pickle(marker: Path) -> bytes:
    """A torch.save blob whose unpickling creates `marker` (code stored in a file runs)."""
    import io

    class Plant:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    buffer = io.BytesIO()
    torch.save(Plant(), buffer)
    return buffer.getvalue()


def _plant(archive: Path, out: Path, where: str, blob: bytes) -> Path:
    """`archive` with `blob` as its sample inputs, or as its first weight marked `use_pickle`."""
    import json
    import zipfile

    with zipfile.ZipFile(archive) as zin:
        entries = {info.filename: zin.read(info) for info in zin.infolist()}
    config_name = next(n for n in entries if n.endswith("model_weights_config.json"))
    if where == "sample inputs":
        entries[next(n for n in entries if "sample_inputs" in n)] = blob
    else:
        config = json.loads(entries[config_name])
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        entries[config_name] = json.dumps(config).encode()
        entries[config_name.rsplit("/", 1)[0] + "/" + first["path_name"]] = blob
    with zipfile.ZipFile(out, "w") as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return out


@pytest.mark.parametrize("where", ["sample inputs", "a pickled weight"])
def test_torch_export_archive_never_unpickles_without_trust(where, tmp_path, capsys):
    archive = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(torch_net(), (images(2),)), str(archive))
    marker = tmp_path / "code-ran"
    planted = _plant(archive, tmp_path / "planted.pt2", where, _evil_pickle(marker))
    code, _, err = run_cli(["convert", str(planted)], capsys)
    assert code == 2 and "holds pickled entries" in err and "--trust-pickle" in err
    assert not marker.exists()
    with pytest.raises(XbandError, match="pickled entries"):
        load_model(planted, verbose=False)
    assert not marker.exists()
    assert load_model(archive, verbose=False).source_format == "torch-export"  # plain: no pickle


def test_pickle_zip_dressed_as_torch_export_is_one_message(tmp_path, capfd):
    import zipfile

    path = tmp_path / "model.pt2"
    torch.save(torch_net(), path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("model/archive_format", "pt2")
    assert main(["convert", str(path)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "holds pickled entries" in err and "Traceback" not in err


def test_torch_export_program_explains(tmp_path, planted_torch, planted_train):
    from tests.planted import PLANTED, planted_images

    x = planted_train[0]
    path = tmp_path / "planted.pt2"
    torch.export.save(torch.export.export(planted_torch, (torch.from_numpy(x[:2]),)), str(path))
    model = load_model(path, verbose=False)
    test_x, test_y = planted_images(n_per_class=8, seed=1)
    result = xband.explain(model, (test_x, test_y), ["saliency", "feature_ablation"],
                           progress=False, seed=0)
    top = result.top_bands()
    for c, band in PLANTED.items():
        assert top.loc[f"class {c}", "feature_ablation"] == f"B{band + 1}"


def test_python_api_takes_r_numbers_and_names_its_own_arguments(tmp_path):
    """R passes 20, not 20L: integral floats are whole numbers; errors name API arguments."""
    model = load_model(torch_net(), n_bands=13.0, input_size=(16.0, 16.0), verbose=False)
    x = np.random.default_rng(0).uniform(size=(16, 13, 16, 16)).astype(np.float32)
    y = np.arange(16) % 4
    result = xband.explain(model, (x, y.astype(float)), "saliency", seed=0.0, batch_size=8.0,
                           max_per_class=3.0, max_images=12.0, examples_per_class=1.0,
                           n_boot=50.0, progress=False, accept_low_accuracy=True)
    assert len(result.indices) == 12 and len(result.top_bands(k=2.0)) == 5
    for argument, value in [("batch_size", 0), ("seed", -1.0), ("max_per_class", 2.5)]:
        with pytest.raises(XbandError) as err:
            xband.explain(model, (x, y), "saliency", progress=False, **{argument: value})
        assert str(err.value).startswith(f"{argument} must be") and "--" not in str(err.value)
    with pytest.raises(XbandError, match=r"scale must be .* not 0"):
        xband.Preprocess(scale=0)
    (tmp_path / "Forest").mkdir()
    (tmp_path / "Forest" / "notes.txt").write_text("not an image")
    with pytest.raises(XbandError) as err:
        xband.read_data(tmp_path)
    assert "skip_bad=True" in str(err.value) and "--skip-bad" in err.value.cli


SAVEDMODEL_WRITING = r'''
import sys, tensorflow as tf
out, marker = sys.argv[1], sys.argv[2]
class Net(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.stateless_normal((3, 3, 4, 3), seed=(1, 2)))
    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 4), tf.float32)])
    def serve(self, x):
        tf.io.write_file(marker, tf.strings.as_string(tf.reduce_sum(x)))
        return {"scores": tf.reduce_mean(tf.nn.conv2d(x, self.w, 1, "SAME"), axis=[1, 2])}
net = Net()
tf.saved_model.save(net, out, signatures={"serving_default": net.serve})
'''


@pytest.mark.keras
@needs_tf
def test_savedmodel_writing_files_is_refused_unless_trusted(tmp_path, isolated_cache, capsys):
    folder, marker = tmp_path / "writer_savedmodel", tmp_path / "written-by-the-graph"
    subprocess.run([sys.executable, "-c", SAVEDMODEL_WRITING, str(folder), str(marker)],
                   check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    code, _, err = run_cli(["convert", str(folder), "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == 2 and "WriteFile" in err and "--trust-graph" in err
    assert not marker.exists()
    model = load_model(folder, trust_graph=True, verbose=False)
    assert marker.exists() and model.n_classes == 3  # trusted: the graph ran, as it said


TENSORFLOW_FIRST = r'''
import keras, tensorflow  # a notebook that trained the model, or R's keras via reticulate
import xband
from xband.demo import BAND_NAMES, CLASS_NAMES, MODEL_PATH, demo_data
x, y = demo_data(n_per_class=3)
model = xband.load_model(MODEL_PATH, verbose=False)
result = xband.explain(model, (x, y), "saliency", bands=BAND_NAMES, classes=CLASS_NAMES,
                       progress=False)
print("explained", len(result.indices))
'''


@pytest.mark.keras
@needs_tf
def test_load_and_explain_where_tensorflow_is_already_imported(isolated_cache):
    done = subprocess.run([sys.executable, "-c", TENSORFLOW_FIRST], capture_output=True,
                          text=True, cwd=Path(__file__).parents[1],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "explained 15" in done.stdout
