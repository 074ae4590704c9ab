"""vLLM backend: offline batched generation with `vllm.LLM` (CUDA only).

Install with `pip install 'unlearnbench[vllm]'` on a CUDA machine; `vllm` is imported only inside
the methods below, so nothing else in the package needs it.

Same inputs and decoding as the HF backend (hf.py), so that the two are comparable
(`unlearnbench check-backends --backend vllm` measures how close they are):
  - prompts go in as token ids, tokenised by our tokenizer exactly as hf.py does
    (`add_special_tokens` from the GenerationConfig);
  - greedy (temperature 0) unless `do_sample`, then temperature / top_p / seed;
  - `max_tokens = max_new_tokens`, stopping at the tokenizer's EOS (`stop_token_ids`, never
    `ignore_eos`); the model's generation_config.json is not applied (`generation_config="vllm"`),
    as hf.py passes its own settings; a repetition penalty or top_k it sets is passed on, as HF
    would apply it;
  - outputs are decoded by our tokenizer from the generated ids (skip_special_tokens, stripped),
    as hf.py does, so equal ids give equal text;
  - the dtype is the one hf.py would pick on the same card (bf16 where supported), unless given.

Weights after unlearning. vLLM builds its engine from a model folder, so the first
`load_weights` saves the model (safetensors + tokenizer) into a temp folder and builds an engine
from it. The engine is then kept for the process (one at a time: it holds `gpu_memory_utilization`
of the card, 0.5 by default so that training fits beside it), and the next `load_weights` of a
model with the same architecture copies the new weights into it in place:
  1. in-process model: `llm.llm_engine.model_executor.driver_worker[.worker].model_runner.model
     .load_weights(weights=state_dict.items())` (vLLM's in-process single-GPU route; with vLLM's V1
     engine it needs VLLM_ENABLE_V1_MULTIPROCESSING=0, which is set here when tensor_parallel_size
     is 1 unless the user set it);
  2. `llm.apply_model(lambda model: model.load_weights(...))` (the engine in another process);
  3. otherwise, or with tensor_parallel_size > 1 (weights are sharded), the engine is freed and a
     new one is built from the model saved again.
`describe()["weight_sync"]` says which route the last `load_weights` took. `release()` (or
`release_engine()`) frees the engine and its GPU memory.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from unlearnbench.errors import BenchError, first_line
from unlearnbench.generation import GenerationConfig, Generator

INSTALL_HINT = "pip install 'unlearnbench[vllm]' on a machine with a CUDA GPU"

# The runner builds generators without arguments; these let a user size the engine without code.
ENV_GPU_MEMORY = "UNLEARNBENCH_VLLM_GPU_MEMORY_UTILIZATION"
ENV_TENSOR_PARALLEL = "UNLEARNBENCH_VLLM_TENSOR_PARALLEL_SIZE"


def import_vllm():
    """`import vllm`, or a one-line BenchError saying how to install it."""
    try:
        import vllm
    except ImportError as exc:
        missing = getattr(exc, "name", None) == "vllm"
        reason = "vllm is not installed" if missing else f"vllm could not be imported ({first_line(exc)})"
        raise BenchError(f"the vllm backend needs vLLM: {reason}; {INSTALL_HINT}") from exc
    return vllm


@dataclass
class Engine:
    """A built `vllm.LLM` and what it was built from."""

    llm: object
    signature: str  # engine options + architecture: which models it can take in place
    weights_dir: str  # the saved model it was built from (removed on release)
    owns_distributed: bool  # torch.distributed was not initialised before vLLM started it


_ENGINE: Engine | None = None  # at most one per process: each holds a share of the GPU


def current_engine() -> Engine | None:
    return _ENGINE


def release_engine() -> bool:
    """Free the shared engine: delete it, vLLM's parallel state, the saved weights and cached GPU memory.

    Returns whether there was one. Safe to call any time (also at exit)."""
    global _ENGINE
    engine, _ENGINE = _ENGINE, None
    if engine is None:
        return False
    llm, engine.llm = engine.llm, None
    # Dropping the last reference is not enough (vllm-project/vllm#21073): the engine core must be
    # shut down, and in-process vLLM freezes the GC heap at start-up (`gc.freeze()` in
    # `freeze_gc_heap`), after which `gc.collect()` never frees the engine's tensors.
    with contextlib.suppress(Exception):
        llm.llm_engine.engine_core.shutdown()
    del llm
    gc.unfreeze()
    gc.collect()
    with contextlib.suppress(Exception):
        from vllm.distributed.parallel_state import destroy_model_parallel

        destroy_model_parallel()
    if engine.owns_distributed:
        # Also destroys torch.distributed's default group: only when vLLM created it, never one
        # that `accelerate launch` set up for training.
        with contextlib.suppress(Exception):
            from vllm.distributed import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    shutil.rmtree(engine.weights_dir, ignore_errors=True)
    return True


atexit.register(release_engine)


def _in_process_model(llm):
    """The engine's torch model when it lives in this process, else None."""
    routes = (
        ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),  # V1, in process
        ("llm_engine", "engine_core", "engine_core", "model_executor", "driver_worker", "worker", "model_runner", "model"),
        ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),  # V0
    )
    for route in routes:
        target = llm
        for attribute in route:
            target = getattr(target, attribute, None)
            if target is None:
                break
        if target is not None and callable(getattr(target, "load_weights", None)):
            return target
    return None


