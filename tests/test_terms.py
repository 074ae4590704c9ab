"""Each loss term pinned to a hand computation."""

import copy
import math

import pytest
import torch

from unlearnbench.batching import Step, Template, collate, encode
from unlearnbench.methods.ga import GAConfig, GradientAscent
from unlearnbench.methods.terms import answer_cross_entropy, forward_kl
from unlearnbench.methods.unlearn import Unlearn, UnlearnConfig
from unlearnbench.training import make_reference

from tolerance import fp32_tolerance


def batch_of(tokenizer, pairs):
    template = Template(tokenizer, "chat")
    return collate([encode(template, q, a, 128) for q, a in pairs], tokenizer.pad_token_id)


def hand_answer_nll(model, batch):
    """Σ over answer tokens of −log softmax(logits)[next token], divided by their count, by loops."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    total, count = 0.0, 0
    for row in range(batch.input_ids.shape[0]):
        for pos in range(1, batch.input_ids.shape[1]):
            target = int(batch.labels[row, pos])
            if target == -100:
                continue
            row_logits = logits[row, pos - 1].double()
            total += float(torch.logsumexp(row_logits, 0) - row_logits[target])
            count += 1
    return total / count


PAIRS = [("What is two plus two?", "Four."), ("Name a colour of the sky?", "The sky is usually blue.")]


def test_answer_cross_entropy_matches_hand_computation(tokenizer, tiny_model):
    batch = batch_of(tokenizer, PAIRS)
    assert float(answer_cross_entropy(tiny_model, batch)) == pytest.approx(hand_answer_nll(tiny_model, batch), rel=1e-5)


def test_ga_term_is_minus_answer_cross_entropy(tokenizer, tiny_model):
    batch = batch_of(tokenizer, PAIRS)
    terms = GradientAscent(GAConfig()).loss(tiny_model, Step(forget=batch), reference=None)
    assert float(terms["total"]) == pytest.approx(-hand_answer_nll(tiny_model, batch), rel=1e-5)


def test_kl_is_zero_when_model_equals_reference(tokenizer, tiny_model):
    batch = batch_of(tokenizer, PAIRS)
    reference = make_reference(tiny_model, lora=False, device="cpu")
    assert abs(float(forward_kl(tiny_model, reference, batch))) < 1e-6


@pytest.mark.parametrize("positions", ["answer", "all"])
def test_kl_matches_hand_computation(tokenizer, tiny_model, positions):
    batch = batch_of(tokenizer, PAIRS)
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference = make_reference(other, lora=False, device="cpu")
    logits_p = other(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    logits_q = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    total, count = 0.0, 0
    for row in range(batch.input_ids.shape[0]):
        for pos in range(1, batch.input_ids.shape[1]):
            counted = int(batch.labels[row, pos]) != -100 if positions == "answer" else bool(batch.attention_mask[row, pos])
            if not counted:
                continue
            p = torch.softmax(logits_p[row, pos - 1], 0)
            q = torch.softmax(logits_q[row, pos - 1], 0)
            total += float((p * (p.log() - q.log())).sum())
            count += 1
    value = float(forward_kl(tiny_model, reference, batch, positions))
    assert value > 0
    assert value == pytest.approx(total / count, rel=1e-4)


def test_unlearn_total_combines_terms_with_paper_weights(tokenizer, tiny_model):
    forget = batch_of(tokenizer, PAIRS)
    mismatch = batch_of(tokenizer, [(PAIRS[0][0], "Bananas are yellow."), (PAIRS[1][0], "Rivers flow downhill.")])
    normal = batch_of(tokenizer, [("Is water wet?", "Water makes things wet."), ("Do fish swim?", "Yes, fish swim.")])
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    method = Unlearn(UnlearnConfig())
    assert (method.config.forget_weight, method.config.mismatch_weight, method.config.normal_weight) == (0.5, 1.0, 1.0)
    terms = method.loss(tiny_model, Step(forget=forget, normal=normal, mismatch=mismatch),
                        make_reference(other, lora=False, device="cpu"))
    forget_nll, mismatch_nll, kl = hand_answer_nll(tiny_model, forget), hand_answer_nll(tiny_model, mismatch), float(terms["normal_kl"])
    # Terms of opposite sign: the tolerance follows their sizes, not the size of their sum.
    assert float(terms["total"]) == pytest.approx(-0.5 * forget_nll + mismatch_nll + kl,
                                                  abs=fp32_tolerance(0.5 * forget_nll, mismatch_nll, kl))
    assert float(terms["forget_ce"]) == pytest.approx(forget_nll, rel=1e-5)
    assert math.isfinite(float(terms["normal_kl"])) and float(terms["normal_kl"]) > 0
