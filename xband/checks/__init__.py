"""Can the answer be trusted? Checks of an explanation, one module each:

- `randomisation`: sanity check, band rankings of a trained vs a randomised model;
- `faithfulness`: band deletion and insertion curves against random orders, under several
  baselines;
- `agreement`: Kendall's τ and Spearman's ρ between methods per class, consensus with bootstrap;
- `completeness`: Integrated Gradients' convergence delta.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from xband.checks._common import Setup
from xband.checks.agreement import consensus_bootstrap
from xband.checks.completeness import completeness_check
from xband.checks.evaluation import Evaluation
from xband.checks.faithfulness import baseline_stability, deletion_curves, faithfulness_table
from xband.checks.randomisation import randomisation_check
from xband.data.images import ImageSet
from xband.errors import XbandError, whole_number
from xband.methods.removal import ALIASES, DELETION_BASELINES
from xband.models.load import LoadedModel
from xband.run.aggregate import pairwise_agreement
from xband.run.memory import freed_memory_kept
from xband.run.result import Explanation

CHECKS = ("randomisation", "faithfulness", "agreement", "completeness")

__all__ = ["CHECKS", "DELETION_BASELINES", "Evaluation", "choices", "evaluate"]


def choices(name: str, given: str | Sequence[str], known: Sequence[str],
            aliases: Mapping[str, str] | None = None) -> list[str]:
    """The chosen values of `known` ("all": every one), old `aliases` read as their new names."""
    chosen = [v.strip() for v in given.split(",")] if isinstance(given, str) else list(given)
    chosen = [(aliases or {}).get(v, v) for v in chosen]
    chosen = list(known) if chosen == ["all"] else chosen
    unknown = [v for v in chosen if v not in known]
    if unknown or not chosen:
        raise XbandError(f"{name} {', '.join(unknown) or '(none)'}: choose from "
                         f"{', '.join(known)} (or 'all').")
    return list(dict.fromkeys(chosen))


def evaluate(
    model: LoadedModel,
    data: ImageSet,
    explanation: Explanation,
    *,
    checks: str | Sequence[str] = "all",
    max_images: int | None = 128,
    baselines: str | Sequence[str] = DELETION_BASELINES,
    random_orders: int = 10,
    cascade_stages: int = 4,
    threshold: float = 0.5,
    n_boot: int = 200,
    top_k: int = 3,
    batch_size: int | None = None,
) -> Evaluation:
    """Check `explanation` (made by `xband.explain` from `model` and `data`) with the same methods
    and settings. Model-running checks use a stratified, seeded subset of at most `max_images` of
    the explained images; agreement and consensus use every explained image.

    checks: any of "randomisation", "faithfulness", "agreement", "completeness", or "all".
    baselines: what a deleted band becomes (`xband.methods.removal`): "mean", "zero", "data" (the
    band of another image), "noise" (the band's mean and spread). random_orders: random band
    orders to compare with.
    cascade_stages: randomisation stages, from the top layer to all layers. threshold: flag a
    method whose band ranking keeps Spearman's ρ ≥ threshold with every layer random.
    """
    started = time.perf_counter()
    settings = _settings(checks=checks, baselines=baselines, random_orders=random_orders,
                         cascade_stages=cascade_stages, threshold=threshold, n_boot=n_boot,
                         top_k=top_k)
    setup = Setup.of(model, data, explanation,
                     max_images=None if max_images is None else whole_number(max_images,
                                                                             "max_images"),
                     batch_size=None if batch_size is None else whole_number(batch_size,
                                                                             "batch_size"))
    chosen, baselines = settings["checks"], settings["deletion_baselines"]
    run_baseline = explanation.config.baseline  # a name, or the user's values
    settings.update(images=len(setup.positions), seed=setup.seed,
                    primary_baseline=run_baseline if run_baseline in baselines else baselines[0])
    result = Evaluation(method_info=explanation.method_info, settings=settings)
    with freed_memory_kept():  # the checks' passes, as the run's
        if "randomisation" in chosen:
            result.randomisation = randomisation_check(setup, stages=settings["cascade_stages"],
                                                       threshold=threshold)
        if "faithfulness" in chosen:
            result.curves = deletion_curves(setup, baselines=tuple(baselines),
                                            n_random=settings["random_orders"])
            result.faithfulness = faithfulness_table(result.curves)
            result.stability = baseline_stability(setup, result.faithfulness)
        if "agreement" in chosen:
            result.pairs = pairwise_agreement(explanation.importance_of())
            result.consensus = consensus_bootstrap(explanation, n_boot=settings["bootstrap_resamples"],
                                                   seed=setup.seed, k=settings["consensus_top_k"])
        if "completeness" in chosen and "integrated_gradients" in explanation.methods:
            settings["integrated_gradients_steps"] = explanation.plan.method(
                "integrated_gradients").n_steps
            result.completeness = completeness_check(setup)
    settings["run_time_s"] = round(time.perf_counter() - started, 2)
    return result


def _settings(*, checks, baselines, random_orders, cascade_stages, threshold, n_boot,
              top_k) -> dict:
    """The checks' settings, each checked and named when wrong."""
    return {"checks": choices("check", checks, CHECKS),
            "deletion_baselines": choices("deletion baseline", baselines, DELETION_BASELINES,
                                          aliases=ALIASES),
            "random_orders": whole_number(random_orders, "random_orders", minimum=2),
            "cascade_stages": whole_number(cascade_stages, "cascade_stages"),
            "randomisation_threshold": float(threshold),
            "bootstrap_resamples": whole_number(n_boot, "n_boot"),
            "consensus_top_k": whole_number(top_k, "top_k")}
