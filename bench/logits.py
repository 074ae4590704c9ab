"""Logits only at the positions a loss reads.

A causal LM's last layer projects every position onto the whole vocabulary (49,152 entries for
the embedded model). The paper's terms read answer positions only, a quarter or less of a
training batch; projecting the prompts too, and carrying their full-vocabulary gradients back,
costs more than the rest of a small model's step. Transformers' `logits_to_keep` takes a boolean
(batch, length) mask and returns the kept positions' logits, flattened, so the projection runs on
those rows alone. A model whose forward takes no such mask gets its full logits indexed instead:
the same values, more work.

Positions are given in the shifted frame of `methods/terms.py`: entry (b, i) of a (B, L−1) mask
stands for the logits at position i of row b, which predict token i+1.
"""

from __future__ import annotations

import copy

import torch

_WITHOUT_MASK: set = set()  # model kinds found to ignore or refuse a logits_to_keep mask
_WITH_MASK: set = set()  # model kinds found to honour it


def keep_mask(positions: torch.Tensor) -> torch.Tensor:
    """The (B, L) logits_to_keep mask of shifted-frame (B, L−1) positions: the last position
    predicts nothing, so it is never kept."""
    return torch.cat([positions, positions.new_zeros(positions.shape[0], 1)], dim=1)


def model_kind(model) -> tuple:
    return type(model).__name__, getattr(getattr(model, "config", None), "model_type", None)


def forward_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
               **forward_options) -> torch.Tensor:
    """The (n, V) logits at the n True entries of `positions`, in row-major order. `forward_options`
    go to the model's forward as they are (a prompt prefix's cache and positions, say)."""
    kind = model_kind(model)
    if kind not in _WITHOUT_MASK:
        # A forward fills the cache it is given; a first try that fails must leave the retry an unused one.
        trial = forward_options if kind in _WITH_MASK else copy.deepcopy(forward_options)
        try:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep_mask(positions),
                           **trial).logits
        except TypeError:  # a forward without a logits_to_keep argument
            logits = None
        if logits is not None and logits.dim() == 2 and logits.shape[0] == int(positions.sum()):
            _WITH_MASK.add(kind)
            return logits
        _WITHOUT_MASK.add(kind)
    return model(input_ids=input_ids, attention_mask=attention_mask, **forward_options).logits[:, :-1][positions]


def logits_at(model, batch, positions: torch.Tensor, **forward_options) -> torch.Tensor:
    """The logits of `batch` at `positions`. The step's packed model and the frozen reference
    serve them from their own passes (`logits_at` methods); any other model runs its forward,
    with `forward_options`."""
    served = getattr(model, "logits_at", None)
    if served is not None:
        if forward_options:
            raise TypeError(f"{type(model).__name__} serves its own logits and takes no forward options")
        return served(batch, positions)
    return forward_at(model, batch.input_ids, batch.attention_mask, positions, **forward_options)
