"""Can the answer be trusted? Checks of an explanation, one module each:

- `randomisation`: sanity check, band rankings of a trained vs a randomised model;
- `faithfulness`: band deletion and insertion curves against random orders, under several
  baselines;
- `agreement`: Kendall's τ and Spearman's ρ between methods per class, consensus with bootstrap;
- `completeness`: Integrated Gradients' convergence delta.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from xband.checks._common import Setup
from xband.checks.agreement import consensus_bootstrap
from xband.checks.completeness import completeness_check
from xband.checks.cost import CheckPasses, estimate_text, passes_of
from xband.checks.evaluation import Evaluation
from xband.checks.faithfulness import (
    baseline_stability,
    deletion_check,
    deletion_orders,
    deletion_sets,
    uses_baseline,
)
from xband.checks.randomisation import planned_stages, randomisation_check
from xband.checks.rounds import Taken
from xband.data.images import ImageSet
from xband.errors import XbandError, whole_number
from xband.methods.removal import ALIASES, DELETION_BASELINES
from xband.models.load import LoadedModel
from xband.run.aggregate import pairwise_agreement
from xband.run.memory import freed_memory_kept
from xband.run.result import Explanation
from xband.run.threads import threads_for_the_load

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
    max_images: int | None = None,
    baselines: str | Sequence[str] = DELETION_BASELINES,
    random_orders: int = 10,
    cascade_stages: int = 4,
    threshold: float = 0.5,
    n_boot: int = 200,
    top_k: int = 3,
    batch_size: int | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
) -> Evaluation:
    """Check `explanation` (made by `xband.explain` from `model` and `data`) with the same
    methods and settings. The model-running checks take the explained images that every method
    explained, class by class in rounds, each until its own answer is settled
    (`xband.checks.rounds`; `max_images`: at most this many, stratified and seeded); the trained
    model's scores of those images are the explanation's own. Agreement and consensus use every
    explained image.

    checks: any of "randomisation", "faithfulness", "agreement", "completeness", or "all".
    baselines: what a deleted band becomes (`xband.methods.removal`): "mean", "zero", "data" (the
    band of another image), "noise" (the band's mean and spread). random_orders: random band
    orders to compare with.
    cascade_stages: randomisation stages, from the top layer to all layers. threshold: flag a
    method whose band ranking keeps Spearman's ρ ≥ threshold with every layer random.
    progress: a bar per check and the cost estimate first (on standard error, or to
    `announce`).
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
    run_baseline = explanation.config.baseline  # a name, or the user's values
    baselines = settings["deletion_baselines"]
    settings.update(images=len(setup.rows), seed=setup.seed, rule=setup.rule.as_dict(),
                    primary_baseline=run_baseline if run_baseline in baselines else baselines[0])
    say = announce or (_stderr if progress else None)
    if say is not None:
        say(estimate_text(setup, planned(setup, settings)))
    result = Evaluation(method_info=explanation.method_info, settings=settings)
    taken: dict[str, Taken] = {}
    with freed_memory_kept(), threads_for_the_load():  # the checks' passes, as the run's
        _model_checks(setup, result, taken, progress)
    if "agreement" in settings["checks"]:
        result.pairs = pairwise_agreement(explanation.importance_of())
        result.consensus = consensus_bootstrap(explanation, n_boot=settings["bootstrap_resamples"],
                                               seed=setup.seed, k=settings["consensus_top_k"])
    settings["images_taken"] = {name: t.as_dict() for name, t in taken.items()}
    settings["run_time_s"] = round(time.perf_counter() - started, 2)
    return result


def _model_checks(setup: Setup, result: Evaluation, taken: dict[str, Taken],
                  progress: bool) -> None:
    """The checks that run the model, each taking images until its answer is settled; how
    each took its images goes into `taken`."""
    settings = result.settings
    settings["torch_threads"] = torch.get_num_threads()
    chosen = settings["checks"]
    if "randomisation" in chosen:
        check = randomisation_check(setup, stages=settings["cascade_stages"],
                                    threshold=settings["randomisation_threshold"],
                                    progress=progress)
        result.randomisation, result.layers = check.table, check.layers
        settings["randomisation_layers"] = check.summary
        taken |= {f"randomisation, {stage}": t for stage, t in check.taken.items()}
    if "faithfulness" in chosen:
        result.curves, result.faithfulness, deleted = deletion_check(
            setup, baselines=tuple(settings["deletion_baselines"]),
            primary=settings["primary_baseline"], n_random=settings["random_orders"],
            progress=progress)
        taken |= {f"deletion, {baseline} baseline": t for baseline, t in deleted.items()}
        result.stability, other = baseline_stability(
            setup, result.faithfulness, threshold=settings["randomisation_threshold"],
            progress=progress)
        if other is not None:
            taken["ranking under another baseline"] = other
    if "completeness" in chosen and "integrated_gradients" in setup.explanation.methods:
        settings["integrated_gradients_steps"] = setup.explanation.plan.method(
            "integrated_gradients").n_steps
        result.completeness, taken["completeness"] = completeness_check(setup,
                                                                        progress=progress)


def planned(setup: Setup, settings: dict) -> list[CheckPasses]:
    """Each chosen check's network passes per image it takes, for the estimate."""
    chosen, methods = settings["checks"], setup.methods
    first = setup.rule.descriptive_round * len(setup.orders)  # a descriptive step's images
    out = []
    if "randomisation" in chosen:
        stages = planned_stages(setup, settings["cascade_stages"])
        out.append(CheckPasses("randomisation", passes_of(setup, methods)))
        if stages > 1:
            out.append(CheckPasses(f"cascade, {stages - 1} earlier",
                                   passes_of(setup, methods, times=stages - 1),
                                   images_at_most=first))
    if "faithfulness" in chosen:
        n_other = len(settings["deletion_baselines"]) - 1
        orders, fewer = deletion_orders(setup, settings["random_orders"])
        out.append(CheckPasses(f"deletion, {settings['primary_baseline']}",
                               {"forward": deletion_sets(setup, orders)}))
        if n_other:
            out.append(CheckPasses(f"deletion, {n_other} other{'s' * (n_other > 1)}",
                                   {"forward": deletion_sets(setup, fewer) * n_other},
                                   images_at_most=first))
        if others := [m for m in methods if uses_baseline(m)]:
            out.append(CheckPasses("another baseline", passes_of(setup, others),
                                   images_at_most=first))
    if "completeness" in chosen and "integrated_gradients" in setup.explanation.methods:
        ig = [setup.explanation.plan.method("integrated_gradients")]
        if setup.explanation.plan.donor_backgrounds:  # the run's steps computed again
            out.append(CheckPasses("completeness", passes_of(setup, ig)))
        out.append(CheckPasses("other IG steps", passes_of(setup, ig, times=4.25),
                               images_at_most=first))
    return out


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
