"""Fluency: mean token negative log-likelihood of each output under the original model.

    fluency(o | x) = (1/|o|) Σ_i −log p_θo(o_i | x, o_<i)      (lower is more fluent)
    value = (1/n) Σ fluency(o_i | x_i)

Reported as "NM" (not meaningful, as in the paper) when more than half of the outputs are
degenerate: empty, or fewer than two distinct word tokens. Such outputs have a trivially low NLL.
"""

from __future__ import annotations

from unlearnbench.metrics import Metric, MetricResult, mean
from unlearnbench.metrics.diversity import tokens


def degenerate(text: str) -> bool:
    return len(set(tokens(text))) < 2


class Fluency(Metric):
    name = "fluency"
    higher_is_better = False
    judge_kind = "lm"

    def compute(self, outputs, refs, judge=None) -> MetricResult:
        nll = judge.answer_nll([r["question"] for r in refs], outputs)
        per_item = [None if degenerate(o) else v for o, v in zip(outputs, nll)]
        degenerate_share = sum(v is None for v in per_item) / max(len(per_item), 1)
        if degenerate_share > 0.5:
            return MetricResult(None, per_item, judge.name, self.higher_is_better,
                                note=f"NM: {degenerate_share:.0%} of outputs are degenerate")
        return MetricResult(mean(per_item), per_item, judge.name, self.higher_is_better)
