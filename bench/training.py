"""The training loop every gradient method shares, nanoGPT-style: one readable loop.

accelerate owns devices and processes (the same loop runs under `accelerate launch` with DDP
or FSDP); the method owns only its loss. Each step logs every named loss term.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from unlearnbench.batching import Step, StepSampler, Template, TrainData
from unlearnbench.errors import BenchError, TrainingDiverged, first_line
from unlearnbench.hardware import fast_low_precision
from unlearnbench.logits import forward_at
from unlearnbench.packing import PackedForward
from unlearnbench.progress import bar
from unlearnbench.records import load_json, write_json


@dataclass
class TrainResult:
    model: object
    steps: int
    trained_tokens: int  # tokens through a forward and backward pass of the trained model
    reference_tokens: int  # tokens through the frozen reference's forward pass
    trainable_parameters: int
    record: dict = field(default_factory=dict)  # what the run record keeps of training beyond these (ppo: reward-model accuracy)


@dataclass
class Checkpointing:
    """Where and how often training saves everything a resume needs.

    The state is accelerate's `save_state` (model or adapter weights as safetensors, optimizer,
    scheduler, every process's RNG states; its loader uses torch.load(weights_only=True)) plus
    `progress.json` with the step reached, which is also the data position: the sampler is
    replayed to that step. `on_save(step)` lets the caller persist its own log at the same step.
    """

    directory: Path
    every: int = 0  # 0: only at the end of training
    resume: bool = False
    on_save: Callable[[int], None] | None = None

    @property
    def progress_file(self) -> Path:
        return Path(self.directory) / "progress.json"

    def _progress(self) -> dict:
        """progress.json of the saved checkpoint ({} when there is none), after putting back the
        previous complete checkpoint if a kill came between the two renames of `save`."""
        directory = Path(self.directory)
        previous = directory.with_name(directory.name + ".old")
        if not directory.exists() and (previous / "progress.json").is_file():
            try:
                previous.rename(directory)
            except OSError:  # another process of the run put it back first
                pass
        return load_json(self.progress_file, required=("step",)) if self.progress_file.is_file() else {}

    def saved_step(self) -> int:
        return int(self._progress().get("step", 0))

    def saved_tokens(self) -> tuple[int, int]:
        """(trained, reference) tokens from the start of the run to the saved step; 0 when unknown."""
        progress = self._progress()
        return int(progress.get("trained_tokens", 0)), int(progress.get("reference_tokens", 0))

    def save(self, accelerator, step: int, tokens: tuple[int, int] = (0, 0)) -> None:
        directory = Path(self.directory)
        staging = directory.with_name(directory.name + ".partial")
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                write_json(staging / "progress.json", {"step": step, "trained_tokens": tokens[0],
                                                       "reference_tokens": tokens[1]})
                # The caller's log is persisted before the checkpoint is swapped in: a kill between
                # the two then leaves a log that reaches past the checkpoint (resume drops the extra
                # rows), never one that stops short of it.
                if self.on_save is not None:
                    self.on_save(step)
                # Swap in the new checkpoint only once it is complete: a crash or a full disk
                # mid-save leaves the previous checkpoint intact.
                previous = directory.with_name(directory.name + ".old")
                if directory.exists():
                    directory.rename(previous)
                staging.rename(directory)
                shutil.rmtree(previous, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BenchError(f"could not save the training checkpoint in {directory}: {exc.strerror or exc}") from exc
        accelerator.wait_for_everyone()

    def load(self, accelerator) -> int:
        step = self.saved_step()
        if step:
            try:
                accelerator.load_state(str(self.directory))
            except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
                # accelerate loads with torch.load(weights_only=True): a file that would run code
                # on unpickling ends up here instead of running.
                message = first_line(exc)
                raise BenchError(f"the checkpoint in {self.directory} cannot be loaded safely: {message}") from exc
        return step


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return fast_low_precision(device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_for(precision: str, device: torch.device):
    """The autocast context of `precision` on `device`; a no-op context where it is fp32."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def optimizer_step(loss: torch.Tensor, row: dict, checked: dict[str, float], *, optimizer, schedule, parameters,
                   max_grad_norm: float, log, accelerator=None) -> None:
    """One optimizer step on `loss`, the same in every training loop (this module's and ppo's two).

    `row` is the step's log row, built by the caller with the learning rate read before this
    step moves the schedule, i.e. the rate the step uses. If a value in `checked` is not finite,
    the row is logged as it is and TrainingDiverged raised before the backward pass: the weights
    stay those of the last finite step and the log ends with the step that diverged. Otherwise:
    backward, gradient-norm clipping to `max_grad_norm` (0: none), optimizer step, schedule step.
    With `accelerator`, its backward and clipping serve (gradient scaling, sharded parameters).
    The caller times the step and logs the row: a PPO step makes several optimizer steps and one row.
    """
    if not all(math.isfinite(v) for v in checked.values()):
        log(row)
        raise TrainingDiverged(row["step"], checked)
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()
    if max_grad_norm:
        clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
        clip(parameters, max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


class FrozenReference:
    """The frozen original θo. `reference(batch)` gives its logits; `reference.logits_at(batch,
    positions)` only those at some positions (bench/logits.py); `reference.outputs(batch,
    output_hidden_states=True)` its full outputs, for methods that read hidden states (RMU-style
    steering). It counts the tokens it reads, for the run's compute."""

    def __init__(self, module, switched=contextlib.nullcontext):
        self._module = module  # run without gradients, inside `switched()` (LoRA: adapters off)
        self._switched = switched
        self.tokens = 0

    def outputs(self, batch, **kwargs):
        self.tokens += batch.tokens
        with torch.no_grad(), self._switched():
            return self._module(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)

    def logits_at(self, batch, positions):
        self.tokens += batch.tokens
        with torch.no_grad(), self._switched():
            return forward_at(self._module, batch.input_ids, batch.attention_mask, positions)

    def __call__(self, batch):
        return self.outputs(batch).logits


def make_reference(model, lora: bool, device, dtype=None, frozen=None) -> FrozenReference:
    """The frozen original θo, see FrozenReference.

    With LoRA the original is the same network with its adapters switched off, so no second
    copy of the weights is held; with full fine-tuning it is a frozen copy, stored in the
    autocast dtype when training runs under autocast (its matmuls run in that dtype anyway).
    A caller that already holds such a copy (the runner's copy of the original for generation
    and fluency) passes it as `frozen`, and no further copy is made.
    """
    if lora:
        return FrozenReference(model, model.disable_adapter)

    wanted = dtype or next(model.parameters()).dtype
    if frozen is None or next(frozen.parameters()).dtype != wanted or next(frozen.parameters()).device != device:
        frozen = copy.deepcopy(model).to(device=device, dtype=dtype)
    return FrozenReference(frozen.eval().requires_grad_(False))


def apply_lora(model, config):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise BenchError(f"none of the LoRA target modules {config.lora_targets} exist in this model")
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0)
    return get_peft_model(model, lora_config)


