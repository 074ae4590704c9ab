"""Supervised fine-tuning: L = CE(answers) on the pairs it is given.

Used to make a task's "original" (the memorising fine-tune of paper.md §2.2) and, on positive
answers, as the paper's SFT baseline row.
"""

from __future__ import annotations

from unlearnbench.methods import Method
from unlearnbench.methods.terms import answer_cross_entropy


class SupervisedFinetune(Method):
    name = "sft"
    uses = ("forget",)  # the pairs to imitate are passed in the forget slot

    def loss(self, model, step, reference) -> dict:
        ce = answer_cross_entropy(model, step.forget)
        return {"total": ce, "ce": ce}
