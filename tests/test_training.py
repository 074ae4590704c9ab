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


class RecordingSGD(torch.optim.SGD):
    """Plain SGD (the update is −lr · the gradient it is given) that records that gradient's norm."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.norms = []

    def step(self, closure=None):
        gradient = torch.cat([p.grad.flatten() for group in self.param_groups for p in group["params"]])
        self.norms.append(float(torch.linalg.vector_norm(gradient)))
        return super().step(closure)


def step_fixture(weights, lr=1.0):
    """A linear layer, RecordingSGD and a linear schedule halving the rate after one step."""
    layer = torch.nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    optimizer = RecordingSGD(layer.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 2)
    return layer, optimizer, schedule


def test_optimizer_step_on_a_non_finite_loss_logs_the_row_and_leaves_the_weights():
    from unlearnbench.training import optimizer_step

    layer, optimizer, schedule = step_fixture([1.0, 2.0])
    loss = layer(torch.ones(1, 2)).sum() * float("nan")
    row = {"step": 7, "lr": schedule.get_last_lr()[0], "total": float(loss.detach())}
    log = []
    with pytest.raises(TrainingDiverged, match="step 7") as raised:
        optimizer_step(loss, row, {"total": row["total"]}, optimizer=optimizer, schedule=schedule,
                       parameters=list(layer.parameters()), max_grad_norm=1.0, log=log.append)
    assert log == [row] and raised.value.step == 7
    assert torch.equal(layer.weight, torch.tensor([[1.0, 2.0]]))
    assert layer.weight.grad is None  # no backward pass either
    assert optimizer.norms == [] and schedule.last_epoch == 0 and schedule.get_last_lr() == [1.0]


def test_optimizer_step_clips_steps_once_and_leaves_the_row_to_the_caller():
    from unlearnbench.training import optimizer_step

    layer, optimizer, schedule = step_fixture([0.0, 0.0])
    loss = layer(torch.tensor([[3.0, 4.0]])).sum()  # gradient (3, 4), norm 5
    row = {"step": 1, "lr": schedule.get_last_lr()[0], "total": float(loss.detach())}
    log = []
    optimizer_step(loss, row, {"total": row["total"]}, optimizer=optimizer, schedule=schedule,
                   parameters=list(layer.parameters()), max_grad_norm=0.5, log=log.append)
    assert optimizer.norms == [pytest.approx(0.5)]  # the optimizer stepped once, on the gradient clipped to norm 0.5
    assert torch.allclose(layer.weight, torch.tensor([[-0.3, -0.4]]))  # −lr 1.0 · (3, 4) · 0.5/5
    assert schedule.last_epoch == 1 and schedule.get_last_lr() == [0.5]  # one schedule step
    assert layer.weight.grad is None  # cleared for the next step
    # The row keeps the rate the step used, read before the schedule moved; the caller logs it.
    assert row == {"step": 1, "lr": 1.0, "total": 0.0} and log == []


def test_the_train_log_gives_each_step_the_learning_rate_it_used(tokenizer, tiny_model):
    method = SupervisedFinetune(SupervisedFinetune.Config.from_overrides({"steps": 4, "lr": 1e-3, "batch_size": 2}))
    log = []
    train(method, tiny_model, tokenizer, DATA, Template(tokenizer, "chat"), log.append)
    assert [row["lr"] for row in log] == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])  # linear decay from lr
    assert all(list(row)[:2] == ["step", "lr"] and list(row)[-1] == "seconds" for row in log)
