"""The forward pass every method calls: channels-first images in, eval mode, weights frozen, and
made faster with the same numbers (BatchNorm folded into convolutions, a convolution's ReLU or
ReLU6 computed as it writes its output, ReLU moved after max-pooling, channels-last memory).

Each speed-up is kept only when its outputs and input gradients match the plain forward on
an example batch; otherwise it is dropped with a note (a model that calls `.view` on its
activations, say, cannot run channels-last). What each one gains, and what was measured and
left out (torch.compile, TorchScript, ONNX Runtime), is in the README's Speed section.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xband.errors import XbandError, option
from xband.layout import Layout

RTOL, ATOL = 1e-4, 1e-5


class ChannelsFirst(nn.Module):
    """Feeds (N, B, H, W) images to a network that takes its own layout, in `memory_format`:
    images permuted, spectra (held as (N, B, 1, 1)) reshaped to (N, B), (N, B, 1) or (N, 1, B)."""

    def __init__(self, network: nn.Module, layout: Layout | str,
                 memory_format: torch.memory_format = torch.contiguous_format):
        super().__init__()
        self.network = network
        self.layout = Layout(layout)
        self.memory_format = memory_format

    def __getstate__(self) -> dict:
        """Picklable (torch.save, Ray workers): the memory format by name."""
        return {**super().__getstate__(), "memory_format": str(self.memory_format)[len("torch."):]}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__({**state, "memory_format": getattr(torch, state["memory_format"])})

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """`x` in the memory format the network runs in (a no-op when it already is)."""
        return x.contiguous(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        if self.layout.spectra:
            return self.network(as_spectra(x, self.layout))
        return self.network(x.permute(0, 2, 3, 1) if self.layout == Layout.CHANNELS_LAST else x)


def as_spectra(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """(N, B, 1, 1) spectra as a model in the spectra `layout` takes them."""
    if x.shape[2:] != (1, 1):
        raise XbandError(f"the model takes single spectra ({layout.describe()}) but was given "
                         f"images of {x.shape[2]}×{x.shape[3]} pixels; give one spectrum per "
                         "pixel (patch size 1).")
    return x.reshape(x.shape[0], *layout.spectrum_shape(x.shape[1]))


def forward_module(network: nn.Module, layout: Layout | str, device: str) -> ChannelsFirst:
    """`network` taking channels-first images, in eval mode on `device`, weights frozen."""
    return _frozen(ChannelsFirst(network, layout).to(device).eval())


def _frozen(forward: ChannelsFirst) -> ChannelsFirst:
    """No gradients for the weights: the methods differentiate with respect to the input only."""
    for p in forward.parameters():
        p.requires_grad_(False)
    return forward


def check_device(device: str) -> str:
    """`device` if torch can compute there; a message saying what to do otherwise."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise XbandError(f"device '{device}' is not a torch device: use 'cpu' or 'cuda'.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise XbandError(
            f"device '{device}': torch sees no CUDA GPU (torch {torch.__version__}, "
            "torch.cuda.is_available() is False). Run on a machine with an NVIDIA GPU and a "
            "CUDA build of torch, or use " + option("device='cpu'", "--device cpu") + "."
        )
    if parsed.type not in ("cpu", "cuda"):
        raise XbandError(f"device '{device}' is not supported: use 'cpu' or 'cuda'.")
    return device


def _has_batchnorm(forward: ChannelsFirst) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in forward.modules())


def fold_batchnorm(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy with each BatchNorm that follows a convolution folded into it (eval mode only)."""
    from torch.fx.experimental.optimization import fuse

    return ChannelsFirst(fuse(forward.network), forward.layout, forward.memory_format)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping fused convolutions whole."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return isinstance(module, ConvActivation) or super().is_leaf_module(module, name)


def _graph(network: nn.Module, *, copied: bool = False) -> torch.fx.GraphModule:
    """`network` as a torch.fx graph: itself when it is one already (onnx2torch's networks, which
    may not trace again), else traced; `copied`: a copy, to be changed."""
    network = copy.deepcopy(network) if copied else network
    if isinstance(network, torch.fx.GraphModule):
        return network
    return torch.fx.GraphModule(network, _Tracer().trace(network))


def _relu_then_max_pool(network: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(ReLU, max-pooling) node pairs where the pooling is the ReLU's only use."""
    modules = dict(network.named_modules())

    def is_relu(node: object) -> bool:
        return isinstance(node, torch.fx.Node) and len(node.users) == 1 and (
            (node.op == "call_module" and type(modules[node.target]) is nn.ReLU)
            or (node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)
                and not node.kwargs.get("inplace", False)))

    def is_max_pool(node: torch.fx.Node) -> bool:
        return (node.op == "call_module"
                and type(modules[node.target]) in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
                and not modules[node.target].return_indices)

    return [(node.args[0], node) for node in network.graph.nodes
            if is_max_pool(node) and node.args and is_relu(node.args[0])]


