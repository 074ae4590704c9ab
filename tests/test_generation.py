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
