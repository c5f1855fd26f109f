"""Model randomisation (Adebayo et al. 2018): does a method's band ranking depend on the weights?

The layers with learned weights are re-drawn from the output down (cascading); the last stage has
every layer random. A method whose band ranking barely changes explains the data or itself, not
the model.

What counts as a layer: the operations of the forward pass that use a weight mixing features (a
convolution kernel, a dense matrix: two or more dimensions longer than 1), each with the
per-channel weights used after it until the next such layer (its bias, a folded BatchNorm scale
and shift). Weights are every floating-point parameter AND buffer the forward pass uses
(converted ONNX models keep them in buffers of an `initializers` submodule). Left as they are,
and listed: per-band constants applied before the first layer (an input normalisation's mean and
variance: data statistics, not learnt), BatchNorm running statistics, and scalars (op constants
such as clip bounds or epsilons). A stage whose re-drawn network gives the trained network's
outputs on the check images is reported but is not evidence: no method is judged by it.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from xband.checks._common import Setup
from xband.checks.compare import RankingComparison
from xband.checks.rounds import Taken, take_until_settled
from xband.errors import XbandError

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
ALL_LAYERS = "all layers"
SAME_OUTPUTS = 1e-4  # largest output change, relative to the outputs' range, of an inert stage
BEFORE_FIRST_LAYER = "per-band constant before the first layer (input normalisation)"
RUNNING_STATISTIC = "BatchNorm running statistic"
SCALAR = "scalar constant"


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


def _weights(network: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The floating-point tensors a re-draw may change, by name, and those left as they are
    with why (running statistics, scalars)."""
    weights, left = {}, {}
    for name, tensor in [*network.named_parameters(), *network.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        if name.endswith(_RUNNING_STATS):
            left[name] = RUNNING_STATISTIC
        elif tensor.numel() <= 1:
            left[name] = SCALAR
        else:
            weights.setdefault(name, tensor)
    return weights, left


def layer_groups(network: nn.Module, example: torch.Tensor) -> list[list[str]]:
    """Names of the re-drawable weights of `network`, grouped by the operation that first uses
    them, in forward order (input side first)."""
    weights, _ = _weights(network)
    recorder = _FirstUse({id(tensor): name for name, tensor in weights.items()})
    with torch.no_grad(), recorder:
        network(example)
    return recorder.groups


def _mixes(tensor: torch.Tensor) -> bool:
    """Whether a weight mixes features (two or more dimensions longer than 1), as a kernel or
    a matrix does, unlike a per-channel bias or scale."""
    return sum(size > 1 for size in tensor.shape) >= 2


@dataclass(frozen=True)
class Layers:
    """The network's layers with learned weights, input side first, and what is left as it is."""

    layers: tuple[tuple[str, ...], ...]  # weight names of each layer
    left: tuple[tuple[str, str], ...]  # (tensor name, why it is left as it is)
    sizes: dict[str, int]  # weight name → values

    @classmethod
    def of(cls, network: nn.Module, example: torch.Tensor) -> Layers:
        """The layers of `network`, found by running it on `example`."""
        weights, left = _weights(network)
        layers: list[list[str]] = []
        for group in layer_groups(network, example):
            if any(_mixes(weights[name]) for name in group):
                layers.append(list(group))
            elif layers:  # a bias or scale: part of the layer it follows
                layers[-1] += group
            else:
                left |= dict.fromkeys(group, BEFORE_FIRST_LAYER)
        if not layers:
            raise XbandError("model randomisation: the network has no layer with learned "
                             "weights (a kernel or matrix) that can be re-drawn.")
        return cls(tuple(tuple(g) for g in layers), tuple(left.items()),
                   {name: int(t.numel()) for name, t in weights.items()})

    def table(self, stages: list[int]) -> pd.DataFrame:
        """One row per tensor: its layer (1 = the input side), the first stage that re-draws
        it, its values; the tensors left as they are with why."""
        n = len(self.layers)
        rows = []
        for i, names in enumerate(self.layers):
            first = next(k for k in stages if k >= n - i)
            rows += [{"tensor": name, "layer": i + 1, "values": self.sizes[name],
                      "redrawn_from_stage": stage_name(first, n), "left_because": ""}
                     for name in names]
        rows += [{"tensor": name, "layer": None, "values": None, "redrawn_from_stage": "",
                  "left_because": why} for name, why in self.left]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """One line: the layers re-drawn and, counted by kind, the tensors left as they are."""
        kinds = pd.Series([why for _, why in self.left]).value_counts()
        left = "; ".join(f"{why} × {count}" for why, count in kinds.items())
        return (f"{len(self.layers)} layers with learned weights re-drawn"
                + (f"; left as they are: {left}" if left else ""))


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
    """How many top layers each stage re-draws: about `stages` steps from 1 to all, the last
    always all (one stage: every layer random)."""
    return sorted({int(round(k)) for k in np.linspace(n_layers, 1, max(1, min(stages, n_layers)))})


def stage_name(k: int, n_layers: int) -> str:
    return ALL_LAYERS if k == n_layers else f"top {k} of {n_layers}"


def output_change(trained: nn.Module, other: nn.Module, x: torch.Tensor) -> float:
    """Largest change of the outputs on `x`, relative to the range of the trained outputs."""
    with torch.no_grad():
        before, after = trained(x).double(), other(x).double()
    if not torch.isfinite(after).all():
        raise XbandError("model randomisation: the randomised model gives non-finite outputs.")
    spread = float(before.max() - before.min())
    return float((after - before).abs().max()) / max(spread, 1e-12)


@dataclass(frozen=True)
class Randomisation:
    """The check's tables and how each stage took its images."""

    table: pd.DataFrame
    layers: pd.DataFrame
    summary: str
    taken: dict[str, Taken]  # stage → its images


def _first_round(setup: Setup) -> np.ndarray:
    """The positions every stage takes first, read: the probe of whether a stage changes the
    outputs."""
    first = np.concatenate([o[:setup.rule.first_round] for o in setup.orders.values()])
    setup.keep(first)
    return first


def planned_stages(setup: Setup, stages: int) -> int:
    """The stages the check will run on this network (for the cost estimate)."""
    probe = setup.images(_first_round(setup)[:1])
    return len(cascade(len(Layers.of(setup.plain_forward, probe).layers), stages))


def randomisation_check(setup: Setup, *, stages: int = 4, threshold: float = 0.5,
                        progress: bool = False) -> Randomisation:
    """Per method and cascade stage: Spearman's ρ between the trained and the randomised model's
    band rankings (per class, by mean share, averaged over classes; and per image), and the
    similarity of the per-band maps of the example images. The last stage (every layer random)
    takes images until every method's "ρ ≥ `threshold`" is settled; the earlier ones draw the
    cascade and decide nothing, so they take half a first round. `flagged` marks methods
    whose class ranking keeps ρ ≥ `threshold` with every layer random; `evidence` is False for
    a stage whose outputs do not change, which no method is judged by."""
    network = setup.plain_forward
    probe = setup.images(_first_round(setup))
    layers = Layers.of(network, probe[:1])
    n = len(layers.layers)
    ks = cascade(n, stages)
    rows, taken = [], {}
    for k in ks:
        stage = stage_name(k, n)
        names = {name for layer in layers.layers[n - k:] for name in layer}
        forward = setup.fast(randomised(network, names, setup.seed))
        change = output_change(network, forward, probe)
        common = {"stage": stage, "layers_randomised": k, "n_layers": n,
                  "output_change": change, "evidence": change > SAME_OUTPUTS}
        if not common["evidence"]:  # the same function on these images: nothing to learn
            rows += [{"method": m.name, **common} for m in setup.methods]
            continue
        comparison = RankingComparison(setup, setup.context(forward), threshold=threshold)
        taken[stage] = take_until_settled(setup.orders, comparison, setup.rule, seed=setup.seed,
                                          keep=setup.keep, label=f"randomisation, {stage}",
                                          progress=progress, one_round=k != ks[-1])
        rows += [{**row, **common} for row in comparison.rows()]
    table = pd.DataFrame(rows)
    columns = ["method", "stage", "layers_randomised", "n_layers", "output_change", "evidence",
               "rank_rho", "rank_rho_min", "image_rank_rho", "map_rho", "images"]
    table = table.reindex(columns=columns)
    last = table[table["evidence"]].sort_values("layers_randomised", kind="stable")
    final = last.drop_duplicates("method", keep="last").set_index("method")["rank_rho"]
    table["flagged"] = table["method"].map(final >= threshold).fillna(False).astype(bool)
    return Randomisation(table, layers.table(ks), layers.summary(), taken)
