"""Greedy decoding that gives the same tokens as `model.generate(do_sample=False)`, with less work.

`generate` keeps every row of a batch in every forward until the longest row is done, and runs the
whole left-padded prompt through the model once per row. This loop differs in two ways only:

1. Finished rows leave the batch. When a row emits EOS, its key/value cache rows are dropped
   (`Cache.batch_select_indices`) and later forwards run on the rows still generating.
2. In fp32, a prompt prefix that every row shares (the chat template's system turn, 24 of the ~40
   prompt tokens of the embedded tasks) is run once and its key/value cache is repeated across the
   batch, so the prefill runs only the part after it. The rows are laid out
   [prefix][padding][rest of prompt]: the same positions (the count of real tokens before each one)
   and the same attended tokens as `generate`'s [padding][prompt].

Everything else is `generate`'s greedy step: the forward at the last position, fp32 logits, argmax,
stop at EOS or after max_new_tokens. Whether the tokens come out identical is measured, not assumed
(`benchmarks/speed.py` and the tests compare against `generate` on the same batches). Measured on
the embedded model, 64 prompts, 64 new tokens: dropping finished rows gives 64/64 identical
outputs in fp32 and bf16; the shared prefix gives 64/64 in fp32 but 36/64 in bf16, whose rounding
depends on the shape of the matrix products (a prefix run alone is a different product from the
same tokens inside a padded batch). So the prefix is shared only for fp32 weights.

Hand-written rather than a `generate` option because transformers has neither option; we do not
write our own attention, cache or model code, only the loop around `model.forward`.
"""

from __future__ import annotations

import inspect
import os

import torch

MIN_SHARED_PREFIX = 4  # tokens; below this the extra forward costs more than it saves

# Settings of a model's generation_config that make `generate` change the logits before its argmax.
# A model carrying any of them is decoded by `generate` itself, so that the output stays the same.
_LOGIT_CHANGING = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                   "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
                   "forced_eos_token_id": None, "min_length": 0, "min_new_tokens": None,
                   "sequence_bias": None, "encoder_repetition_penalty": 1.0}


def supports(model) -> bool:
    """Whether this loop reproduces `model.generate` greedily: a decoder-only model with a KV cache
    and `logits_to_keep`, whose generation_config leaves the logits alone."""
    config = getattr(model, "generation_config", None)
    if config is None or not takes_prefix_cache(model):
        return False
    values = {name: getattr(config, name, default) for name, default in _LOGIT_CHANGING.items()}
    return all(value is None or value == [] or value == _LOGIT_CHANGING[name] for name, value in values.items())


def takes_prefix_cache(model) -> bool:
    """A decoder-only model whose forward takes a key/value cache, positions and `logits_to_keep`
    (older remote-code models take none of them), and whose layers all keep keys and values: the
    recurrent state of a hybrid model's linear-attention or Mamba layers is not a prefix cache."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    parameters = inspect.signature(model.forward).parameters
    if not {"logits_to_keep", "position_ids"} <= set(parameters) or _cache_keyword(model) not in parameters:
        return False
    return not any(getattr(new_cache(model), "is_linear", ()))


def new_cache(model):
    """An empty cache laid out for `model`'s layers (a bare DynamicCache() knows only attention layers)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _cache_keyword(model) -> str:
    # transformers renamed `past_key_values` to `cache` (5.24 keeps the old name, deprecated, until 5.40).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens at the start of every row, leaving each row at least one token of its own (the last
    prompt token's logits are the first prediction, so it must go through the batched forward)."""
    if len(rows) < 2:
        return 0
    shared = len(os.path.commonprefix(rows))
    shared = min(shared, min(map(len, rows)) - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def prefix_cache(model, prefix: list[int], batch: int):
    """The key/value cache of `prefix`, run once and repeated for `batch` rows that all start with it."""
    cache = new_cache(model)
    device = next(model.parameters()).device
    model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1,
          **{_cache_keyword(model): cache})
    cache.batch_repeat_interleave(batch)
    return cache


def prefix_forward_options(model, prefix: list[int], batch: int, width: int) -> dict:
    """What a forward over [prefix][rest] rows needs besides the rest's ids: the prefix's cache and
    the rest's positions, which count from the end of the prefix."""
    device = next(model.parameters()).device
    positions = torch.arange(len(prefix), len(prefix) + width, device=device).expand(batch, width)
    return {_cache_keyword(model): prefix_cache(model, prefix, batch), "position_ids": positions, "use_cache": True}


@torch.no_grad()
def greedy_generate(model, rows: list[list[int]], max_new_tokens: int, eos_token_id: int | list[int] | None,
                    pad_token_id: int, share_prefix: bool | None = None) -> list[list[int]]:
    """The greedy continuation of each token row (EOS included when emitted), as `generate` gives it.
    `share_prefix=None`: share the common prompt prefix only when the weights are fp32 (see above)."""
    device = next(model.parameters()).device
    if share_prefix is None:
        share_prefix = next(model.parameters()).dtype == torch.float32
    eos = torch.tensor(sorted({eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])),
                       device=device, dtype=torch.long)
    cache_kw = _cache_keyword(model)
    batch = len(rows)

    prefix = shared_prefix_length(rows) if share_prefix else 0
    cache = prefix_cache(model, rows[0][:prefix], batch) if prefix else new_cache(model)
    rests = [row[prefix:] for row in rows]
    width = max(map(len, rests))
    input_ids = torch.tensor([[pad_token_id] * (width - len(r)) + r for r in rests], device=device)
    mask = torch.tensor([[1] * prefix + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
    # generate's positions: the number of real tokens before each one; padding sits at 0.
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, prefix:]
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **{cache_kw: cache}).logits

    outputs: list[list[int]] = [[] for _ in rows]
    alive = torch.arange(batch, device=device)  # original row of each batch row still generating
    last_position = positions[:, -1]
    for step in range(max_new_tokens):
        next_tokens = logits[:, -1, :].float().argmax(dim=-1)
        for row, token in zip(alive.tolist(), next_tokens.tolist()):
            outputs[row].append(token)
        done = torch.isin(next_tokens, eos)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, mask, next_tokens, last_position = alive[keep], mask[keep], next_tokens[keep], last_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_position = last_position + 1
        logits = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=last_position[:, None],
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits
    return outputs
