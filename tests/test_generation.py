import pytest

from unlearnbench.batching import Template
from unlearnbench.errors import BenchError
from unlearnbench.generation import GenerationConfig
from unlearnbench.generation.hf import HFGenerator

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Who wrote the play Romeo and Juliet, and in which century did he live?"]


def test_batched_left_padded_greedy_equals_one_at_a_time(smol):
    template = Template(smol.tokenizer, "chat")
    prompts = [template.prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=12)
    batched = HFGenerator(batch_size=4, dtype="float32")
    batched.load_weights(smol.model, smol.tokenizer)
    single = HFGenerator(batch_size=1, dtype="float32")
    single.load_weights(smol.model, smol.tokenizer)
    together = batched.generate(prompts, config)
    assert together == single.generate(prompts, config)  # order kept despite length sorting
    assert "Paris" in together[0]
    assert batched.last_counts["generated_tokens"] > 0


def test_generation_config_rejects_impossible_settings():
    with pytest.raises(BenchError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(BenchError):
        GenerationConfig(do_sample=True, temperature=0.0)


def generate_reference(model, rows, max_new_tokens, eos, pad):
    """Plain greedy `generate` on the left-padded rows, each continuation cut after its first EOS."""
    import torch

    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    continuations = []
    for row in out[:, width:].tolist():
        continuations.append(row[: row.index(eos) + 1] if eos is not None and eos in row else row)
    return continuations


def test_greedy_loop_gives_generate_tokens_with_rows_finishing_at_different_steps(tiny_model, tokenizer):
    from unlearnbench.generation import greedy

    prefix = tokenizer("You are a helpful assistant. Answer briefly.")["input_ids"]
    rows = [prefix + tokenizer(q)["input_ids"] for q in QUESTIONS]
    assert greedy.shared_prefix_length(rows) >= len(prefix)
    pad = tokenizer.pad_token_id
    free = generate_reference(tiny_model, rows, 10, None, pad)  # no EOS: every row runs all 10 steps
    # An EOS that ends some rows early and leaves others running, so that finished rows must leave the batch.
    first = {t: [r.index(t) if t in r else None for r in free] for r in free for t in r[1:6]}
    eos = next(t for t, at in first.items() if None in at or len(set(at)) > 1)
    expected = generate_reference(tiny_model, rows, 10, eos, pad)
    assert len({len(c) for c in expected}) > 1
    for share_prefix in (True, False):
        assert greedy.greedy_generate(tiny_model, rows, 10, eos, pad, share_prefix=share_prefix) == expected


def test_shared_prefix_leaves_every_row_a_token_of_its_own():
    from unlearnbench.generation.greedy import MIN_SHARED_PREFIX, shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]]) == 5
    assert shared_prefix_length([[1, 2, 3, 4, 5, 6, 8], [1, 2, 3, 4, 5, 6, 7]]) == 6
    assert shared_prefix_length([[1] * (MIN_SHARED_PREFIX - 1) + [2], [1] * 10]) == 0  # too short to pay off
    assert shared_prefix_length([[1, 2, 3, 4, 5, 6]]) == 0  # one row: nothing to share


def test_hf_backend_loop_equals_plain_generate_on_the_embedded_model(smol):
    template = Template(smol.tokenizer, "chat")
    prompts = [template.prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=24)
    outputs = {}
    for decoding in ("generate", "loop"):
        generator = HFGenerator(batch_size=4, dtype="float32", decoding=decoding)
        generator.load_weights(smol.model, smol.tokenizer)
        assert generator.describe()["greedy_decoding"] == decoding
        outputs[decoding] = (generator.generate(prompts, config), generator.last_counts["generated_tokens"])
    assert outputs["loop"] == outputs["generate"]


def test_a_model_whose_generation_config_changes_logits_is_decoded_by_generate(tiny_model, tokenizer):
    from unlearnbench.generation import greedy

    assert greedy.supports(tiny_model)
    tiny_model.generation_config.repetition_penalty = 1.3
    assert not greedy.supports(tiny_model)
    generator = HFGenerator(batch_size=2, dtype="float32")
    generator.load_weights(tiny_model, tokenizer)
    assert generator.describe()["greedy_decoding"] == "generate"


def test_in_bf16_the_loop_only_drops_finished_rows_and_stays_identical(tiny_model, tokenizer, monkeypatch):
    import torch

    from unlearnbench.generation import greedy

    model = tiny_model.to(torch.bfloat16)
    rows = [tokenizer("You are a helpful assistant. Answer briefly. " + q)["input_ids"] for q in QUESTIONS]
    pad = tokenizer.pad_token_id
    free = generate_reference(model, rows, 8, None, pad)
    eos = next(t for r in free for t in r[1:5] if any(t not in other for other in free))
    shared = []
    monkeypatch.setattr(greedy, "shared_prefix_length", lambda rows: shared.append(rows) or 0)
    assert greedy.greedy_generate(model, rows, 8, eos, pad) == generate_reference(model, rows, 8, eos, pad)
    assert shared == []  # bf16: the prefix is not shared (its rounding would depend on the batch shape)
