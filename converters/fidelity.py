"""Does the PyTorch module compute what the original computes? Numbers, and a verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xband.errors import XbandError


@dataclass
class Fidelity:
    """Measured agreement between the original model and its PyTorch form on a probe batch."""

    reference: str  # what computed the original outputs: "tensorflow", "onnxruntime" or "none"
    probe: str  # "user data (N images)" or "random uniform [lo, hi] (N images)"
    n_probe: int
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    output_range: float | None = None
    grad_rel_diff: float | None = None  # ||g_torch - g_ref|| / ||g_ref||, one target class
    grad_target: int | None = None
    tolerance_abs: float = 1e-4
    tolerance_rel: float = 1e-3
    passed: bool = True
    accepted_mismatch: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        """The figures in a few human-readable lines."""
        if self.max_abs_diff is None:
            return f"fidelity: no separate reference ({self.reference}); probe {self.probe}"
        lines = [f"fidelity vs {self.reference} on {self.probe}:",
                 (f"  outputs: max |diff| {self.max_abs_diff:.3g}, mean |diff| "
                  f"{self.mean_abs_diff:.3g}, output range {self.output_range:.3g}")]
        if self.grad_rel_diff is not None:
            lines.append(f"  input gradient (class {self.grad_target}): relative diff "
                         f"{self.grad_rel_diff:.3g}")
        verdict = "PASS" if self.passed else (
            "MISMATCH ACCEPTED" if self.accepted_mismatch else "FAIL")
        lines.append(f"  verdict: {verdict} (tolerance {self.tolerance_abs:g} absolute or "
                     f"{self.tolerance_rel:g} x output range)")
        return "\n".join(lines)


def torch_outputs(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Outputs of `module` on the batch `x`."""
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def input_gradient(module: nn.Module, x: np.ndarray, target: int) -> np.ndarray:
    """d(sum over the batch of output[:, target]) / d input, as TensorFlow's reference does."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
    module(xt)[:, target].sum().backward()
    return xt.grad.numpy()


def compare(ref_out: np.ndarray, out: np.ndarray, *, reference: str, probe: str,
            ref_grad: np.ndarray | None = None, grad: np.ndarray | None = None,
            target: int | None = None, tolerance_abs: float = 1e-4,
            tolerance_rel: float = 1e-3) -> Fidelity:
    """Fidelity of `out` against `ref_out` (and of the input gradients, when given)."""
    if ref_out.shape != out.shape:
        raise XbandError(f"the converted model gives outputs of shape {out.shape} where the "
                         f"original ({reference}) gives {ref_out.shape}")
    diff = np.abs(out.astype(np.float64) - ref_out.astype(np.float64))
    output_range = float(ref_out.max() - ref_out.min())
    max_abs = float(diff.max())
    fid = Fidelity(reference=reference, probe=probe, n_probe=len(ref_out), max_abs_diff=max_abs,
                   mean_abs_diff=float(diff.mean()), output_range=output_range,
                   tolerance_abs=tolerance_abs, tolerance_rel=tolerance_rel,
                   passed=bool(max_abs <= tolerance_abs or max_abs <= tolerance_rel * output_range))
    if ref_grad is not None and grad is not None:
        norm = float(np.linalg.norm(ref_grad))
        fid.grad_rel_diff = float(np.linalg.norm(grad - ref_grad)) / norm if norm else float(
            np.linalg.norm(grad))
        fid.grad_target = target
    return fid


def enforce(fid: Fidelity, source: str, accept_mismatch: bool) -> None:
    """Refuse a mismatch with a clear message, unless the user accepts it (then mark it)."""
    if fid.passed:
        return
    if accept_mismatch:
        fid.accepted_mismatch = True
        return
    raise XbandError(f"{source}: the converted model does not compute the same function: "
                     f"outputs differ by up to {fid.max_abs_diff:.3g} (tolerance "
                     f"{fid.tolerance_abs:g} absolute or {fid.tolerance_rel:g} x output range "
                     f"{fid.output_range:.3g}) against {fid.reference} on {fid.probe}. Pass "
                     "--accept-mismatch (accept_mismatch=True) to use it anyway.")
