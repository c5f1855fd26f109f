"""Does the PyTorch module compute what the original computes? Numbers, and a verdict.

The comparison is made on the network as it is explained: its logits when a final softmax or
sigmoid was stripped, relative to their range (a saturated or near-constant softmax output says
nothing about a conversion: a constant would match it), and on the input gradient that the
gradient methods use. The verdict needs both. Where float32 rounding alone separates the two
sides, the comparison is repeated with both computing in float64 (`check_in_float64`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from converters.errors import ConversionError

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
    # the same comparison with both sides computing in float64 (`check_in_float64`)
    float64_rel_diff: float | None = None
    float64_grad_rel_diff: float | None = None
    # how far float32 rounding alone moves the original: its float32 values against its float64
    # values, max |diff| / range and relative gradient difference
    reference_rounding: float | None = None
    reference_grad_rounding: float | None = None
    passed: bool = True
    accepted_mismatch: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def float64_passed(self) -> bool:
        """Both sides computing in float64 agree within the tolerances."""
        return (self.float64_rel_diff is not None and self.float64_rel_diff <= self.tolerance_rel
                and (self.float64_grad_rel_diff is None
                     or self.float64_grad_rel_diff <= self.tolerance_grad))

    @property
    def reference_unstable(self) -> bool:
        """The original's own float32 results would fail this check against its float64 results:
        rounding alone moves them beyond the tolerances, so no float32 conversion can be checked
        to them."""
        return ((self.reference_rounding is not None
                 and self.reference_rounding > self.tolerance_rel)
                or (self.reference_grad_rounding is not None
                    and self.reference_grad_rounding > self.tolerance_grad))

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
        if self.float64_rel_diff is not None:
            lines += [f"  both in float64: {self.float64_figures()}",
                      f"  {self.reference} in float32 vs float64: {self.rounding_figures()}"]
        if not self.passed:
            outcome = "MISMATCH ACCEPTED" if self.accepted_mismatch else "FAIL"
        elif self.outputs_passed and self.gradient_passed:
            outcome = "PASS"
        else:
            outcome = "PASS in float64 (the float32 differences are rounding)"
        lines.append(f"  conversion: {outcome} ({self.tolerances()})")
        return "\n".join(lines)

    def float64_figures(self) -> str:
        """The float64 comparison's figures, in words."""
        text = f"{self.compared} max |diff| {self.float64_rel_diff:.3g} x their range"
        if self.float64_grad_rel_diff is not None:
            text += f", gradient relative diff {self.float64_grad_rel_diff:.3g}"
        return text

    def rounding_figures(self) -> str:
        """How far the original's float32 values are from its float64 values, in words."""
        text = f"{self.compared} max |diff| {self.reference_rounding:.3g} x their range"
        if self.reference_grad_rounding is not None:
            text += f", gradient relative diff {self.reference_grad_rounding:.3g}"
        return text

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
        text = " and ".join(parts)
        if self.float64_rel_diff is not None and not self.float64_passed:
            text += f"; with both in float64: {self.float64_figures()}"
        return text


