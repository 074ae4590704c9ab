"""Hugging Face backend: batched, left-padded, length-sorted, KV-cached.

Sampling runs `model.generate`. Greedy decoding (the default everywhere) runs the loop in
greedy.py, which drops finished rows and, for fp32 weights, runs a shared prompt prefix once;
`decoding="generate"` keeps plain `generate` for greedy too (the reference the loop is measured
against)."""

from __future__ import annotations

import copy

import torch

from unlearnbench.batching import pad_left
from unlearnbench.generation import GenerationConfig, Generator, greedy
from unlearnbench.hardware import fast_low_precision
from unlearnbench.progress import bar


def preferred_dtype(device: torch.device) -> torch.dtype:
    return fast_low_precision(device) or torch.float32


class HFGenerator(Generator):
    name = "hf"

    DECODINGS = ("loop", "generate")

    def __init__(self, batch_size: int = 32, dtype: str = "auto", device: str | None = None, decoding: str = "loop"):
        if decoding not in self.DECODINGS:
            raise ValueError(f"decoding must be one of {self.DECODINGS}, got {decoding!r}")
        self.batch_size = batch_size
        self.decoding = decoding
        self.requested_dtype = dtype
        self.device = torch.device(device) if device else None
        self.model = None
        self.tokenizer = None
        self.last_counts = {"prompt_tokens": 0, "generated_tokens": 0}

    def load_weights(self, model, tokenizer) -> None:
        device = self.device or next(model.parameters()).device
        dtype = preferred_dtype(device) if self.requested_dtype == "auto" else getattr(torch, self.requested_dtype)
        if next(model.parameters()).dtype != dtype or next(model.parameters()).device != device:
            # A cast copy, so that the caller's training weights stay in their own precision.
            model = copy.deepcopy(model).to(device=device, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.dtype = dtype

    def describe(self) -> dict:
        return {"backend": self.name, "dtype": str(self.dtype).removeprefix("torch."), "batch_size": self.batch_size,
                "greedy_decoding": self._greedy_decoding()}

    def _greedy_decoding(self) -> str:
        return "loop" if self.decoding == "loop" and self.model is not None and greedy.supports(self.model) else "generate"

    @torch.no_grad()
    def generate(self, prompts: list[str], config: GenerationConfig, desc: str = "generating") -> list[str]:
        tokenizer, model = self.tokenizer, self.model
        encoded = [tokenizer(p, add_special_tokens=config.add_special_tokens)["input_ids"] for p in prompts]
        # Longest first, so batches hold similar lengths (little padding) and an
        # out-of-memory error shows up on the first batch rather than the last.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        outputs: list[str] = [""] * len(prompts)
        device = next(model.parameters()).device
        generator_kwargs = dict(
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if config.do_sample:
            generator_kwargs.update(temperature=config.temperature, top_p=config.top_p)
            torch.manual_seed(config.seed)
        else:
            # Unset the sampling knobs a model's generation_config may carry, so that greedy is greedy.
            generator_kwargs.update(temperature=None, top_p=None, top_k=None)
        self.last_counts = {"prompt_tokens": sum(map(len, encoded)), "generated_tokens": 0}
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if not config.do_sample and self._greedy_decoding() == "loop":
            for batch in bar(batches, desc=desc, unit="batch"):
                continuations = greedy.greedy_generate(model, [encoded[i] for i in batch], config.max_new_tokens,
                                                       tokenizer.eos_token_id, tokenizer.pad_token_id)
                for index, tokens in zip(batch, continuations):
                    self.last_counts["generated_tokens"] += sum(t != tokenizer.pad_token_id for t in tokens)
                    outputs[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            return outputs
        for batch in bar(batches, desc=desc, unit="batch"):
            input_ids, attention = pad_left([encoded[i] for i in batch], tokenizer.pad_token_id, device)
            width = input_ids.shape[1]
            generated = model.generate(input_ids=input_ids, attention_mask=attention, **generator_kwargs)
            new_tokens = generated[:, width:]
            self.last_counts["generated_tokens"] += int((new_tokens != tokenizer.pad_token_id).sum())
            for row, index in enumerate(batch):
                outputs[index] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
        return outputs
