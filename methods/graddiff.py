"""Gradient difference, GradDiff (Liu, Liu, Stone 2022, "Continual learning and private
unlearning"; the GD baseline of TOFU, Maini et al. 2024, arXiv 2401.06121):

    L = −CE(forget answers) + λ · CE(normal answers)

Ascent on what to forget, ordinary descent on what to keep. It anchors utility with the normal
answers' own cross-entropy rather than a KL to the original (the paper's method and `npo`), so
it needs no frozen reference model: one model in memory, one forward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearnbench.methods import Method, TrainConfig, check_non_negative
from unlearnbench.methods.terms import answer_cross_entropy


@dataclass
class GradDiffConfig(TrainConfig):
    retain_weight: float = 1.0  # λ; 0 is plain gradient ascent
    shown: ClassVar[tuple[str, ...] | None] = ("retain_weight",)
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "retain_weight": ("log", 0.1, 10.0)}

    def validate(self) -> None:
        super().validate()
        check_non_negative("retain_weight", self.retain_weight)


class GradDiff(Method):
    name = "graddiff"
    description = "gradient ascent on forget answers + cross-entropy on normal answers (GradDiff, TOFU's GD)"
    Config = GradDiffConfig

    def __init__(self, config: GradDiffConfig):
        super().__init__(config)
        self.uses = ("forget", "normal") if config.retain_weight > 0 else ("forget",)

    def loss(self, model, step, reference) -> dict:
        forget_ce = answer_cross_entropy(model, step.forget)
        terms = {"forget_ce": forget_ce}
        total = -forget_ce
        if self.config.retain_weight > 0:
            terms["retain_ce"] = answer_cross_entropy(model, step.normal)
            total = total + self.config.retain_weight * terms["retain_ce"]
        return {"total": total, **terms}
