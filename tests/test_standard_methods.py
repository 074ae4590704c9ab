"""GradDiff, SimNPO, WGA, RMU and refusal DPO: each loss pinned to a hand computation in float64
on the tiny model, and each gradient checked to move the way its method means."""

from __future__ import annotations

import math

import pytest
import torch

from unlearnbench.batching import Pair, Step, StepSampler, Template, TrainData
from unlearnbench.methods.dpo_refusal import DPORefusal, DPORefusalConfig, chosen_answers
from unlearnbench.methods.graddiff import GradDiff, GradDiffConfig
from unlearnbench.methods.rmu import RMU, RMUConfig
from unlearnbench.methods.simnpo import SimNPO, SimNPOConfig
from unlearnbench.methods.wga import WGA, WGAConfig
from unlearnbench.training import make_reference

from test_npo import perturbed
from test_terms import PAIRS, batch_of
from tolerance import fp32_tolerance

NORMAL = [("Is water wet?", "Water makes things wet."), ("Do fish swim?", "Yes, fish swim.")]
REFUSAL = [("What is two plus two?", "I don't know."), ("Name a colour of the sky?", "I can't say for certain.")]


def token_log_probs(model, batch) -> list[list[float]]:
    """Per row, the log-probability of each answer token given what precedes it, by loops in float64."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    rows = []
    for row in range(batch.input_ids.shape[0]):
        rows.append([float(logits[row, pos - 1, int(batch.labels[row, pos])] - torch.logsumexp(logits[row, pos - 1], 0))
                     for pos in range(1, batch.input_ids.shape[1]) if int(batch.labels[row, pos]) != -100])
    return rows


def mean_nll(model, batch) -> float:
    tokens = [lp for row in token_log_probs(model, batch) for lp in row]
    return -sum(tokens) / len(tokens)


def sgd_step(model, loss, lr=0.5):
    model.train()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
                p.grad = None
    model.eval()


def test_graddiff_is_minus_forget_ce_plus_weighted_retain_ce(tokenizer, tiny_model):
    forget, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, NORMAL)
    terms = GradDiff(GradDiffConfig(retain_weight=3.0)).loss(tiny_model, Step(forget=forget, normal=normal), None)
    forget_ce, retain_ce = mean_nll(tiny_model, forget), mean_nll(tiny_model, normal)
    assert float(terms["forget_ce"].detach()) == pytest.approx(forget_ce, rel=1e-5)
    assert float(terms["retain_ce"].detach()) == pytest.approx(retain_ce, rel=1e-5)
    assert float(terms["total"].detach()) == pytest.approx(-forget_ce + 3.0 * retain_ce, abs=fp32_tolerance(forget_ce, 3 * retain_ce))


def test_graddiff_ascends_on_forget_and_descends_on_normal(tokenizer, tiny_model):
    forget, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, NORMAL)
    before = mean_nll(tiny_model, forget), mean_nll(tiny_model, normal)
    sgd_step(tiny_model, GradDiff(GradDiffConfig(retain_weight=0.0)).loss(tiny_model, Step(forget=forget), None)["total"])
    assert mean_nll(tiny_model, forget) > before[0] + 0.01
    retain_only = GradDiff(GradDiffConfig(retain_weight=1.0)).loss(tiny_model, Step(forget=forget, normal=normal), None)
    sgd_step(tiny_model, retain_only["retain_ce"])  # the λ term alone: descent on the normal answers
    assert mean_nll(tiny_model, normal) < before[1]


# The random tiny model's per-token NLL is near 11: small β keeps the sigmoid off saturation, so
# the pinned value is far from 0 and the formula, not rounding, decides it.
@pytest.mark.parametrize("beta, gamma", [(0.1, 0.0), (0.05, 0.5)])
def test_simnpo_matches_hand_computation(tokenizer, tiny_model, beta, gamma):
    forget, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, NORMAL)
    terms = SimNPO(SimNPOConfig(beta=beta, gamma=gamma, retain_weight=0.5)).loss(
        tiny_model, Step(forget=forget, normal=normal), None)
    rows = token_log_probs(tiny_model, forget)
    # −(2/β) · mean log σ(−(β/|y|) · log π(y|x) − γ), with log σ(z) = −log(1 + e^(−z))
    simnpo = -(2 / beta) * sum(-math.log1p(math.exp(beta * sum(r) / len(r) + gamma)) for r in rows) / len(rows)
    assert simnpo > 1.0
    assert float(terms["simnpo"].detach()) == pytest.approx(simnpo, rel=1e-5)
    retain = mean_nll(tiny_model, normal)
    assert float(terms["total"]) == pytest.approx(simnpo + 0.5 * retain, rel=1e-5)


def test_simnpo_gradient_lowers_forget_likelihood(tokenizer, tiny_model):
    """β = 0.1: the random tiny model's answers already have a per-token NLL near 11, where β = 2.5
    puts the sigmoid in saturation (SimNPO is bounded: no gradient once an answer is unlikely)."""
    forget = batch_of(tokenizer, PAIRS)
    before = mean_nll(tiny_model, forget)
    sgd_step(tiny_model, SimNPO(SimNPOConfig(beta=0.1, retain_weight=0.0)).loss(tiny_model, Step(forget=forget), None)["total"],
             lr=2.0)
    assert mean_nll(tiny_model, forget) > before + 0.01


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_wga_matches_hand_computation(tokenizer, tiny_model, alpha):
    forget = batch_of(tokenizer, PAIRS)
    terms = WGA(WGAConfig(alpha=alpha)).loss(tiny_model, Step(forget=forget), None)
    tokens = [lp for row in token_log_probs(tiny_model, forget) for lp in row]
    # −(1/N) Σ p_i^α · (−log p_i), p_i = e^(log p_i)
    wga = -sum(math.exp(alpha * lp) * -lp for lp in tokens) / len(tokens)
    assert float(terms["wga"]) == pytest.approx(wga, rel=1e-5)
    if alpha == 0.0:  # α = 0 is plain gradient ascent
        assert float(terms["wga"]) == pytest.approx(-mean_nll(tiny_model, forget), rel=1e-5)


def test_wga_gradient_is_weighted_ascent(tokenizer, tiny_model):
    """The weight is held constant: the gradient is Σ w_i ∇nll_i / N, ascent on every token, and
    with α > 0 smaller than plain GA's (every w_i < 1)."""
    forget = batch_of(tokenizer, PAIRS)
    grads = {}
    for alpha in (0.0, 1.0):
        tiny_model.zero_grad()
        WGA(WGAConfig(alpha=alpha)).loss(tiny_model, Step(forget=forget), None)["total"].backward()
        grads[alpha] = torch.cat([p.grad.flatten() for p in tiny_model.parameters() if p.grad is not None])
    assert float(grads[1.0].norm()) < float(grads[0.0].norm())
    assert float(grads[1.0] @ grads[0.0]) > 0  # same direction as plain ascent, damped
    tiny_model.zero_grad()
    before = mean_nll(tiny_model, forget)
    sgd_step(tiny_model, WGA(WGAConfig(alpha=1.0)).loss(tiny_model, Step(forget=forget), None)["total"])
    assert mean_nll(tiny_model, forget) > before


