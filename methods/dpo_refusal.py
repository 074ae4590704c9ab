"""Refusal DPO (Rafailov et al. 2023, DPO, arXiv 2305.18290; as an unlearning baseline, the
IdkDPO of TOFU and open-unlearning): prefer a refusal over the forget answer.

    L = −mean_b log σ(β · [(log π_θ(y_w|x) − log π_o(y_w|x)) − (log π_θ(y_l|x) − log π_o(y_l|x))])
        + ε3 · KL(θo‖θ) on normal answers

y_l is the forget answer (rejected), y_w the chosen answer: the task's safe response to the same
prompt where it has one (harmful), else one of the task's refusals ("I don't know", "I can't
reproduce that text", in several wordings, picked per prompt by a hash so a prompt always gets
the same one). π(y|x) is the whole answer's likelihood, π_o the frozen original.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import ClassVar

import torch.nn.functional as F

from unlearnbench.batching import Pair
from unlearnbench.errors import BenchError
from unlearnbench.methods import Method, TrainConfig, check_non_negative, check_positive
from unlearnbench.methods.terms import add_normal_term, answer_log_likelihood


@dataclass
class DPORefusalConfig(TrainConfig):
    beta: float = 0.1  # β
    normal_weight: float = 1.0  # ε3; 0 is DPO alone
    shown: ClassVar[tuple[str, ...] | None] = ("beta", "normal_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4), "beta": ("log", 0.01, 1.0),
                                    "normal_weight": ("log", 0.1, 10.0)}

    def validate(self) -> None:
        super().validate()
        check_positive("beta", self.beta)
        check_non_negative("normal_weight", self.normal_weight)


def chosen_answers(data) -> list[Pair]:
    """One chosen answer per forget pair: the safe response to that prompt, else a refusal."""
    safe = {prompt: good for prompt, good, _ in data.preferences}
    if not safe and not data.refusals:
        raise BenchError("dpo_refusal needs safe responses or refusal answers; this task provides neither")
    return [Pair(p.question, safe.get(p.question)
                 or data.refusals[zlib.crc32(p.question.encode("utf-8")) % len(data.refusals)]) for p in data.forget]


class DPORefusal(Method):
    name = "dpo_refusal"
    description = "DPO with a refusal or safe answer preferred over the forget answer (IdkDPO)"
    Config = DPORefusalConfig
    uses = ("forget", "chosen", "normal")
    needs_reference = True

    def fit(self, model, tokenizer, data, template, log, **kwargs):
        return super().fit(model, tokenizer, replace(data, chosen=chosen_answers(data)), template, log, **kwargs)

    def loss(self, model, step, reference) -> dict:
        def log_ratio(batch):
            return answer_log_likelihood(model, batch) - answer_log_likelihood(reference, batch)

        chosen, rejected = log_ratio(step.chosen), log_ratio(step.forget)
        dpo = -F.logsigmoid(self.config.beta * (chosen - rejected)).mean()
        terms = {"dpo": dpo, "chosen_log_ratio": chosen.mean().detach(), "rejected_log_ratio": rejected.mean().detach()}
        total = add_normal_term(dpo, terms, self.config.normal_weight, model, reference, step.normal)
        return {"total": total, **terms}