def gather_full_model(accelerator, model):
    """The trained model as one ordinary module, for evaluation on the main process.

    Under DDP every process already holds every weight. Under FSDP they are sharded: the full
    state dict is gathered (a collective, so every process takes part) and loaded into a fresh
    copy on the main process. The FSDP path is not verified on GPUs (docs/verification.md).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return accelerator.unwrap_model(model)
    from transformers import AutoModelForCausalLM

    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if not accelerator.is_main_process:
        return unwrapped
    full = AutoModelForCausalLM.from_config(unwrapped.config, torch_dtype=next(iter(state_dict.values())).dtype)
    full.load_state_dict(state_dict)
    return full


def training_attention(model, device) -> str | None:
    """Switch a CPU training run to eager attention; returns the implementation to restore.

    On CPU, torch's fused scaled-dot-product kernel is built for long sequences: at the short
    sequences of unlearning data its bf16 backward took several times longer than the plain
    matrix products of eager attention (docs/benchmarks-cpu.md). The values agree within float
    rounding. GPUs keep their fused kernels.
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if device.type != "cpu" or current in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        return None
    model.set_attn_implementation("eager")
    return current


def make_schedule(optimizer, config):
    """Linear decay with warmup, reaching lr 0 at `schedule_steps` (default: the run's `steps`)
    and staying there, as the official code's schedule does past its step 1000 (docs/paper.md §1.4)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.schedule_steps or config.steps)


def train(method, model, tokenizer, data: TrainData, template: Template, log, accelerator=None, desc=None,
          frozen_original=None, checkpointing: Checkpointing | None = None, monitor=None) -> TrainResult:
    """Run `method.config.steps` optimizer steps of `method.loss`; `log(row)` receives each step's terms.

    `frozen_original`: an existing frozen copy of `model` that may serve as the reference θo.
    `monitor(step, model, trained_tokens, reference_tokens)`: called before the first step (step
    0) and after every step with the unwrapped model and the tokens so far (evaluation along
    training); it decides itself when to act, and must leave the model as it found it.
    `checkpointing`: save the training state every N steps and at the end; with `resume`, continue
    from the saved step (the log then receives only the steps after it).

    Under `accelerate launch` each process trains on its own slice of every step's batch, so
    `batch_size` is per process and N processes see the batch of one process with N× the batch.
    """
    from accelerate import Accelerator

    config = method.config
    for name in method.uses:
        source = data.mismatch_pool if name == "mismatch" else getattr(data, name)
        size = config.batch_size_of(name)
        if name in ("forget", "normal") and len(source) < size:
            raise BenchError(f"the {name} set has {len(source)} items, fewer than one batch of {size}")
        if name == "mismatch" and len(source) < getattr(config, "mismatch_k", 0):
            raise BenchError(f"the mismatch pool has {len(source)} answers, fewer than K={config.mismatch_k}")

    # The schedule counts optimizer steps; accelerate would otherwise step it once per process.
    accelerator = accelerator or Accelerator(step_scheduler_with_optimizer=False)
    # accelerate warns on every save that tied weights (embeddings = LM head) are stored once; they
    # are re-tied on load, which the resume tests check.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    torch.manual_seed(config.seed)
    from accelerate.utils import DistributedType

    if config.lora and accelerator.distributed_type == DistributedType.FSDP:
        raise BenchError("--lora under FSDP is not supported: use the DDP config (adapters are small) or --full")
    if config.lora:
        model = apply_lora(model, config)
    amp_dtype = autocast_dtype(config.precision, accelerator.device)
    reference = (make_reference(model, config.lora, accelerator.device, amp_dtype, frozen_original)
                 if method.needs_reference else None)
    model.train()
    attention = training_attention(model, accelerator.device)
    trainable = method.trainable_parameters(model)
    # What the method does not train is frozen for the run (no gradients computed or stored) and
    # handed back trainable.
    chosen = {id(p) for p in trainable}
    frozen_here = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for parameter in frozen_here:
        parameter.requires_grad_(False)
    # The fused kernel updates all parameters in one pass; measurably faster on CPU (docs/benchmarks-cpu.md).
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=accelerator.device.type in ("cpu", "cuda"))
    schedule = make_schedule(optimizer, config)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    sampler = StepSampler(
        data, template, config.batch_size, config.seed, method.uses,
        mismatch_k=getattr(config, "mismatch_k", 0), max_length=config.max_length, shuffle=config.shuffle,
        normal_batch_size=config.batch_size_of("normal"),
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
        faithful=getattr(config, "faithful", "paper"),
    )
    first_step = 1
    if checkpointing is not None and checkpointing.resume:
        done = checkpointing.load(accelerator)
        if done > config.steps:
            raise BenchError(f"the checkpoint is at step {done}, past the run's {config.steps} steps")
        sampler.skip(done)
        first_step = done + 1
    autocast = autocast_for(config.precision, accelerator.device)
    trained_tokens = 0
    reference_tokens = lambda: reference.tokens if reference is not None else 0  # noqa: E731
    # This attempt counts its own tokens (the run's compute adds the attempts); the checkpoint and
    # the monitor need them from the start of the run.
    before = checkpointing.saved_tokens() if checkpointing is not None and first_step > 1 else (0, 0)
    so_far = lambda: (before[0] + trained_tokens, before[1] + reference_tokens())  # noqa: E731
    if monitor is not None and first_step == 1:
        monitor(0, accelerator.unwrap_model(model), 0, 0)
    progress = bar(range(first_step, config.steps + 1), desc=desc or f"training {method.name}", unit="step",
                   initial=first_step - 1, total=config.steps)
    for step_index in progress:
        started = time.perf_counter()
        step: Step = next(sampler).to(accelerator.device)
        with autocast:
            terms = method.loss(PackedForward(model, step), step, reference)
        values = {name: float(value.detach()) for name, value in terms.items()}
        if accelerator.num_processes > 1:  # log the loss of the whole step, not this process's slice
            mean = accelerator.reduce(torch.tensor(list(values.values()), device=accelerator.device), "mean")
            values = dict(zip(values, mean.tolist()))
        row = {"step": step_index, "lr": schedule.get_last_lr()[0], **values}
        optimizer_step(terms["total"], row, values, optimizer=optimizer, schedule=schedule, parameters=trainable,
                       max_grad_norm=config.max_grad_norm, log=log, accelerator=accelerator)
        trained_tokens += step.tokens
        row["seconds"] = round(time.perf_counter() - started, 4)
        log(row)
        progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
        if monitor is not None:
            monitor(step_index, accelerator.unwrap_model(model), *so_far())
        if checkpointing is not None and (
            step_index == config.steps or (checkpointing.every and step_index % checkpointing.every == 0)
        ):
            checkpointing.save(accelerator, step_index, so_far())

    if hasattr(monitor, "finish"):  # --select best puts the kept step's weights back, before LoRA is merged
        monitor.finish(accelerator.unwrap_model(model))
    reference_tokens = reference_tokens()
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(torch.tensor([trained_tokens, reference_tokens], device=accelerator.device), "sum")
        trained_tokens, reference_tokens = (int(c) for c in counts.tolist())

    model = gather_full_model(accelerator, model)
    if config.lora:
        model = model.merge_and_unload()
    if attention is not None:
        model.set_attn_implementation(attention)  # evaluation runs with the model's own attention again
    model.eval()
    for parameter in frozen_here:
        parameter.requires_grad_(True)
    return TrainResult(model, config.steps, trained_tokens, reference_tokens, sum(p.numel() for p in trainable))