def test_rmu_trains_only_the_mlps_below_its_layer(tokenizer, tiny_model):
    rmu = RMU(RMUConfig(layer=1))
    expected = [p for block in tiny_model.model.layers[0:2] for p in block.mlp.parameters()]
    assert [id(p) for p in rmu.trainable_parameters(tiny_model)] == [id(p) for p in expected]
    # by layer count: round(7/32 · 2 layers) = 0, so only layer 0's MLP
    assert RMU(RMUConfig()).layer_of(tiny_model) == 0
    from unlearnbench.errors import BenchError

    with pytest.raises(BenchError, match="layers 0 to 1"):
        RMU(RMUConfig(layer=5)).layer_of(tiny_model)


def test_rmu_loss_matches_hand_computation(tokenizer, tiny_model):
    forget, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, NORMAL)
    reference = make_reference(perturbed(tiny_model), lora=False, device="cpu")
    config = RMUConfig(layer=1, steering=4.0, retain_weight=7.0, seed=3)
    terms = RMU(config).loss(tiny_model, Step(forget=forget, normal=normal), reference)
    with torch.no_grad():
        h = tiny_model(input_ids=forget.input_ids, attention_mask=forget.attention_mask,
                       output_hidden_states=True).hidden_states[2][forget.labels != -100].double()
        u = torch.rand(h.shape[-1], generator=torch.Generator().manual_seed(3)).double()
        steer = float(((h - 4.0 * u / u.norm()) ** 2).mean())
        kept = tiny_model(input_ids=normal.input_ids, attention_mask=normal.attention_mask,
                          output_hidden_states=True).hidden_states[2][normal.labels != -100].double()
        original = reference.outputs(normal, output_hidden_states=True).hidden_states[2][normal.labels != -100].double()
        retain = float(((kept - original) ** 2).mean())
    assert retain > 0  # the reference differs, so the retain term is not trivially 0
    assert float(terms["steer"]) == pytest.approx(steer, rel=1e-5)
    assert float(terms["retain"]) == pytest.approx(retain, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(steer + 7.0 * retain, rel=1e-5)


def test_rmu_gradient_moves_forget_states_towards_the_target(tokenizer, tiny_model):
    forget, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, NORMAL)
    reference = make_reference(perturbed(tiny_model, 0.0), lora=False, device="cpu")
    rmu = RMU(RMUConfig(layer=1, steering=20.0, retain_weight=0.0))
    before = float(rmu.loss(tiny_model, Step(forget=forget, normal=normal), reference)["steer"])
    trainable = {id(p) for p in rmu.trainable_parameters(tiny_model)}
    for p in tiny_model.parameters():
        p.requires_grad_(id(p) in trainable)
    sgd_step(tiny_model, rmu.loss(tiny_model, Step(forget=forget, normal=normal), reference)["total"], lr=0.01)
    assert float(rmu.loss(tiny_model, Step(forget=forget, normal=normal), reference)["steer"]) < before


