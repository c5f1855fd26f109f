"""Replay the rounds until settled on an every-image run's per-image scores: how many images each
method would take per class under another stopping rule, what that would cost, and whether its
top-3 bands per class would equal the every-image run's.

    python scripts/replay_stopping.py REFERENCE_FOLDER [--seeds 6] [growth=0.25 tie=0.02 …]

REFERENCE_FOLDER is the output of an every-image run with the rounds' few draws
(`scripts/benchmark_dataset.py --all-images-only --few-draws`), whose scores.npz holds every
image's scores. Each variant is `StoppingRule`'s default with the given fields changed. Replaying
takes seconds where running takes minutes, so it is how the rounds' sizes were chosen; the cost
is each method's measured seconds per image in a default run (--seconds, defaults from the
27,000-image benchmark), counting no shared copies and no band groups.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xband.run.aggregate import shares  # noqa: E402
from xband.run.sampling import StoppingRule, class_orders, sample_until_settled  # noqa: E402

# seconds per image, measured in the default run on the 27,000-image set (2 cores)
SECONDS = {"integrated_gradients": 0.015, "gradient_shap": 0.008, "feature_ablation": 0.015,
           "shapley": 0.034, "permutation": 0.007, "lime": 0.032, "kernel_shap": 0.023}


def replay(share: dict[str, np.ndarray], classes: np.ndarray, rule: StoppingRule, seed: int,
           seconds: dict[str, float]) -> tuple[float, int, int]:
    """(method seconds, images, (method, class) pairs whose top 3 equal every image's) of the
    rounds under `rule` with `seed`'s class orders."""
    orders = class_orders(classes, int(classes.max()) + 1, seed)

    def attribute(positions: np.ndarray, active: dict[str, set[int]]):
        return {m: (used, share[m][used]) for m in share
                for used in [positions[np.isin(classes[positions], list(active[m]))]]}

    stops = sample_until_settled(attribute, list(share), orders, rule, class_of=classes,
                                 seed=seed, seconds_per_image=dict.fromkeys(share, 0.0))
    cost = images = equal = 0
    for m, by_class in stops.items():
        for c, stop in by_class.items():
            cost += seconds[m] * stop.n
            images += stop.n
            top = set(np.argsort(-share[m][orders[c][:stop.n]].mean(axis=0))[:3])
            equal += top == set(np.argsort(-share[m][classes == c].mean(axis=0))[:3])
    return cost, images, equal


def variant(text: str) -> StoppingRule:
    """A `StoppingRule` from "field=value"."""
    name, value = text.split("=")
    default = StoppingRule()
    return dataclasses.replace(default, **{name: type(getattr(default, name))(value)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("variants", nargs="*", help="field=value of StoppingRule")
    parser.add_argument("--seeds", type=int, default=6)
    args = parser.parse_args()
    saved = np.load(args.reference / "scores.npz")
    if not np.array_equal(saved["indices"], np.arange(len(saved["indices"]))):
        sys.exit(f"{args.reference}: not an every-image run (scores.npz lacks images)")
    share = {m: shares(saved[f"scores_{m}"]) for m in SECONDS}
    classes = saved["labels"]
    pairs = len(share) * len(np.unique(classes))
    print(f"{len(classes)} images, {len(share)} methods; per seed: method seconds, images, "
          f"top-3 sets equal to every image's (of {pairs})")
    for name in ["default", *args.variants]:
        rule = StoppingRule() if name == "default" else variant(name)
        runs = [replay(share, classes, rule, seed, SECONDS) for seed in range(args.seeds)]
        cost = [r[0] for r in runs]
        print(f"{name:14} seconds " + " ".join(f"{c:4.0f}" for c in cost)
              + f"  (median {np.median(cost):.0f}); images " + " ".join(f"{r[1]}" for r in runs)
              + "; equal " + " ".join(str(r[2]) for r in runs))


if __name__ == "__main__":
    main()
