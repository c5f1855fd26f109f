"""Attribution methods, one module each, all reduced to one score per band.

Every method is a configured object with one call, `attribute(batch, ctx) -> BandAttribution`.
`METHODS` lists them in the order reports show them; `resolve_methods` turns names, configured
objects and per-method options into the methods of a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xband.errors import XbandError
from xband.methods._base import (
    BandAttribution,
    BandSubsetMethod,
    Batch,
    Context,
    GradientMethod,
    Method,
    SharedOutputs,
)
from xband.methods.feature_ablation import FeatureAblation
from xband.methods.gradient_shap import GradientShap
from xband.methods.input_x_gradient import InputXGradient
from xband.methods.integrated_gradients import IntegratedGradients
from xband.methods.lime import KernelShap, Lime
from xband.methods.permutation import Permutation
from xband.methods.saliency import Saliency, ScaledSaliency
from xband.methods.shapley import Shapley

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    Saliency, ScaledSaliency, InputXGradient, IntegratedGradients, GradientShap,
    FeatureAblation, Shapley, Permutation, Lime, KernelShap,
)}

__all__ = ["METHODS", "BandAttribution", "BandSubsetMethod", "Batch", "Context", "FeatureAblation",
           "GradientMethod", "GradientShap", "InputXGradient", "IntegratedGradients", "KernelShap",
           "Lime", "Method", "Permutation", "Saliency", "ScaledSaliency", "SharedOutputs",
           "Shapley", "get_method", "resolve_methods"]


def get_method(name: str, **options) -> Method:
    """The method called `name`, with `options` (its defaults otherwise)."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise XbandError(
            f"unknown method '{name}'. Choose from: {', '.join(METHODS)} (or 'all')."
        ) from None
    return cls().with_options(**options)


def resolve_methods(methods: str | Method | Sequence[str | Method],
                    options: Mapping[str, Mapping] | None = None, *,
                    until_settled: bool = False) -> tuple[Method, ...]:
    """The configured methods of a run, in the order given, each once.

    methods: "all", a comma-separated string, a configured method, or a list of names and
    configured methods. options: {method name: {option: value}} applied on top, e.g.
    {"integrated_gradients": {"n_steps": 64}}. until_settled: methods given by name take their
    `until_settled` option values (few draws per image) under the options given.
    """
    if isinstance(methods, str):
        methods = list(METHODS) if methods == "all" else [m.strip() for m in methods.split(",")]
    elif isinstance(methods, Method):
        methods = [methods]
    chosen: dict[str, Method] = {}
    for item in methods:
        if isinstance(item, Method):
            method = item
        else:
            method = get_method(str(item))
            method = method.with_options(**method.until_settled) if until_settled else method
        chosen.setdefault(method.name, method)
    if not chosen:
        raise XbandError(f"no method given. Choose from: {', '.join(METHODS)} (or 'all').")
    unused = sorted(set(options or {}) - set(chosen))
    if unused:
        raise XbandError(f"options for method(s) {', '.join(unused)}, which the run does not use "
                         f"(methods: {', '.join(chosen)}).")
    for name, values in (options or {}).items():
        chosen[name] = chosen[name].with_options(**values)
    return tuple(chosen.values())