def test_dpo_refusal_matches_hand_computation(tokenizer, tiny_model):
    forget, chosen, normal = batch_of(tokenizer, PAIRS), batch_of(tokenizer, REFUSAL), batch_of(tokenizer, NORMAL)
    original = perturbed(tiny_model)
    reference = make_reference(original, lora=False, device="cpu")
    terms = DPORefusal(DPORefusalConfig(beta=0.5, normal_weight=0.0)).loss(
        tiny_model, Step(forget=forget, chosen=chosen, normal=normal), reference)
    ll = lambda model, batch: [sum(r) for r in token_log_probs(model, batch)]  # noqa: E731
    chosen_ratio = [a - b for a, b in zip(ll(tiny_model, chosen), ll(original, chosen))]
    rejected_ratio = [a - b for a, b in zip(ll(tiny_model, forget), ll(original, forget))]
    # −mean log σ(β · (chosen − rejected)), log σ(z) = −log(1 + e^(−z))
    dpo = sum(math.log1p(math.exp(-0.5 * (c - r))) for c, r in zip(chosen_ratio, rejected_ratio)) / len(PAIRS)
    magnitudes = [x for batch in (chosen, forget) for m in (tiny_model, original) for x in ll(m, batch)]
    assert float(terms["dpo"]) == pytest.approx(dpo, abs=fp32_tolerance(*magnitudes))


def test_dpo_refusal_at_the_original_is_log_two(tokenizer, tiny_model):
    forget, chosen = batch_of(tokenizer, PAIRS), batch_of(tokenizer, REFUSAL)
    reference = make_reference(tiny_model, lora=False, device="cpu")
    terms = DPORefusal(DPORefusalConfig(normal_weight=0.0)).loss(tiny_model, Step(forget=forget, chosen=chosen), reference)
    assert float(terms["dpo"]) == pytest.approx(math.log(2), rel=1e-6)


