"""Band deletion and insertion curves: does the model follow the ranking a method gives?

Per class, bands (spectral regions, in a run by region) are replaced by a baseline one at a
time in a method's order (most important first: deletion), or restored one at a time into an
all-baseline image (insertion), and the model's accuracy and mean target score are recorded after
each step. The same is done for random orders and for the method's reverse order. A faithful
ranking deletes accuracy faster, and inserts it faster, than random orders: the area between the
curves says by how much, and z says it in units of the random orders' spread.

A method's order is its class ranking by mean share; bands with equal shares are put in a
seeded random order (a tie carries no order), and a method whose bands all tie gives no ranking:
it has no curve, its z is not computed, and it is never credited as faithful.

Every step keeps a set of bands and replaces the others, so all orders share one evaluation per
distinct set. Each baseline takes images until every method's "mean z over classes above
TRUST_Z / √classes" is settled (`xband.checks.rounds`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from xband.checks._common import Setup, class_order
from xband.checks.compare import RankingComparison
from xband.checks.rounds import Taken, flip_chance, mean_over, take_until_settled
from xband.methods import FeatureAblation, IntegratedGradients, KernelShap, Lime, Method, Shapley
from xband.methods.removal import DATA, NOISE, removal_values, with_bands_removed
from xband.run.aggregate import resample_counts

RANDOM = "random"
TRUST_Z = 1.645  # one-sided 5% point of a standard normal: how far a random order rarely gets
CURVES = ("deletion", "insertion")
METRICS = ("accuracy", "score")
# the methods whose scores depend on the constant a removed band becomes
BASELINE_METHODS = (IntegratedGradients, FeatureAblation, Shapley, Lime, KernelShap)


def needed_z(n_classes: int) -> float:
    """The mean z over `n_classes` classes a method must exceed: a random order's z is about
    standard normal, so its mean over C classes exceeds TRUST_Z / √C in 5% of cases."""
    return TRUST_Z / math.sqrt(max(n_classes, 1))


def replacement(setup: Setup, baseline: str, positions: np.ndarray) -> torch.Tensor:
    """(n, B, H, W) what a deleted band of the images at `positions` becomes
    (`xband.methods.removal`): with "data" the band of one seeded other image of the pool,
    with "noise" seeded noise per image, each the same whichever round takes the image."""
    record = setup.explanation.record
    if baseline == DATA:
        donors = np.random.default_rng([setup.seed, 11]).permutation(len(setup.rows))
        return setup.images(donors[positions])
    x = setup.images(positions)
    if baseline == NOISE:
        mean = torch.from_numpy(record.band_mean).to(x).view(-1, 1, 1)
        std = torch.from_numpy(record.band_std).to(x).view(-1, 1, 1)
        return torch.stack([mean + std * torch.randn(
            x.shape[1:], generator=torch.Generator().manual_seed(setup.seed * 1_000_003 + int(p)))
            .to(x) for p in positions])
    return removal_values(baseline, x, record.band_mean, record.band_std, setup.seed)


def _orders(setup: Setup, class_name: str, c: int, n_random: int
            ) -> dict[str, np.ndarray | None]:
    """Band orders to test for one class: each method's (None: its bands all tie), its
    reverse, and seeded random ones."""
    rng = np.random.default_rng([setup.seed, 19, c])
    orders: dict[str, np.ndarray | None] = {}
    for method in setup.methods:
        order = class_order(*setup.class_shares[method.name, class_name], rng)
        orders[method.name] = order
        orders[f"reverse:{method.name}"] = None if order is None else order[::-1]
    for r in range(n_random):
        orders[f"{RANDOM}:{r}"] = np.random.default_rng([setup.seed, 17, c, r]).permutation(
            setup.n_features)
    return orders


def _kept_sets(order: np.ndarray, n_features: int) -> dict[str, list[frozenset]]:
    """Bands (regions) kept after each step of deletion and insertion in `order`."""
    every = frozenset(range(n_features))
    return {"deletion": [every - frozenset(order[:k]) for k in range(n_features + 1)],
            "insertion": [frozenset(order[:k]) for k in range(n_features + 1)]}


def _evaluate_sets(setup: Setup, sets: list[frozenset], x: torch.Tensor, fill: torch.Tensor,
                   c: int) -> np.ndarray:
    """(len(sets), n, 2): per image, whether it is classified as c and its class-c output
    with only each set kept."""
    masks = torch.zeros(len(sets), setup.n_bands, dtype=torch.bool, device=x.device)
    for i, kept in enumerate(sets):
        masks[i, setup.band_mask(kept)] = True
    per_chunk = max(1, setup.passes.forward // len(x))
    results = []
    with torch.inference_mode():
        for chunk in masks.split(per_chunk):
            images = with_bands_removed(x.unsqueeze(0), chunk.view(len(chunk), 1, -1, 1, 1),
                                        fill.unsqueeze(0)).flatten(0, 1)
            out = setup.forward(images).view(len(chunk), len(x), -1)
            hit = (out.argmax(dim=2) == c).double()
            results.append(torch.stack([hit, out[:, :, c].double()], dim=2).cpu())
    return torch.cat(results).numpy()


class _ClassCurves:
    """One class's orders, the distinct sets of bands they keep, and per image the accuracy
    and score with each set kept."""

    def __init__(self, orders: dict[str, np.ndarray | None], n_features: int):
        self.orders = orders
        self.steps = {name: _kept_sets(order, n_features) for name, order in orders.items()
                      if order is not None}
        unique = list(dict.fromkeys(s for curves in self.steps.values()
                                    for sets in curves.values() for s in sets))
        self.sets, self.where = unique, {s: i for i, s in enumerate(unique)}
        self.values = np.empty((len(unique), 0, 2))  # (sets, images, 2)

    def add(self, values: np.ndarray) -> None:
        """The accuracy and score of new images with each set kept ((sets, images, 2))."""
        self.values = np.concatenate([self.values, values], axis=1)

    @property
    def n(self) -> int:
        return self.values.shape[1]

    def curve(self, name: str, curve: str) -> np.ndarray:
        """(steps, images, 2) the order's curve per image."""
        return self.values[[self.where[s] for s in self.steps[name][curve]]]

    def areas(self, curve: str, metric: int) -> tuple[list[str], np.ndarray]:
        """The orders with a curve, and (images, orders) the area under each image's curve."""
        names = list(self.steps)
        per_image = [_area(self.curve(name, curve)[:, :, metric]) for name in names]
        return names, np.stack(per_image, axis=1)