def _has_relu_before_max_pool(forward: ChannelsFirst) -> bool:
    try:
        return bool(_relu_then_max_pool(_graph(forward.network)))
    except Exception:  # a network torch.fx cannot trace goes without this speed-up
        return False


def relu_after_max_pool(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy in which a ReLU whose only use is a max-pooling runs after it, on the pooled (4×
    fewer) values: max-pooling and ReLU commute, so the outputs and gradients are the same."""
    network = _graph(forward.network, copied=True)
    graph = network.graph
    for relu, pool in _relu_then_max_pool(network):
        pool.replace_input_with(relu, relu.args[0])
        with graph.inserting_after(pool):
            after = graph.call_function(torch.relu, (pool,))
        pool.replace_all_uses_with(after, delete_user_cb=lambda user, after=after: user is not after)
        graph.erase_node(relu)
    graph.lint()
    network.recompile()
    return ChannelsFirst(network, forward.layout, forward.memory_format)


ACTIVATIONS: dict[type, tuple[str, list[float]]] = {  # module → oneDNN post-op, its scalars
    nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0])}


class _ConvActivation(torch.autograd.Function):
    """A convolution with its activation applied as it writes its output (oneDNN's post-op),
    and the backward pass autograd takes for the two: the activation's gradient from the output
    (ReLU and ReLU6 pass it where the output is strictly inside their range), then the
    convolution's input gradient. Weights are frozen: no weight gradient."""

    @staticmethod
    def forward(x, weight, bias, conv: tuple, attr: str, scalars: list[float]):
        stride, padding, dilation, groups = conv
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation,
                                                       groups, attr, scalars, "")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, conv, attr, scalars = inputs
        ctx.save_for_backward(x, weight, output)
        ctx.conv, ctx.attr, ctx.scalars = conv, attr, scalars

    @staticmethod
    def backward(ctx, grad):
        x, weight, output = ctx.saved_tensors
        if ctx.attr == "relu":
            grad = torch.ops.aten.threshold_backward(grad, output, 0)
        else:
            grad = torch.ops.aten.hardtanh_backward(grad, output, *ctx.scalars)
        stride, padding, dilation, groups = ctx.conv
        (grad_x, _, _) = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
            [True, False, False])
        return grad_x, None, None, None, None, None


class ConvActivation(nn.Module):
    """A 2-d convolution and the ReLU or ReLU6 that is its one use, computed as one (oneDNN's
    fused post-op on CPU): one pass over the output instead of two, the same numbers."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.conv = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        self.attr, self.scalars = ACTIVATIONS[type(activation)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ConvActivation.apply(x, self.weight, self.bias, self.conv, self.attr, self.scalars)


def _conv_then_activation(network: torch.fx.GraphModule
                          ) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(convolution, activation) module pairs where the activation is the convolution's one use:
    2-d convolutions with zero padding given in pixels, ReLU or ReLU6 modules."""
    modules = dict(network.named_modules())

    def is_conv(node: object) -> bool:
        module = modules.get(node.target) if isinstance(node, torch.fx.Node) else None
        return (node.op == "call_module" and type(module) is nn.Conv2d and len(node.users) == 1
                and module.padding_mode == "zeros" and not isinstance(module.padding, str))

    return [(node.args[0], node) for node in network.graph.nodes
            if node.op == "call_module" and type(modules[node.target]) in ACTIVATIONS
            and node.args and is_conv(node.args[0])]


def _has_conv_then_activation(forward: ChannelsFirst) -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(_conv_then_activation(_graph(forward.network)))
    except Exception:  # a network torch.fx cannot trace goes without this speed-up
        return False


