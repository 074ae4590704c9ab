"""The loss terms that methods combine. Each states its formula. The paper's terms count answer
tokens only; the official code's terms (`official_*`, for `faithful="code"`) do not.

Notation (docs/paper.md §1.1): the model h_θ, the frozen original h_θo, labels y with the prompt and
padding set to IGNORE, so a sum "over answer tokens" is a sum over positions where y_i != IGNORE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnbench.batching import IGNORE, Batch
from unlearnbench.logits import logits_at


def answer_positions(batch: Batch) -> torch.Tensor:
    """The (B, L−1) mask of positions whose next token is an answer token (the shifted frame)."""
    return batch.labels[:, 1:] != IGNORE


def answer_cross_entropy(model, batch: Batch) -> torch.Tensor:
    """CE(θ) = (1/N) Σ_{answer tokens} −log h_θ(y_i | x, y_<i), N = answer tokens in the batch."""
    answer = answer_positions(batch)
    # Logits of answer positions only (bench/logits.py): prompts are most of each sequence.
    return F.cross_entropy(logits_at(model, batch, answer).float(), batch.labels[:, 1:][answer])


def forward_kl(model, reference, batch: Batch, positions: str = "answer") -> torch.Tensor:
    """KL(θo‖θ) = (1/N) Σ_{answer tokens} Σ_v P_o(v) (log P_o(v) − log P_θ(v)).

    positions="all" averages over every non-padding position instead (prompt included), as the
    official code's normal loss does (docs/paper.md §1.2 #3).

    Forward KL with the original first (paper Eqn. 6), via log_softmax so that it stays finite
    in low precision (the official code's log(Q + 1e-12) underflows in fp16, docs/paper.md §1.5 #6).
    """
    read = answer_positions(batch) if positions == "answer" else batch.attention_mask[:, 1:].bool()
    log_q = F.log_softmax(logits_at(model, batch, read).float(), dim=-1)
    log_p = F.log_softmax(logits_at(reference, batch, read).float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


# The official code's terms, for `faithful="code"` (docs/paper.md §1.2, §1.5). Each is the exact
# computation of `kevinyaobytedance/llm_unlearn` utils.py except where its docstring says otherwise.


def official_answer_loss(model, batch: Batch) -> torch.Tensor:
    """The official get_answer_loss (utils.py L208–256; docs/paper.md §1.2 #1, §1.5 #1, #3, #5), descent sign.

    For sample b with input ids x_0..x_{L−1}, shifted-frame start s_b and pad id p:
        w_j   = 1 if j ≥ s_b and x_j ≠ p, else 0          (j = 0..L−1, input frame; §1.5 #3: by id)
        ℓ_j   = −log h_θ(x_{j+1} | x_≤j), 0 if x_{j+1} = p  (collator labels pad as −100)
        L_b   = Σ_{j<L−1} w_j ℓ_j / Σ_{j≤L−1} w_j          (0 if no weight)
        loss  = (1/B) Σ_b L_b                              (§1.5 #5: per-sample means, then the batch mean)
    The denominator counts position L−1 too, which has no loss term, so a sample's last real
    token (whose next token is padding or none) adds to the count but not to the sum.

    s_b is read from the labels: `encode_official` puts the first label at s_b + 1, which gives
    the forget term's off-by-one (§1.5 #2) and the mismatch term's s_b = 2 (§1.5 #1). The GA
    term is the negation; negating before or after the weighted mean is the same number.
    """
    if batch.pad_id is None:
        raise ValueError("the official answer loss needs the batch's pad id (built by `collate`)")
    ids = batch.input_ids
    width = ids.shape[1]
    labelled = batch.labels != IGNORE
    first_label = torch.where(labelled.any(1), labelled.int().argmax(1), width)
    start = (first_label - 1).clamp(min=0)
    positions = torch.arange(width, device=ids.device)
    weight = ((positions[None, :] >= start[:, None]) & (ids != batch.pad_id)).float()
    weight = weight / weight.sum(1, keepdim=True).clamp(min=1.0)
    logits = model(input_ids=ids, attention_mask=batch.attention_mask).logits[:, :-1, :]
    targets = ids[:, 1:]
    counted = (weight[:, :-1] > 0) & (targets != batch.pad_id)
    # As in answer_cross_entropy, only counted positions are cast to fp32.
    token_loss = F.cross_entropy(logits[counted].float(), targets[counted], reduction="none")
    rows = torch.nonzero(counted, as_tuple=True)[0]
    per_sample = torch.zeros(ids.shape[0], device=ids.device, dtype=token_loss.dtype)
    per_sample = per_sample.index_add(0, rows, weight[:, :-1][counted] * token_loss)
    return per_sample.mean()


def official_normal_cross_entropy(model, reference, batch: Batch) -> torch.Tensor:
    """The official compute_kl (utils.py L173–205; docs/paper.md §1.2 #3, §1.5 #4): the cross-entropy

        H(P, Q) = (1/(B·L)) Σ_{b, t} −Σ_v P_o(v | x_≤t) log Q_θ(v | x_≤t)

    averaged over every position t of the batch, prompt and padding included, with no shift
    (both distributions are taken at the same position). It is not KL: it equals KL(P‖Q) + H(P),
    so its gradient is forward KL's but its value and the scale of ε3 are not.

    Where the official code takes log(Q + 1e-12), this takes log_softmax, so that it stays finite
    in fp16 (§1.5 #6); the two differ only at tokens with Q < 1e-12, weighted by P there.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    reference_logits = reference(batch)
    log_q = F.log_softmax(logits.float(), dim=-1)
    p = F.softmax(reference_logits.float(), dim=-1)
    return -(p * log_q).sum(-1).mean()


def normal_term(model, reference, batch: Batch, faithful: str = "paper", positions: str = "answer") -> tuple[str, torch.Tensor]:
    """The utility-preserving term and its logged name: forward KL (paper) or H(P,Q) (official code)."""
    if faithful == "code":
        return "normal_cross_entropy", official_normal_cross_entropy(model, reference, batch)
    return "normal_kl", forward_kl(model, reference, batch, positions)


def add_normal_term(total: torch.Tensor, terms: dict, weight: float, model, reference, batch: Batch,
                    faithful: str = "paper", positions: str = "answer") -> torch.Tensor:
    """total + ε3 · (the normal term), the term logged in `terms` under its name; ε3 = 0 adds nothing."""
    if weight <= 0:
        return total
    name, value = normal_term(model, reference, batch, faithful, positions)
    terms[name] = value
    return total + weight * value


def answer_log_likelihood(model, batch: Batch, **forward_options) -> torch.Tensor:
    """log p(y | x) per sequence: Σ_{answer tokens i} log p(y_i | x, y_<i), one value per row,
    under `model` (the model being trained, or the frozen reference). `forward_options` go to a
    plain model's forward (bench/logits.py).

    Sequence-level, unlike answer_cross_entropy's token mean: preference-style losses (NPO, DPO)
    compare whole-answer likelihood ratios."""
    answer = answer_positions(batch)
    labels = batch.labels[:, 1:]
    token_log_probs = -F.cross_entropy(logits_at(model, batch, answer, **forward_options).float(), labels[answer],
                                       reduction="none")
    rows = torch.nonzero(answer, as_tuple=True)[0]
    return torch.zeros(labels.shape[0], dtype=torch.float32, device=labels.device).index_add(0, rows, token_log_probs)
