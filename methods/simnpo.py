"""SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei, Liu 2024, "Simplicity Prevails: Rethinking Negative
Preference Optimization for LLM Unlearning", arXiv 2410.07163): NPO without the reference
model, on the length-normalised likelihood, with a margin.

    L = −(2/β) · mean_b log σ(−(β/|y_b|) · log π_θ(y_b|x_b) − γ)  +  λ · CE(normal answers)

|y_b| is the number of answer tokens of item b, log π_θ(y|x) the whole answer's log-likelihood
(methods/terms.py answer_log_likelihood). Dividing by |y| stops long answers from dominating;
γ ≥ 0 shifts where the sigmoid saturates. No frozen original: one model, like GradDiff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from unlearnbench.methods import Method, TrainConfig, check_non_negative, check_positive
from unlearnbench.methods.terms import answer_cross_entropy, answer_log_likelihood, answer_positions


@dataclass
class SimNPOConfig(TrainConfig):
    beta: float = 2.5  # β
    gamma: float = 0.0  # γ, the margin
    retain_weight: float = 1.0  # λ; 0 is SimNPO alone
    shown: ClassVar[tuple[str, ...] | None] = ("beta", "gamma", "retain_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "beta": ("log", 0.5, 10.0), "gamma": ("uniform", 0.0, 2.0),
                                    "retain_weight": ("log", 0.1, 10.0)}

    def validate(self) -> None:
        super().validate()
        check_positive("beta", self.beta)
        check_non_negative("gamma", self.gamma)
        check_non_negative("retain_weight", self.retain_weight)


def simnpo_term(log_likelihood, answer_tokens, beta: float, gamma: float):
    """−(2/β) · mean log σ(−(β/|y|) · log π(y|x) − γ): the forget term alone, per formula above."""
    return -(2.0 / beta) * F.logsigmoid(-beta * log_likelihood / answer_tokens - gamma).mean()


class SimNPO(Method):
    name = "simnpo"
    description = "reference-free NPO on length-normalised likelihood with a margin (Fan et al. 2024)"
    Config = SimNPOConfig

    def __init__(self, config: SimNPOConfig):
        super().__init__(config)
        self.uses = ("forget", "normal") if config.retain_weight > 0 else ("forget",)

    def loss(self, model, step, reference) -> dict:
        c, forget = self.config, step.forget
        log_likelihood = answer_log_likelihood(model, forget)
        answer_tokens = answer_positions(forget).sum(1).clamp(min=1)
        terms = {"simnpo": simnpo_term(log_likelihood, answer_tokens, c.beta, c.gamma),
                 "mean_token_log_likelihood": (log_likelihood / answer_tokens).mean().detach()}
        total = terms["simnpo"]
        if c.retain_weight > 0:
            terms["retain_ce"] = answer_cross_entropy(model, step.normal)
            total = total + c.retain_weight * terms["retain_ce"]
        return {"total": total, **terms}