def torch_outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Outputs of `module` on the batch `x`."""
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def gradient_target(outputs: np.ndarray) -> int:
    """The output whose gradient the fidelity checks compare: the largest mean along the last
    axis (a classifier's classes, or a channels-last segmentation network's)."""
    return int(np.argmax(outputs.reshape(-1, outputs.shape[-1]).mean(axis=0)))


def target_score(outputs: torch.Tensor, target: int) -> torch.Tensor:
    """(N,) each image's output `target` on the last axis, summed over the other axes (the
    pixels of a segmentation output): the scalar whose gradient the fidelity checks compare."""
    return outputs[..., target].reshape(len(outputs), -1).sum(dim=1)


def input_gradient(module: nn.Module, x: np.ndarray, target: int) -> np.ndarray:
    """d(sum over the batch of `target_score`) / d input, as TensorFlow's reference does."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
    target_score(module(xt), target).sum().backward()
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
                slopes.append((target_score(up - down, target)
                               / (2 * rel * norms.view(-1))).numpy())
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
        raise ConversionError(f"the converted model gives outputs of shape {out.shape} where the "
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
        fid.grad_rel_diff = _relative_error(grad, ref_grad)
        fid.grad_target, fid.grad_reference = target, grad_reference
        fid.tolerance_grad = tolerance_grad
    fid.passed = fid.outputs_passed and fid.gradient_passed
    return fid


def _relative_error(values: np.ndarray, ref: np.ndarray) -> float:
    """||values - ref|| / ||ref||."""
    ref = np.asarray(ref, dtype=np.float64)
    norm = float(np.linalg.norm(ref))
    error = float(np.linalg.norm(np.asarray(values, dtype=np.float64) - ref))
    return error / norm if norm else float(error > 0)


def _error_over_range(values: np.ndarray, ref: np.ndarray) -> float:
    """max |values - ref| / the range of `ref`."""
    ref = np.asarray(ref, dtype=np.float64)
    max_abs = float(np.abs(np.asarray(values, dtype=np.float64) - ref).max())
    spread = float(ref.max() - ref.min())
    return max_abs / spread if spread > 0 else float(max_abs > 0)


def check_in_float64(fid: Fidelity, module: nn.Module, x: np.ndarray, *, ref: np.ndarray,
                     exact_ref: np.ndarray, ref_grad: np.ndarray | None = None,
                     exact_ref_grad: np.ndarray | None = None) -> None:
    """Repeat the comparison `fid` made on the probe `x` with both sides in float64: `module` as
    a float64 copy, the original as its float64 values `exact_ref` (and input gradient
    `exact_ref_grad`). A conversion that computes the same function agrees in float64 even where
    float32 rounding sends the two sides apart (a max-pool near-tie that routes the gradient to
    another pixel; a network that amplifies rounding); a wrong conversion does not. `ref` and
    `ref_grad`, the original's float32 values, tell how far rounding alone moves it. `fid`
    passes when the float64 comparison is within its tolerances; nothing is recorded when the
    module cannot run in float64 or a compared gradient has no float64 value."""
    target = fid.grad_target if fid.grad_rel_diff is not None else None
    if target is not None and exact_ref_grad is None:
        return
    run = _run_in_float64(module, x, target)
    if run is None:
        return
    out, grad = run
    fid.float64_rel_diff = _error_over_range(out, exact_ref)
    fid.reference_rounding = _error_over_range(ref, exact_ref)
    if target is not None:
        fid.float64_grad_rel_diff = _relative_error(grad, exact_ref_grad)
        fid.reference_grad_rounding = _relative_error(ref_grad, exact_ref_grad)
    fid.passed = fid.passed or fid.float64_passed


def _run_in_float64(module: nn.Module, x: np.ndarray,
                    target: int | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Outputs of a float64 copy of `module` on `x`, and the input gradient of the summed output
    `target` (None: no gradient); None when the module cannot compute in float64 (an operation
    fixed to float32)."""
    twin = copy.deepcopy(module).double()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).requires_grad_(target is not None)
    try:
        out = twin(xt)
        if out.dtype != torch.float64:
            return None
        if target is not None:
            target_score(out, target).sum().backward()
    except RuntimeError:
        return None
    return out.detach().numpy(), None if target is None else xt.grad.numpy()


def enforce(fid: Fidelity, source: str, accept_mismatch: bool) -> None:
    """Refuse a mismatch with a clear message, unless the user accepts it (then mark it)."""
    if fid.passed:
        return
    if accept_mismatch:
        fid.accepted_mismatch = True
        return
    accept = "Pass --accept-mismatch (accept_mismatch=True) to use it anyway."
    if fid.reference_unstable:
        raise ConversionError(f"{source}: the conversion cannot be checked: the model is numerically "
                         f"unstable on {fid.probe}. Float32 rounding alone moves "
                         f"{fid.reference}'s own results beyond the tolerances "
                         f"({fid.tolerances()}): against its float64 results, "
                         f"{fid.rounding_figures()}. The converted model's differences: "
                         f"{fid.failures()}. Its float32 explanations would be as unreliable in "
                         f"{fid.reference} itself. {accept}")
    raise ConversionError(f"{source}: the converted model does not compute the same function: "
                     f"{fid.failures()} against {fid.reference} on {fid.probe} "
                     f"({fid.tolerances()}). {accept}")
