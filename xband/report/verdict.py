"""The verdict per class: which bands the methods that earned trust on this model and data put first.

A method is trusted by measurement, not by a list: it enters the verdict when the trust checks
(`xband.evaluate`) ran and it passed both of them on this model and data:

- model randomisation: its class band ranking changes when every layer is re-drawn (not flagged);
- deletion: removing bands in its order (the run's baseline) lowers accuracy faster than random
  orders do. Per class the checks give z, the gap to the random orders' mean area in units of
  their spread; a random order's z is about standard normal, so a method beats random orders when
  its mean z over the C classes exceeds 1.645 / √C (one-sided 5%).

Without the checks, the verdict uses every method and says that they were not checked.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from xband.data.sensors import OTHER
from xband.report import plots
from xband.run import aggregate

TRUST_Z = 1.645  # one-sided 5% point of a standard normal: how far a random order rarely gets
CONSENSUS = "trusted consensus"  # the method name of the consensus rows
RANDOMISATION, DELETION = "model randomisation", "deletion against random orders"
CHECK_COMMAND = ("rerun with --evaluate (xband explain … --evaluate, xband demo --evaluate) or "
                 "as xband evaluate …; in Python: result.evaluation = xband.evaluate(model, data, "
                 "result)")
RULE = (f"a method is trusted when it passes model randomisation (its band ranking changes with "
        f"every layer random) and deleting bands in its order lowers accuracy faster than random "
        f"orders (mean z over classes above {TRUST_Z} / √classes, the run's baseline)")


@dataclass(frozen=True)
class ClassVerdict:
    """One class: the band most trusted methods put first, and the sentence that says so."""

    name: str
    sentence: str
    agreed: bool  # more than half of the trusted methods put the same band first
    first: str | None  # the band most of them put first (None: none has a single first band)
    votes: tuple[tuple[str, int], ...]  # (band, trusted methods with it as their single top band)
    mean_rank: tuple[tuple[str, float], ...]  # (band, mean rank over trusted methods), best first


@dataclass(frozen=True)
class Verdict:
    """Which methods were trusted and why the others were not, and per class the verdict."""

    methods: tuple[str, ...]  # every method of the run
    trusted: tuple[str, ...]  # the methods the verdict uses
    failures: tuple[tuple[str, str, str], ...]  # (method, check it failed, what was measured)
    checks_run: Mapping[str, str]  # the trust checks that ran → what failing one means
    checkable: bool  # False where xband cannot check these methods (multi-label)
    labels: Mapping[str, str]  # method → its label for people
    classes: tuple[ClassVerdict, ...]
    consensus: pd.DataFrame  # the trusted consensus in the importance table's form (rank = mean)
    feature: str = "band"  # what is ranked: "band", or "spectral region" in a run by region

    @property
    def excluded(self) -> dict[str, str]:
        """Method → why it was left out."""
        out: dict[str, list[str]] = {}
        for method, check, measured in self.failures:
            out.setdefault(method, []).append(f"{self.checks_run[check]}: {measured}")
        return {m: "; ".join(why) for m, why in out.items()}

    @property
    def checked(self) -> bool:
        """Both trust checks ran: the trusted methods earned it."""
        return len(self.checks_run) == 2

    def _names(self, methods: Sequence[str]) -> str:
        return ", ".join(self.labels.get(m, m) for m in methods) or "none"

    def status(self) -> str:
        """One line: which methods the verdict uses and why the others were left out."""
        if not self.checks_run:
            used = f"Methods used, not checked: {self._names(self.trusted)}"
            if not self.checkable:
                return f"{used} (xband's trust checks are for single-label models)."
            return (f"{used}. To use only those that pass the trust checks on this model and "
                    f"data, {CHECK_COMMAND}.")
        line = (f"Trusted, by {' and '.join(self.checks_run)} on this model and data: "
                f"{self._names(self.trusted)}.")
        for check, meaning in self.checks_run.items():
            failed = [f"{self.labels.get(m, m)} ({measured})"
                      for m, c, measured in self.failures if c == check]
            if failed:
                line += f" Left out because {meaning}: {', '.join(failed)}."
        missing = [c for c in (RANDOMISATION, DELETION) if c not in self.checks_run]
        if missing:
            line += f" Not run: {', '.join(missing)} (rerun with --checks all)."
        return line

    def __repr__(self) -> str:  # print(result.verdict()) and a notebook show the sentences
        return self.text()

    def text(self) -> str:
        """The verdict for a terminal: a heading, one sentence per class, the status line."""
        n, plural = len(self.trusted), "s" if len(self.trusted) != 1 else ""
        of = f"{n} trusted method{plural}" if self.checks_run else f"{n} method{plural}, not checked"
        lines = [f"Verdict per class (from {of}):"]
        lines += [f"  {c.sentence}" for c in self.classes]
        lines.append(self.status())
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """For summary.json: sentences, trusted and left-out methods, checks, consensus ranks."""
        return {
            "feature": self.feature,
            "checked": self.checked,
            "checks_run": list(self.checks_run),
            "rule": RULE,
            "methods": list(self.methods),
            "trusted": list(self.trusted),
            "excluded": self.excluded,
            "status": self.status(),
            "how_to_check": None if self.checked or not self.checkable else CHECK_COMMAND,
            "classes": [{"class": c.name, "sentence": c.sentence, "agreed": c.agreed,
                         "first": c.first, "votes": dict(c.votes),
                         "top_bands": [b for b, _ in c.mean_rank[:3]],
                         "mean_rank": {b: round(r, 3) for b, r in c.mean_rank}}
                        for c in self.classes],
        }

    def figure(self) -> Figure | None:
        """Class × band heat map of the mean rank over the trusted methods; None without any."""
        if self.consensus.empty:
            return None
        label = (f"Mean over the {len(self.trusted)} trusted methods" if self.checks_run
                 else f"Mean over {len(self.trusted)} methods (not checked)")
        return plots.band_class_heatmap(self.consensus, CONSENSUS, value="rank",
                                        grouping=self.consensus["grouping"].iloc[0],
                                        method_info={CONSENSUS: {"label": label}},
                                        feature=self.feature)


def trusted_methods(methods: Sequence[str], evaluation
                    ) -> tuple[list[str], list[tuple[str, str, str]], dict[str, str]]:
    """The methods that passed the trust checks that ran in `evaluation` (an
    `xband.checks.Evaluation`, or None); (method, check, what was measured) for each failure;
    and per check that ran, what failing it means, with its threshold."""
    failures = []
    run = {}
    table = None if evaluation is None else evaluation.randomisation
    if table is not None:
        threshold = evaluation.settings["randomisation_threshold"]
        run[RANDOMISATION] = (f"the band ranking barely changes with every layer random "
                              f"(ρ ≥ {threshold:g})")
        final = table.sort_values("layers_randomised", kind="stable").groupby("method").last()
        failures += [(m, RANDOMISATION, f"ρ {row['rank_rho']:.2f}")
                     for m, row in final[final["flagged"]].iterrows()]
    table = None if evaluation is None else evaluation.faithfulness
    if table is not None:
        baseline = evaluation.settings["primary_baseline"]
        rows = table[(table["baseline"] == baseline) & (table["curve"] == "deletion")
                     & (table["metric"] == "accuracy")]
        needed = TRUST_Z / math.sqrt(max(rows["class"].nunique(), 1))
        run[DELETION] = (f"deleting bands in the method's order lowers accuracy no faster than "
                         f"random orders ({baseline} baseline; mean z ≤ {needed:.2f})")
        for method in methods:
            mine = rows[rows["method"] == method]
            z = mine["z"].fillna(0.0).mean()  # no spread among random orders: no evidence
            if mine.empty or not z > needed:
                failures.append((method, DELETION,
                                 f"z {z:.2f}, gap {mine['gap'].mean():+.3f}"))
    failed = {m for m, _, _ in failures}
    return [m for m in methods if m not in failed], failures, run


def band_descriptions(importance: pd.DataFrame, band_groups: Mapping[str, Sequence[str]] | None
                      ) -> dict[str, tuple[str, str]]:
    """Band → (long, short) description: "B08 (NIR, 842 nm)" and "B08 (NIR)" where the spectral
    group and the wavelength are known, the name alone where not."""
    region = {b: g for g, members in (band_groups or {}).items() if g != OTHER for b in members}
    bands = importance.drop_duplicates("band").set_index("band")["wavelength_nm"]
    out = {}
    for band, wavelength in bands.items():
        parts = [region[band]] if band in region else []
        short = f"{band} ({parts[0]})" if parts else band
        if pd.notna(wavelength):
            parts.append(f"{round(float(wavelength), 1):g} nm")
        out[band] = (f"{band} ({', '.join(parts)})" if parts else band, short)
    return out


def _methods(n: int) -> str:
    return f"{n} method{'s' if n != 1 else ''}"


def _sentence(name: str, votes: Sequence[tuple[str, int]], order: Sequence[str], n: int,
              describe: Mapping[str, tuple[str, str]], only: str, kind: str) -> str:
    """The class's sentence from the `n` methods' `votes` (most first) and the bands in
    consensus `order`; `only` names the method when there is one, `kind` what the methods are
    ("trusted methods" or "methods")."""
    if votes and votes[0][1] > n / 2:
        first, k = votes[0]
        then = next((b for b in order if b != first), None)
        whom = f"the only {kind[:-1]} ({only})" if n == 1 else f"{k} of {n} {kind}"
        return (f"{name}: {describe[first][0]} first for {whom}"
                + (f"; then {describe[then][1]}" if then else ""))
    if n == 1:
        return (f"{name}: no single first band: the only {kind[:-1]} ({only}) ranks several "
                "bands level at the top")
    if not votes:
        return f"{name}: no agreement: no {kind[:-1]} names a single first band"
    sides = " vs ".join(f"{b} ({_methods(k)})" for b, k in votes[:3])
    if len(votes) == 1:
        sides += f"; no single first band for the other {_methods(n - votes[0][1])}"
    return f"{name}: no agreement: {sides}"


def judge(importance: pd.DataFrame, evaluation, *, method_labels: Mapping[str, str],
          band_groups: Mapping[str, Sequence[str]] | None = None,
          checkable: bool = True, feature: str = "band") -> Verdict:
    """The verdict from the importance table and the trust checks (`evaluation`, or None): per
    class (rows of `aggregate.class_rows`) the trusted methods' votes for their top band and the
    mean rank of each band over them."""
    rows = aggregate.class_rows(importance)
    methods = list(pd.unique(importance["method"]))
    trusted, failures, run = trusted_methods(methods, evaluation)
    describe = band_descriptions(importance, band_groups)
    mine = rows[rows["method"].isin(trusted)]
    means = aggregate.consensus(mine) if not mine.empty else pd.DataFrame(
        columns=["class", "band", "mean_rank", "consensus_rank"])
    classes = []
    for name in pd.unique(rows["class"]):
        if not trusted:
            classes.append(ClassVerdict(name, f"{name}: no verdict: no method passed the checks",
                                        False, None, (), ()))
            continue
        block = mine[mine["class"] == name]
        tops = block[block["rank"] == 1].groupby("method")["band"].agg(list)
        count = Counter(bands[0] for bands in tops if len(bands) == 1)  # a tie names no band
        ranked = means[means["class"] == name]
        order = list(ranked["band"])
        votes = tuple(sorted(count.items(), key=lambda bk: (-bk[1], order.index(bk[0]))))
        sentence = _sentence(name, votes, order, len(trusted), describe,
                             method_labels.get(trusted[0], trusted[0]),
                             "trusted methods" if run else "methods")
        classes.append(ClassVerdict(
            name, sentence, agreed=bool(votes) and votes[0][1] > len(trusted) / 2,
            first=votes[0][0] if votes else None, votes=votes,
            mean_rank=tuple(zip(order, ranked["mean_rank"].astype(float), strict=True))))
    consensus = pd.DataFrame()
    if trusted:
        shape = ["grouping", "class", "target", "band", "band_index", "wavelength_nm"]
        consensus = (mine[mine["method"] == trusted[0]][shape]
                     .merge(means[["class", "band", "mean_rank"]], on=["class", "band"])
                     .rename(columns={"mean_rank": "rank"}).assign(method=CONSENSUS))
    return Verdict(methods=tuple(methods), trusted=tuple(trusted), failures=tuple(failures),
                   checks_run=run, checkable=checkable,
                   labels=dict(method_labels), classes=tuple(classes), consensus=consensus,
                   feature=feature)
