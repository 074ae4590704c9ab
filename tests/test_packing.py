"""One forward per training step: the same loss values as one forward per batch, in fewer calls."""

import copy

import pytest
import torch

from unlearnbench.batching import StepSampler, Template
from unlearnbench.logits import forward_at
from unlearnbench.methods.terms import answer_positions
from unlearnbench.methods.npo import NPO, NPOConfig
from unlearnbench.methods.unlearn import Unlearn, UnlearnConfig
from unlearnbench.packing import PackedForward, concatenated
from unlearnbench.training import make_reference, train

from test_faithful import make_data
from tolerance import fp32_tolerance


class CountingModel(torch.nn.Module):
    """The model, counting forward calls and the rows each one ran."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, **kwargs):
        self.rows.append(kwargs["input_ids"].shape[0])
        self.kept = getattr(self, "kept", []) + [kwargs.get("logits_to_keep")]
        return self.model(**kwargs)


class WithoutLogitsToKeep(torch.nn.Module):
    """The model behind a forward that takes no logits_to_keep."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def a_step(tokenizer, faithful="paper", template="chat"):
    sampler = StepSampler(make_data(4, 4, pool=8), Template(tokenizer, template), 2, 0, ("forget", "mismatch", "normal"),
                          mismatch_k=3, faithful=faithful)
    return next(sampler)


@pytest.mark.parametrize("faithful, template", [("paper", "chat"), ("code", "paper")])
def test_packed_unlearn_loss_equals_one_forward_per_batch(tokenizer, tiny_model, faithful, template):
    step = a_step(tokenizer, faithful, template)
    widths = {b.input_ids.shape[1] for b in (step.forget, step.mismatch, step.normal)}
    assert len(widths) > 1  # the batches really are padded to a common width
    method = Unlearn(UnlearnConfig(faithful=faithful, mismatch_k=3))
    reference = make_reference(copy.deepcopy(tiny_model), lora=False, device=torch.device("cpu"))
    counted = CountingModel(tiny_model)
    separate = method.loss(counted, step, reference)
    assert counted.rows == [2, 6, 2]  # forget, K=3 mismatch answers x 2, normal
    counted.rows.clear()
    packed = method.loss(PackedForward(counted, step), step, reference)
    assert counted.rows == [10]  # one forward over all ten rows
    assert set(packed) == set(separate)
    for name in separate:
        a, b = float(separate[name]), float(packed[name])
        assert b == pytest.approx(a, abs=fp32_tolerance(abs(a), 1.0)), name


def test_packed_npo_loss_and_gradient_equal_the_unpacked(tokenizer, tiny_model):
    step = a_step(tokenizer)
    method = NPO(NPOConfig(normal_weight=1.0))
    reference = make_reference(copy.deepcopy(tiny_model), lora=False, device=torch.device("cpu"))
    grads = []
    for model in (tiny_model, PackedForward(tiny_model, step)):
        tiny_model.zero_grad()
        method.loss(model, step, reference)["total"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_model.parameters()]))
    scale = float(grads[0].abs().max())
    assert scale > 0 and float((grads[0] - grads[1]).abs().max()) < 1e-4 * scale


def test_other_calls_go_to_the_model_itself(tokenizer, tiny_model):
    step = a_step(tokenizer)
    counted = CountingModel(tiny_model)
    packed = PackedForward(counted, step)
    hidden = packed(input_ids=step.forget.input_ids, attention_mask=step.forget.attention_mask, output_hidden_states=True)
    assert hidden.hidden_states is not None and counted.rows == [2]
    other = step.forget.input_ids.clone()  # equal values, but not one of the step's batches
    packed(input_ids=other, attention_mask=step.forget.attention_mask)
    assert counted.rows == [2, 2]
    assert PackedForward(tiny_model, step).config is tiny_model.config  # attributes are the model's


def test_concatenated_rows_are_right_padded_and_masked(tokenizer):
    step = a_step(tokenizer)
    ids, mask = concatenated([step.forget, step.normal])
    width = max(step.forget.input_ids.shape[1], step.normal.input_ids.shape[1])
    assert ids.shape == mask.shape == (4, width)
    for row, batch, index in ((0, step.forget, 0), (3, step.normal, 1)):
        own = batch.input_ids.shape[1]
        assert torch.equal(ids[row, :own], batch.input_ids[index]) and torch.equal(mask[row, :own], batch.attention_mask[index])
        assert (mask[row, own:] == 0).all() and (ids[row, own:] == tokenizer.pad_token_id).all()


def test_training_runs_with_eager_attention_and_gives_the_model_back_as_it_was(tokenizer, tiny_model):
    assert tiny_model.config._attn_implementation == "sdpa"
    seen = []
    method = Unlearn(Unlearn.Config.from_overrides({"steps": 2, "mismatch_k": 2, "precision": "fp32"}))
    real_loss = method.loss

    def spy(model, step, reference):
        seen.append(model.config._attn_implementation)
        return real_loss(model, step, reference)

    method.loss = spy
    result = train(method, tiny_model, tokenizer, make_data(4, 4, pool=8), Template(tokenizer, "chat"), lambda row: None)
    assert seen == ["eager", "eager"]
    assert result.model.config._attn_implementation == "sdpa"


def test_a_call_in_another_gradient_mode_runs_its_own_forward(tokenizer, tiny_model):
    step = a_step(tokenizer)
    counted = CountingModel(tiny_model)
    packed = PackedForward(counted, step)
    with torch.no_grad():
        frozen = packed(input_ids=step.forget.input_ids, attention_mask=step.forget.attention_mask).logits
    live = packed(input_ids=step.forget.input_ids, attention_mask=step.forget.attention_mask).logits
    assert not frozen.requires_grad and live.requires_grad  # the no-grad pass did not serve the gradient call
    assert counted.rows == [10, 2]


def test_logits_at_positions_equal_the_full_logits_there_with_or_without_logits_to_keep(tokenizer, tiny_model):
    batch = a_step(tokenizer).mismatch
    answer = answer_positions(batch)
    full = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][answer]
    counted = CountingModel(tiny_model)
    kept = forward_at(counted, batch.input_ids, batch.attention_mask, answer)
    assert int(counted.kept[0].sum()) == int(answer.sum()) < answer.numel()  # projected at the answers only
    fallback = forward_at(WithoutLogitsToKeep(tiny_model), batch.input_ids, batch.attention_mask, answer)
    scale = float(full.abs().max())
    for logits in (kept, fallback):
        assert logits.shape == full.shape and float((logits - full).abs().max()) <= 1e-5 * scale


def test_the_packed_step_projects_answer_positions_only_and_a_kl_over_every_position_gets_its_own_pass(
        tokenizer, tiny_model):
    step = a_step(tokenizer)
    reference = make_reference(copy.deepcopy(tiny_model), lora=False, device=torch.device("cpu"))
    answers = sum(b.answer_tokens for b in (step.forget, step.mismatch, step.normal))
    for positions, rows in (("answer", [10]), ("all", [10, 2])):
        method = Unlearn(UnlearnConfig(mismatch_k=3, kl_positions=positions))
        counted = CountingModel(tiny_model)
        packed = method.loss(PackedForward(counted, step), step, reference)
        assert counted.rows == rows and int(counted.kept[0].sum()) == answers
        separate = method.loss(WithoutLogitsToKeep(tiny_model), step, reference)
        for name in separate:
            a, b = float(separate[name]), float(packed[name])
            assert b == pytest.approx(a, abs=fp32_tolerance(abs(a), 1.0)), name
