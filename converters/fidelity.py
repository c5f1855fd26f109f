"""Does the PyTorch module compute what the original computes? Numbers, and a verdict.

The comparison is made on the network as it is explained: its logits when a final softmax or
sigmoid was stripped, relative to their range (a saturated or near-constant softmax output says
nothing about a conversion: a constant would match it), and on the input gradient that the
gradient methods use. The verdict needs both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xband.errors import XbandError

TOLERANCE_REL = 1e-3  # max |diff| over the range of the reference values
TOLERANCE_GRAD = 1e-2  # relative difference of the input gradients (exact reference)
FLOAT_FLOOR = 1e-6  # float32 rounding: differences below 1e-6 x max |reference| always pass
FD64_STEPS = (1e-8, 1e-9)  # float64 central-difference steps, relative to the image's norm
FD64_AGREE = 1e-4  # the two steps' slopes agree this closely (relative) when the copy is clean
FLOAT64_REFERENCE = "central differences of the converted module in float64"


@dataclass
class Fidelity:
    """Measured agreement between the original model and its PyTorch form on a probe batch."""

    reference: str  # what computed the original: "tensorflow", "onnxruntime", ... or "none"
    probe: str  # "user data (N images)" or "random uniform [lo, hi] (N images)"
    n_probe: int
    compared: str | None = None  # "logits" (the network as explained) or "outputs"
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    output_range: float | None = None  # range of the reference values compared
    reference_max_abs: float | None = None  # their largest magnitude (sets the float floor)
    rel_diff: float | None = None  # max |diff| / range
    grad_rel_diff: float | None = None  # ||g_torch - g_ref|| / ||g_ref||, one target class
    grad_target: int | None = None
    grad_reference: str | None = None  # "GradientTape", FLOAT64_REFERENCE, or why not checked
    tolerance_rel: float = TOLERANCE_REL
    tolerance_grad: float | None = None
    passed: bool = True
    accepted_mismatch: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def outputs_passed(self) -> bool:
        return self.max_abs_diff is None or self.max_abs_diff <= self._output_tolerance

    @property
    def gradient_passed(self) -> bool:
        return self.grad_rel_diff is None or self.grad_rel_diff <= self.tolerance_grad

    @property
    def _output_tolerance(self) -> float:
        return self.tolerance_rel * self.output_range + FLOAT_FLOOR * self.reference_max_abs

    def summary(self) -> str:
        """The figures in a few human-readable lines."""
        if self.max_abs_diff is None:
            return ("fidelity: nothing was converted (the model runs in PyTorch as given), so "
                    "there is no separate reference to compare with")
        lines = [f"fidelity vs {self.reference} on {self.probe}:",
                 (f"  {self.compared}: max |diff| {self.max_abs_diff:.3g} = {self.rel_diff:.3g} "
                  f"x their range {self.output_range:.3g} (mean |diff| "
                  f"{self.mean_abs_diff:.3g})")]
        if self.grad_rel_diff is not None:
            lines.append(f"  input gradient of class {self.grad_target} ({self.grad_reference}): "
                         f"relative diff {self.grad_rel_diff:.3g}")
        elif self.grad_reference is not None:
            lines.append(f"  input gradient: {self.grad_reference}")
        outcome = "PASS" if self.passed else (
            "MISMATCH ACCEPTED" if self.accepted_mismatch else "FAIL")
        lines.append(f"  conversion: {outcome} ({self.tolerances()})")
        return "\n".join(lines)

    def tolerances(self) -> str:
        text = f"tolerance {self.tolerance_rel:g} x range for the {self.compared}"
        if self.grad_rel_diff is not None:
            text += f", {self.tolerance_grad:g} relative for the gradient"
        return text

    def failures(self) -> str:
        """What exceeded its tolerance, in words."""
        parts = []
        if not self.outputs_passed:
            parts.append(f"{self.compared} differ by up to {self.max_abs_diff:.3g}, "
                         f"{self.rel_diff:.3g} x their range {self.output_range:.3g}")
        if not self.gradient_passed:
            parts.append(f"input gradients differ by {self.grad_rel_diff:.3g} (relative, "
                         f"{self.grad_reference})")
        return " and ".join(parts)


def torch_outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Outputs of `module` on the batch `x`."""
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def input_gradient(module: nn.Module, x: np.ndarray, target: int) -> np.ndarray:
    """d(sum over the batch of output[:, target]) / d input, as TensorFlow's reference does."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
    module(xt)[:, target].sum().backward()
    return xt.grad.numpy()


def directions(grad: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two unit directions per image, (2N, ...): the input gradient itself (a random one where
    it is zero) and a seeded random one."""
    random = np.random.default_rng(seed).standard_normal(grad.shape)
    steps = np.concatenate([np.where(_norms(grad) > 0, grad, random), random])
    return steps / _norms(steps)


