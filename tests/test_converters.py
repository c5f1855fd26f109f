"""Fidelity of converted models where float32 rounding alone separates the two sides.

The Keras model is built in a TensorFlow subprocess: TensorFlow is never imported here.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from converters.cache import export_keras
from converters.errors import ConversionError
from converters.fidelity import check_in_float64, compare, enforce
from tests.planted import keras_python
from tests.test_models import needs_tf
from xband import load_model
from xband.models.load import keras_fidelity

# A max-pool window whose two largest inputs are adjacent float32 numbers x < y. TensorFlow
# computes the convolution and the batch-norm scale one after the other, fl(fl(0.625 x) * 3),
# which rounds both to the same value, so its gradient goes to the first; tf2onnx folds the scale
# into the convolution, fl(1.875 x), which keeps them apart, so the converted model's goes to y,
# as the exact (float64) gradient of both does.
NEAR_TIE_BUILD = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras

out = sys.argv[1]
L = keras.layers
inp = keras.Input((2, 2, 13))
conv, bn, dense = L.Conv2D(1, 1, use_bias=False), L.BatchNormalization(epsilon=0.0), L.Dense(2)
model = keras.Model(inp, dense(L.Flatten()(L.MaxPooling2D(2)(bn(conv(inp))))))
kernel = np.zeros((1, 1, 13, 1), np.float32)
kernel[0, 0, 0, 0] = 0.625
conv.set_weights([kernel])
bn.set_weights([np.full(1, 3.0), np.zeros(1), np.zeros(1), np.ones(1)])
dense.set_weights([np.array([[1.0, -1.0]]), np.zeros(2)])
model.save(f"{out}/near_tie.keras")
probe = np.random.default_rng(0).uniform(0, 0.5, (4, 2, 2, 13)).astype(np.float32)
first = np.float32("0.81848085")
probe[:, 0, 0, 0], probe[:, 0, 1, 0] = first, np.nextafter(first, np.float32(1))
np.save(f"{out}/probe.npy", probe)
'''


@pytest.mark.keras
@needs_tf
def test_max_pool_near_tie_passes_in_float64_and_a_broken_copy_does_not(tmp_path):
    keras_python(NEAR_TIE_BUILD, str(tmp_path))
    path, probe = tmp_path / "near_tie.keras", np.load(tmp_path / "probe.npy")
    model = load_model(path, probe=probe, cache_dir=tmp_path / "cache", verbose=False)
    fid = model.fidelity
    assert fid.rel_diff < 1e-6 and fid.grad_rel_diff > 1  # float32: the gradients part ways
    assert fid.passed and fid.float64_rel_diff < 1e-12 and fid.float64_grad_rel_diff < 1e-12
    assert fid.reference_grad_rounding > 1  # TensorFlow's own float32 gradient is the odd one
    assert "PASS in float64" in fid.summary()

    exp = export_keras(path, "keras", model.sha256, probe=probe, cache_dir=tmp_path / "cache",
                       float64=True)  # cached by load_model
    broken = copy.deepcopy(model.module)
    conv = next(m for m in broken.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.neg_()
    converted = SimpleNamespace(module=broken, logits_module=None, final_activation="none")
    verdict = keras_fidelity(exp, converted, "probe", lambda: exp)
    assert not verdict.passed and verdict.float64_rel_diff > 0.1


def _linear_case(weight_error: float) -> tuple[nn.Module, np.ndarray, np.ndarray, np.ndarray]:
    """A linear module (its weight off by `weight_error`), a probe, and the exact outputs and
    input gradient (of output 0) of the unperturbed one."""
    weight = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    module = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight * (1 + weight_error)))
    x = np.random.default_rng(0).uniform(0, 1, (4, 3)).astype(np.float32)
    return module, x, x.astype(np.float64) @ weight.T, np.tile(weight[0], (4, 1))


def _float32_fidelity(module: nn.Module, x: np.ndarray, ref: np.ndarray, ref_grad: np.ndarray):
    xt = torch.from_numpy(x).requires_grad_(True)
    out = module(xt)
    out[:, 0].sum().backward()
    return compare(ref, out.detach().numpy(), reference="tf", probe="p", ref_grad=ref_grad,
                   grad=xt.grad.numpy(), target=0)


def test_float64_check_passes_rounding_and_names_an_unstable_reference():
    module, x, exact, exact_grad = _linear_case(0.0)
    shifted = exact + 0.01 * np.ptp(exact)  # float32 references that rounding moved this far
    fid = _float32_fidelity(module, x, shifted, exact_grad)
    assert not fid.passed
    check_in_float64(fid, module, x, ref=shifted, exact_ref=exact, ref_grad=exact_grad,
                     exact_ref_grad=exact_grad)
    assert fid.passed and fid.float64_rel_diff < 1e-12 and fid.reference_unstable

    wrong, x, exact, exact_grad = _linear_case(0.05)
    fid = _float32_fidelity(wrong, x, shifted, exact_grad)
    check_in_float64(fid, wrong, x, ref=shifted, exact_ref=exact, ref_grad=exact_grad,
                     exact_ref_grad=exact_grad)
    assert not fid.passed and fid.float64_rel_diff > 1e-2
    with pytest.raises(ConversionError, match="numerically unstable"):
        enforce(fid, "m.keras", accept_mismatch=False)

    fid = _float32_fidelity(wrong, x, exact, exact_grad)  # a stable reference
    check_in_float64(fid, wrong, x, ref=exact, exact_ref=exact, ref_grad=exact_grad,
                     exact_ref_grad=exact_grad)
    assert not fid.passed and not fid.reference_unstable
    with pytest.raises(ConversionError, match="does not compute the same function.*both in float64"):
        enforce(fid, "m.keras", accept_mismatch=False)


def test_float64_check_skips_a_module_fixed_to_float32():
    class Float32Only(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().sum(dim=1, keepdim=True).repeat(1, 2)

    x = np.ones((2, 3), np.float32)
    fid = compare(np.zeros((2, 2)), np.ones((2, 2)), reference="tf", probe="p")
    check_in_float64(fid, Float32Only(), x, ref=np.zeros((2, 2)), exact_ref=np.zeros((2, 2)))
    assert not fid.passed and fid.float64_rel_diff is None