def test_dpo_refusal_gradient_prefers_the_refusal(tokenizer, tiny_model):
    forget, chosen = batch_of(tokenizer, PAIRS), batch_of(tokenizer, REFUSAL)
    reference = make_reference(perturbed(tiny_model, 0.0), lora=False, device="cpu")
    margin = lambda: sum(sum(r) for r in token_log_probs(tiny_model, chosen)) - sum(  # noqa: E731
        sum(r) for r in token_log_probs(tiny_model, forget))
    before = margin()
    loss = DPORefusal(DPORefusalConfig(beta=0.5, normal_weight=0.0)).loss(
        tiny_model, Step(forget=forget, chosen=chosen), reference)["total"]
    sgd_step(tiny_model, loss)
    assert margin() > before + 0.01


def test_dpo_chosen_answers_are_safe_responses_else_a_fixed_refusal():
    data = TrainData(forget=[Pair("q1", "bad1"), Pair("q2", "bad2")], normal=[], mismatch_pool=[],
                     preferences=[("q1", "safe1", "bad1")], refusals=["I don't know.", "Not sure."])
    chosen = chosen_answers(data)
    assert [p.question for p in chosen] == ["q1", "q2"]
    assert chosen[0].answer == "safe1"
    import zlib

    assert chosen[1].answer == data.refusals[zlib.crc32(b"q2") % 2]
    assert chosen_answers(data) == chosen  # the same refusal every time for a prompt


def test_the_sampler_draws_chosen_answers_row_for_row_with_forget(tokenizer):
    forget = [Pair(f"question {i}?", f"bad answer {i}.") for i in range(6)]
    data = TrainData(forget=forget, normal=[], mismatch_pool=[],
                     chosen=[Pair(p.question, f"refusal {i}.") for i, p in enumerate(forget)])
    sampler = StepSampler(data, Template(tokenizer, "paper"), batch_size=2, seed=0, uses=("forget", "chosen"))
    for _ in range(4):
        step = next(sampler)
        for row in range(2):
            f = tokenizer.decode(step.forget.input_ids[row], skip_special_tokens=True)
            c = tokenizer.decode(step.chosen.input_ids[row], skip_special_tokens=True)
            assert f.split("### Answer:")[0] == c.split("### Answer:")[0]  # the same prompt
            assert f"refusal {f.split('question ')[1].split('?')[0]}." in c


@pytest.mark.parametrize("method", ["graddiff", "simnpo", "rmu", "dpo_refusal", "wga", "unlearn", "ga", "npo", "sft_safe"])
def test_search_spaces_name_real_fields(method):
    from dataclasses import fields

    from unlearnbench import registry

    config = registry.get("method", method).Config
    names = {f.name for f in fields(config)}
    for field_name, (kind, low, high) in config.search_space.items():
        assert field_name in names and kind in ("log", "uniform", "int") and low < high
        assert kind != "log" or low > 0


@pytest.mark.parametrize("task, methods", [("harmful", "graddiff,simnpo,rmu,dpo_refusal,wga"),
                                           ("copyright", "dpo_refusal,rmu")])
def test_the_standard_methods_run_through_compare(tiny_model_dir, tmp_path, capsys, task, methods):
    """Every new method on the tiny model, as a user would run it; harmful's DPO prefers the safe
    responses, copyright's the shipped refusals."""
    import json

    from conftest import invoke

    code, out, err = invoke(capsys, "compare", "--methods", methods, "--task", task, "--model", str(tiny_model_dir),
                            "--original", "base", "--limit", "2", "--max-new-tokens", "4", "--output-dir", str(tmp_path),
                            "--compare-id", "tiny", "--set", "steps=2", "--set", "batch_size=2")
    assert code == 0, err
    for method in methods.split(","):
        record = json.loads((tmp_path / "tiny" / method / "metrics.json").read_text())
        assert record["status"] == "completed"
        log = [json.loads(line) for line in (tmp_path / "tiny" / method / "train_log.jsonl").read_text().splitlines()]
        assert [row["step"] for row in log] == [1, 2] and all(math.isfinite(row["total"]) for row in log)
        if method == "dpo_refusal":
            assert {"dpo", "chosen_log_ratio", "rejected_log_ratio"} <= set(log[0])
