"""From per-image band scores to per-class tables: means, spread, bootstrap intervals, ranks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

ALL_IMAGES = "all images"
TIED = "(all tied)"  # what names a class's top band when every band ties: none is first


def shares(scores: np.ndarray) -> np.ndarray:
    """s_b / Σ_b |s_b| per image (last axis = bands); 0 where every score is 0."""
    total = np.abs(scores).sum(axis=-1, keepdims=True)
    return np.divide(scores, total, out=np.zeros_like(scores, dtype=np.float64), where=total > 0)


def grouping_keys(labels: np.ndarray | None, predictions: np.ndarray, pairs=None) -> dict:
    """`importance_table`'s labels, predictions and multi_label for a run's rows: its images, or
    (multi-label) its (image, label) pairs, whose label is the pair's class and whose prediction
    is that class where the model predicts it (else -1)."""
    if pairs is None:
        return {"labels": labels, "predictions": predictions, "multi_label": False}
    hit = predictions[pairs.image, pairs.target]
    return {"labels": None if labels is None else pairs.target,
            "predictions": np.where(hit, pairs.target, -1), "multi_label": True}


def _groupings(
    labels: np.ndarray | None, predictions: np.ndarray, class_names: list[str],
    multi_label: bool = False,
) -> Iterator[tuple[str, str, np.ndarray]]:
    """(grouping, class name, mask) for every grouping of images the table reports. Multi-label
    rows are (image, label) pairs: true_class groups the images with a label, correct and
    misclassified those the model finds or misses it in."""
    groupings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    everyone = np.ones(len(predictions), dtype=bool)
    if labels is not None:
        correct = labels == predictions
        groupings["true_class"] = (labels, everyone)
    if labels is None or not multi_label:
        groupings["predicted_class"] = (predictions, everyone)
    if labels is not None:
        groupings["correct"] = (labels, correct)
        groupings["misclassified"] = (labels, ~correct)
    for grouping, (by, keep) in groupings.items():
        if keep.any():
            yield grouping, ALL_IMAGES, keep
        for c, name in enumerate(class_names):
            mask = keep & (by == c)
            if mask.any():
                yield grouping, name, mask


def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) counts of each of n rows in `size` bootstrap resamples (n draws with
    replacement each): a multinomial draw, made from uniform row indices, which is several
    times faster than `Generator.multinomial` for thousands of rows."""
    drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)


