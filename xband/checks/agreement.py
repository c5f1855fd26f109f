"""Agreement between methods per class (Kendall's τ, Spearman's ρ), and the consensus ranking
with its uncertainty from a bootstrap over images. Uses the explanation's per-image scores only."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

from xband import aggregate
from xband.checks._common import known_classes, per_image_shares, spearman_rows
from xband.result import Explanation


def pairwise_agreement(explanation: Explanation) -> pd.DataFrame:
    """Per class and ordered pair of methods: Spearman's ρ and Kendall's τ between their band
    rankings (by mean share). Both orders of every pair and the diagonal are listed."""
    rows = aggregate.class_rows(explanation.importance)
    pivot = rows.pivot_table(index=["class", "band_index"], columns="method", values="share",
                             sort=False)
    methods = explanation.methods
    out = []
    for cls, block in pivot.groupby(level="class", sort=False):
        for a, b in itertools.product(methods, repeat=2):
            x, y = block[a].to_numpy(), block[b].to_numpy()
            rho = spearman_rows(x, y).item()
            tau = kendalltau(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
            out.append({"class": cls, "method_a": a, "method_b": b, "spearman": rho,
                        "kendall": float(tau)})
    return pd.DataFrame(out)


def agreement_matrix(pairs: pd.DataFrame, measure: str = "kendall") -> pd.DataFrame:
    """Method × method mean over classes of `measure` ("kendall" or "spearman")."""
    matrix = pairs.pivot_table(index="method_a", columns="method_b", values=measure,
                               aggfunc="mean", sort=False)
    return matrix.rename_axis(index=None, columns=None)


def consensus_bootstrap(explanation: Explanation, *, n_boot: int = 200, seed: int = 0,
                        k: int = 3) -> pd.DataFrame:
    """Per class and band: the consensus rank (mean over methods of each method's rank by mean
    share, then ranked), with a 95% bootstrap interval over the class's images and the chance
    that the band is the consensus top band and in the top k."""
    rng = np.random.default_rng([seed, 23])
    methods = explanation.methods
    group = known_classes(explanation)
    shares = np.stack([per_image_shares(explanation, m) for m in methods], axis=1)  # (N, M, B)
    rows = []
    for c, cls in enumerate(explanation.class_names):
        values = shares[group == c]
        n = len(values)
        if n == 0:
            continue
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
        means = np.concatenate([values.mean(axis=0)[None],
                                np.einsum("rn,nmb->rmb", counts, values) / n])
        ranks = rankdata(-means, axis=2, method="min").mean(axis=1)  # (1 + n_boot, B)
        consensus = rankdata(ranks, axis=1, method="min")
        boot = consensus[1:]
        for b, band in enumerate(explanation.band_names):
            rows.append({
                "class": cls, "band": band, "band_index": b, "mean_rank": ranks[0, b],
                "consensus_rank": int(consensus[0, b]),
                "rank_ci_low": float(np.percentile(boot[:, b], 2.5)),
                "rank_ci_high": float(np.percentile(boot[:, b], 97.5)),
                "p_top1": float(np.mean(boot[:, b] == 1)),
                f"p_top{k}": float(np.mean(boot[:, b] <= k)),
                "n": n,
            })
    table = pd.DataFrame(rows)
    return table.sort_values(["class", "consensus_rank", "band_index"], kind="stable",
                             key=lambda s: s.map(_class_order(explanation)) if s.name == "class"
                             else s).reset_index(drop=True)


def _class_order(explanation: Explanation) -> dict[str, int]:
    return {name: i for i, name in enumerate(explanation.class_names)}
