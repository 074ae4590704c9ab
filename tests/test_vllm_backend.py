"""The vllm backend's own logic, with a recording stand-in in place of vLLM (which needs CUDA).

Nothing here runs vLLM: `RecordingVLLMStandIn` only records what the backend asks of it, so these
tests cover the argument mapping, the token-id prompts, the weight hand-over and the release, not
vLLM's outputs. scripts/gpu_check.sh runs the real thing on a CUDA machine.
"""

import gc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch

from unlearnbench.errors import BenchError
from unlearnbench.generation import GenerationConfig, choose_backend
from unlearnbench.generation import vllm as vllm_backend
from unlearnbench.generation.vllm import VLLMGenerator, current_engine, release_engine
from conftest import invoke

PROMPTS = ["What is the capital of France?", "Name a primary colour.", "Who wrote Romeo and Juliet?"]


class RecordingModel:
    """Where in-place weights land: records every (name, tensor) it is given."""

    def __init__(self):
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def load_weights(self, weights):
        batch = [(name, tensor.detach().clone()) for name, tensor in weights]
        self.loaded += batch
        return {name for name, _ in batch}


class RecordingVLLMStandIn(types.ModuleType):
    """A stand-in that records calls; not vLLM.

    Installed into sys.modules as `vllm`. `LLM(**kwargs)` records its arguments and the files of
    the model folder it is given; `generate` records the prompts and answers each with its last
    three prompt ids followed by the first stop id. `in_process` exposes the engine's model at
    vLLM's in-process route; `apply_model` is "works", "broken" or None (absent).
    """

    def __init__(self, in_process: bool = True, apply_model: str | None = None):
        super().__init__("vllm")
        self.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
        self.built: list[dict] = []  # per LLM: kwargs, files, the saved weights
        self.engines: list[weakref.ref] = []
        self.sampling: list[dict] = []
        self.generated: list[list[dict]] = []
        self.cleanups: list[str] = []
        standin = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                standin.sampling.append(kwargs)

        class Completion:
            def __init__(self, token_ids):
                self.token_ids = token_ids

        class Result:
            def __init__(self, token_ids):
                self.outputs = [Completion(token_ids)]

        class LLM:
            def __init__(self, **kwargs):
                from safetensors.torch import load_file

                folder = Path(kwargs["model"])
                files = sorted(p.name for p in folder.iterdir())
                weights = {}
                for path in folder.glob("*.safetensors"):
                    weights.update(load_file(path))
                standin.built.append({"kwargs": kwargs, "files": files, "weights": weights})
                standin.engines.append(weakref.ref(self))
                self.model = RecordingModel()
                self.prefix_resets = 0
                # Like vLLM's engine core at start-up (`freeze_gc_heap`); the backend must undo it.
                gc.freeze()
                self.llm_engine = types.SimpleNamespace(
                    engine_core=types.SimpleNamespace(shutdown=lambda: standin.cleanups.append("engine_core.shutdown")))
                if in_process:
                    runner = types.SimpleNamespace(model=self.model)
                    worker = types.SimpleNamespace(worker=types.SimpleNamespace(model_runner=runner))
                    self.llm_engine.model_executor = types.SimpleNamespace(driver_worker=worker)
                if apply_model == "works":
                    self.apply_model = lambda func: [func(self.model)]
                elif apply_model == "broken":
                    self.apply_model = self._refuse

            @staticmethod
            def _refuse(func):
                raise RuntimeError("cannot serialise the function for the engine process")

            def reset_prefix_cache(self):
                self.prefix_resets += 1
                return True

            def generate(self, prompts, sampling_params, use_tqdm=True):
                standin.generated.append(prompts)
                stop = sampling_params.kwargs.get("stop_token_ids") or []
                return [Result((list(p["prompt_token_ids"][-3:]) + stop[:1])[: sampling_params.kwargs["max_tokens"]])
                        for p in prompts]

        self.LLM, self.SamplingParams = LLM, SamplingParams
        self.distributed = types.ModuleType("vllm.distributed")
        self.distributed.cleanup_dist_env_and_memory = lambda shutdown_ray=False: self.cleanups.append("cleanup")
        self.parallel_state = types.ModuleType("vllm.distributed.parallel_state")
        self.parallel_state.destroy_model_parallel = lambda: self.cleanups.append("destroy_model_parallel")
        self.distributed.parallel_state = self.parallel_state


