"""`mia`: membership inference. Does the forget set still look trained-on?

For each answer y = y_1..y_T of a (prompt, answer) pair, with ℓ_t = log p_θ(y_t | x, y_<t):

    LOSS      s = −(1/T) Σ_t ℓ_t                                 (Yeom et al. 2018)
    zlib      s = −(1/T) Σ_t ℓ_t / zlib(y)                       zlib(y) = bytes of zlib-compressed UTF-8 y
                                                                 (Carlini et al. 2021)
    Min-K%    s = mean of the ⌈k·T⌉ lowest ℓ_t                   (Shi et al. 2024)
    Min-K%++  z_t = (ℓ_t − μ_t) / σ_t,  μ_t = Σ_v p_v log p_v,  σ_t² = Σ_v p_v (log p_v − μ_t)²
              s = mean of the ⌈k·T⌉ lowest z_t                   (Zhang et al. 2024)

LOSS and zlib are negated so that for every score higher means "more likely a member". The attack
reports the ROC AUC of each score separating members (forget-train answers) from non-members
(answers of the same kind no model was trained on), for the original and the unlearned model.
AUC 0.5: the forget set looks unseen. Well below 0.5: it looks *less* likely than unseen text,
which is itself a trace of unlearning (the model singles those answers out). Where the original
was prepared by fine-tuning, the base model it was prepared from is scored too: its AUC is what
the two kinds of text alone give, before anything was learned.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from unlearnbench.attacks import Attack

SCORES = ("loss", "zlib", "min_k", "min_k_plus_plus")
MIN_K = 0.2  # Shi et al.'s default share of lowest-probability tokens


def lowest_mean(values, k: float = MIN_K) -> float:
    values = np.sort(np.asarray(values, dtype=np.float64))
    return float(values[: max(1, math.ceil(k * len(values)))].mean())


def membership_scores(token_logprobs, mean_logprob, std_logprob, answer: str, k: float = MIN_K) -> dict:
    """The four scores of one answer from its per-token statistics (higher = more member-like):
    ℓ_t (`token_logprobs`), μ_t (`mean_logprob`) and σ_t (`std_logprob`)."""
    ell = np.asarray(token_logprobs, dtype=np.float64)
    loss = float(-ell.mean())
    z = (ell - np.asarray(mean_logprob, dtype=np.float64)) / np.asarray(std_logprob, dtype=np.float64)
    return {"loss": -loss, "zlib": -loss / len(zlib.compress(answer.encode("utf-8"))),
            "min_k": lowest_mean(ell, k), "min_k_plus_plus": lowest_mean(z, k)}


def auc(member_scores, non_member_scores) -> float:
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(member_scores) + [0] * len(non_member_scores)
    return float(roc_auc_score(labels, list(member_scores) + list(non_member_scores)))


def token_statistics(model, template, pairs, batch_size: int = 16, count=lambda tokens: None) -> list[tuple]:
    """(ℓ_t, μ_t, σ_t) over the answer tokens of each pair, in fp32; `count` gets each batch's tokens."""
    import torch
    import torch.nn.functional as F

    from unlearnbench.batching import IGNORE, collate, encode

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            batch = collate([encode(template, p.question, p.answer, max_length=512, add_eos=False) for p in chunk],
                            template.tokenizer.pad_token_id).to(device)
            count(batch.tokens)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
            labels = batch.labels[:, 1:]
            log_p = F.log_softmax(logits, dim=-1)
            mu = (log_p.exp() * log_p).sum(-1)
            # Centred, not E[(log p)²] − μ²: over a 50k vocabulary that difference loses the variance to fp32 round-off.
            sigma = (log_p.exp() * (log_p - mu.unsqueeze(-1)).square()).sum(-1).clamp_min(1e-12).sqrt()
            ell = log_p.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            for row in range(len(chunk)):
                answer = labels[row] != IGNORE
                out.append((ell[row][answer].tolist(), mu[row][answer].tolist(), sigma[row][answer].tolist()))
    return out


class MembershipInference(Attack):
    name = "mia"
    description = "LOSS, zlib, Min-K% and Min-K%++ AUCs: forget-train answers against never-trained ones"

    def units(self, context) -> list[str]:
        if not context.task.mia_pairs(context.data):
            return []
        return (["base"] if context.load_base is not None else []) + ["original", "unlearned"]

    def skipped(self, context) -> str | None:
        if not context.task.mia_pairs(context.data):
            from unlearnbench.tasks import Task

            if type(context.task).mia_pairs is Task.mia_pairs:
                return (f"{context.task.name} is not a memorisation task: its forget answers were never trained into "
                        "the original")
            return f"the {context.task.name} data is too small to hold out never-trained forget answers to compare with"
        return None

    def run_unit(self, unit: str, context):
        members, non_members, what = context.task.mia_pairs(context.data)
        members, non_members = members[: context.limit], non_members[: context.limit]
        model = {"base": context.load_base, "original": context.original, "unlearned": lambda: context.unlearned}[unit]()
        stats = {side: token_statistics(model, context.template, pairs, count=context.count)
                 for side, pairs in (("members", members), ("non_members", non_members))}
        scored = {side: [membership_scores(*s, p.answer) for s, p in zip(stats[side], pairs)]
                  for side, pairs in (("members", members), ("non_members", non_members))}
        result = {f"auc_{name}": auc([s[name] for s in scored["members"]], [s[name] for s in scored["non_members"]])
                  for name in SCORES}
        result.update(members=len(members), non_members=len(non_members), non_member_source=what)
        rows = [{"side": side, "index": i, **s} for side in scored for i, s in enumerate(scored[side])]
        return result, rows
