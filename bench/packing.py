"""One forward pass per training step, however many batches the step's loss reads.

A method's loss calls `model(input_ids=..., attention_mask=...)` once per batch it uses (the
unlearn loss: forget, K mismatch answers, normal). On a CPU, three small forwards run their
matrix products at small row counts, well below the rate the same products reach at the
combined size. `PackedForward` stands in for the model during one step: the first call for any
of the step's batches runs the model once over all of them, right-padded to a common width, and
every call is then served its own rows and columns of that result. Methods stay unchanged and
keep writing one call per batch.

A loss that reads answer positions only asks for `logits_at(batch, positions)` (bench/logits.py);
those are served from a second kind of packed pass that projects only the step's answer
positions onto the vocabulary. A position outside them gets its own forward.

Right padding leaves a row's real tokens unaffected (causal attention never looks right, and
padded keys are masked), and each batch gets back exactly its own width, so losses that count
padding positions (the official code's normal term) see the same positions as before. The
values agree with separate forwards within float rounding (tests/test_packing.py).
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutput

from unlearnbench.batching import IGNORE, Batch, Step
from unlearnbench.logits import forward_at


class PackedForward:
    """The model, for the duration of one step, with one forward pass over the step's batches.

    A call with anything else (a batch outside the step, extra keyword arguments such as
    `output_hidden_states`, another gradient mode or train/eval state than the packed pass) goes
    to the model itself. Every batch of the step is in the packed pass, also one the loss then
    leaves unread (a term whose weight is 0): that costs its rows, not correctness.
    """

    def __init__(self, model, step: Step):
        self.model = model
        self.batches = [b for b in (step.forget, step.mismatch, step.normal, step.chosen) if b is not None]
        self._logits: dict[int, torch.Tensor] | None = None
        # Answer-position logits of the whole step, and per batch the index of each of its
        # (shifted-frame) positions into them, -1 where a position is not an answer position.
        self._answer: tuple[torch.Tensor, dict[int, torch.Tensor]] | None = None
        # Gradient mode and train/eval state of the packed pass: a call in another state (a
        # no-grad "old policy" pass, say) needs its own forward, not these logits.
        self._state: tuple | None = None

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        state = (torch.is_grad_enabled(), getattr(self.model, "training", None))
        if kwargs or not any(b.input_ids is input_ids for b in self.batches) or self._state not in (None, state):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self._logits is None:
            self._logits, self._state = self._forward_all(), state
        return CausalLMOutput(logits=self._logits[id(input_ids)])

    def logits_at(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        state = (torch.is_grad_enabled(), getattr(self.model, "training", None))
        if not any(b.input_ids is batch.input_ids for b in self.batches) or self._state not in (None, state):
            return forward_at(self.model, batch.input_ids, batch.attention_mask, positions)
        if self._answer is None:
            self._answer, self._state = self._answer_pass(), state
        logits, index = self._answer
        picked = index[id(batch.input_ids)][positions]
        if bool((picked < 0).any()):  # it reads beyond the answers (a KL over every position)
            return forward_at(self.model, batch.input_ids, batch.attention_mask, positions)
        return logits[picked]

    def _answer_pass(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        input_ids, attention_mask = concatenated(self.batches)
        labels = torch.cat([padded(b.labels, input_ids.shape[1], IGNORE) for b in self.batches])
        answer = labels[:, 1:] != IGNORE
        logits = forward_at(self.model, input_ids, attention_mask, answer)
        index = torch.full(answer.shape, -1, dtype=torch.long, device=answer.device)
        index[answer] = torch.arange(int(answer.sum()), device=answer.device)
        served, row = {}, 0
        for batch in self.batches:
            rows, width = batch.input_ids.shape
            served[id(batch.input_ids)] = index[row:row + rows, :width - 1]
            row += rows
        return logits, served

    def _forward_all(self) -> dict[int, torch.Tensor]:
        input_ids, attention_mask = concatenated(self.batches)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        served, row = {}, 0
        for batch in self.batches:
            rows, width = batch.input_ids.shape
            served[id(batch.input_ids)] = logits[row:row + rows, :width]
            row += rows
        return served


def concatenated(batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batches' rows stacked, each right-padded to the widest (padding masked out)."""
    width = max(b.input_ids.shape[1] for b in batches)
    input_ids = torch.cat([padded(b.input_ids, width, b.pad_id if b.pad_id is not None else 0) for b in batches])
    attention_mask = torch.cat([padded(b.attention_mask, width, 0) for b in batches])
    return input_ids, attention_mask


def padded(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """`tensor`'s rows right-padded with `value` to `width` columns."""
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)
