"""The shared loop on a tiny random Llama: it learns, logs every term, and stops on NaN."""

import copy

import pytest
import torch

from unlearnbench.batching import Pair, Template, TrainData, collate, encode
from unlearnbench.errors import BenchError, TrainingDiverged
from unlearnbench.methods.ga import GradientAscent
from unlearnbench.methods.sft import SupervisedFinetune
from unlearnbench.methods.terms import answer_cross_entropy
from unlearnbench.methods.unlearn import Unlearn
from unlearnbench.training import train

PAIRS = [Pair(f"Question number {i}?", f"Answer {i} is here.") for i in range(8)]
DATA = TrainData(forget=PAIRS, normal=[Pair(f"Normal {i}?", f"Fine {i}.") for i in range(8)],
                 mismatch_pool=[f"Pool answer {i}." for i in range(10)])


def test_sft_lowers_the_loss(tokenizer, tiny_model):
    method = SupervisedFinetune(SupervisedFinetune.Config.from_overrides({"steps": 12, "lr": 3e-3, "batch_size": 4}))
    log = []
    result = train(method, tiny_model, tokenizer, DATA, Template(tokenizer, "chat"), log.append)
    assert [row["step"] for row in log] == list(range(1, 13))
    assert log[-1]["ce"] < log[0]["ce"]
    assert result.trained_tokens > 0 and result.reference_tokens == 0
    assert log[-1]["lr"] < log[0]["lr"]  # linear decay


def test_unlearn_logs_every_term_and_ascends(tokenizer, tiny_model):
    method = Unlearn(Unlearn.Config.from_overrides({"steps": 6, "lr": 3e-3, "mismatch_k": 2, "precision": "fp32"}))
    before = copy.deepcopy(tiny_model)
    log = []
    result = train(method, tiny_model, tokenizer, DATA, Template(tokenizer, "chat"), log.append)
    assert {"total", "forget_ce", "mismatch_ce", "normal_kl", "lr", "seconds"} <= set(log[0])
    assert log[0]["normal_kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: model == reference
    assert result.reference_tokens > 0
    # Ascent: on all forget items at once, the trained model finds the answers less likely than before.
    template = Template(tokenizer, "chat")
    forget = collate([encode(template, p.question, p.answer, 128) for p in PAIRS], tokenizer.pad_token_id)
    with torch.no_grad():
        assert float(answer_cross_entropy(result.model, forget)) > float(answer_cross_entropy(before, forget)) + 0.05
    assert log[-1]["normal_kl"] > 1e-4  # and it moved away from the reference


def test_lora_trains_adapters_only_and_merges(tokenizer, tiny_model):
    before = {n: p.clone() for n, p in tiny_model.named_parameters()}
    method = GradientAscent(GradientAscent.Config.from_overrides({"steps": 3, "lr": 1e-2, "lora": True, "normal_weight": 1.0}))
    result = train(method, tiny_model, tokenizer, DATA, Template(tokenizer, "chat"), lambda row: None)
    total = sum(p.numel() for p in before.values())
    assert result.trainable_parameters < total / 4
    after = dict(result.model.named_parameters())
    assert set(after) == set(before)  # merged back into a plain model
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_nan_loss_raises_with_the_step(tokenizer, tiny_model):
    class Exploding(SupervisedFinetune):
        def loss(self, model, step, reference):
            terms = super().loss(model, step, reference)
            return {"total": terms["total"] * float("inf"), "ce": terms["ce"]}

    log = []
    with pytest.raises(TrainingDiverged, match="step 1"):
        train(Exploding(SupervisedFinetune.Config.from_overrides({"steps": 3})), tiny_model, tokenizer, DATA,
              Template(tokenizer, "chat"), log.append)
    assert len(log) == 1


def test_a_set_smaller_than_a_batch_is_refused(tokenizer, tiny_model):
    method = SupervisedFinetune(SupervisedFinetune.Config.from_overrides({"steps": 1, "batch_size": 64}))
    with pytest.raises(BenchError, match="fewer than one batch"):
        train(method, tiny_model, tokenizer, DATA, Template(tokenizer, "chat"), lambda row: None)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lr": 0.0}, {"lr": float("nan")}, {"batch_size": 0},
                                 {"forget_weight": -1.0}, {"mismatch_k": -1}, {"precision": "fp8"}])
def test_impossible_settings_are_refused(bad):
    with pytest.raises(BenchError):
        Unlearn.Config.from_overrides(bad)


def test_a_frozen_copy_in_the_autocast_dtype_serves_as_the_reference(tokenizer, tiny_model):
    import copy

    from unlearnbench.training import make_reference
    from unlearnbench.batching import collate, encode

    frozen = copy.deepcopy(tiny_model).to(torch.bfloat16)
    batch = collate([encode(Template(tokenizer, "chat"), "Q?", "A.", 64)], tokenizer.pad_token_id)
    reused = make_reference(tiny_model, lora=False, device=torch.device("cpu"), dtype=torch.bfloat16, frozen=frozen)
    assert torch.equal(reused(batch), frozen(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)
    # A copy in another dtype is not reused: the reference must match the precision training runs in.
    fp32 = make_reference(tiny_model, lora=False, device=torch.device("cpu"), dtype=None, frozen=frozen)
    assert fp32(batch).dtype == torch.float32
