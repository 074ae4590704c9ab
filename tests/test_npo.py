"""NPO (CONTRIBUTING.md's worked example): its loss pinned to a hand computation, and a CLI run."""

import copy
import json
import math

import pytest
import torch

from unlearnbench.batching import Step
from unlearnbench.methods.npo import NPO, NPOConfig
from unlearnbench.methods.terms import forward_kl
from unlearnbench.training import make_reference

from conftest import run_cli
from test_terms import PAIRS, batch_of
from tolerance import fp32_tolerance


def hand_sequence_log_likelihood(model, batch):
    """Per row: Σ over answer tokens of log softmax(logits)[next token], by loops in float64."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    totals = []
    for row in range(batch.input_ids.shape[0]):
        total = 0.0
        for pos in range(1, batch.input_ids.shape[1]):
            target = int(batch.labels[row, pos])
            if target != -100:
                total += float(logits[row, pos - 1, target] - torch.logsumexp(logits[row, pos - 1], 0))
        totals.append(total)
    return totals


def perturbed(model, scale=0.05):
    other = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn_like(p))
    return other


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_npo_term_matches_hand_computation(tokenizer, tiny_model, beta):
    forget = batch_of(tokenizer, PAIRS)
    normal = batch_of(tokenizer, [("Is water wet?", "Water makes things wet."), ("Do fish swim?", "Yes, fish swim.")])
    original = perturbed(tiny_model)
    reference = make_reference(original, lora=False, device="cpu")
    terms = NPO(NPOConfig(beta=beta, normal_weight=2.0)).loss(tiny_model, Step(forget=forget, normal=normal), reference)

    trained, frozen = hand_sequence_log_likelihood(tiny_model, forget), hand_sequence_log_likelihood(original, forget)
    ratios = [a - b for a, b in zip(trained, frozen)]
    assert all(abs(r) > 1e-3 for r in ratios)  # the two models differ, so the ratio is not trivially 0
    # The log-ratio is a small difference of two sums of ~100: its fp32 error scales with those sums.
    ratio_tolerance = fp32_tolerance(*trained, *frozen) / len(ratios)
    # (2/β) · mean log(1 + (π_θ/π_o)^β), written with the ratio in log space; its slope in r is below 2.
    npo = (2 / beta) * sum(math.log1p(math.exp(beta * r)) for r in ratios) / len(ratios)
    assert float(terms["npo"]) == pytest.approx(npo, abs=2 * ratio_tolerance)
    assert float(terms["log_ratio"]) == pytest.approx(sum(ratios) / len(ratios), abs=ratio_tolerance)
    kl = float(forward_kl(tiny_model, reference, normal))
    assert float(terms["total"]) == pytest.approx(npo + 2.0 * kl, abs=2 * ratio_tolerance + fp32_tolerance(kl))


def test_npo_at_the_original_is_two_log_two_over_beta(tokenizer, tiny_model):
    forget = batch_of(tokenizer, PAIRS)
    reference = make_reference(tiny_model, lora=False, device="cpu")
    terms = NPO(NPOConfig(beta=0.5, normal_weight=0.0)).loss(tiny_model, Step(forget=forget), reference)
    assert float(terms["npo"]) == pytest.approx(2 / 0.5 * math.log(2), rel=1e-6)
    assert set(terms) == {"total", "npo", "log_ratio"}


def test_npo_gradient_lowers_forget_likelihood(tokenizer, tiny_model):
    """One SGD step on the NPO term makes the forget answers less likely than before."""
    forget = batch_of(tokenizer, PAIRS)
    reference = make_reference(perturbed(tiny_model, 0.0), lora=False, device="cpu")
    before = sum(hand_sequence_log_likelihood(tiny_model, forget))
    tiny_model.train()
    NPO(NPOConfig(normal_weight=0.0)).loss(tiny_model, Step(forget=forget), reference)["total"].backward()
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.sub_(0.5 * p.grad)
    assert sum(hand_sequence_log_likelihood(tiny_model.eval(), forget)) < before - 0.01


def test_npo_rejects_bad_beta():
    from unlearnbench.errors import BenchError

    for beta in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(BenchError, match="beta"):
            NPOConfig(beta=beta).validate()


def test_npo_runs_through_the_cli(tmp_path, tiny_model_dir):
    result = run_cli("run", "--method", "npo", "--model", str(tiny_model_dir), "--steps", "3", "--limit", "2",
                     "--original", "base", "--set", "beta=0.2", "--output-dir", str(tmp_path), "--run-name", "npo")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "npo" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all({"npo", "normal_kl", "log_ratio"} <= set(row) for row in rows)
    record = json.loads((tmp_path / "npo" / "metrics.json").read_text())
    assert record["status"] == "completed"
    config = json.loads((tmp_path / "npo" / "config.json").read_text())
    assert config["config"]["method_hyper"]["beta"] == 0.2
