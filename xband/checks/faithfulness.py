"""Band deletion and insertion curves: does the model follow the ranking a method gives?

Per class, bands (spectral regions, in a run by region) are replaced by a baseline one at a
time in a method's order (most important first: deletion), or restored one at a time into an
all-baseline image (insertion), and the model's accuracy and mean target score are recorded after
each step. The same is done for random orders and for the method's reverse order. A faithful
ranking deletes accuracy faster, and inserts it faster, than random orders: the area between the
curves says by how much.

Every step keeps a set of bands and replaces the others, so all orders share one evaluation per
distinct set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xband.checks._common import Setup, class_means, class_order, nan_mean
from xband.methods.removal import DELETION_BASELINES, removal_values, with_bands_removed
from xband.run.aggregate import spearman_rows

RANDOM = "random"


def replacement(setup: Setup, baseline: str) -> torch.Tensor:
    """(n, B, H, W) what a deleted band of each check image becomes (`xband.methods.removal`)."""
    record = setup.explanation.record
    return removal_values(baseline, setup.x, record.band_mean, record.band_std, setup.seed)


def _orders(setup: Setup, class_name: str, c: int, n_random: int) -> dict[str, np.ndarray]:
    """Band orders to test for one class: each method's, its reverse, and seeded random ones."""
    orders = {}
    for method in setup.methods:
        order = class_order(setup.explanation, method.name, class_name)
        orders[method.name] = order
        orders[f"reverse:{method.name}"] = order[::-1]
    for r in range(n_random):
        orders[f"{RANDOM}:{r}"] = np.random.default_rng([setup.seed, 17, c, r]).permutation(
            setup.n_features)
    return orders


def _kept_sets(order: np.ndarray, n_features: int) -> dict[str, list[frozenset]]:
    """Bands (regions) kept after each step of deletion and insertion in `order`."""
    every = frozenset(range(n_features))
    return {"deletion": [every - frozenset(order[:k]) for k in range(n_features + 1)],
            "insertion": [frozenset(order[:k]) for k in range(n_features + 1)]}


def _evaluate_sets(setup: Setup, forward, sets: list[frozenset], x: torch.Tensor,
                   fill: torch.Tensor, c: int) -> np.ndarray:
    """(len(sets), 2): accuracy and mean class-c output of the images with only each set kept."""
    masks = torch.zeros(len(sets), setup.n_bands, dtype=torch.bool, device=x.device)
    for i, kept in enumerate(sets):
        masks[i, setup.band_mask(kept)] = True
    per_chunk = max(1, setup.passes.forward // len(x))
    results = []
    with torch.inference_mode():
        for chunk in masks.split(per_chunk):
            images = with_bands_removed(x.unsqueeze(0), chunk.view(len(chunk), 1, -1, 1, 1),
                                        fill.unsqueeze(0)).flatten(0, 1)
            out = forward(images).view(len(chunk), len(x), -1)
            hit = (out.argmax(dim=2) == c).double().mean(dim=1)
            score = out[:, :, c].double().mean(dim=1)
            results.append(torch.stack([hit, score], dim=1).cpu())
    return torch.cat(results).numpy()


def deletion_curves(setup: Setup, *, baselines: tuple[str, ...] = DELETION_BASELINES,
                    n_random: int = 10) -> pd.DataFrame:
    """Long table: baseline, class, curve, order (method, reverse:method, random:r), step,
    fraction of bands removed (deletion) or restored (insertion), accuracy, score."""
    forward = setup.forward
    names = setup.explanation.class_names
    n_features = setup.n_features
    rows = []
    for baseline in baselines:
        fill_all = replacement(setup, baseline)
        for c, class_name in enumerate(names):
            members = torch.from_numpy(np.flatnonzero(setup.image_class == c)).to(setup.device)
            if len(members) == 0:
                continue
            orders = _orders(setup, class_name, c, n_random)
            steps = {name: _kept_sets(order, n_features) for name, order in orders.items()}
            unique = list(dict.fromkeys(s for curves in steps.values() for sets in curves.values()
                                        for s in sets))
            values = _evaluate_sets(setup, forward, unique, setup.x[members], fill_all[members], c)
            where = {s: i for i, s in enumerate(unique)}
            for name, curves in steps.items():
                for curve, sets in curves.items():
                    for k, kept in enumerate(sets):
                        accuracy, score = values[where[kept]]
                        rows.append((baseline, class_name, curve, name, k, k / n_features,
                                     accuracy, score))
    return pd.DataFrame(rows, columns=["baseline", "class", "curve", "order", "step", "fraction",
                                       "accuracy", "score"])


def _area(values: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over [0, 1]."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def faithfulness_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per baseline, class, curve, metric and method: the area under the method's curve, its
    reverse's and the random orders' (mean, std), and the gap to random, signed so that positive
    means the method's ranking is more faithful than a random one (deletion falls faster,
    insertion rises faster). `z` is the gap in units of the random orders' spread."""
    rows = []
    for (baseline, cls, curve), block in curves.groupby(["baseline", "class", "curve"], sort=False):
        for metric in ("accuracy", "score"):
            areas = {order: _area(g.sort_values("step")[metric].to_numpy())
                     for order, g in block.groupby("order", sort=False)}
            random = np.array([a for o, a in areas.items() if o.startswith(f"{RANDOM}:")])
            sign = -1.0 if curve == "deletion" else 1.0
            for order, area in areas.items():
                if order.startswith(("reverse:", f"{RANDOM}:")):
                    continue
                gap = sign * (area - random.mean())
                spread = random.std(ddof=1) if len(random) > 1 else np.nan
                rows.append({
                    "baseline": baseline, "class": cls, "curve": curve, "metric": metric,
                    "method": order, "auc": area, "auc_reverse": areas[f"reverse:{order}"],
                    "auc_random": random.mean(), "auc_random_std": spread, "gap": gap,
                    "z": gap / spread if spread and spread > 0 else np.nan,
                })
    return pd.DataFrame(rows)


def baseline_stability(setup: Setup, faithfulness: pd.DataFrame) -> pd.DataFrame:
    """Per method: the deletion gap in accuracy (mean over classes) under every baseline, its
    spread over baselines, under how many baselines it beats random orders, and how well its
    class rankings with the run's baseline and with a zero baseline (a mean one if the run's was
    zero) agree (Spearman's ρ, mean over classes)."""
    rows = faithfulness[(faithfulness["curve"] == "deletion")
                        & (faithfulness["metric"] == "accuracy")]
    gaps = rows.pivot_table(index="method", columns="baseline", values="gap", aggfunc="mean",
                            sort=False)
    table = gaps.add_prefix("deletion_gap_")
    table["gap_std_over_baselines"] = gaps.std(axis=1, ddof=0)
    table["beats_random"] = (gaps > 0).sum(axis=1).astype(str) + f"/{gaps.shape[1]}"
    mean = torch.from_numpy(setup.explanation.record.band_mean).to(setup.x).view(1, -1, 1, 1)
    other = mean if bool((setup.baseline == 0).all()) else torch.zeros_like(mean)
    ctx = setup.context(setup.forward, baseline=other)
    n_classes = setup.model.n_classes
    rhos = {}
    for method in setup.methods:
        own = class_means(setup.reference(method)[0], setup.image_class, n_classes)
        moved = class_means(setup.attribute(method, ctx)[0], setup.image_class, n_classes)
        rhos[method.name] = nan_mean(spearman_rows(own, moved))
    table["ranking_rho_other_baseline"] = table.index.map(rhos)
    return table.reset_index()
