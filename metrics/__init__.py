"""Metrics: one file per formula. Every result names the judge that produced it.

Contract (scikit-learn style: one shape for every metric):
    Metric().compute(outputs, refs, judge) -> MetricResult
`outputs` are generated texts, `refs` one dict per item (what the task knows about it),
`judge` the scorer the metric needs (an encoder, a reward model, a language model) or None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


# The forget rates (one per task) and their column labels: what "the forget metric" is wherever a
# component needs one (selection, compute-to-target, attacks, tables).
FORGET_RATES = {"harmful_rate": "harm %", "hallucination_rate": "halluc. %", "leak_rate": "leak %"}


@dataclass
class MetricResult:
    value: float | None  # None: not meaningful ("NM"), e.g. fluency of degenerate outputs
    per_item: list = field(default_factory=list)
    judge_name: str = "none"
    higher_is_better: bool = True
    note: str = ""

    def display(self) -> str:
        if self.value is None:
            return "NM"
        return f"{self.value:.3f}"

    def to_dict(self) -> dict:
        return asdict(self)


class Metric:
    name = "base"
    higher_is_better = True
    # "similarity", "utility", "lm", "harm", "original_similarity", "tokenizer" (the evaluated
    # model's) or None
    judge_kind: str | None = None
    # True: refs[i]["scores"] holds the per-item results of the metrics listed before this one.
    needs_scores = False

    def compute(self, outputs: list[str], refs: list[dict], judge=None) -> MetricResult:
        raise NotImplementedError


def mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")