@pytest.fixture()
def standin(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)  # restored after the test
    monkeypatch.delenv(vllm_backend.ENV_GPU_MEMORY, raising=False)
    monkeypatch.delenv(vllm_backend.ENV_TENSOR_PARALLEL, raising=False)
    release_engine()

    def install(**kwargs):
        module = RecordingVLLMStandIn(**kwargs)
        monkeypatch.setitem(sys.modules, "vllm", module)
        monkeypatch.setitem(sys.modules, "vllm.distributed", module.distributed)
        monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", module.parallel_state)
        return module

    yield install
    release_engine()


def trained(model):
    """Change every weight, as unlearning would."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.25)
    return model


# -- backend selection ------------------------------------------------------------------------------


@pytest.mark.parametrize("installed, cuda, expected", [(True, True, "vllm"), (True, False, "hf"),
                                                        (False, True, "hf"), (False, False, "hf")])
def test_auto_is_vllm_only_with_vllm_and_cuda(monkeypatch, installed, cuda, expected):
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (importlib.machinery.ModuleSpec("vllm", None) if installed else None)
                        if name == "vllm" else real_find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert choose_backend("auto") == expected
    assert choose_backend("hf") == "hf" and choose_backend("vllm") == "vllm"  # explicit names are kept


def test_unknown_backend_and_the_runner_records_the_resolved_name(monkeypatch):
    from unlearnbench.runner import RunConfig, resolve_config

    with pytest.raises(BenchError, match="Did you mean 'vllm'"):
        choose_backend("vlm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config, _, _ = resolve_config(RunConfig(backend="auto"))
    assert config.backend == "hf"


# -- decoding and inputs -------------------------------------------------------------------------------


def test_sampling_params_match_the_hf_backend(standin, tiny_model, tokenizer):
    vllm = standin()
    generator = VLLMGenerator()
    generator.load_weights(tiny_model, tokenizer)
    generator.generate(PROMPTS, GenerationConfig(max_new_tokens=7))
    greedy = vllm.sampling[-1]
    assert greedy == {"n": 1, "max_tokens": 7, "skip_special_tokens": True, "stop_token_ids": [tokenizer.eos_token_id],
                      "temperature": 0.0}  # greedy; stops at EOS (no ignore_eos); no seed or top_p
    generator.generate(PROMPTS, GenerationConfig(max_new_tokens=5, do_sample=True, temperature=0.7, top_p=0.9, seed=3))
    sampled = vllm.sampling[-1]
    assert {k: sampled[k] for k in ("temperature", "top_p", "seed", "max_tokens")} == \
        {"temperature": 0.7, "top_p": 0.9, "seed": 3, "max_tokens": 5}
    assert "ignore_eos" not in sampled and sampled["stop_token_ids"] == [tokenizer.eos_token_id]


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_prompts_are_the_hf_token_ids_and_outputs_decode_like_hf(standin, tiny_model, tokenizer, add_special_tokens):
    from unlearnbench.batching import Template

    vllm = standin()
    prompts = [Template(tokenizer, "chat").prompt(q) for q in PROMPTS] + PROMPTS
    generator = VLLMGenerator()
    generator.load_weights(tiny_model, tokenizer)
    outputs = generator.generate(prompts, GenerationConfig(max_new_tokens=8, add_special_tokens=add_special_tokens))
    expected = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]  # as hf.py encodes
    assert [p["prompt_token_ids"] for p in vllm.generated[-1]] == expected
    # The stand-in answers with the last three prompt ids + EOS: decoded by our tokenizer, EOS skipped.
    assert outputs == [tokenizer.decode(ids[-3:], skip_special_tokens=True).strip() for ids in expected]
    pad = tokenizer.pad_token_id
    assert generator.last_counts == {"prompt_tokens": sum(map(len, expected)),
                                     "generated_tokens": sum(sum(t != pad for t in ids[-3:] + [tokenizer.eos_token_id])
                                                             for ids in expected)}


# -- weights ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route, standin_kwargs", [("model_runner.model.load_weights", {"in_process": True}),
                                                   ("LLM.apply_model", {"in_process": False, "apply_model": "works"})])
def test_weights_after_training_are_synced_in_place(standin, tiny_model, tokenizer, route, standin_kwargs):
    vllm = standin(**standin_kwargs)
    first = VLLMGenerator()
    first.load_weights(tiny_model, tokenizer)
    assert len(vllm.built) == 1 and first.weight_sync == "built"
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"  # engine in process, so the model is reachable
    state = {k: v.clone() for k, v in trained(tiny_model).state_dict().items()}

    second = VLLMGenerator()  # the runner makes a new generator per phase; the engine is shared
    second.load_weights(tiny_model, tokenizer)
    assert len(vllm.built) == 1, "the engine was rebuilt instead of updated in place"
    assert second.weight_sync == f"in place: {route}"
    engine = current_engine().llm
    loaded = dict(engine.model.loaded)
    assert list(loaded) == list(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert engine.prefix_resets == 1  # no KV cache of the old weights survives


def test_without_an_in_place_route_the_model_is_saved_and_reloaded(standin, tiny_model, tokenizer):
    vllm = standin(in_process=False, apply_model="broken")
    first = VLLMGenerator()
    first.load_weights(tiny_model, tokenizer)
    first_dir = Path(current_engine().weights_dir)
    state = {k: v.clone() for k, v in trained(tiny_model).state_dict().items()}

    second = VLLMGenerator()
    second.load_weights(tiny_model, tokenizer)
    assert len(vllm.built) == 2 and second.weight_sync == "rebuilt: saved and reloaded"
    assert not first_dir.exists()  # the first engine was released before the second was built
    rebuilt = vllm.built[1]
    assert rebuilt["kwargs"]["model"] == rebuilt["kwargs"]["tokenizer"] != str(first_dir)
    assert "model.safetensors" in rebuilt["files"] and "tokenizer.json" in rebuilt["files"]
    for name, tensor in state.items():
        assert torch.equal(rebuilt["weights"][name], tensor), name
    with pytest.raises(BenchError, match="load_weights"):
        first.generate(PROMPTS, GenerationConfig())  # its engine is gone


def test_release_frees_the_engine(standin, tiny_model, tokenizer):
    vllm = standin()
    generator = VLLMGenerator()
    generator.load_weights(tiny_model, tokenizer)
    weights_dir = Path(current_engine().weights_dir)
    assert weights_dir.is_dir()
    assert gc.get_freeze_count() == 0, "the GC heap vLLM froze at start-up was left frozen"
    generator.release()
    gc.collect()
    assert current_engine() is None and generator.engine is None
    assert vllm.engines[0]() is None, "the vllm.LLM object is still referenced"
    # The engine core is shut down first; torch.distributed was vLLM's own here, so it goes too.
    assert vllm.cleanups == ["engine_core.shutdown", "destroy_model_parallel", "cleanup"]
    assert not weights_dir.exists()
    with pytest.raises(BenchError, match="load_weights"):
        generator.generate(PROMPTS, GenerationConfig())
    assert release_engine() is False  # idempotent


def test_engine_options_are_passed_to_llm(standin, tiny_model, tokenizer, monkeypatch):
    vllm = standin()
    generator = VLLMGenerator(tensor_parallel_size=2, gpu_memory_utilization=0.3, dtype="bfloat16", max_model_len=256,
                              enforce_eager=True)
    generator.load_weights(tiny_model, tokenizer)
    kwargs = vllm.built[0]["kwargs"]
    assert {k: kwargs[k] for k in ("tensor_parallel_size", "gpu_memory_utilization", "dtype", "max_model_len",
                                   "enforce_eager", "generation_config")} == \
        {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.3, "dtype": "bfloat16", "max_model_len": 256,
         "enforce_eager": True, "generation_config": "vllm"}
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # several GPUs: vLLM's own processes
    assert generator.describe() == {"backend": "vllm", "dtype": "bfloat16", "gpu_memory_utilization": 0.3,
                                    "tensor_parallel_size": 2, "weight_sync": "built"}
    again = VLLMGenerator(tensor_parallel_size=2, gpu_memory_utilization=0.3, dtype="bfloat16", max_model_len=256,
                          enforce_eager=True)
    again.load_weights(trained(tiny_model), tokenizer)
    assert len(vllm.built) == 2 and not current_engine().llm.model.loaded  # sharded weights: rebuilt, never in place

    defaults = VLLMGenerator()
    assert (defaults.gpu_memory_utilization, defaults.tensor_parallel_size) == (0.5, 1)
    monkeypatch.setenv(vllm_backend.ENV_GPU_MEMORY, "0.7")
    assert VLLMGenerator().gpu_memory_utilization == 0.7
    with pytest.raises(BenchError):
        VLLMGenerator(gpu_memory_utilization=1.5)


def test_missing_vllm_is_a_one_line_bench_error(monkeypatch, tiny_model, tokenizer):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as if it were not installed
    with pytest.raises(BenchError, match=r"vllm is not installed; pip install 'unlearnbench\[vllm\]'") as info:
        VLLMGenerator().load_weights(tiny_model, tokenizer)
    assert "\n" not in str(info.value)


# -- check-backends ----------------------------------------------------------------------------------------


def test_token_agreement_formula():
    from unlearnbench.check_backends import token_agreement

    assert token_agreement([], []) == 1.0
    assert token_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert token_agreement([1, 2, 9, 4], [1, 2, 3, 4]) == 0.75
    assert token_agreement([1, 2], [1, 2, 3, 4]) == 0.5  # positions past the shorter one disagree


def test_check_backends_hf_batched_against_one_at_a_time(tiny_model_dir, tmp_path, capsys, monkeypatch):
    report_path = tmp_path / "report.json"
    code, out, err = invoke(capsys, "check-backends", "--backend", "hf", "--model", str(tiny_model_dir), "--limit", "4",
                            "--max-new-tokens", "8", "--output", str(report_path))  # float32 is the hf default
    assert code in (0, None), err
    report = json.loads(report_path.read_text())
    assert report["backend"] == "hf" and report["task"] == "hallucination" and report["split"] == "unlearned"
    assert report["prompts"] == 4 and report["max_new_tokens"] == 8
    assert [p["name"] for p in report["paths"]] == ["hf batched (32)", "hf one at a time"]
    assert [p["generator"]["batch_size"] for p in report["paths"]] == [32, 1]
    assert {p["generator"]["dtype"] for p in report["paths"]} == {"float32"}
    assert report["identical_fraction"] == 1.0 and report["identical"] == 4 and report["mean_token_agreement"] == 1.0
    assert report["passed"] is True and report["verdict"].startswith("verdict: PASS")
    for path in report["paths"]:
        assert set(path["metrics"]) == {"hallucination_rate", "degenerate_rate", "clean_rate", "distinct_answers", "diversity", "fluency"}
    assert "identical outputs: 4/4" in out and "hallucination_rate" in out and "verdict: PASS" in out

    monkeypatch.setitem(sys.modules, "vllm", None)
    code, out, err = invoke(capsys, "check-backends", "--backend", "vllm", "--model", str(tiny_model_dir))
    assert code not in (0, None)
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: the vllm backend needs vLLM: vllm is not installed; pip install 'unlearnbench[vllm]' on a machine with a CUDA GPU"]


def test_check_backends_exits_1_below_min_identical(capsys, monkeypatch):
    from unlearnbench import check_backends

    path = {"generator": {"dtype": "bfloat16"}, "seconds": 1.0, "generated_tokens": 10, "metrics": {"diversity": 0.5}}
    report = {"task": "hallucination", "split": "unlearned", "prompts": 4, "identical": 3, "identical_fraction": 0.75,
              "mean_token_agreement": 0.9, "token_agreement_formula": "f", "examples": [], "passed": False,
              "verdict": "verdict: FAIL: 3/4 outputs identical",
              "paths": [{"name": "hf batched (32)", **path}, {"name": "hf one at a time", **path}]}
    monkeypatch.setattr(check_backends, "check", lambda options: report)
    code, out, err = invoke(capsys, "check-backends", "--backend", "hf")
    assert code == 1 and out.strip().endswith("verdict: FAIL: 3/4 outputs identical"), (out, err)