def fused_activations(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy in which each convolution whose one use is a ReLU or ReLU6 computes both at once
    (`ConvActivation`)."""
    network = _graph(forward.network, copied=True)
    modules = dict(network.named_modules())
    for conv, activation in _conv_then_activation(network):
        name = f"{conv.target}_fused".replace(".", "_")
        network.add_submodule(name, ConvActivation(modules[conv.target],
                                                   modules[activation.target]))
        with network.graph.inserting_after(activation):
            fused = network.graph.call_module(name, conv.args, conv.kwargs)
        activation.replace_all_uses_with(fused)
        network.graph.erase_node(activation)
        network.graph.erase_node(conv)
    network.graph.lint()
    network.delete_all_unused_submodules()
    network.recompile()
    return ChannelsFirst(network, forward.layout, forward.memory_format)


def channels_last(forward: ChannelsFirst) -> ChannelsFirst:
    """A copy whose 4-d weights and input are in channels-last (NHWC) memory order."""
    network = copy.deepcopy(forward.network).to(memory_format=torch.channels_last)
    return ChannelsFirst(network, forward.layout, torch.channels_last)


Step = Callable[[ChannelsFirst], ChannelsFirst]
STEPS: dict[str, tuple[Callable[[ChannelsFirst], bool], Step]] = {
    "batchnorm folded into convolutions": (_has_batchnorm, fold_batchnorm),
    "activations fused into convolutions": (_has_conv_then_activation, fused_activations),
    "ReLU after max-pooling": (_has_relu_before_max_pool, relu_after_max_pool),
    "channels-last memory": (lambda forward: not forward.layout.spectra, channels_last),
}


def _output_and_gradient(forward: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = example.clone().requires_grad_(True)
    out = forward(x)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    return out.detach(), grad


def _same(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> bool:
    return all(g.shape == w.shape and torch.allclose(
        g, w, rtol=RTOL, atol=ATOL * max(1.0, float(w.abs().max())))
        for g, w in zip(got, want, strict=True))


def _dropped(name: str, error: Exception | None = None) -> str:
    """The report's note on a speed-up that was not used, and why."""
    if error is None:
        return f"speed: {name} not used (outputs or gradients changed beyond rtol {RTOL})"
    message = str(error).splitlines()[0][:120] if str(error) else ""
    return f"speed: {name} not used (the model fails with it: {type(error).__name__}: {message})"


def tune(forward: ChannelsFirst, example: torch.Tensor
         ) -> tuple[ChannelsFirst, list[str], list[str]]:
    """`forward` made faster, the steps applied, and a note for each step that was dropped.

    `example`: a few images (N, B, H, W) on the forward's device.
    """
    want = _output_and_gradient(forward, example)
    applied, notes = [], []
    for name, (applies, step) in STEPS.items():
        if not applies(forward):
            continue
        try:
            candidate = _frozen(step(forward))
            got = _output_and_gradient(candidate, example)
        except Exception as error:  # any failure of an optional speed-up means: go without it
            notes.append(_dropped(name, error))
            continue
        if _same(got, want):
            forward = candidate
            applied.append(name)
        else:
            notes.append(_dropped(name))
    return forward, applied, notes


@dataclass(frozen=True)
class Networks:
    """The explained network as the methods run it, and how it was made fast."""

    forward: ChannelsFirst  # channels-first, tuned
    speed_ups: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # speed-ups dropped, and why
    tuning_s: float = 0.0


def prepare_networks(network: nn.Module, layout: Layout | str, device: str,
                     example: torch.Tensor, *, tuned: bool) -> Networks:
    """`network` ready for the methods on `device`: channels-first, eval mode, weights frozen,
    and with `tuned` the speed-ups that keep its numbers (pass sizes: xband.run.tuning).

    example: two or so channels-first images (N, B, H, W) on `device`, for the checks.
    """
    started = time.perf_counter()
    plain = Networks(forward_module(network, layout, device))
    networks = speed_up(plain, example) if tuned else plain
    return dataclasses.replace(networks, tuning_s=time.perf_counter() - started)


def speed_up(networks: Networks, example: torch.Tensor) -> Networks:
    """`networks` with the speed-ups that keep its numbers (`tune`), and their cost added."""
    started = time.perf_counter()
    forward, speed_ups, notes = tune(networks.forward, example)
    return Networks(forward, tuple(speed_ups), tuple(notes),
                    networks.tuning_s + time.perf_counter() - started)
