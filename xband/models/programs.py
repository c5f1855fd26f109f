"""Model files that are programs: what would run, found before anything runs.

A pickle names the Python functions and classes that unpickling imports and calls; a TorchScript
file holds compiled code: its methods run when the model is called, and a `__setstate__` runs
when the file is loaded. xband reads a pickle's names without unpickling it, refuses TorchScript
code that defines `__setstate__` before loading the file, and screens every method of a loaded
TorchScript module against the operations an image classifier needs (`TORCHSCRIPT_OPS`), so
that a model file can reach no file, process or network unless the user trusts it
(docs/security.md).
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path

import torch

# ------------------------------------------------------------------------------ pickles
_PUSHES_A_NAME = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
                  "BINSTRING", "SHORT_BINSTRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}


def _names_in_pickle(stream: io.BytesIO) -> list[str]:
    """The globals ('module.name') one pickle in `stream` names, read opcode by opcode (nothing
    is imported); raises ValueError where the bytes are not a whole pickle."""
    names: list[str] = []
    pushed: list[str | None] = []  # what each push left on the stack: names matter, the rest not
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            module, name = (pushed[-2:] if len(pushed) >= 2 else [None, None])
            names.append(f"{module or '?'}.{name or '?'}")
        elif op.name in _PUSHES_A_NAME:
            pushed.append(str(arg))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in _MEMO_PUT:
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in _MEMO_GET:
            pushed.append(memo.get(arg))
        elif op.name not in ("PROTO", "FRAME"):
            pushed.append(None)
    return names


def pickled_globals(path: Path) -> list[str] | None:
    """The Python functions and classes ('module.name') that unpickling the torch file at `path`
    would import and call, read without unpickling; None when it holds no valid pickle (a
    damaged file). A zip archive's data.pkl is read; a legacy file is a run of pickles followed
    by raw tensor bytes, read up to the first bytes that are no pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            entries = [n for n in zf.namelist() if n.endswith("data.pkl")]
            data = zf.read(entries[0]) if entries else b""
    else:
        data = path.read_bytes()
    stream, names, whole = io.BytesIO(data), [], 0
    while stream.tell() < len(data):
        try:
            names += _names_in_pickle(stream)
        except ValueError:
            break
        whole += 1
    return sorted(set(names)) if whole else None


# ------------------------------------------------------------------------------ TorchScript
# Operations an image classifier's TorchScript code needs: tensor arithmetic and the layers of
# CNNs and vision transformers (aten::), and the interpreter's own constants, attribute reads,
# containers and control flow (prim::), as torchvision's, timm's and torchgeo's classifiers use
# them traced and scripted. Nothing here reads or writes files, prints, starts threads or calls
# Python; an operation outside the list (aten::from_file, aten::save, prim::Print, prim::fork,
# custom operators) is refused unless the user trusts the file.
_ATEN = """
    _convolution convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d
    conv_transpose3d linear bilinear matmul mm bmm baddbmm addmm mv einsum
    scaled_dot_product_attention _native_multi_head_attention
    batch_norm instance_norm group_norm layer_norm native_layer_norm local_response_norm
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices avg_pool1d avg_pool2d avg_pool3d
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
    adaptive_max_pool2d adaptive_max_pool3d
    upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_linear1d
    upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d
    _upsample_nearest_exact2d _upsample_nearest_exact3d _upsample_bilinear2d_aa
    _upsample_bicubic2d_aa _upsample_lanczos2d_aa grid_sampler affine_grid_generator
    pad constant_pad_nd reflection_pad1d reflection_pad2d replication_pad1d replication_pad2d
    replication_pad3d pixel_shuffle pixel_unshuffle channel_shuffle
    relu relu_ relu6 leaky_relu leaky_relu_ prelu elu elu_ selu selu_ celu gelu silu silu_
    mish mish_ sigmoid sigmoid_ hardsigmoid hardsigmoid_ hardswish hardswish_ hardtanh
    hardtanh_ tanh tanh_ softplus softsign logsigmoid threshold threshold_ glu
    softmax log_softmax dropout dropout_ feature_dropout feature_dropout_ alpha_dropout
    feature_alpha_dropout bernoulli bernoulli_ rand rand_like randn randn_like
    add add_ sub sub_ rsub mul mul_ div div_ floor_divide remainder fmod neg abs pow sqrt
    rsqrt reciprocal square exp log log2 log1p erf sin cos floor ceil round trunc sign
    clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ clip minimum maximum
    mean sum prod amax amin max min argmax argmin norm linalg_vector_norm var std var_mean
    std_mean logsumexp cumsum all any
    eq ne lt le gt ge where masked_fill masked_fill_ bitwise_not bitwise_and bitwise_or
    logical_not logical_and logical_or isnan isfinite nan_to_num
    size dim numel view view_as reshape reshape_as flatten unflatten squeeze squeeze_
    unsqueeze unsqueeze_ permute transpose t contiguous expand expand_as repeat
    repeat_interleave tile flip roll narrow slice select index index_select gather
    cat concat stack chunk split split_with_sizes unbind tensor_split movedim
    clone copy copy_ fill_ zero_ detach to type_as _shape_as_tensor _unsafe_view
    empty empty_like zeros zeros_like ones ones_like full full_like new_zeros new_ones
    new_full new_empty arange linspace eye tensor scalar_tensor as_tensor
    is_floating_point is_contiguous is_grad_enabled is_autocast_enabled
    Bool Float Int ScalarImplicit IntImplicit FloatImplicit item
    __and__ __or__ __xor__ __not__ __is__ __isnot__ __contains__ __getitem__ _set_item
    floordiv append len list str format warn
"""
_PRIM = """
    Constant GetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleIndex TupleUnpack
    DictConstruct NumToTensor RaiseException Uninitialized unchecked_cast isinstance device
    dtype layout is_cuda is_nested requires_grad type min max abs
"""
TORCHSCRIPT_OPS = frozenset([*(f"aten::{op}" for op in _ATEN.split()),
                             *(f"prim::{op}" for op in _PRIM.split())])

_SETSTATE = re.compile(rb"^\s*def __setstate__\(", re.M)


def load_time_code(path: Path) -> list[str]:
    """The code files of the TorchScript archive at `path` that define `__setstate__`: code that
    torch.jit.load runs while loading (read from the archive; nothing is loaded)."""
    with zipfile.ZipFile(path) as zf:
        return [name for name in zf.namelist()
                if "/code/" in name and name.endswith(".py") and _SETSTATE.search(zf.read(name))]


def _kinds(block, where: str, found: dict[str, set[str]]) -> None:
    for node in block.nodes():
        found.setdefault(node.kind(), set()).add(where)
        for inner in node.blocks():
            _kinds(inner, where, found)


def unscreened_ops(module: torch.jit.ScriptModule) -> dict[str, list[str]]:
    """{operation: [where]} for the operations outside `TORCHSCRIPT_OPS` in any method or hook of
    any submodule of `module`, each read with the functions and methods it calls inlined."""
    found: dict[str, set[str]] = {}
    for name, sub in module.named_modules():
        owner = f"{name or 'model'} ({sub.original_name})"
        functions = [sub._c._get_method(m) for m in sub._c._method_names()]
        functions += [*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()]
        for function in functions:
            _kinds(function.inlined_graph, f"{owner}.{function.name}", found)
    return {op: sorted(where) for op, where in sorted(found.items())
            if op not in TORCHSCRIPT_OPS}
