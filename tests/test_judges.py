"""Judge loading paths, offline, on small local models in the real formats."""

import pytest
import torch

from unlearnbench.errors import BenchError
from unlearnbench.metrics.judges import RewardModelJudge, utility_judge
from unlearnbench.metrics.utility import Utility
from conftest import tiny_llama_config


@pytest.fixture()
def tiny_reward_model_dir(tmp_path, tokenizer):
    """A randomly initialised one-label sequence classifier saved like a hub reward model."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    config = tiny_llama_config(tokenizer, num_hidden_layers=1, num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


def test_reward_model_judge_scores_pairs(tiny_reward_model_dir):
    judge = RewardModelJudge(str(tiny_reward_model_dir), batch_size=2)
    questions = ["Is water wet?", "Do fish swim?", "Why is the sky blue?"]
    answers = ["Yes.", "Fish swim in water.", "Because of Rayleigh scattering of sunlight."]
    scores = judge.reward(questions, answers)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    one_by_one = [judge.reward([q], [a])[0] for q, a in zip(questions, answers)]
    assert scores == pytest.approx(one_by_one, abs=1e-4)  # padding does not change a pair's reward
    result = Utility().compute(answers, [{"question": q, "correct_answers": ["x"]} for q in questions], judge)
    assert result.value == pytest.approx(sum(scores) / 3, abs=1e-6)
    assert result.judge_name == f"reward[{tiny_reward_model_dir}]"


def test_a_classifier_with_several_labels_is_not_a_reward_model(tmp_path, tokenizer):
    from transformers import LlamaForSequenceClassification

    config = tiny_llama_config(tokenizer, num_hidden_layers=1, num_labels=3)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")
    with pytest.raises(BenchError, match="not a reward model"):
        RewardModelJudge(str(tmp_path / "clf"))


def test_unknown_utility_judge_is_a_clear_error():
    with pytest.raises(BenchError, match="unknown utility judge 'rewardz'"):
        utility_judge("rewardz", similarity=None)


def test_missing_reward_model_is_a_clear_error(tmp_path):
    with pytest.raises(BenchError, match="could not load reward model"):
        RewardModelJudge(str(tmp_path / "absent" / "model"))


@pytest.fixture(scope="module")
def sharp_tiny_model(tokenizer):
    """The tiny Llama with 10x the usual initial weights: at the usual scale its attention is so
    flat that scoring with wrong positions moved the NLL values by only 2e-4."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, initializer_range=0.2)).eval()


def assert_nll_computed_alone_in_fp64(model, template, questions, answers, judged):
    import copy
    import math

    import torch
    import torch.nn.functional as F

    from unlearnbench.batching import encode

    model = copy.deepcopy(model).double()
    for question, answer, value in zip(questions, answers, judged, strict=True):
        ids, start = encode(template, question, answer, max_length=512, add_eos=False)
        if start >= len(ids):
            assert math.isnan(value)
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        expected = F.cross_entropy(logits[start - 1 : len(ids) - 1], torch.tensor(ids[start:]), reduction="mean")
        assert value == pytest.approx(float(expected), abs=1e-4 * max(1.0, abs(float(expected))))


def test_answer_nll_is_each_answers_mean_token_nll_computed_alone(sharp_tiny_model, tokenizer):
    """The batched, length-sorted, answer-positions-only pass with the shared prompt prefix run once,
    against one item at a time with full logits, in fp64: same values, in the callers' order, nan
    for an empty answer."""
    from unlearnbench.batching import Template, encode
    from unlearnbench.metrics.judges import LanguageModelJudge

    template = Template(tokenizer, "chat")
    questions = ["What is 2 + 2?", "Name a colour.", "Who wrote Hamlet, and when?", "Say nothing.", "Why?"]
    answers = ["Four.", "Blue, or perhaps a deep green like the sea in winter.", "Shakespeare", "", "Because it is."]
    judge = LanguageModelJudge(sharp_tiny_model, template, "nll", batch_size=2)
    shared = [bool(judge._batch([encode(template, q, a, 512, add_eos=False) for q, a in pair], 0)[1])
              for pair in (zip(questions[:2], answers[:2]), zip(questions[2:4], answers[2:4]))]
    assert judge._shares_prefix() and shared == [True, True]  # the chat template's system turn runs once per batch
    assert_nll_computed_alone_in_fp64(sharp_tiny_model, template, questions, answers,
                                      judge.answer_nll(questions, answers))
    # One question twice, answers with the same first word: the shared ids run into the answers,
    # and the first answer token must still be scored.
    questions, answers = ["Name a colour."] * 2, ["Blue like the sky.", "Blue like the sea, deep and cold."]
    judged = LanguageModelJudge(sharp_tiny_model, template, "nll").answer_nll(questions, answers)
    assert_nll_computed_alone_in_fp64(sharp_tiny_model, template, questions, answers, judged)


def test_answer_nll_of_a_model_that_ignores_logits_to_keep(sharp_tiny_model, tokenizer):
    """A forward that takes logits_to_keep but returns every position: the first batch is retried
    with full logits on an unused prefix cache, and the values stay right."""
    import torch

    from unlearnbench.batching import Template
    from unlearnbench.metrics.judges import LanguageModelJudge

    class FullLogitsLlama(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=None, logits_to_keep=0):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache)

    template = Template(tokenizer, "chat")
    questions, answers = ["What is 2 + 2?", "Name a colour."], ["Four, of course.", "Blue."]
    judged = LanguageModelJudge(FullLogitsLlama(sharp_tiny_model), template, "nll").answer_nll(questions, answers)
    assert_nll_computed_alone_in_fp64(sharp_tiny_model, template, questions, answers, judged)