def float64_slopes(module: nn.Module, x: np.ndarray, target: int,
                   unit: np.ndarray) -> np.ndarray | None:
    """Derivatives of output `target` along the unit directions `unit` (2N: two per image of
    `x`), by central differences of a float64 copy of `module`: independent of its backward
    code. A step of FD64_STEPS[-1] × the image's norm is far below the distance to the nearest
    ReLU or max-pool kink for almost every image, and float64 keeps its rounding error near
    1e-16 × |output| / step. None when the copy does not compute in float64 (a cast to float32
    inside) or the two steps disagree beyond FD64_AGREE: then the differences are not clean."""
    try:
        copy64 = copy.deepcopy(module).double()
        points = torch.from_numpy(np.concatenate([x, x]).astype(np.float64))
        norms = torch.from_numpy(_norms(points.numpy()))
        slopes = []
        with torch.no_grad():
            for rel in FD64_STEPS:
                step = torch.from_numpy(unit) * norms * rel
                up, down = copy64(points + step), copy64(points - step)
                if up.dtype != torch.float64:
                    return None
                slopes.append(((up - down)[:, target] / (2 * rel * norms.view(-1))).numpy())
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    coarse, fine = slopes
    scale = max(float(np.linalg.norm(fine)), np.finfo(np.float64).tiny)
    return fine if np.linalg.norm(coarse - fine) <= FD64_AGREE * scale else None


def gradient_against_float64(module: nn.Module, x: np.ndarray, target: int
                             ) -> tuple[np.ndarray | None, np.ndarray]:
    """(float64 central differences, float32 autograd) of output `target` along two directions
    per image (`directions`); the first is None when the module does not compute cleanly in
    float64 (`float64_slopes`)."""
    grad = input_gradient(module, x, target).astype(np.float64)
    unit = directions(grad)
    autograd = (np.concatenate([grad, grad]) * unit).reshape(len(unit), -1).sum(axis=1)
    return float64_slopes(module, x, target, unit), autograd


def _norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norm of each image, shaped to broadcast against `a`."""
    return np.linalg.norm(a.reshape(len(a), -1), axis=1).reshape(-1, *[1] * (a.ndim - 1))


def compare(ref_out: np.ndarray, out: np.ndarray, *, reference: str, probe: str,
            compared: str = "logits", ref_grad: np.ndarray | None = None,
            grad: np.ndarray | None = None, target: int | None = None,
            grad_reference: str = "GradientTape", tolerance_rel: float = TOLERANCE_REL,
            tolerance_grad: float = TOLERANCE_GRAD) -> Fidelity:
    """Fidelity of `out` against `ref_out` (and of the input gradients, or of directional
    derivatives, when given). Passes when max |diff| ≤ tolerance_rel × the range of `ref_out`
    (plus float32 rounding of its largest value) and the gradients differ by at most
    `tolerance_grad`, relative."""
    if ref_out.shape != out.shape:
        raise XbandError(f"the converted model gives outputs of shape {out.shape} where the "
                         f"original ({reference}) gives {ref_out.shape}")
    ref = ref_out.astype(np.float64)
    diff = np.abs(out.astype(np.float64) - ref)
    output_range = float(ref.max() - ref.min())
    max_abs = float(diff.max())
    fid = Fidelity(reference=reference, probe=probe, n_probe=len(ref_out), compared=compared,
                   max_abs_diff=max_abs, mean_abs_diff=float(diff.mean()),
                   output_range=output_range, reference_max_abs=float(np.abs(ref).max()),
                   rel_diff=max_abs / output_range if output_range > 0 else float(max_abs > 0),
                   tolerance_rel=tolerance_rel)
    if ref_grad is not None and grad is not None:
        norm = float(np.linalg.norm(ref_grad))
        error = float(np.linalg.norm(grad.astype(np.float64) - ref_grad))
        fid.grad_rel_diff = error / norm if norm else float(error > 0)
        fid.grad_target, fid.grad_reference = target, grad_reference
        fid.tolerance_grad = tolerance_grad
    fid.passed = fid.outputs_passed and fid.gradient_passed
    return fid


def enforce(fid: Fidelity, source: str, accept_mismatch: bool) -> None:
    """Refuse a mismatch with a clear message, unless the user accepts it (then mark it)."""
    if fid.passed:
        return
    if accept_mismatch:
        fid.accepted_mismatch = True
        return
    raise XbandError(f"{source}: the converted model does not compute the same function: "
                     f"{fid.failures()} against {fid.reference} on {fid.probe} "
                     f"({fid.tolerances()}). Pass --accept-mismatch (accept_mismatch=True) to "
                     "use it anyway.")
