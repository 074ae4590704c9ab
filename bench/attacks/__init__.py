"""Attacks on an unlearned model: does the forgetting survive? One file per attack.

An attack is a small class with one contract:

    units(context) -> [unit, ...]            what it measures, each recorded as soon as it is done
    run_unit(unit, context) -> (result, rows)

`result` is a dict of numbers; one with a `forget_rate` (or a dict of such results) gets its
recovery added by `unlearnbench attack` (bench/attack.py):

    recovery = (forget rate under attack − unlearned rate) / (original rate − unlearned rate)

where both rates are measured again by the attack on the same prompts, generator and machine
(results differ between CPU kinds, so the recorded ones are not mixed in). `rows` are the
per-item outputs, kept in attack_generations.jsonl.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from unlearnbench.errors import BenchError
from unlearnbench.metrics import FORGET_RATES

# The one rate per task that says "still shows the behaviour" (the tuner reads the same ones).
class Attack:
    name = "base"
    description = ""  # one line, shown by `unlearnbench list`

    def units(self, context) -> list[str]:
        raise NotImplementedError

    def skipped(self, context) -> str | None:
        """Why this attack does not apply to the run, or None."""
        return None

    def run_unit(self, unit: str, context) -> tuple[dict, list[dict]]:
        raise NotImplementedError


@dataclass
class AttackContext:
    """What every attack works with: the run's task, data, template and judges, its unlearned
    model, the original (loaded on first use) and the attack settings."""

    task: object
    data: object
    template: object
    evaluator: object  # the run's Evaluator: its judges and generation settings
    unlearned: object  # the unlearned model, fp32, never modified by an attack
    load_original: Callable[[], object]
    forget_metric: str
    lr: float  # the run's training learning rate (relearning uses it)
    limit: int  # forget prompts per evaluation (and items per MIA side)
    seed: int
    parameters: int
    relearn_steps: tuple[int, ...] = (10, 30)
    relearn_batch_size: int = 4
    count: Callable[[int], None] = lambda tokens: None  # forward tokens, for the attack's FLOPs
    # The model before any fine-tune of the run, where the original was prepared from it (else None).
    load_base: Callable[[], object] | None = None
    _original: object = field(default=None, repr=False)

    def original(self):
        if self._original is None:
            self._original = self.load_original()
        return self._original

    @property
    def forget_set(self):
        """The forget prompts an attack is judged on: the run's `unlearned` set (its first `limit`),
        scored with the forget rate and the degenerate rate only."""
        from unlearnbench.tasks import EvalSet

        source = self.data.eval_sets["unlearned"]
        return EvalSet("unlearned", source.refs[: self.limit], (self.forget_metric, "degenerate_rate"))

    def forget_rate(self, model, desc: str, prompts: list[str] | None = None, generator=None,
                    add_special_tokens: bool | None = None) -> tuple[dict, list[dict]]:
        """Generate for the forget prompts (the run's template, or `prompts` already rendered) and
        score them: ({"forget_rate", "degenerate_rate", "prompts"}, per-item rows)."""
        eval_set = self.forget_set
        given = prompts is not None
        prompts = prompts if given else [self.template.prompt(q) for q in eval_set.questions]
        generator = generator or self.evaluator.generator(model)
        generation = self.evaluator.generation
        if add_special_tokens is not None:
            generation = dataclasses.replace(generation, add_special_tokens=add_special_tokens)
        outputs = generator.generate(prompts, generation, desc=desc)
        counts = getattr(generator, "last_counts", {})
        self.count(counts.get("prompt_tokens", 0) + counts.get("generated_tokens", 0))
        scores = self.evaluator.score(eval_set, outputs)
        rows = [{"index": i, **({"prompt": p} if given else {}), "output": o,
                 **{name: s.per_item[i] for name, s in scores.items()}}
                for i, (p, o) in enumerate(zip(prompts, outputs))]
        return ({"forget_rate": scores[self.forget_metric].value,
                 "degenerate_rate": scores["degenerate_rate"].value, "prompts": len(outputs)}, rows)


def forget_metric_of(eval_set) -> str:
    found = [m for m in eval_set.metrics if m in FORGET_RATES]
    if not found:
        raise BenchError(f"the task's unlearned set has none of the forget rates an attack reads ({', '.join(FORGET_RATES)})")
    return found[0]


def recovery(after: float | None, unlearned: float | None, original: float | None) -> float | None:
    """(after − unlearned) / (original − unlearned): 0 = nothing came back, 1 = all of it.
    None where unlearning removed nothing to recover (original ≤ unlearned)."""
    if after is None or unlearned is None or original is None or original <= unlearned:
        return None
    return (after - unlearned) / (original - unlearned)
