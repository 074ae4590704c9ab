"""`--preset paper` and `faithful-code`: the paper's settings per model and task (docs/paper.md §1.3)."""

import pytest

from unlearnbench import registry
from unlearnbench.errors import BenchError
from unlearnbench.presets import PAPER_MODELS, PAPER_TASKS, resolve_preset

SHARED = {"lr": 2e-6, "batch_size": 2, "steps": 1000, "weight_decay": 0.01, "max_grad_norm": 0.0, "precision": "fp32"}


def weights(hyper):
    return hyper["forget_weight"], hyper["mismatch_weight"], hyper["normal_weight"], hyper["mismatch_k"]


def test_opt_1_3b_harmful_holds_the_stated_settings():
    preset = resolve_preset("paper", "facebook/opt-1.3b", "harmful")
    assert preset["template"] == "paper"
    assert {k: preset["hyper"][k] for k in SHARED} == SHARED
    assert weights(preset["hyper"]) == (0.5, 1.0, 1.0, 5)
    assert any("OPT-1.3B harmful" in n for n in preset["notes"])
    assert any("lr 2e-06" in n and "assumed, not from paper" in n for n in preset["notes"])


def test_llama_2_hallucination_uses_epsilon1_of_2():
    preset = resolve_preset("paper", "meta-llama/Llama-2-7b-hf", "hallucination")
    assert weights(preset["hyper"]) == (2.0, 1.0, 1.0, 5)
    assert any("Llama-2-7B hallucination" in n for n in preset["notes"])
    assert any("--lora" in n for n in preset["notes"])


def test_cells_the_paper_is_silent_on_use_the_code_defaults_and_say_so():
    preset = resolve_preset("paper", "facebook/opt-2.7b", "copyright")
    assert weights(preset["hyper"]) == (0.5, 1.0, 1.0, 5) and preset["hyper"]["lr"] == 2e-6
    assert any("opt-2.7b copyright are the official code's defaults, assumed, not from paper" in n for n in preset["notes"])
    assert any("no OPT-2.7B hallucination results" in n
               for n in resolve_preset("paper", "facebook/opt-2.7b", "hallucination")["notes"])


@pytest.mark.parametrize("model,task", [("smollm2-135m", "hallucination"), ("facebook/opt-1.3b", "summarisation")])
def test_a_model_or_task_without_an_entry_falls_back_to_the_generic_settings(model, task):
    preset = resolve_preset("paper", model, task)
    assert {k: preset["hyper"][k] for k in SHARED} == SHARED and weights(preset["hyper"]) == (0.5, 1.0, 1.0, 5)
    assert preset["notes"][0].startswith("no paper entry for") and "generic paper settings" in preset["notes"][0]
    assert (model if "/" not in model else task) in preset["notes"][0]


def test_a_local_copy_of_a_paper_model_is_recognised_by_its_folder_name():
    preset = resolve_preset("paper", "/models/Llama-2-7b-hf/", "hallucination")
    assert preset["hyper"]["forget_weight"] == 2.0
    assert any("taken as meta-llama/Llama-2-7b-hf" in n for n in preset["notes"])


def test_faithful_code_is_paper_plus_the_official_semantics():
    paper = resolve_preset("paper", "facebook/opt-1.3b", "harmful")
    code = resolve_preset("faithful-code", "facebook/opt-1.3b", "harmful")
    assert code["hyper"] == {**paper["hyper"], "faithful": "code"} and code["template"] == "paper"
    config = registry.get("method", "unlearn").Config.from_overrides(code["hyper"])
    assert config.faithful == "code" and config.schedule_steps == 1000
    assert any("1144" in n for n in code["notes"])


def test_default_sets_nothing():
    assert resolve_preset("default", "facebook/opt-1.3b", "harmful") == {"hyper": {}, "template": "auto", "notes": []}


def test_an_unknown_preset_name_gets_a_did_you_mean():
    with pytest.raises(BenchError, match=r"unknown preset 'papr'\. Did you mean 'paper'\? Known: default, faithful-code, paper"):
        resolve_preset("papr", "facebook/opt-1.3b", "harmful")


@pytest.mark.parametrize("name", ["paper", "faithful-code"])
@pytest.mark.parametrize("model", PAPER_MODELS)
@pytest.mark.parametrize("task", PAPER_TASKS)
def test_every_cell_is_a_valid_unlearn_configuration(name, model, task):
    hyper = resolve_preset(name, model, task)["hyper"]
    config = registry.get("method", "unlearn").Config.from_overrides(hyper)
    assert config.lr == 2e-6 and config.max_grad_norm == 0.0 and config.precision == "fp32"


@pytest.mark.parametrize("method,dropped", [("ga", "forget_weight, mismatch_k, mismatch_weight"),
                                            ("sft", "faithful, forget_weight, mismatch_k, mismatch_weight, normal_weight")])
def test_a_method_keeps_only_its_own_hyper_parameters(method, dropped):
    preset = resolve_preset("faithful-code", "facebook/opt-1.3b", "harmful", method=method)
    config = registry.get("method", method).Config.from_overrides(preset["hyper"])
    assert config.lr == 2e-6 and config.steps == 1000
    assert f"method '{method}' has no {dropped}: not set" in preset["notes"]


def test_default_holds_the_per_task_settings_and_says_so():
    preset = resolve_preset("default", "smollm2-135m", "copyright", "unlearn")
    assert preset["hyper"] == {"lr": 1e-4} and "docs/tuning-embedded.md" in preset["notes"][0]
    assert resolve_preset("default", "smollm2-135m", "hallucination", "ga") == {"hyper": {}, "template": "auto", "notes": []}


def test_default_per_task_settings_can_be_per_method():
    assert resolve_preset("default", "smollm2-135m", "harmful", "unlearn")["hyper"] == {"normal_weight": 3.0}
    assert resolve_preset("default", "smollm2-135m", "harmful", "ga")["hyper"] == {}
