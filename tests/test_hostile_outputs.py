"""Hostile outputs: what a broken model can emit must give every metric a finite value, never a crash."""

from __future__ import annotations

import math

import pytest

from unlearnbench import registry
from unlearnbench.evaluation import score_outputs

QUESTION = "Why does Greenland look so large on many world maps?"
HOSTILE = {
    "empty": "",
    "whitespace only": " \n\t  \n",
    "one token repeated": "the " * 400,
    "echo of the prompt": QUESTION,
    "20,000 characters": ("Greenland " * 2000)[:20_000],
    "control characters": "\x00\x01\x02\x1b[31m\x7f\u200b\ufeff\x08",
}
REFS = {
    "harmful_rate": {"question": QUESTION},
    "hallucination_rate": {"question": QUESTION, "right_answer": "The Mercator projection stretches the poles.",
                           "hallucinated_answer": "Greenland is larger than Africa."},
    "leak_bleu": {"question": QUESTION, "continuation": "the Mercator projection stretches areas near the poles"},
    "utility": {"question": QUESTION, "correct_answers": ["The Mercator projection stretches areas near the poles."]},
}


@pytest.fixture(scope="module")
def judges(tokenizer):
    import torch
    from transformers import LlamaForCausalLM

    from conftest import tiny_llama_config
    from unlearnbench.batching import Template
    from unlearnbench.metrics.harm_classifier import EmbeddedHarmJudge
    from unlearnbench.metrics.judges import LanguageModelJudge, SentenceSimilarityJudge, similarity_judge

    torch.manual_seed(0)
    tiny_model = LlamaForCausalLM(tiny_llama_config(tokenizer)).eval()
    similarity = similarity_judge()
    return {"tokenizer": tokenizer, "similarity": similarity, "utility": similarity,
            "original_similarity": SentenceSimilarityJudge(similarity), "harm": EmbeddedHarmJudge(similarity),
            "lm": LanguageModelJudge(tiny_model, Template(tokenizer, "paper"), "nll under a tiny random llama")}


@pytest.mark.parametrize("metrics, refs", [
    (("harmful_rate", "degenerate_rate", "clean_rate", "distinct_answers", "diversity", "fluency"), REFS["harmful_rate"]),
    (("hallucination_rate", "degenerate_rate", "clean_rate"), REFS["hallucination_rate"]),
    (("leak_bleu", "leak_rate", "degenerate_rate", "clean_rate"), REFS["leak_bleu"]),
    (("utility", "similarity_to_original", "degenerate_rate"), REFS["utility"]),
], ids=["harmful", "hallucination", "copyright", "normal"])
def test_every_metric_survives_hostile_outputs(judges, metrics, refs):
    outputs = list(HOSTILE.values())
    originals = ["A fine original answer about map projections."] * len(outputs)
    scores = score_outputs(metrics, outputs, [dict(refs) for _ in outputs], judges, originals)
    for name, result in scores.items():
        assert len(result.per_item) == len(outputs), name
        for kind, value in zip(HOSTILE, result.per_item):
            assert value is None or math.isfinite(value), f"{name} on {kind}: {value}"
        assert result.value is None or math.isfinite(result.value), name
    assert scores["degenerate_rate"].per_item == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # the echo is language
    if "harmful_rate" in scores:  # broken text is never harmful, and never clean
        assert scores["harmful_rate"].per_item[:3] == [0.0, 0.0, 0.0]
        assert scores["clean_rate"].per_item == [0.0, 0.0, 0.0, 1.0 - scores["harmful_rate"].per_item[3], 0.0, 0.0]
        # empty and whitespace-only are the same answer once whitespace is collapsed
        assert scores["distinct_answers"].per_item == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_every_registered_metric_is_covered():
    covered = {"harmful_rate", "degenerate_rate", "clean_rate", "distinct_answers", "diversity", "fluency", "hallucination_rate",
               "leak_bleu", "leak_rate", "utility", "similarity_to_original"}
    assert set(registry.REGISTRIES["metric"].names()) <= covered
