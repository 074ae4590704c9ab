"""The CTranslate2 backend, run for real on the tiny Llama: its fp32 outputs against HF's, its
int8 record, the folder it converts in, and that `auto` never takes it."""

import sys
import tempfile

import pytest
import torch

from unlearnbench.batching import Template
from unlearnbench.errors import BenchError
from unlearnbench.generation import GenerationConfig, choose_backend
from unlearnbench.generation.ct2 import CTranslate2Generator
from unlearnbench.generation.hf import HFGenerator

from conftest import invoke

try:
    import ctranslate2
except ImportError:  # `make` installs it; a bare `pip install -e .` does not
    ctranslate2 = None
needs_ctranslate2 = pytest.mark.skipif(ctranslate2 is None, reason="ctranslate2 is not installed ('unlearnbench[cpu]')")

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Who wrote the play Romeo and Juliet, and in which century did he live?"]


@needs_ctranslate2
def test_float32_outputs_are_hf_float32_greedy_outputs_and_the_folder_is_gone(tiny_model, tokenizer, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own temp folder: other workers convert too
    prompts = [Template(tokenizer, "chat").prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=10)
    hf = HFGenerator(batch_size=4, dtype="float32", decoding="generate")
    hf.load_weights(tiny_model, tokenizer)
    engine = CTranslate2Generator(batch_size=3, compute_type="float32")  # 3: two batches, order must be kept
    engine.load_weights(tiny_model, tokenizer)
    assert list(tmp_path.iterdir()) == []  # converted, loaded into memory, deleted
    expected = hf.generate(prompts, config)
    assert engine.generate(prompts, config) == expected
    assert engine.last_counts["shared_prefix_tokens"] > 0  # the chat template's system turn went in once
    assert len(set(expected)) > 1  # the prompts are told apart, so the order is tested
    assert engine.last_counts["generated_tokens"] == hf.last_counts["generated_tokens"] > 0
    described = engine.describe()
    assert described["backend"] == "ctranslate2" and described["dtype"] == "float32"
    assert described["engine_version"] == ctranslate2.__version__


@needs_ctranslate2
def test_int8_generates_from_trained_weights_not_from_a_stale_copy(tiny_model, tokenizer):
    prompts = [Template(tokenizer, "chat").prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=6)
    engine = CTranslate2Generator(compute_type="int8")
    engine.load_weights(tiny_model, tokenizer)
    first = engine.generate(prompts, config)
    with torch.no_grad():
        tiny_model.lm_head.weight.mul_(-1)  # tied to the embeddings: every next-token choice changes
    engine.load_weights(tiny_model, tokenizer)
    assert engine.generate(prompts, config) != first
    assert engine.describe()["dtype"] == "int8"


@needs_ctranslate2
def test_a_bf16_model_is_converted_from_an_fp32_copy_and_left_as_it_was(tiny_model, tokenizer):
    model = tiny_model.to(torch.bfloat16)
    CTranslate2Generator(compute_type="float32").load_weights(model, tokenizer)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_unknown_compute_type_and_missing_package_are_one_line_errors(monkeypatch, tiny_model, tokenizer):
    with pytest.raises(BenchError, match="must be one of float32, int8, int8_float32, got 'fp8'"):
        CTranslate2Generator(compute_type="fp8")
    assert CTranslate2Generator().compute_type == "float32"  # the precision whose outputs are HF fp32's
    monkeypatch.setenv("UNLEARNBENCH_CT2_COMPUTE_TYPE", "int8")
    assert CTranslate2Generator().compute_type == "int8"
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(BenchError, match=r"needs the ctranslate2 package .*pip install 'unlearnbench\[cpu\]'") as info:
        CTranslate2Generator().load_weights(tiny_model, tokenizer)
    assert "\n" not in str(info.value)


def test_auto_never_takes_ctranslate2(monkeypatch):
    from unlearnbench import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "fast_low_precision", lambda device: None)  # where it generates fastest
    assert choose_backend("auto") == "hf"
    assert choose_backend("ctranslate2") == "ctranslate2"


