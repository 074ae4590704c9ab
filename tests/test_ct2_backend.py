"""The CTranslate2 backend, run for real on the tiny Llama: its fp32 outputs against HF's, its
int8 record, the folder it converts in, and how `auto` chooses it."""

import sys
import tempfile
from pathlib import Path

import pytest
import torch

from unlearnbench.batching import Template
from unlearnbench.errors import BenchError
from unlearnbench.generation import GenerationConfig, choose_backend
from unlearnbench.generation.hf import HFGenerator

from conftest import invoke

pytest.importorskip("ctranslate2")
from unlearnbench.generation.ct2 import CTranslate2Generator  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Who wrote the play Romeo and Juliet, and in which century did he live?"]


def leftover_folders():
    return sorted(Path(tempfile.gettempdir()).glob("unlearnbench-ct2-*"))


def test_float32_outputs_are_hf_float32_greedy_outputs_and_the_folder_is_gone(tiny_model, tokenizer):
    prompts = [Template(tokenizer, "chat").prompt(q) for q in QUESTIONS]
    config = GenerationConfig(max_new_tokens=10)
    hf = HFGenerator(batch_size=4, dtype="float32", decoding="generate")
    hf.load_weights(tiny_model, tokenizer)
    before = leftover_folders()
    engine = CTranslate2Generator(batch_size=3, compute_type="float32")  # 3: two batches, order must be kept
    engine.load_weights(tiny_model, tokenizer)
    assert leftover_folders() == before  # converted, loaded into memory, deleted
    expected = hf.generate(prompts, config)
    assert engine.generate(prompts, config) == expected
    assert len(set(expected)) > 1  # the prompts are told apart, so the order is tested
    assert engine.last_counts["generated_tokens"] == hf.last_counts["generated_tokens"] > 0
    described = engine.describe()
    assert described["backend"] == "ctranslate2" and described["dtype"] == "float32"
    assert described["engine_version"] == __import__("ctranslate2").__version__


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


@pytest.mark.parametrize("fast_bf16, present, expected", [(False, True, "ctranslate2"), (False, False, "hf"),
                                                          (True, True, "hf")])
def test_auto_takes_ctranslate2_on_a_cpu_without_fast_bf16(monkeypatch, capsys, fast_bf16, present, expected):
    from unlearnbench import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "fast_low_precision", lambda device: torch.bfloat16 if fast_bf16 else None)
    if not present:
        monkeypatch.setitem(sys.modules, "ctranslate2", None)
    monkeypatch.delenv("UNLEARNBENCH_QUIET", raising=False)
    assert choose_backend("auto") == expected
    said = capsys.readouterr().err
    assert ("ctranslate2 is not installed, so generation uses hf" in said) == (not present and not fast_bf16)
    assert choose_backend("ctranslate2") == "ctranslate2"


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


def test_ctranslate2_on_a_cuda_model_is_refused(tokenizer):
    class OnCuda(torch.nn.Module):
        def parameters(self):
            yield torch.nn.Parameter(torch.empty(0, device="meta"))

    with pytest.raises(BenchError, match="runs on the CPU here"):
        CTranslate2Generator().load_weights(OnCuda(), tokenizer)


def test_unknown_backend_names_the_new_one():
    with pytest.raises(BenchError, match="Did you mean 'ctranslate2'"):
        choose_backend("ctranslate")
