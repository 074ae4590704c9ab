"""The paper's method (Yao, Xu, Liu 2023): gradient ascent + random mismatch + forward KL.

    L = −ε1 · CE(forget answers)                              unlearn the harmful output
        + ε2 · CE(K random normal answers to forget prompts)   steer towards irrelevant answers
        + ε3 · KL(θo‖θ) on normal answers                     stay close to the original

Each term is a mean over answer tokens (methods/terms.py); prompts never enter a loss.

faithful="code" computes what the official code computes instead (docs/paper.md §1.2, §1.5): per-sample
means with the mismatch mask from position 2, H(P,Q) over every normal position, and the sampler's
and schedule's official behaviour (bench/batching.py, TrainConfig.schedule_steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unlearnbench.errors import BenchError
from unlearnbench.methods import FaithfulConfig, Method, check_non_negative
from unlearnbench.methods.terms import add_normal_term, answer_cross_entropy, official_answer_loss


@dataclass
class UnlearnConfig(FaithfulConfig):
    forget_weight: float = 0.5  # ε1
    mismatch_weight: float = 1.0  # ε2
    normal_weight: float = 1.0  # ε3
    mismatch_k: int = 5  # K = |Y^rdn| answers per forget prompt
    shown: ClassVar[tuple[str, ...] | None] = ("faithful", "forget_weight", "mismatch_k", "mismatch_weight", "normal_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "forget_weight": ("log", 0.1, 2.0),
                                    "mismatch_weight": ("log", 0.1, 5.0), "normal_weight": ("log", 0.1, 10.0)}
    kl_positions: str = "answer"  # "answer" (paper Eqn. 6) or "all" (non-padding positions); faithful="paper" only

    def validate(self) -> None:
        super().validate()
        for name in ("forget_weight", "mismatch_weight", "normal_weight"):
            check_non_negative(name, getattr(self, name))
        if self.kl_positions not in ("answer", "all"):
            raise BenchError(f"kl_positions must be 'answer' or 'all', got {self.kl_positions!r}")
        if self.faithful == "code" and self.kl_positions != "answer":
            raise BenchError("kl_positions has no effect with faithful=code, whose normal term is H(P,Q) over every position")
        if self.mismatch_k < 0:
            raise BenchError(f"mismatch_k must be >= 0, got {self.mismatch_k}")


class Unlearn(Method):
    description = "the paper's method: gradient ascent + random mismatch + forward KL (Yao et al. 2023)"
    name = "unlearn"
    Config = UnlearnConfig
    uses = ("forget", "mismatch", "normal")
    needs_reference = True

    def loss(self, model, step, reference) -> dict:
        c = self.config
        answer_loss = official_answer_loss if c.faithful == "code" else answer_cross_entropy
        forget_ce = answer_loss(model, step.forget)
        terms = {"forget_ce": forget_ce}
        total = -c.forget_weight * forget_ce
        if step.mismatch is not None and c.mismatch_weight > 0:
            terms["mismatch_ce"] = answer_loss(model, step.mismatch)
            total = total + c.mismatch_weight * terms["mismatch_ce"]
        total = add_normal_term(total, terms, c.normal_weight, model, reference, step.normal, c.faithful, c.kl_positions)
        return {"total": total, **terms}