def _area(values: np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps over [0, 1] (steps along axis 0)."""
    return np.trapezoid(values, dx=1.0 / (len(values) - 1), axis=0)


def _z(areas: np.ndarray, names: list[str], methods: list[str], sign: float) -> np.ndarray:
    """(…, methods) each method's gap to the random orders' mean area in units of their spread,
    from (…, orders) areas; NaN for a method without a curve (no ranking) or no spread."""
    random = areas[..., [i for i, n in enumerate(names) if n.startswith(f"{RANDOM}:")]]
    mean, spread = random.mean(axis=-1), random.std(axis=-1, ddof=1)
    out = np.full((*areas.shape[:-1], len(methods)), np.nan)
    for j, method in enumerate(methods):
        if method in names:
            gap = sign * (areas[..., names.index(method)] - mean)
            out[..., j] = np.divide(gap, spread, out=np.full_like(gap, np.nan), where=spread > 0)
    return out


class DeletionCurves:
    """The deletion and insertion curves under one baseline, a `rounds.Statistic` whose
    decisions are, per method, "mean deletion z (accuracy) over classes > needed_z"."""

    def __init__(self, setup: Setup, baseline: str, orders: dict[int, dict]):
        """orders: class → its band orders by name (`deletion_orders`)."""
        self.setup, self.baseline = setup, baseline
        self.classes = {c: _ClassCurves(orders[c], setup.n_features) for c in setup.orders}
        self.methods = [m.name for m in setup.methods]

    def add(self, positions: np.ndarray) -> None:
        for c, curves in self.classes.items():
            members = positions[self.setup.image_class[positions] == c]
            if len(members):
                curves.add(_evaluate_sets(
                    self.setup, curves.sets, self.setup.images(members),
                    replacement(self.setup, self.baseline, members), c))

    def mean_z(self, rng: np.random.Generator | None = None, n_boot: int = 0) -> np.ndarray:
        """(1 + n_boot, methods) mean deletion z over classes (no evidence, NaN, counts 0), on
        the images taken and on resamples of each class's images."""
        per_class = []
        for curves in self.classes.values():
            names, areas = curves.areas("deletion", 0)
            n = len(areas)
            boot = areas.mean(axis=0)[None]
            if n_boot:
                boot = np.concatenate([boot, resample_counts(rng, n, n_boot) @ areas / n])
            per_class.append(_z(boot, names, self.methods, sign=-1.0))
        return mean_over(np.nan_to_num(np.stack(per_class), nan=0.0), axis=0)

    def change_chance(self, rng: np.random.Generator) -> float:
        z = self.mean_z(rng, self.setup.rule.n_boot)
        passed = z > needed_z(len(self.classes))
        return float(flip_chance(passed[0], passed[1:]).max())

    def curves(self) -> pd.DataFrame:
        """Long table: baseline, class, curve, order, step, fraction of bands removed (deletion)
        or restored (insertion), accuracy, score (means over the class's images)."""
        names, n_features, rows = self.setup.explanation.class_names, self.setup.n_features, []
        for c, curves in self.classes.items():
            for order in curves.steps:
                for curve in CURVES:
                    means = curves.curve(order, curve).mean(axis=1)
                    rows += [(self.baseline, names[c], curve, order, k, k / n_features, *means[k])
                             for k in range(n_features + 1)]
        return pd.DataFrame(rows, columns=["baseline", "class", "curve", "order", "step",
                                           "fraction", "accuracy", "score"])

    def table(self) -> pd.DataFrame:
        """Per class, curve, metric and method: the area under the method's curve, its
        reverse's and the random orders' (mean, std), the gap to random (positive: more
        faithful than a random order) and z; `ranked` is False where the method's bands all
        tie (no curve: NaN)."""
        names, rows = self.setup.explanation.class_names, []
        for c, curves in self.classes.items():
            for curve in CURVES:
                for m, metric in enumerate(METRICS):
                    rows += self._rows(names[c], curves, curve, m, metric)
        return pd.DataFrame(rows)

    def _rows(self, cls: str, curves: _ClassCurves, curve: str, m: int, metric: str
              ) -> list[dict]:
        orders, areas = curves.areas(curve, m)
        area = dict(zip(orders, areas.mean(axis=0), strict=True))
        random = np.array([a for o, a in area.items() if o.startswith(f"{RANDOM}:")])
        sign = -1.0 if curve == "deletion" else 1.0
        z = _z(areas.mean(axis=0), orders, self.methods, sign)
        return [{"baseline": self.baseline, "class": cls, "curve": curve, "metric": metric,
                 "method": method, "ranked": method in area,
                 "auc": area.get(method, np.nan),
                 "auc_reverse": area.get(f"reverse:{method}", np.nan),
                 "auc_random": random.mean(), "auc_random_std": random.std(ddof=1),
                 "gap": sign * (area.get(method, np.nan) - random.mean()), "z": z[j],
                 "images": curves.n}
                for j, method in enumerate(self.methods)]


def deletion_orders(setup: Setup, n_random: int) -> tuple[dict[int, dict], dict[int, dict]]:
    """Class → the band orders its curves test (`_orders`) by name: under the run's baseline,
    with `n_random` random orders; under a baseline that decides nothing, the same with the
    first half of them (at least two)."""
    names = setup.explanation.class_names
    orders = {c: _orders(setup, names[c], c, n_random) for c in setup.orders}
    kept = {f"{RANDOM}:{r}" for r in range(max(2, n_random // 2))}
    fewer = {c: {name: order for name, order in by_name.items()
                 if not name.startswith(f"{RANDOM}:") or name in kept}
             for c, by_name in orders.items()}
    return orders, fewer


def deletion_sets(setup: Setup, orders: dict[int, dict]) -> float:
    """The distinct sets of bands a class's curves keep, on average over the classes: the
    forward passes per image of one baseline (for the cost estimate)."""
    return float(np.mean([len(_ClassCurves(orders[c], setup.n_features).sets)
                          for c in setup.orders]))


def deletion_check(setup: Setup, *, baselines: tuple[str, ...], primary: str,
                   n_random: int = 10, progress: bool = False
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Taken]]:
    """The deletion curves (long), the faithfulness table, and how each baseline took its
    images: the `primary` one (the run's, which the verdict uses) until settled with `n_random`
    random orders; the others, which describe how the answer depends on the baseline and decide
    nothing, half a first round, against half as many random orders."""
    orders, fewer = deletion_orders(setup, n_random)
    curves, tables, taken = [], [], {}
    for baseline in baselines:
        statistic = DeletionCurves(setup, baseline, orders if baseline == primary else fewer)
        taken[baseline] = take_until_settled(setup.orders, statistic, setup.rule,
                                             seed=setup.seed, keep=setup.keep,
                                             label=f"deletion, {baseline} baseline",
                                             progress=progress, one_round=baseline != primary)
        curves.append(statistic.curves())
        tables.append(statistic.table())
    return pd.concat(curves, ignore_index=True), pd.concat(tables, ignore_index=True), taken


def uses_baseline(method: Method) -> bool:
    """Whether the constant a removed band becomes enters the method's scores."""
    return isinstance(method, BASELINE_METHODS)


def baseline_stability(setup: Setup, faithfulness: pd.DataFrame, *, threshold: float = 0.5,
                       progress: bool = False) -> tuple[pd.DataFrame, Taken | None]:
    """Per method: the deletion gap in accuracy (mean over classes) under every baseline, its
    spread over baselines, under how many baselines it beats random orders, and, for a method
    whose scores use a baseline, how well its class rankings with the run's baseline and with a
    zero baseline (a mean one if the run's was zero) agree (Spearman's ρ, mean over classes;
    descriptive, like the other baselines' curves: one round of `rule.descriptive_round`
    images per class)."""
    rows = faithfulness[(faithfulness["curve"] == "deletion")
                        & (faithfulness["metric"] == "accuracy")]
    gaps = rows.pivot_table(index="method", columns="baseline", values="gap", aggfunc="mean",
                            sort=False, dropna=False)
    table = gaps.add_prefix("deletion_gap_")
    table["gap_std_over_baselines"] = gaps.std(axis=1, ddof=0)
    table["beats_random"] = (gaps > 0).sum(axis=1).astype(str) + f"/{gaps.shape[1]}"
    methods = [m for m in setup.methods if uses_baseline(m)]
    rhos, taken = {}, None
    if methods:
        mean = torch.from_numpy(setup.explanation.record.band_mean).view(1, -1, 1, 1).to(
            setup.baseline)
        other = mean if bool((setup.baseline == 0).all()) else torch.zeros_like(mean)
        comparison = RankingComparison(setup, setup.context(setup.forward, baseline=other),
                                       threshold=threshold, methods=methods)
        taken = take_until_settled(setup.orders, comparison, setup.rule, seed=setup.seed,
                                   keep=setup.keep, label="ranking under another baseline",
                                   progress=progress, one_round=True)
        rhos = {row["method"]: row["rank_rho"] for row in comparison.rows()}
    table["ranking_rho_other_baseline"] = table.index.map(lambda m: rhos.get(m, np.nan))
    return table.reset_index(), taken

