"""Fluency: mean token negative log-likelihood of each output under the original model.

    fluency(o | x) = (1/|o|) Σ_i −log p_θo(o_i | x, o_<i)      (lower is more fluent)
    value = (1/n) Σ fluency(o_i | x_i)

Reported as "NM" (not meaningful, as in the paper) when more than half of the outputs are
trivial: empty, or fewer than two distinct word tokens. Such outputs have a trivially low NLL
(metrics/degenerate_rate.py is the broader measure of broken text).
"""

from __future__ import annotations

import re

from unlearnbench.metrics import Metric, MetricResult, mean

# Word tokens (regex \w+|[^\w\s], lower-cased) decide which outputs fluency leaves out.
TOKEN = re.compile(r"\w+|[^\w\s]")


def trivial(text: str) -> bool:
    """Empty or fewer than two distinct word tokens: an output whose NLL says nothing."""
    return len(set(TOKEN.findall(text.lower()))) < 2


class Fluency(Metric):
    name = "fluency"
    higher_is_better = False
    judge_kind = "lm"

    def compute(self, outputs, refs, judge=None) -> MetricResult:
        nll = judge.answer_nll([r["question"] for r in refs], outputs)
        per_item = [None if trivial(o) else v for o, v in zip(outputs, nll)]
        trivial_share = sum(v is None for v in per_item) / max(len(per_item), 1)
        if trivial_share > 0.5:
            return MetricResult(None, per_item, judge.name, self.higher_is_better,
                                note=f"NM: {trivial_share:.0%} of outputs are empty or one repeated token")
        return MetricResult(mean(per_item), per_item, judge.name, self.higher_is_better)
