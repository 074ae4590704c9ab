"""Utility on normal prompts.

With a similarity judge (the offline default):
    utility(o) = max_j S(o, c_j)   over the item's correct reference answers c_j (BERTScore-style F1)
With a reward-model judge (the paper's OpenAssistant/reward-model-deberta-v3-large-v2):
    utility(o) = r(question, o)
value = (1/n) Σ utility(o_i)
"""

from __future__ import annotations

from unlearnbench.metrics import Metric, MetricResult, mean


class Utility(Metric):
    name = "utility"
    higher_is_better = True
    judge_kind = "utility"

    def compute(self, outputs, refs, judge=None) -> MetricResult:
        if hasattr(judge, "reward"):
            per_item = judge.reward([r["question"] for r in refs], outputs)
        else:
            flat_outputs, flat_refs, owner = [], [], []
            for i, (o, r) in enumerate(zip(outputs, refs)):
                for answer in r["correct_answers"]:
                    flat_outputs.append(o)
                    flat_refs.append(answer)
                    owner.append(i)
            scores = judge.f1(flat_outputs, flat_refs)
            per_item = [float("-inf")] * len(outputs)
            for i, s in zip(owner, scores):
                per_item[i] = max(per_item[i], s)
        return MetricResult(mean(per_item), per_item, judge.name, self.higher_is_better)
