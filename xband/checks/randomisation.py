"""Model randomisation (Adebayo et al. 2018): does a method's band ranking depend on the weights?

The weights are re-drawn layer by layer from the output down (cascading); the last stage has every
layer random. A method whose band ranking barely changes explains the data or itself, not the
model.

What counts as a weight: every floating-point parameter AND buffer the forward pass uses (converted
ONNX models keep their weights in buffers of an `initializers` submodule), grouped by the operation
that first uses them, in the order the forward pass runs. Left as they are: BatchNorm running
statistics (data statistics, not learnt weights; re-drawing a variance can make it negative) and
scalars (op constants such as clip bounds or epsilons).
"""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from xband.checks._common import Setup, class_means, nan_mean
from xband.errors import XbandError
from xband.run.aggregate import spearman_rows

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
ALL_LAYERS = "all layers"


class _FirstUse(TorchFunctionMode):
    """Records, for each torch call, which of the given tensors it receives for the first time."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names, self.seen, self.groups = names, set(), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        used = []
        for value in (*args, *kwargs.values()):
            name = self.names.get(id(value)) if isinstance(value, torch.Tensor) else None
            if name is not None and name not in self.seen:
                self.seen.add(name)
                used.append(name)
        if used:
            self.groups.append(used)
        return func(*args, **kwargs)


def layer_groups(network: nn.Module, example: torch.Tensor) -> list[list[str]]:
    """Names of the randomisable weights of `network`, grouped by the operation that first uses
    them, in forward order (input side first)."""
    names = {}
    for name, tensor in [*network.named_parameters(), *network.named_buffers()]:
        if (tensor.is_floating_point() and tensor.numel() > 1
                and not name.endswith(_RUNNING_STATS)):
            names.setdefault(id(tensor), name)
    recorder = _FirstUse(names)
    with torch.no_grad(), recorder:
        network(example)
    if not recorder.groups:
        raise XbandError("model randomisation: the network uses no weights that can be re-drawn.")
    return recorder.groups


def _redraw(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random values on the tensor's own scale: normal with its mean and std, or log-normal when
    every value is positive (variances, scales), so signs that matter survive."""
    values = tensor.detach().double().cpu()
    noise = torch.randn(values.shape, generator=generator, dtype=torch.float64)
    if values.min() > 0:
        logs = values.log()
        fresh = (logs.mean() + logs.std() * noise).exp()
    else:
        fresh = values.mean() + values.std() * noise
    return fresh.to(tensor.dtype).to(tensor.device)


def randomised(network: nn.Module, names: set[str], seed: int) -> nn.Module:
    """A copy of `network` with the named weights re-drawn; each weight's draw depends only on
    `seed` and its name, so cascade stages share their random layers."""
    clone = copy.deepcopy(network)
    tensors = dict([*clone.named_parameters(), *clone.named_buffers()])
    with torch.no_grad():
        for name in sorted(names):
            generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()))
                                                      % 2**63)
            tensors[name].copy_(_redraw(tensors[name], generator))
    return clone


def cascade(n_layers: int, stages: int) -> list[int]:
    """How many top layers each stage re-draws: about `stages` steps from 1 to all."""
    return sorted({int(round(k)) for k in np.linspace(1, n_layers, max(1, min(stages, n_layers)))})


def _map_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, mean over bands of Spearman's ρ between the pixels of |a| and |b|."""
    flat_a = np.abs(a).reshape(*a.shape[:2], -1).astype(np.float64)
    flat_b = np.abs(b).reshape(*b.shape[:2], -1).astype(np.float64)
    return np.nanmean(spearman_rows(flat_a, flat_b), axis=1) if flat_a.shape[2] > 1 else np.full(
        len(flat_a), np.nan)


def randomisation_check(setup: Setup, *, stages: int = 4, threshold: float = 0.5) -> pd.DataFrame:
    """Per method and cascade stage: Spearman's ρ between the trained and the randomised model's
    band rankings (per class, by mean share, averaged over classes; and per image), and the
    similarity of the per-band maps. `flagged` marks methods whose class ranking keeps
    ρ ≥ `threshold` with every layer random."""
    network = setup.plain_forward
    groups = layer_groups(network, setup.x[:1])
    n_classes = setup.model.n_classes
    rows = []
    for k in cascade(len(groups), stages):
        names = {name for group in groups[len(groups) - k:] for name in group}
        stage = ALL_LAYERS if k == len(groups) else f"top {k} of {len(groups)}"
        forward = setup.fast(randomised(network, names, setup.seed))
        with torch.no_grad():
            outputs = forward(setup.x[: setup.batch_size])
        if not torch.isfinite(outputs).all():
            raise XbandError(f"model randomisation ({stage}): the randomised model gives "
                             "non-finite outputs.")
        ctx = setup.context(forward)
        for method in setup.methods:
            trained, trained_maps = setup.reference(method)
            scores, maps = setup.attribute(method, ctx, keep_maps=trained_maps is not None)
            per_class = spearman_rows(class_means(trained, setup.image_class, n_classes),
                                      class_means(scores, setup.image_class, n_classes))
            rows.append({
                "method": method.name, "stage": stage, "layers_randomised": k,
                "n_layers": len(groups),
                "rank_rho": nan_mean(per_class),
                "rank_rho_min": float(np.nanmin(per_class)) if np.isfinite(per_class).any()
                else np.nan,
                "image_rank_rho": nan_mean(spearman_rows(trained, scores)),
                "map_rho": nan_mean(_map_similarity(trained_maps, maps)) if maps is not None
                else np.nan,
            })
    table = pd.DataFrame(rows)
    final = table[table["stage"] == ALL_LAYERS].set_index("method")["rank_rho"]
    table["flagged"] = table["method"].map(final >= threshold).fillna(False).astype(bool)
    return table
