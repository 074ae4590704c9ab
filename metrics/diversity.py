"""Diversity: the share of distinct tokens in each output, averaged over outputs.

    diversity(o) = |unique tokens(o)| / |tokens(o)|      (0 for an empty output)
    value = (1/n) Σ diversity(o_i)

Tokens are lower-cased words and punctuation marks (regex \\w+|[^\\w\\s]), so the value does
not depend on the model's tokenizer and stays comparable across models.
"""

from __future__ import annotations

import re

from unlearnbench.metrics import Metric, MetricResult, mean

TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def output_diversity(text: str) -> float:
    words = tokens(text)
    return len(set(words)) / len(words) if words else 0.0


class Diversity(Metric):
    name = "diversity"
    higher_is_better = True

    def compute(self, outputs, refs=None, judge=None) -> MetricResult:
        per_item = [output_diversity(o) for o in outputs]
        return MetricResult(mean(per_item), per_item, "word tokens (no judge)", self.higher_is_better)
