"""What the checks will cost before they start: passes per image of each check × the images it
takes × the explanation's measured time of a pass, said like the explanation's own estimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xband.checks._common import Setup
from xband.methods import Method
from xband.run.cost import MethodCost, estimate_lines, method_passes, pass_kind


@dataclass(frozen=True)
class CheckPasses:
    """One check's network passes per image it takes, by kind ("forward", "gradient")."""

    name: str
    passes: dict[str, float]
    images_at_most: int | None = None  # a descriptive step: half a first round

    def cost(self, seconds_per_pass: dict[str, float]) -> MethodCost:
        """As `xband.run.cost` states a method's cost: passes per image and seconds per pass."""
        total = sum(self.passes.values())
        seconds = sum(n * seconds_per_pass[kind] for kind, n in self.passes.items())
        if self.images_at_most is not None:
            return _Capped(self.name, int(round(total)), seconds / max(total, 1e-12),
                           self.images_at_most)
        return MethodCost(self.name, int(round(total)), seconds / max(total, 1e-12))


@dataclass(frozen=True)
class _Capped(MethodCost):
    """The cost of a check that takes at most `at_most` images whatever the pool holds."""

    at_most: int = 0

    def seconds(self, images: int) -> float:
        return super().seconds(min(images, self.at_most))


def passes_of(setup: Setup, methods: Sequence[Method], times: float = 1.0) -> dict[str, float]:
    """Passes per image of `methods` as the checks run them (the answer's features), by kind,
    `times` over."""
    plan = setup.explanation.plan
    counts = [len(plan.answer)]
    out: dict[str, float] = {}
    for method in methods:
        kind = pass_kind(method)
        out[kind] = out.get(kind, 0.0) + times * method_passes(method, counts, plan.n_background)
    return out


def estimate_text(setup: Setup, checks: list[CheckPasses]) -> str:
    """The checks' cost estimate: per check and in total, for the first round (the fewest
    images a check takes) and for every image of the pool (the most)."""
    seconds = setup.explanation.record.timing.seconds_per_image
    n_classes = len(setup.orders)
    pool = sum(len(order) for order in setup.orders.values())
    lines = estimate_lines([c.cost(seconds) for c in checks], setup.rule.first_round, n_classes,
                           pool, unit="images")
    lines[0] = "trust checks: " + lines[0].replace(
        "images;", "images each check takes until its answer is settled;", 1)
    lines.append("each check takes images until its answer is settled: the fewest is the first "
                 f"round, the most every image that every method explained ({pool}); the earlier "
                 "cascade stages, the other deletion baselines, the ranking under another "
                 "baseline and the other numbers of integration steps decide nothing and take "
                 "half a first round; the trained model's scores are the explanation's own")
    return "\n".join(lines)