def _architecture(model) -> str:
    """What must match for weights to be copied into an engine built for another model."""
    config = model.config.to_dict()
    kept = {k: v for k, v in config.items()
            if not k.startswith("_") and k not in ("torch_dtype", "dtype", "transformers_version")}
    kept["architectures"] = [type(model).__name__]  # save_pretrained fills it in: compare the class itself
    return json.dumps(kept, sort_keys=True, default=str)


def _state_dict(model) -> dict:
    if type(model).__name__.startswith("Peft"):
        raise BenchError("the vllm backend takes a plain causal LM: merge LoRA adapters first (merge_and_unload)")
    return model.state_dict()


class VLLMGenerator(Generator):
    name = "vllm"

    def __init__(self, gpu_memory_utilization: float | None = None, tensor_parallel_size: int | None = None,
                 dtype: str = "auto", max_model_len: int | None = None, enforce_eager: bool = False,
                 trust_remote_code: bool = False, enable_prefix_caching: bool = False, reuse_engine: bool = True):
        try:
            if gpu_memory_utilization is None:
                gpu_memory_utilization = float(os.environ.get(ENV_GPU_MEMORY, 0.5))
            if tensor_parallel_size is None:
                tensor_parallel_size = int(os.environ.get(ENV_TENSOR_PARALLEL, 1))
        except ValueError as exc:
            raise BenchError(f"{ENV_GPU_MEMORY} / {ENV_TENSOR_PARALLEL}: {exc}") from exc
        if not 0 < gpu_memory_utilization <= 1:
            raise BenchError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if tensor_parallel_size < 1:
            raise BenchError(f"tensor_parallel_size must be at least 1, got {tensor_parallel_size}")
        if max_model_len is not None and max_model_len < 1:
            raise BenchError(f"max_model_len must be at least 1, got {max_model_len}")
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self.requested_dtype = dtype
        self.dtype: str | None = None
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.trust_remote_code = trust_remote_code
        # Off by default: the same prompts come back after unlearning, and cached prefixes must
        # never carry activations of the old weights (the cache is also reset after each sync).
        self.enable_prefix_caching = enable_prefix_caching
        self.reuse_engine = reuse_engine
        self.model = None  # the caller's model (the runner's fluency judge falls back to a copy of it)
        self.tokenizer = None
        self.engine: Engine | None = None
        self.weight_sync: str | None = None
        self.last_counts = {"prompt_tokens": 0, "generated_tokens": 0}

    # -- weights ---------------------------------------------------------------------------------

    def _resolve_dtype(self) -> str:
        if self.requested_dtype != "auto":
            return str(self.requested_dtype).removeprefix("torch.")
        import torch

        from unlearnbench.hardware import fast_low_precision

        # The same choice hf.py makes on this card, so that both backends compute alike.
        chosen = fast_low_precision(torch.device("cuda")) if torch.cuda.is_available() else None
        return str(chosen or torch.float32).removeprefix("torch.")

    def _signature(self, model) -> str:
        options = [self.dtype, self.gpu_memory_utilization, self.tensor_parallel_size, self.max_model_len,
                   self.enforce_eager, self.trust_remote_code, self.enable_prefix_caching]
        return json.dumps(options) + _architecture(model)

    def load_weights(self, model, tokenizer) -> None:
        global _ENGINE
        vllm = import_vllm()
        self.model, self.tokenizer = model, tokenizer
        self.dtype = self._resolve_dtype()
        signature = self._signature(model)
        shared = _ENGINE
        if shared is not None and self.reuse_engine and shared.signature == signature:
            route = self._sync_in_place(shared, model)
            if route:
                self.engine, self.weight_sync = shared, route
                return
        had_engine = release_engine()  # before building: two engines rarely fit on one card
        self.engine = _ENGINE = self._build(vllm, model, tokenizer, signature)
        self.weight_sync = "rebuilt: saved and reloaded" if had_engine else "built"

    def _sync_in_place(self, engine: Engine, model) -> str | None:
        """Copy the model's weights into the running engine; the route taken, or None if none worked."""
        if self.tensor_parallel_size > 1:
            return None  # the engine's weights are sharded across processes: rebuild instead
        state = _state_dict(model)
        llm = engine.llm
        route = None
        target = _in_process_model(llm)
        if target is not None:
            try:
                loaded = target.load_weights(weights=state.items())
                route = "in place: model_runner.model.load_weights"
            except Exception:  # noqa: BLE001 - any failure means: rebuild from saved weights
                loaded = None
            if route and isinstance(loaded, (set, list, tuple)) and not loaded:
                route = None  # it accepted nothing
        if route is None and callable(getattr(llm, "apply_model", None)):
            weights = [(name, tensor.detach().cpu()) for name, tensor in state.items()]
            try:
                llm.apply_model(lambda worker_model: worker_model.load_weights(weights=weights))
                route = "in place: LLM.apply_model"
            except Exception:  # noqa: BLE001 - e.g. the function cannot be sent to the engine process
                route = None
        if route is None:
            return None
        reset = getattr(llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()  # no KV computed with the old weights may be reused
        return route

    def _build(self, vllm, model, tokenizer, signature: str) -> Engine:
        import torch

        weights_dir = tempfile.mkdtemp(prefix="unlearnbench-vllm-")
        try:
            _state_dict(model)  # refuses adapters before anything is written
            model.save_pretrained(weights_dir)
            tokenizer.save_pretrained(weights_dir)
        except (OSError, ValueError) as exc:
            shutil.rmtree(weights_dir, ignore_errors=True)
            raise BenchError(f"vllm backend: could not save the model for vLLM to load: {first_line(exc)}") from exc
        if self.tensor_parallel_size == 1:
            # The in-place weight route needs the engine in this process (vLLM V1 runs it in a
            # child process by default). A value the user set wins.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        owns_distributed = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        kwargs = dict(model=weights_dir, tokenizer=weights_dir, dtype=self.dtype,
                      gpu_memory_utilization=self.gpu_memory_utilization,
                      tensor_parallel_size=self.tensor_parallel_size, enforce_eager=self.enforce_eager,
                      trust_remote_code=self.trust_remote_code, enable_prefix_caching=self.enable_prefix_caching,
                      generation_config="vllm", seed=0)
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        try:
            llm = vllm.LLM(**kwargs)
        except Exception:
            shutil.rmtree(weights_dir, ignore_errors=True)
            raise
        # vLLM's in-process engine core freezes the GC heap when it starts, which would also make
        # the training process's own objects (model, optimizer, data) uncollectable for good.
        gc.unfreeze()
        return Engine(llm=llm, signature=signature, weights_dir=weights_dir, owns_distributed=owns_distributed)

    def release(self) -> None:
        """Free the engine this generator uses (and its GPU memory)."""
        if self.engine is not None and self.engine is _ENGINE:
            release_engine()
        self.engine = None

    close = release

    # -- generation ------------------------------------------------------------------------------

    def sampling_params(self, vllm, config: GenerationConfig):
        """vllm.SamplingParams with the decoding hf.py does for the same GenerationConfig."""
        tokenizer = self.tokenizer
        kwargs = dict(n=1, max_tokens=config.max_new_tokens, skip_special_tokens=True)
        if tokenizer.eos_token_id is not None:
            kwargs["stop_token_ids"] = [tokenizer.eos_token_id]
        hf_defaults = getattr(self.model, "generation_config", None)
        penalty = getattr(hf_defaults, "repetition_penalty", None)
        if penalty not in (None, 1.0):
            kwargs["repetition_penalty"] = penalty  # HF applies the model's penalty in both modes
        if config.do_sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, seed=config.seed)
            top_k = getattr(hf_defaults, "top_k", None)
            if top_k:
                kwargs["top_k"] = top_k
        else:
            kwargs["temperature"] = 0.0  # greedy
        return vllm.SamplingParams(**kwargs)

    def describe(self) -> dict:
        return {"backend": self.name, "dtype": self.dtype, "gpu_memory_utilization": self.gpu_memory_utilization,
                "tensor_parallel_size": self.tensor_parallel_size, "weight_sync": self.weight_sync}

    def generate(self, prompts: list[str], config: GenerationConfig, desc: str = "generating") -> list[str]:
        vllm = import_vllm()
        if self.engine is None or self.engine.llm is None:
            raise BenchError("vllm backend: call load_weights(model, tokenizer) before generate (or after release)")
        from unlearnbench.progress import quiet, say

        tokenizer = self.tokenizer
        encoded = [tokenizer(p, add_special_tokens=config.add_special_tokens)["input_ids"] for p in prompts]
        requests = [{"prompt_token_ids": ids} for ids in encoded]  # a vllm.inputs.TokensPrompt
        say(f"{desc}: {len(prompts)} prompts with vLLM")
        results = self.engine.llm.generate(requests, self.sampling_params(vllm, config), use_tqdm=not quiet())
        pad = tokenizer.pad_token_id
        self.last_counts = {"prompt_tokens": sum(map(len, encoded)), "generated_tokens": 0}
        outputs = []
        for result in results:  # in the order of the prompts
            ids = list(result.outputs[0].token_ids)
            # As hf.py counts: every generated id except padding (the EOS counts unless it is the pad).
            self.last_counts["generated_tokens"] += sum(1 for t in ids if t != pad)
            outputs.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        return outputs
