"""Weighted gradient ascent, WGA (Wang, Zhang, Lin, Ren, Huang, Yao, Xu, Han, Liu 2025,
"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", arXiv 2502.19301):
gradient ascent with each answer token weighted by its own probability to a power α.

    L = −(1/N) Σ_{answer tokens i} w_i · (−log p_θ(y_i | x, y_<i)),   w_i = p_θ(y_i | x, y_<i)^α
        [+ ε3 · KL(θo‖θ) on normal answers when normal_weight > 0]

The weight is held constant in the gradient (stop-gradient), so each token's ascent step is
scaled by how likely the token still is: a token already pushed to low probability stops
pulling, which damps plain GA's runaway. α = 0 is plain GA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from unlearnbench.logits import logits_at
from unlearnbench.methods import Method, TrainConfig, check_non_negative
from unlearnbench.methods.terms import add_normal_term, answer_positions


@dataclass
class WGAConfig(TrainConfig):
    alpha: float = 1.0  # α, the weight's power
    normal_weight: float = 0.0  # ε3; 0 is WGA alone
    shown: ClassVar[tuple[str, ...] | None] = ("alpha", "normal_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "alpha": ("uniform", 0.0, 5.0)}

    def validate(self) -> None:
        super().validate()
        check_non_negative("alpha", self.alpha)
        check_non_negative("normal_weight", self.normal_weight)


def weighted_ascent(token_nll, alpha: float):
    """−mean_i p_i^α · nll_i with p_i = exp(−nll_i) held constant: the formula above, per token."""
    weight = (-alpha * token_nll.detach()).exp()
    return -(weight * token_nll).mean()


class WGA(Method):
    name = "wga"
    description = "gradient ascent with each token weighted by its probability^α (Wang et al. 2025)"
    Config = WGAConfig

    def __init__(self, config: WGAConfig):
        super().__init__(config)
        self.needs_reference = config.normal_weight > 0
        self.uses = ("forget", "normal") if self.needs_reference else ("forget",)

    def loss(self, model, step, reference) -> dict:
        forget = step.forget
        answer = answer_positions(forget)
        token_nll = F.cross_entropy(logits_at(model, forget, answer).float(), forget.labels[:, 1:][answer], reduction="none")
        terms = {"wga": weighted_ascent(token_nll, self.config.alpha), "forget_ce": token_nll.mean().detach()}
        total = add_normal_term(terms["wga"], terms, self.config.normal_weight, model, reference, step.normal)
        return {"total": total, **terms}