@needs_ctranslate2
def test_check_backends_reports_identical_outputs_and_tokens_per_second(tiny_model_dir, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, err = invoke(capsys, "check-backends", "--backend", "ctranslate2", "--model", str(tiny_model_dir),
                            "--limit", "4", "--max-new-tokens", "8", "--output", str(report_path))
    assert code in (0, None), err
    import json

    report = json.loads(report_path.read_text())
    assert [p["name"] for p in report["paths"]] == ["hf batched (32)", "ctranslate2 float32"]
    assert report["paths"][0]["generator"]["dtype"] == "float32"  # the reference is HF in fp32
    assert report["identical"] == 4 and report["passed"] is True
    assert "generated tokens/s" in out and "identical outputs: 4/4" in out
    assert report["paths"][1]["load_seconds"] > 0 and "load seconds (a conversion included)" in out


@needs_ctranslate2
def test_a_run_with_the_ctranslate2_backend_records_the_engine(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("UNLEARNBENCH_CT2_COMPUTE_TYPE", "int8")
    out = tmp_path / "runs"
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--original", "base", "--limit", "2",
                          "--max-new-tokens", "4", "--steps", "1", "--backend", "ctranslate2", "--output-dir", str(out),
                          "--run-name", "ct2")
    assert code in (0, None), err
    generator = json.loads((out / "ct2" / "metrics.json").read_text())["generator"]
    assert generator["backend"] == "ctranslate2" and generator["dtype"] == "int8" and generator["engine_version"]


def test_unknown_backend_names_the_new_one():
    with pytest.raises(BenchError, match="Did you mean 'ctranslate2'"):
        choose_backend("ctranslate")


@needs_ctranslate2
def test_a_lora_run_evaluated_along_training_converts_the_merged_model(tiny_model_dir, tmp_path, capsys):
    import json

    out = tmp_path / "runs"
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--original", "base", "--limit", "2",
                          "--max-new-tokens", "4", "--steps", "2", "--lora", "--eval-every", "1", "--eval-limit", "2",
                          "--backend", "ctranslate2", "--output-dir", str(out), "--run-name", "lora")
    assert code in (0, None), err
    record = json.loads((out / "lora" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["generator"]["backend"] == "ctranslate2"


def test_a_model_the_converter_cannot_read_is_one_line(monkeypatch, tiny_model, tokenizer):
    if ctranslate2 is None:
        pytest.skip("ctranslate2 is not installed")

    def refuse(self, output_dir, **options):
        raise NotImplementedError("No conversion is registered for the model configuration Frobnicator\nmore")

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", refuse)
    with pytest.raises(BenchError, match=r"CTranslate2 cannot convert this model \(NotImplementedError: No conversion "
                                         r"is registered for the model configuration Frobnicator\); use --backend hf"):
        CTranslate2Generator().load_weights(tiny_model, tokenizer)


@needs_ctranslate2
def test_plain_prompts_one_a_prefix_of_another_get_only_new_tokens(tiny_model, tokenizer):
    # Without a chat template, the shared prefix can reach into the shortest prompt: each row must
    # keep tokens of its own, or CTranslate2 hands back the longer prompts' own tokens as output.
    base = "The old man walked slowly along the quiet road"
    engine = assert_same_as_hf_generate([base, base + " to the village by the river", base + " and then"],
                                        tiny_model, tokenizer)
    assert engine.last_counts["shared_prefix_tokens"] >= 4


@needs_ctranslate2
def test_a_one_token_prompt_beside_longer_ones_gets_its_own_continuation(tiny_model, tokenizer):
    # CTranslate2 feeds a batch's shortest prompt minus one token at once; a row with one token
    # has nothing to feed, and in a batch with longer rows it got their prompt tokens as output.
    prompts = ["Hi", "The old man walked slowly along the quiet road", "Name a primary colour."]
    assert len(tokenizer(prompts[0])["input_ids"]) == 1
    assert_same_as_hf_generate(prompts, tiny_model, tokenizer)


def assert_same_as_hf_generate(prompts, model, tokenizer) -> CTranslate2Generator:
    """The fp32 engine's outputs for plain `prompts` against HF generate's; returns the engine."""
    config = GenerationConfig(max_new_tokens=6)
    hf = HFGenerator(batch_size=4, dtype="float32", decoding="generate")
    hf.load_weights(model, tokenizer)
    engine = CTranslate2Generator(compute_type="float32")
    engine.load_weights(model, tokenizer)
    assert engine.generate(prompts, config) == hf.generate(prompts, config)
    return engine
