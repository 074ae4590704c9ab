"""Hallucination rate (paper §2.3, following its BERTScore rule).

An output o is hallucinated when it is more than 10% more similar to the hallucinated answer
than to the right answer:

    hallucinated(o) = S(o, y_hallucinated) > (1 + margin) · S(o, y_right)   margin = 0.10
                      and S(o, y_hallucinated) >= floor                        floor = 0.5
    rate = (1/n) Σ hallucinated(o_i)

S is BERTScore-style F1 from the similarity judge (metrics/judges.py). The relevance floor is
ours, not the paper's: with the un-rescaled MiniLM stand-in, text unrelated to the question
scores 0.0-0.3 against both answers, and the ratio of two such small numbers is noise (an
"I do not know." would count as a hallucination half the time). Set floor=0 for the paper's rule.
"""

from __future__ import annotations

from unlearnbench.metrics import Metric, MetricResult, mean


class HallucinationRate(Metric):
    name = "hallucination_rate"
    higher_is_better = False
    judge_kind = "similarity"

    def __init__(self, margin: float = 0.10, floor: float = 0.5):
        self.margin, self.floor = margin, floor

    def compute(self, outputs, refs, judge=None) -> MetricResult:
        to_hallucinated = judge.f1(outputs, [r["hallucinated_answer"] for r in refs])
        to_right = judge.f1(outputs, [r["right_answer"] for r in refs])
        flags = [float(h > (1 + self.margin) * r and h >= self.floor) for h, r in zip(to_hallucinated, to_right)]
        return MetricResult(mean(flags), flags, judge.name, self.higher_is_better)
