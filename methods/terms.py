"""The loss terms that methods combine. Each states its formula; all count answer tokens only.

Notation (paper.md §1.1): the model h_θ, the frozen original h_θo, labels y with the prompt and
padding set to IGNORE, so a sum "over answer tokens" is a sum over positions where y_i != IGNORE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnbench.batching import IGNORE, Batch


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position i predicts token i+1: align logits[:, :-1] with labels[:, 1:]."""
    return logits[:, :-1, :], labels[:, 1:]


def answer_cross_entropy(model, batch: Batch) -> torch.Tensor:
    """CE(θ) = (1/N) Σ_{answer tokens} −log h_θ(y_i | x, y_<i), N = answer tokens in the batch."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits, labels = shifted(logits, batch.labels)
    answer = labels != IGNORE
    # Only answer positions enter the float32 cast: prompts are most of each sequence, and a
    # full-vocabulary fp32 copy of every position is the largest tensor of a step.
    return F.cross_entropy(logits[answer].float(), labels[answer])


def forward_kl(model, reference, batch: Batch, positions: str = "answer") -> torch.Tensor:
    """KL(θo‖θ) = (1/N) Σ_{answer tokens} Σ_v P_o(v) (log P_o(v) − log P_θ(v)).

    positions="all" averages over every non-padding position instead (prompt included), as the
    official code's normal loss does (paper.md §1.2 #3).

    Forward KL with the original first (paper Eqn. 6), via log_softmax so that it stays finite
    in low precision (the official code's log(Q + 1e-12) underflows in fp16, paper.md §1.5 #6).
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    reference_logits = reference(batch)
    logits, labels = shifted(logits, batch.labels)
    reference_logits, _ = shifted(reference_logits, batch.labels)
    answer = labels != IGNORE if positions == "answer" else batch.attention_mask[:, 1:].bool()
    log_q = F.log_softmax(logits[answer].float(), dim=-1)
    log_p = F.log_softmax(reference_logits[answer].float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
