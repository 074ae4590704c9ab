"""The training loop every gradient method shares, nanoGPT-style: one readable loop.

accelerate owns devices and processes (the same loop runs under `accelerate launch` with DDP
or FSDP); the method owns only its loss. Each step logs every named loss term.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import torch

from unlearnbench.batching import Step, StepSampler, Template, TrainData
from unlearnbench.errors import BenchError, TrainingDiverged
from unlearnbench.hardware import fast_low_precision
from unlearnbench.progress import bar


@dataclass
class TrainResult:
    model: object
    steps: int
    trained_tokens: int  # tokens through a forward and backward pass of the trained model
    reference_tokens: int  # tokens through the frozen reference's forward pass
    trainable_parameters: int


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return fast_low_precision(device)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def make_reference(model, lora: bool, device, dtype=None, frozen=None):
    """The frozen original θo as a function batch -> logits.

    With LoRA the original is the same network with its adapters switched off, so no second
    copy of the weights is held; with full fine-tuning it is a frozen copy, stored in the
    autocast dtype when training runs under autocast (its matmuls run in that dtype anyway).
    A caller that already holds such a copy (the runner's copy of the original for generation
    and fluency) passes it as `frozen`, and no further copy is made.
    """
    if lora:
        @torch.no_grad()
        def reference(batch):
            with model.disable_adapter():
                return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return reference

    wanted = dtype or next(model.parameters()).dtype
    if frozen is None or next(frozen.parameters()).dtype != wanted or next(frozen.parameters()).device != device:
        frozen = copy.deepcopy(model).to(device=device, dtype=dtype)
    frozen = frozen.eval().requires_grad_(False)

    @torch.no_grad()
    def reference(batch):
        return frozen(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return reference


def apply_lora(model, config):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise BenchError(f"none of the LoRA target modules {config.lora_targets} exist in this model")
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0)
    return get_peft_model(model, lora_config)


def train(method, model, tokenizer, data: TrainData, template: Template, log, accelerator=None, desc=None,
          frozen_original=None) -> TrainResult:
    """Run `method.config.steps` optimizer steps of `method.loss`; `log(row)` receives each step's terms.

    `frozen_original`: an existing frozen copy of `model` that may serve as the reference θo.
    """
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    config = method.config
    for name in method.uses:
        source = data.mismatch_pool if name == "mismatch" else getattr(data, name)
        size = config.batch_size_of(name)
        if name in ("forget", "normal") and len(source) < size:
            raise BenchError(f"the {name} set has {len(source)} items, fewer than one batch of {size}")
        if name == "mismatch" and len(source) < getattr(config, "mismatch_k", 0):
            raise BenchError(f"the mismatch pool has {len(source)} answers, fewer than K={config.mismatch_k}")

    accelerator = accelerator or Accelerator()
    torch.manual_seed(config.seed)
    if config.lora:
        model = apply_lora(model, config)
    amp_dtype = autocast_dtype(config.precision, accelerator.device)
    reference = (make_reference(model, config.lora, accelerator.device, amp_dtype, frozen_original)
                 if method.needs_reference else None)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    sampler = StepSampler(
        data, template, config.batch_size, config.seed, method.uses,
        mismatch_k=getattr(config, "mismatch_k", 0), max_length=config.max_length, shuffle=config.shuffle,
        normal_batch_size=config.batch_size_of("normal"),
    )
    autocast = (
        torch.autocast(accelerator.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    trained_tokens = reference_tokens = 0
    progress = bar(range(1, config.steps + 1), desc=desc or f"training {method.name}", unit="step")
    for step_index in progress:
        started = time.perf_counter()
        step: Step = next(sampler).to(accelerator.device)
        with autocast:
            terms = method.loss(model, step, reference)
        values = {name: float(value.detach()) for name, value in terms.items()}
        row = {"step": step_index, "lr": schedule.get_last_lr()[0], **values}
        if not all(math.isfinite(v) for v in values.values()):
            log(row)
            raise TrainingDiverged(step_index, values)
        accelerator.backward(terms["total"])
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        trained_tokens += step.tokens
        if method.needs_reference and step.normal is not None:
            reference_tokens += step.normal.tokens
        row["seconds"] = round(time.perf_counter() - started, 4)
        log(row)
        progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()})

    model = accelerator.unwrap_model(model)
    if config.lora:
        model = model.merge_and_unload()
    model.eval()
    return TrainResult(model, config.steps, trained_tokens, reference_tokens, sum(p.numel() for p in trainable))
