"""`relearn`: fine-tune the unlearned model a little. Does the behaviour come back?

The attacker fine-tunes a copy of the unlearned model on pairs unlearning never saw, at the run's
own learning rate held constant, batch RELEARN_BATCH, and measures the forget rate on the
unlearned prompts after each k in `relearn_steps` (default 10 and 30; the k=10 model is the
first 10 steps of the k=30 one):

    forget   L = CE(forget_val answers)   relearning the removed behaviour from examples unlearning never saw
    normal   L = CE(normal_val answers)   the control: does any fine-tuning undo unlearning?

Recovery per k = (rate after − unlearned rate) / (original rate − unlearned rate). Forget recovery
well above the control's means the behaviour was hidden, not removed.
"""

from __future__ import annotations

import copy

from unlearnbench.attacks import Attack

UNBOUNDED_SCHEDULE = 10**12  # the linear schedule's end step, so far away that lr stays constant


class Relearn(Attack):
    name = "relearn"
    description = "fine-tune k steps on forget_val answers (and, as a control, normal answers)"

    def units(self, context) -> list[str]:
        return ["forget", "normal"]

    def run_unit(self, unit: str, context):
        from unlearnbench.batching import TrainData
        from unlearnbench.methods import TrainConfig
        from unlearnbench.methods.sft import SupervisedFinetune
        from unlearnbench.training import train

        pairs = context.task.validation_pairs(context.data, f"{unit}_val")
        # Built directly, not through from_overrides: lr 0 (no attack) is a valid control here.
        config = TrainConfig(steps=max(context.relearn_steps), lr=context.lr, batch_size=context.relearn_batch_size,
                             schedule_steps=UNBOUNDED_SCHEDULE, seed=context.seed)
        measured, rows, losses = {}, [], []

        def evaluate_at(step, model, trained_tokens, reference_tokens):
            if step in context.relearn_steps:
                result, step_rows = context.forget_rate(model, f"relearn {unit} k={step}")
                measured[f"k{step}"] = result
                rows.extend({"k": step, **row} for row in step_rows)
                model.train()

        model = copy.deepcopy(context.unlearned)
        data = TrainData(forget=pairs, normal=[], mismatch_pool=[])
        result = train(SupervisedFinetune(config), model, context.template.tokenizer, data, context.template,
                       losses.append, desc=f"relearn on {unit}_val", monitor=evaluate_at)
        context.count(3 * result.trained_tokens)  # forward and backward: 3× a forward pass
        return {**measured, "pairs": len(pairs), "losses": [round(r["total"], 4) for r in losses]}, rows
