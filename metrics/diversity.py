"""Diversity (paper §2.3): the share of distinct subword tokens in each output, averaged.

    diversity(o) = |unique tokens(o)| / |tokens(o)|      (0 for an output with no tokens)
    value = (1/n) Σ diversity(o_i)

Tokens are the evaluated model's own subword tokens (the paper's reading), so repetition cannot
hide in a string without spaces: "firehosefirehose…" is the same two tokens again and again and
scores near 0, where a count of space-separated words saw one distinct "word" and scored 1.
"""

from __future__ import annotations

from unlearnbench.metrics import Metric, MetricResult, mean


def output_diversity(token_ids: list[int]) -> float:
    return len(set(token_ids)) / len(token_ids) if token_ids else 0.0


class Diversity(Metric):
    name = "diversity"
    higher_is_better = True
    judge_kind = "tokenizer"

    def compute(self, outputs, refs=None, judge=None) -> MetricResult:
        per_item = [output_diversity(judge(o, add_special_tokens=False)["input_ids"]) for o in outputs]
        return MetricResult(mean(per_item), per_item,
                            f"distinct share of subword tokens (the evaluated model's tokenizer, {len(judge)} tokens)",
                            self.higher_is_better)
