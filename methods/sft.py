"""Supervised fine-tuning: L = CE(answers) on the pairs it is given.

Used to make a task's "original" (the memorising fine-tune of docs/paper.md §2.2). `sft_safe` is the
paper's SFT baseline row: the same loss on the chosen (safe) responses of the preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearnbench.batching import Pair, TrainData
from unlearnbench.errors import BenchError
from unlearnbench.methods import Method, TrainConfig
from unlearnbench.methods.terms import answer_cross_entropy


class SupervisedFinetune(Method):
    description = "fine-tune on the given pairs (makes a task's original)"
    name = "sft"
    uses = ("forget",)  # the pairs to imitate are passed in the forget slot

    def loss(self, model, step, reference) -> dict:
        ce = answer_cross_entropy(model, step.forget)
        return {"total": ce, "ce": ce}


@dataclass
class SafeSFTConfig(TrainConfig):
    # The same settings as the ppo pipeline's SFT stage (methods/ppo.py), so that the paper's SFT
    # row and the first stage of its full RLHF row are one and the same computation.
    steps: int = 60
    lr: float = 1e-4
    batch_size: int = 8


class SafeSFT(Method):
    """The paper's SFT baseline (docs/paper.md §5): L = CE(chosen | prompt) on the preference pairs'
    chosen (safe) responses. `sft` itself fine-tunes on whatever pairs it is given, which in a
    run are the forget pairs, the unsafe responses."""

    name = "sft_safe"
    description = "the paper's SFT baseline: fine-tune on the safe responses (harmful task)"
    Config = SafeSFTConfig
    uses = ("forget",)  # the chosen responses are passed in the forget slot

    def check_data(self, data) -> None:
        if not getattr(data, "preferences", None):
            raise BenchError("sft_safe fine-tunes on the chosen responses of preference pairs, which only the "
                             "harmful task has: use --task harmful")

    def loss(self, model, step, reference) -> dict:
        ce = answer_cross_entropy(model, step.forget)
        return {"total": ce, "ce": ce}

    def fit(self, model, tokenizer, data, template, log, accelerator=None, frozen_original=None, checkpointing=None,
            stage_compute=None, monitor=None):
        self.check_data(data)
        chosen = TrainData(forget=[Pair(prompt, good) for prompt, good, _ in data.preferences], normal=[],
                           mismatch_pool=[])
        return super().fit(model, tokenizer, chosen, template, log, accelerator=accelerator,
                           frozen_original=frozen_original, checkpointing=checkpointing, monitor=monitor)
