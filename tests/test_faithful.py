"""faithful="code": each difference from the paper mode pinned to a hand transcription of the
official code (kevinyaobytedance/llm_unlearn utils.py; docs/paper.md §1.2, §1.4, §1.5)."""

import copy
import re

import pytest
import torch

from unlearnbench.batching import (IGNORE, OFFICIAL_MISMATCH_LABEL_START, Pair, Step, StepSampler, Template, TrainData,
                                   collate, encode, encode_official)
from unlearnbench.errors import BenchError
from unlearnbench.methods.ga import GAConfig, GradientAscent
from unlearnbench.methods.terms import (answer_cross_entropy, forward_kl, official_answer_loss,
                                        official_normal_cross_entropy)
from unlearnbench.methods.unlearn import Unlearn, UnlearnConfig
from unlearnbench.training import make_reference, make_schedule, train

from tolerance import fp32_tolerance


def paper_template(tokenizer):
    return Template(tokenizer, "paper")


def official_batch(tokenizer, pairs, mismatch=False):
    template = paper_template(tokenizer)
    return collate([encode_official(template, q, a, 256, mismatch) for q, a in pairs], tokenizer.pad_token_id)


def hand_get_answer_loss(model, batch, start_locs, is_pad):
    """get_answer_loss("gd", ...) line by line: weights over input positions from start_locs,
    zero where `is_pad(row, j)`, normalised over all L positions, applied to the shifted losses
    [:-1]; a label that is padding gives CE 0 (the collator's −100); then the mean over samples."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    rows, width = batch.input_ids.shape
    losses = []
    for b in range(rows):
        weight = [1.0 if j >= start_locs[b] and not is_pad(b, j) else 0.0 for j in range(width)]
        if sum(weight) > 0:
            weight = [w / sum(weight) for w in weight]
        loss = 0.0
        for j in range(width - 1):
            if is_pad(b, j + 1):
                continue
            target = int(batch.input_ids[b, j + 1])
            loss += weight[j] * float(torch.logsumexp(logits[b, j], 0) - logits[b, j, target])
        losses.append(loss)
    return sum(losses) / rows


def by_pad_id(batch, pad_id):
    return lambda b, j: int(batch.input_ids[b, j]) == pad_id


def by_attention(batch):
    return lambda b, j: int(batch.attention_mask[b, j]) == 0


def perturbed(model, scale=0.05):
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn_like(p))
    return other


# ---- item 1: the mismatch mask starts at shifted position 2 (docs/paper.md §1.5 #1) -----------------

def test_mismatch_mask_covers_every_position_from_2(tokenizer, tiny_model):
    pairs = [("What is two plus two?", "Bananas are yellow."), ("Name a colour of the sky?", "Rivers flow downhill today.")]
    batch = official_batch(tokenizer, pairs, mismatch=True)
    pad = tokenizer.pad_token_id
    assert OFFICIAL_MISMATCH_LABEL_START == 3
    assert (batch.labels[:, :3] == IGNORE).all() and (batch.labels[:, 3] != IGNORE).all()
    value = float(official_answer_loss(tiny_model, batch))
    assert value == pytest.approx(hand_get_answer_loss(tiny_model, batch, [2, 2], by_pad_id(batch, pad)), rel=1e-5)
    # The same sequences masked from the answer on (the intended start) give another number.
    answer_starts = [encode(paper_template(tokenizer), q, a, 256)[1] - 1 for q, a in pairs]
    assert min(answer_starts) > 5
    answer_only = hand_get_answer_loss(tiny_model, batch, answer_starts, by_pad_id(batch, pad))
    assert abs(value - answer_only) > 1e-3


def test_code_sampler_builds_mismatch_sequences_from_position_2(tokenizer):
    data = TrainData(forget=[Pair(f"Question {i}?", f"Bad answer {i}.") for i in range(2)],
                     normal=[Pair(f"N{i}?", f"n{i}") for i in range(2)], mismatch_pool=[f"Pool {i}." for i in range(6)])
    step = next(StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "mismatch", "normal"), mismatch_k=2,
                            faithful="code"))
    first_labels = (step.mismatch.labels != IGNORE).int().argmax(1)
    assert first_labels.tolist() == [3] * 4
    assert step.mismatch.pad_id == tokenizer.pad_token_id


def test_forget_start_is_the_official_start_locs(tokenizer, tiny_model):
    # start_locs = len(tokenize(prompt)) − 1, used in the shifted frame: the first answer token
    # is not in the loss when the prompt's trailing space is its own token (docs/paper.md §1.5 #2).
    template = paper_template(tokenizer)
    question, answer = "Who wrote Hamlet?", "Shakespeare wrote it."
    ids, start = encode_official(template, question, answer, 256)
    prefix_length = len(tokenizer(template.prompt(question))["input_ids"])
    assert start == prefix_length == encode(template, question, answer, 256)[1] + 1
    assert ids[-1] != tokenizer.eos_token_id and tokenizer.decode(ids).endswith(answer)  # no EOS appended
    batch = official_batch(tokenizer, [(question, answer), ("Q?", "A much longer answer than the first one.")])
    prompt_lengths = [prefix_length, len(tokenizer(template.prompt("Q?"))["input_ids"])]
    expected = hand_get_answer_loss(tiny_model, batch, [n - 1 for n in prompt_lengths],
                                    by_pad_id(batch, tokenizer.pad_token_id))
    assert float(official_answer_loss(tiny_model, batch)) == pytest.approx(expected, rel=1e-5)


# ---- item 2: the normal term is H(P,Q) over every position (docs/paper.md §1.2 #3, §1.5 #4) ----------

def test_normal_term_is_cross_entropy_over_every_position(tokenizer, tiny_model):
    batch = official_batch(tokenizer, [("Is water wet?", "Yes."),
                                       ("Do fish swim in the sea?", "Yes, fish swim in the sea daily.")])
    assert (batch.attention_mask == 0).any()  # padding present, and counted below
    other = perturbed(tiny_model)
    reference = make_reference(other, lora=False, device="cpu")
    logits_p = other(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    logits_q = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    rows, width = batch.input_ids.shape
    per_position = {}
    for b in range(rows):
        for t in range(width):
            p = torch.softmax(logits_p[b, t], 0)
            per_position[b, t] = float(-(p * torch.log(torch.softmax(logits_q[b, t], 0) + 1e-12)).sum())
    expected = sum(per_position.values()) / (rows * width)
    value = float(official_normal_cross_entropy(tiny_model, reference, batch))
    assert value == pytest.approx(expected, rel=1e-5)
    real = [v for (b, t), v in per_position.items() if batch.attention_mask[b, t]]
    assert abs(value - sum(real) / len(real)) > 1e-4  # padding positions are in the mean
    assert abs(value - float(forward_kl(tiny_model, reference, batch))) > 1.0  # not KL on answers


def test_normal_term_is_the_reference_entropy_when_nothing_changed(tokenizer, tiny_model):
    batch = official_batch(tokenizer, [("Is water wet?", "Yes.")])
    reference = make_reference(tiny_model, lora=False, device="cpu")
    logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    entropy = float(-(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean())
    assert entropy > 1.0
    assert float(official_normal_cross_entropy(tiny_model, reference, batch)) == pytest.approx(entropy, rel=1e-5)
    assert abs(float(forward_kl(tiny_model, reference, batch))) < 1e-6


# ---- item 3: per-sample token means, then the batch mean (docs/paper.md §1.2 #1, §1.5 #5) ------------

def test_per_sample_means_differ_from_the_pooled_mean(tokenizer, tiny_model):
    pairs = [("What is two plus two?", "Four."),
             ("Name a colour?", "The sky is usually blue and the grass is usually green in the summer.")]
    batch = official_batch(tokenizer, pairs)
    pad = tokenizer.pad_token_id
    starts = [len(tokenizer(paper_template(tokenizer).prompt(q))["input_ids"]) - 1 for q, _ in pairs]
    logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double()
    sums, counts = [], []
    for b in range(2):
        ids = batch.input_ids[b].tolist()
        counted = [j for j in range(len(ids)) if j >= starts[b] and ids[j] != pad]
        sums.append(sum(float(torch.logsumexp(logits[b, j], 0) - logits[b, j, ids[j + 1]])
                        for j in counted if j + 1 < len(ids) and ids[j + 1] != pad))
        counts.append(len(counted))
    assert counts[0] < counts[1] / 3
    per_sample = (sums[0] / counts[0] + sums[1] / counts[1]) / 2
    pooled = sum(sums) / sum(counts)
    value = float(official_answer_loss(tiny_model, batch))
    assert value == pytest.approx(per_sample, rel=1e-5)
    assert abs(value - pooled) > 1e-3
    # The paper mode pools every answer token of the batch instead.
    paper_batch = collate([encode(paper_template(tokenizer), q, a, 256) for q, a in pairs], pad)
    assert abs(float(answer_cross_entropy(tiny_model, paper_batch)) - value) > 1e-3


# ---- item 5: padding found by the pad id, not the attention mask (docs/paper.md §1.2 #1, §1.5 #3) ----

def test_padding_is_found_by_pad_id(tokenizer, tiny_model):
    pad = tokenizer.pad_token_id
    template = paper_template(tokenizer)
    ids, start = encode_official(template, "Say something?", "One two three four five six.", 256)
    # A real token that equals the pad id (here <|im_end|>, which is also EOS) inside the answer.
    inner = start + 3
    ids = ids[:inner] + [pad] + ids[inner:]
    other = encode_official(template, "Another question that is long?", "Seven.", 256)
    batch = collate([(ids, start), other], pad)
    assert batch.attention_mask[0, inner] == 1
    value = float(official_answer_loss(tiny_model, batch))
    starts = [start - 1, other[1] - 1]
    assert value == pytest.approx(hand_get_answer_loss(tiny_model, batch, starts, by_pad_id(batch, pad)), rel=1e-5)
    assert abs(value - hand_get_answer_loss(tiny_model, batch, starts, by_attention(batch))) > 1e-3


def test_official_loss_refuses_a_batch_without_pad_id(tokenizer, tiny_model):
    batch = official_batch(tokenizer, [("Q?", "A.")])
    batch.pad_id = None
    with pytest.raises(ValueError, match="pad id"):
        official_answer_loss(tiny_model, batch)


# ---- item 4: the forget set in file order, restarting each pass (docs/paper.md §1.2 Data, §1.4) -----

def forget_indices(tokenizer, step):
    return [int(re.search(r"F(\d+)\?", tokenizer.decode(row)).group(1)) for row in step.forget.input_ids]


def normal_indices(tokenizer, step):
    return [int(re.search(r"N(\d+)\?", tokenizer.decode(row)).group(1)) for row in step.normal.input_ids]


def make_data(n_forget, n_normal, pool=20):
    return TrainData(forget=[Pair(f"Item F{i}?", f"bad {i}") for i in range(n_forget)],
                     normal=[Pair(f"Item N{i}?", f"good {i}") for i in range(n_normal)],
                     mismatch_pool=[f"pool answer {i}" for i in range(pool)])


def test_code_sampler_reads_the_forget_set_in_file_order(tokenizer):
    data = make_data(5, 7)
    sampler = StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "normal"), faithful="code")
    steps = [next(sampler) for _ in range(6)]
    # zip(forget_loader, normal_loader): 3 forget batches (the last one partial, as a DataLoader
    # keeps it) end the pass, and both loaders restart.
    assert [forget_indices(tokenizer, s) for s in steps] == [[0, 1], [2, 3], [4], [0, 1], [2, 3], [4]]
    first_pass = [i for s in steps[:3] for i in normal_indices(tokenizer, s)]
    assert len(set(first_pass)) == 6 and first_pass != list(range(6))  # normal: shuffled, no repeats in a pass
    paper = StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "normal"))
    assert [forget_indices(tokenizer, next(paper)) for _ in range(2)] != [[0, 1], [2, 3]]


def test_code_sampler_never_reaches_forget_items_past_the_normal_set(tokenizer):
    # The official run sees only the first len(normal) forget items (572 of 330k_train, docs/paper.md §1.4).
    sampler = StepSampler(make_data(10, 4), paper_template(tokenizer), 2, 0, ("forget", "normal"), faithful="code")
    assert [forget_indices(tokenizer, next(sampler)) for _ in range(6)] == [[0, 1], [2, 3]] * 3


def test_code_sampler_resumes_at_the_same_place(tokenizer):
    data = make_data(5, 7)
    whole = StepSampler(data, paper_template(tokenizer), 2, 3, ("forget", "mismatch", "normal"), mismatch_k=2, faithful="code")
    resumed = StepSampler(data, paper_template(tokenizer), 2, 3, ("forget", "mismatch", "normal"), mismatch_k=2, faithful="code")
    for _ in range(4):
        next(whole)
    resumed.skip(4)
    a, b = next(whole), next(resumed)
    assert torch.equal(a.forget.input_ids, b.forget.input_ids) and torch.equal(a.mismatch.input_ids, b.mismatch.input_ids)


def test_code_sampler_shares_the_k_random_answers_across_the_batch(tokenizer):
    data = make_data(4, 4, pool=40)
    step = next(StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "mismatch", "normal"), mismatch_k=3,
                            faithful="code"))
    answers = [tokenizer.decode(row).split("Answer:")[1].replace(tokenizer.pad_token, "").strip()
               for row in step.mismatch.input_ids]
    assert answers[:3] == answers[3:] and len(set(answers)) == 3
    paper = next(StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "mismatch", "normal"), mismatch_k=3))
    paper_answers = [tokenizer.decode(row).split("Answer:")[1] for row in paper.mismatch.input_ids]
    assert paper_answers[:3] != paper_answers[3:]


# ---- item 6: lr reaches 0 at step 1000 whatever --steps says (docs/paper.md §1.3, §1.4) --------------

def schedule_lrs(config, steps):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = make_schedule(optimizer, config)
    lrs = [schedule.get_last_lr()[0]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    return lrs


def test_code_mode_schedule_reaches_zero_at_step_1000():
    config = UnlearnConfig.from_overrides({"faithful": "code", "steps": 1144, "lr": 2e-6})
    assert config.schedule_steps == 1000
    lrs = schedule_lrs(config, 1144)
    assert lrs[999] == pytest.approx(2e-6 / 1000) and lrs[1000] == 0.0 and max(lrs[1000:]) == 0.0
    paper = schedule_lrs(UnlearnConfig.from_overrides({"steps": 1144, "lr": 2e-6}), 1144)
    assert paper[1000] == pytest.approx(2e-6 * 144 / 1144) and paper[1144] == 0.0
    assert UnlearnConfig.from_overrides({"faithful": "code", "schedule_steps": 50}).schedule_steps == 50
    assert UnlearnConfig().schedule_steps is None and GAConfig(faithful="code").schedule_steps == 1000


def test_code_mode_trains_with_every_official_term(tokenizer, tiny_model):
    data = make_data(6, 6)
    method = Unlearn(Unlearn.Config.from_overrides({"faithful": "code", "steps": 3, "lr": 1e-3, "mismatch_k": 2,
                                                   "precision": "fp32"}))
    log = []
    train(method, tiny_model, tokenizer, data, paper_template(tokenizer), log.append)
    assert {"total", "forget_ce", "mismatch_ce", "normal_cross_entropy"} <= set(log[0]) and "normal_kl" not in log[0]
    assert [row["lr"] for row in log] == pytest.approx([1e-3, 1e-3 * 999 / 1000, 1e-3 * 998 / 1000])
    assert log[0]["normal_cross_entropy"] > 1.0  # H(P) at step 1, where KL would be 0


# ---- the terms combined ----------------------------------------------------------------------

def test_unlearn_code_total_is_the_official_combination(tokenizer, tiny_model):
    data = make_data(2, 2, pool=6)
    step = next(StepSampler(data, paper_template(tokenizer), 2, 0, ("forget", "mismatch", "normal"), mismatch_k=2,
                            faithful="code"))
    reference = make_reference(perturbed(tiny_model), lora=False, device="cpu")
    terms = Unlearn(UnlearnConfig(faithful="code")).loss(tiny_model, step, reference)
    assert set(terms) == {"total", "forget_ce", "mismatch_ce", "normal_cross_entropy"}
    pad = tokenizer.pad_token_id
    forget_starts = [len(tokenizer(paper_template(tokenizer).prompt(f"Item F{i}?"))["input_ids"]) - 1 for i in range(2)]
    forget = hand_get_answer_loss(tiny_model, step.forget, forget_starts, by_pad_id(step.forget, pad))
    mismatch = hand_get_answer_loss(tiny_model, step.mismatch, [2] * 4, by_pad_id(step.mismatch, pad))
    normal = float(official_normal_cross_entropy(tiny_model, reference, step.normal))
    assert float(terms["forget_ce"]) == pytest.approx(forget, rel=1e-5)
    assert float(terms["mismatch_ce"]) == pytest.approx(mismatch, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(-0.5 * forget + mismatch + normal,
                                                  abs=fp32_tolerance(0.5 * forget, mismatch, normal))


def test_ga_code_mode_uses_the_official_terms(tokenizer, tiny_model):
    forget = official_batch(tokenizer, [("What is two plus two?", "Four."), ("Name a colour?", "Blue, mostly blue.")])
    normal = official_batch(tokenizer, [("Is water wet?", "Yes.")])
    reference = make_reference(perturbed(tiny_model), lora=False, device="cpu")
    method = GradientAscent(GAConfig.from_overrides({"faithful": "code", "normal_weight": 1.0}))
    terms = method.loss(tiny_model, Step(forget=forget, normal=normal), reference)
    forget_loss = float(official_answer_loss(tiny_model, forget))
    normal_loss = float(official_normal_cross_entropy(tiny_model, reference, normal))
    assert float(terms["total"]) == pytest.approx(-forget_loss + normal_loss, abs=fp32_tolerance(forget_loss, normal_loss))
    assert set(terms) == {"total", "forget_ce", "normal_cross_entropy"}


# ---- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [UnlearnConfig, GAConfig])
def test_an_unknown_faithful_mode_is_refused_in_one_line(config):
    with pytest.raises(BenchError, match=r"faithful must be 'paper' .* or 'code' .*got 'cod'") as caught:
        config.from_overrides({"faithful": "cod"})
    assert "\n" not in str(caught.value)


def test_kl_positions_is_refused_with_code_mode():
    with pytest.raises(BenchError, match="kl_positions has no effect"):
        UnlearnConfig.from_overrides({"faithful": "code", "kl_positions": "all"})


def test_schedule_steps_must_be_positive():
    with pytest.raises(BenchError, match="schedule_steps"):
        UnlearnConfig.from_overrides({"schedule_steps": 0})