def _bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, n_boot: int, weights: np.ndarray | None,
    chunk: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """2.5 and 97.5 percentiles of the (`weights`-weighted) mean of each column over `n_boot`
    resamples of rows."""
    n = len(values)
    means = []
    for start in range(0, n_boot, chunk):
        counts = resample_counts(rng, n, min(chunk, n_boot - start))
        if weights is not None:
            counts = counts * weights
        means.append(counts @ values / counts.sum(axis=1, keepdims=True))
    means = np.concatenate(means)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def importance_table(
    scores: dict[str, np.ndarray],
    *,
    labels: np.ndarray | None,
    predictions: np.ndarray,
    class_names: list[str],
    band_names: list[str],
    target_mode: str,
    n_boot: int = 1000,
    seed: int = 0,
    wavelengths: Sequence[float] | None = None,
    multi_label: bool = False,
    strata: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The tidy table: one row per method, grouping, class, target and band.

    `scores[m]` is (N, B), or (N, C, B) when every class is a target (`target_mode == "all"`);
    multi-label, (P, B) for the (image, label) pairs that `grouping_keys` describes. NaN rows
    are images (pairs) the method did not explain; `wavelengths` (nm, per band) fill the column
    wavelength_nm (NaN when unknown). `n` counts each method's own images. strata: for a run
    that explained some images of each class, (each row's class as sampled (N,), each class's
    images among all candidates (C,)): a row weighs its class's candidates over the images the
    method explained of it, so that rows mixing classes (all images, a predicted class) stand
    for the candidates, not for how many images each class needed.
    """
    rng = np.random.default_rng(seed)
    n = len(predictions)
    targets = class_names if target_mode == "all" else [f"{target_mode} class"]
    wavelength = np.full(len(band_names), np.nan) if wavelengths is None else np.asarray(wavelengths)
    frames, order = [], {m: i for i, m in enumerate(scores)}
    together = _explained_together(scores, strata)
    share = {m: shares(values) for m, values in scores.items()}
    for grouping, cls, mask in _groupings(labels, predictions, class_names, multi_label):
        parts = []
        for methods, explained, weighs in together:
            rows = mask & explained
            if not rows.any():
                continue
            flat = np.concatenate([values[m].reshape(n, -1)[rows] for values in (scores, share)
                                   for m in methods], axis=1)  # one bootstrap serves them all
            index = pd.MultiIndex.from_product([methods, targets, band_names],
                                               names=["method", "target", "band"])
            parts.append(_summarise(flat, rng, n_boot, index, wavelength,
                                    None if weighs is None else weighs[rows]).assign(
                n=int(rows.sum())))
        if not parts:  # no method explained these images (band groups that settled sooner)
            continue
        frame = pd.concat(parts, ignore_index=True).sort_values(
            "method", key=lambda s: s.map(order), kind="stable")
        frames.append(_label(frame, grouping, cls))
    table = pd.concat(frames, ignore_index=True)
    keys = ["method", "grouping", "class", "target"]
    table["rank"] = (
        table.groupby(keys, sort=False)["share"].rank(ascending=False, method="min").astype(int)
    )
    columns = ["method", "grouping", "class", "target", "band", "band_index", "wavelength_nm",
               "score", "score_std",
               "ci_low", "ci_high", "share", "share_std", "share_ci_low", "share_ci_high", "n", "rank"]
    return table[columns]


def _explained_together(scores: dict[str, np.ndarray],
                        strata: tuple[np.ndarray, np.ndarray] | None = None
                        ) -> list[tuple[list[str], np.ndarray, np.ndarray | None]]:
    """Methods grouped by the images they explained (rows without NaN), in method order, with
    those rows' weights (`_stratum_weights`): a sampled run stops each method at its own number
    of images."""
    groups: list[tuple[list[str], np.ndarray]] = []
    for method, values in scores.items():
        explained = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        for members, rows in groups:
            if np.array_equal(rows, explained):
                members.append(method)
                break
        else:
            groups.append(([method], explained))
    return [(members, rows, _stratum_weights(strata, rows)) for members, rows in groups]


def _stratum_weights(strata: tuple[np.ndarray, np.ndarray] | None,
                     explained: np.ndarray) -> np.ndarray | None:
    """(N,) each row's weight: its class's candidates over the explained images of the class
    (`importance_table`'s strata); None (every row alike) without strata."""
    if strata is None:
        return None
    stratum, candidates = strata
    taken = np.bincount(stratum[explained], minlength=len(candidates))
    return candidates[stratum] / np.maximum(taken[stratum], 1)


def _summarise(values: np.ndarray, rng: np.random.Generator, n_boot: int, index: pd.MultiIndex,
               wavelength: np.ndarray, weights: np.ndarray | None) -> pd.DataFrame:
    """Weighted mean, std and bootstrap interval of every column of `values` (scores, then
    shares), one row per (method, target, band) of `index`."""
    half = len(index)
    mean = np.average(values, axis=0, weights=weights)
    n = len(values)
    spread = np.average((values - mean) ** 2, axis=0, weights=weights)
    std = np.sqrt(spread * n / (n - 1)) if n > 1 else np.zeros(values.shape[1])
    low, high = _bootstrap_interval(values, rng, n_boot, weights)
    frame = pd.DataFrame(
        {
            "score": mean[:half], "score_std": std[:half],
            "ci_low": low[:half], "ci_high": high[:half],
            "share": mean[half:], "share_std": std[half:],
            "share_ci_low": low[half:], "share_ci_high": high[half:],
        },
        index=index,
    ).reset_index()
    n_bands = len(wavelength)
    frame["band_index"] = np.tile(np.arange(n_bands), half // n_bands)
    frame["wavelength_nm"] = np.tile(wavelength, half // n_bands)
    return frame


def _label(frame: pd.DataFrame, grouping: str, cls: str) -> pd.DataFrame:
    frame.insert(1, "grouping", grouping)
    frame.insert(2, "class", cls)
    return frame


def class_rows(importance: pd.DataFrame, *, per_class_only: bool = True) -> pd.DataFrame:
    """Rows of the main view: grouping by true class when known (else predicted), the explained
    class as target; without the 'all images' rows unless `per_class_only` is False."""
    grouping = "true_class" if (importance["grouping"] == "true_class").any() else "predicted_class"
    rows = importance[importance["grouping"] == grouping]
    rows = rows[rows["target"].str.endswith(" class") | (rows["target"] == rows["class"])]
    if per_class_only:
        rows = rows[rows["class"] != ALL_IMAGES]
    return rows


def all_tied(values: np.ndarray | pd.Series) -> bool:
    """Whether every value is the same: scores that all tie carry no order, so no band is first
    and no ranking can be tested."""
    values = np.asarray(values, dtype=float)
    return bool(len(values)) and bool(np.all(values == values[0]))


def top_features(rows: pd.DataFrame) -> pd.Series:
    """Per (class, method) of importance rows: the band ranked first, bands tied first joined
    by " = ", or TIED where every band ties (rank 1 shared by all: no first band)."""
    def first(block: pd.DataFrame) -> str:
        top = block.loc[block["rank"] == 1, "band"]
        return TIED if len(top) == len(block) > 1 else " = ".join(top)

    return rows.groupby(["class", "method"], sort=False)[["band", "rank"]].apply(first)


def top_tiers(ranked: pd.DataFrame, k: int) -> str:
    """The first `k` tiers of one class's consensus ranks (tied bands joined by " = "), or TIED
    when every band ties."""
    tiers = ranked.groupby("consensus_rank", sort=True)["band"].agg(" = ".join)
    return TIED if len(tiers) == 1 and len(ranked) > 1 else ", ".join(tiers.head(k))


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching rows of a and b (NaN where a row is constant or missing)."""
    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=-1) / np.where(norm > 0, norm, 1), np.nan)


def pairwise_agreement(importance: pd.DataFrame) -> pd.DataFrame:
    """Per class and ordered pair of methods: Spearman's ρ and Kendall's τ between their band
    rankings (by mean share). Both orders of every pair and the diagonal are listed."""
    rows = class_rows(importance)
    pivot = rows.pivot_table(index=["class", "band_index"], columns="method", values="share",
                             sort=False)
    methods = list(dict.fromkeys(rows["method"]))
    out = []
    for cls, block in pivot.groupby(level="class", sort=False):
        for a, b in itertools.product(methods, repeat=2):
            x, y = block[a].to_numpy(), block[b].to_numpy()
            tau = kendalltau(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
            out.append({"class": cls, "method_a": a, "method_b": b,
                        "spearman": spearman_rows(x, y).item(), "kendall": float(tau)})
    return pd.DataFrame(out)


def agreement_matrix(pairs: pd.DataFrame, measure: str = "spearman") -> pd.DataFrame:
    """Method × method mean over classes of `measure` ("spearman" or "kendall") from
    `pairwise_agreement`; NaN where it is undefined for every class."""
    matrix = pairs.pivot_table(index="method_a", columns="method_b", values=measure,
                               aggfunc="mean", sort=False, dropna=False)
    return matrix.rename_axis(index=None, columns=None)


def agreement(importance: pd.DataFrame) -> pd.DataFrame:
    """Mean over classes of Spearman's ρ between two methods' band rankings (by mean share)."""
    return agreement_matrix(pairwise_agreement(importance), "spearman")


def consensus(importance: pd.DataFrame) -> pd.DataFrame:
    """Per class (and over all images), each band's mean rank across methods and the resulting
    consensus rank (1 = most important)."""
    rows = class_rows(importance, per_class_only=False)
    mean_rank = rows.groupby(["class", "band"], sort=False)["rank"].mean().rename("mean_rank")
    table = mean_rank.reset_index()
    table["consensus_rank"] = (
        table.groupby("class", sort=False)["mean_rank"].rank(method="min").astype(int)
    )
    return table.sort_values(["class", "consensus_rank"], kind="stable").reset_index(drop=True)
