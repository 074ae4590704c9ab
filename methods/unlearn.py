"""The paper's method (Yao, Xu, Liu 2023): gradient ascent + random mismatch + forward KL.

    L = −ε1 · CE(forget answers)                              unlearn the harmful output
        + ε2 · CE(K random normal answers to forget prompts)   steer towards irrelevant answers
        + ε3 · KL(θo‖θ) on normal answers                     stay close to the original

Each term is a mean over answer tokens (methods/terms.py); prompts never enter a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnbench.errors import BenchError
from unlearnbench.methods import Method, TrainConfig
from unlearnbench.methods.terms import answer_cross_entropy, forward_kl


@dataclass
class UnlearnConfig(TrainConfig):
    forget_weight: float = 0.5  # ε1
    mismatch_weight: float = 1.0  # ε2
    normal_weight: float = 1.0  # ε3
    mismatch_k: int = 5  # K = |Y^rdn| answers per forget prompt
    kl_positions: str = "answer"  # "answer" (paper Eqn. 6) or "all" (the official code)

    def validate(self) -> None:
        super().validate()
        weights = (self.forget_weight, self.mismatch_weight, self.normal_weight)
        if any(not (w >= 0 and w < float("inf")) for w in weights):
            raise BenchError(f"loss weights must be finite and >= 0, got {weights}")
        if self.kl_positions not in ("answer", "all"):
            raise BenchError(f"kl_positions must be 'answer' or 'all', got {self.kl_positions!r}")
        if self.mismatch_k < 0:
            raise BenchError(f"mismatch_k must be >= 0, got {self.mismatch_k}")


class Unlearn(Method):
    name = "unlearn"
    Config = UnlearnConfig
    uses = ("forget", "mismatch", "normal")
    needs_reference = True

    def loss(self, model, step, reference) -> dict:
        c = self.config
        forget_ce = answer_cross_entropy(model, step.forget)
        terms = {"forget_ce": forget_ce}
        total = -c.forget_weight * forget_ce
        if step.mismatch is not None and c.mismatch_weight > 0:
            terms["mismatch_ce"] = answer_cross_entropy(model, step.mismatch)
            total = total + c.mismatch_weight * terms["mismatch_ce"]
        if c.normal_weight > 0:
            terms["normal_kl"] = forward_kl(model, reference, step.normal, self.config.kl_positions)
            total = total + c.normal_weight * terms["normal_kl"]
        return {"total": total, **terms}
