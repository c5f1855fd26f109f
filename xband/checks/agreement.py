"""Agreement between methods per class (Kendall's τ, Spearman's ρ), and the consensus ranking
with its uncertainty from a bootstrap over images. Uses the explanation's per-image scores only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from xband.checks._common import feature_names, known_classes, per_image_shares
from xband.run.aggregate import resample_counts
from xband.run.result import Explanation


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
        values = shares[(group == c) & np.isfinite(shares).all(axis=(1, 2))]
        n = len(values)
        if n == 0:
            continue
        counts = resample_counts(rng, n, n_boot)
        means = np.concatenate([values.mean(axis=0)[None],
                                np.einsum("rn,nmb->rmb", counts, values) / n])
        ranks = rankdata(-means, axis=2, method="min").mean(axis=1)  # (1 + n_boot, B)
        consensus = rankdata(ranks, axis=1, method="min")
        boot = consensus[1:]
        for b, band in enumerate(feature_names(explanation)):
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
