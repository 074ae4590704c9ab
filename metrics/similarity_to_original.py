"""Similarity to the original model's outputs on normal prompts (paper §3, Table 3).

    default:  sim(o, o_orig) = cos(e(o), e(o_orig))      e = mean-pooled sentence embedding
    BLEURT:   sim(o, o_orig) = BLEURT(reference = o_orig, candidate = o)   (--similarity-judge ID)
    value = (1/n) Σ sim(o_i, o_orig_i)

o_orig is the original model's greedy output for the same prompt, so the original scores 1
against itself (the paper sampled, hence its original-vs-original −0.778 under BLEURT).
"""

from __future__ import annotations

from unlearnbench.metrics import Metric, MetricResult, mean


class SimilarityToOriginal(Metric):
    name = "similarity_to_original"
    higher_is_better = True
    judge_kind = "original_similarity"

    def compute(self, outputs, refs, judge=None) -> MetricResult:
        originals = [r["original_output"] for r in refs]
        if hasattr(judge, "reward"):  # a pair-regression checkpoint such as BLEURT
            scores = judge.reward(originals, outputs)
        else:
            shown = lambda texts: [t if t.strip() else "(no answer)" for t in texts]  # noqa: E731
            a, b = judge.sentence_embeddings(shown(outputs)), judge.sentence_embeddings(shown(originals))
            scores = (a * b).sum(-1).tolist()
        return MetricResult(mean(scores), scores, judge.name, self.higher_is_better)
