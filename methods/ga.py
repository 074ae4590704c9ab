"""Plain gradient ascent on the forget answers, optionally anchored by forward KL.

    L = −CE(forget answers)  [+ ε3 · KL(θo‖θ) on normal answers when normal_weight > 0]
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnbench.methods import Method, TrainConfig
from unlearnbench.methods.terms import answer_cross_entropy, forward_kl


@dataclass
class GAConfig(TrainConfig):
    normal_weight: float = 0.0  # ε3; 0 is plain GA, > 0 adds the paper's KL term


class GradientAscent(Method):
    name = "ga"
    Config = GAConfig

    def __init__(self, config: GAConfig):
        super().__init__(config)
        self.needs_reference = config.normal_weight > 0
        self.uses = ("forget", "normal") if self.needs_reference else ("forget",)

    def loss(self, model, step, reference) -> dict:
        forget_ce = answer_cross_entropy(model, step.forget)
        terms = {"forget_ce": forget_ce}
        total = -forget_ce
        if self.config.normal_weight > 0:
            terms["normal_kl"] = forward_kl(model, reference, step.normal)
            total = total + self.config.normal_weight * terms["normal_kl"]
        return {"total": total, **terms}
