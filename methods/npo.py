"""Negative Preference Optimization (Zhang, Lin, Bai, Mei 2024, arXiv 2404.05868), with a KL anchor.

    L = (2/β) · mean_b log(1 + (π_θ(y_b|x_b) / π_o(y_b|x_b))^β)      push forget answers below the original
        + ε3 · KL(θo‖θ) on normal answers                              stay close to the original

where π(y|x) is the whole answer's likelihood (methods/terms.py answer_log_likelihood) and π_o
the frozen original. Written as −(2/β)·log σ(−β·log-ratio), the numerically stable form of the same
number. As β → 0 the forget term tends to plain gradient ascent's gradient; unlike GA it is
bounded below (by 0), so it cannot run away once the forget answers are unlikely.

This file is CONTRIBUTING.md's worked example of adding a method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from unlearnbench.methods import Method, TrainConfig, check_non_negative, check_positive
from unlearnbench.methods.terms import add_normal_term, answer_log_likelihood


@dataclass
class NPOConfig(TrainConfig):
    beta: float = 0.1  # β, the NPO paper's default
    normal_weight: float = 1.0  # ε3; 0 is NPO alone
    shown: ClassVar[tuple[str, ...] | None] = ("beta", "normal_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "beta": ("log", 0.02, 2.0), "normal_weight": ("log", 0.1, 10.0)}

    def validate(self) -> None:
        super().validate()
        check_positive("beta", self.beta)
        check_non_negative("normal_weight", self.normal_weight)


class NPO(Method):
    description = "negative preference optimization against the original, with the KL anchor (Zhang et al. 2024)"
    name = "npo"
    Config = NPOConfig
    uses = ("forget", "normal")
    needs_reference = True  # the original's likelihood of each forget answer

    def loss(self, model, step, reference) -> dict:
        c = self.config
        forget = step.forget
        log_ratio = answer_log_likelihood(model, forget) - answer_log_likelihood(reference, forget)
        npo = -(2.0 / c.beta) * F.logsigmoid(-c.beta * log_ratio).mean()
        terms = {"npo": npo, "log_ratio": log_ratio.mean().detach()}
        total = add_normal_term(npo, terms, c.normal_weight, model, reference, step.normal)
        return {"total": total, **terms}
