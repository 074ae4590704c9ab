"""Plain gradient ascent on the forget answers, optionally anchored by forward KL.

    L = −CE(forget answers)  [+ ε3 · KL(θo‖θ) on normal answers when normal_weight > 0]

faithful="code" uses the official code's bad_loss and normal loss instead (methods/terms.py
`official_*`, docs/paper.md §1.2): per-sample means masked by pad id, and H(P,Q) over every position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearnbench.methods import FaithfulConfig, Method, check_non_negative
from unlearnbench.methods.terms import add_normal_term, answer_cross_entropy, official_answer_loss


@dataclass
class GAConfig(FaithfulConfig):
    normal_weight: float = 0.0  # ε3; 0 is plain GA, > 0 adds the paper's KL term
    shown: ClassVar[tuple[str, ...] | None] = ("faithful", "normal_weight")

    def validate(self) -> None:
        super().validate()
        check_non_negative("normal_weight", self.normal_weight)


class GradientAscent(Method):
    description = "gradient ascent on the forget answers, optionally with the KL anchor"
    name = "ga"
    Config = GAConfig

    def __init__(self, config: GAConfig):
        super().__init__(config)
        self.needs_reference = config.normal_weight > 0
        self.uses = ("forget", "normal") if self.needs_reference else ("forget",)

    def loss(self, model, step, reference) -> dict:
        answer_loss = official_answer_loss if self.config.faithful == "code" else answer_cross_entropy
        forget_ce = answer_loss(model, step.forget)
        terms = {"forget_ce": forget_ce}
        total = -forget_ce
        total = add_normal_term(total, terms, self.config.normal_weight, model, reference, step.normal,
                                self.config.faithful)
        return {"total": total, **terms}
