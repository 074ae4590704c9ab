"""Named hyper-parameter sets.

`default`: tuned for the embedded 135M model on CPU (the methods' dataclass defaults).
`paper`: the paper's settings for its models and tasks (docs/paper.md §1.3), per model and task.
`faithful-code`: `paper` plus `faithful="code"`: the official code's exact loss, sampling and
    schedule semantics (docs/paper.md §1.2, §1.4, §1.5; methods/terms.py `official_*`).

`resolve_preset(name, model, task, method)` gives the settings for one run.
"""

from __future__ import annotations

from unlearnbench.errors import BenchError
from unlearnbench.registry import unknown_name_message

PAPER_MODELS = ("facebook/opt-1.3b", "facebook/opt-2.7b", "meta-llama/Llama-2-7b-hf")
PAPER_TASKS = ("harmful", "copyright", "hallucination")

# From the paper or the official code (docs/paper.md §1.3): batch 2 for both sets, ~1000 steps,
# AdamW weight decay 0.01, no gradient clipping (the official loop never clips), fp32 (no dtype
# argument; fp16 diverges, issue #2), K = 5 random answers, the "### Question/### Answer" template.
PAPER_SHARED = {
    "batch_size": 2,
    "steps": 1000,
    "weight_decay": 0.01,
    "max_grad_norm": 0.0,
    "precision": "fp32",
}
PAPER_TEMPLATE = "paper"

# ---- assumed, not from paper -----------------------------------------------------------------
# The paper gives lr only as "between 2e-6 and 2e-4 depending on model and task" (secondary
# reading notes, docs/paper.md §1.3), never per model and task: every entry uses the official code's
# default 2e-6. The loss weights are stated for two cells only (OPT-1.3B harmful: 0.5/1/1;
# Llama-2-7B hallucination: 2/1/1); every other cell uses the official code's defaults 0.5/1/1.
# K = 5 is the code default for every cell. The paper does not say whether Llama-2-7B was
# trained with LoRA; full fine-tuning is assumed here, as in the official code's default.
ASSUMED_LR = 2e-6
CODE_DEFAULT_WEIGHTS = {"forget_weight": 0.5, "mismatch_weight": 1.0, "normal_weight": 1.0, "mismatch_k": 5}
# ----------------------------------------------------------------------------------------------

# (model, task) -> loss weights the paper states for that cell, with where they come from.
STATED_WEIGHTS = {
    ("facebook/opt-1.3b", "harmful"): (
        {"forget_weight": 0.5, "mismatch_weight": 1.0, "normal_weight": 1.0},
        "ε1=0.5, ε2=1, ε3=1 for OPT-1.3B harmful (paper.md §1.3, secondary: reading notes)",
    ),
    ("meta-llama/Llama-2-7b-hf", "hallucination"): (
        {"forget_weight": 2.0, "mismatch_weight": 1.0, "normal_weight": 1.0},
        "ε1=2, ε2=1, ε3=1 for Llama-2-7B hallucination (paper.md §1.3, secondary: reading notes)",
    ),
}

CELL_NOTES = {
    ("facebook/opt-2.7b", "hallucination"): "the paper reports no OPT-2.7B hallucination results (paper.md §4.3)",
    ("meta-llama/Llama-2-7b-hf", None): (
        "full fp32 AdamW on Llama-2-7B plus the frozen reference needs about 140 GB; on one 80 GB GPU "
        "use --lora (the paper does not say which it used, paper.md §1.3)"
    ),
}

FAITHFUL_CODE_NOTES = [
    "faithful=code: the official code's losses, sampling and schedule (lr reaches 0 at step 1000); "
    "the official loop runs to step 1144, but its last 144 steps have lr 0 and change nothing (paper.md §1.4)",
    "the official code never truncates (paper.md §1.5 #9); max_length still applies here: raise it with "
    "--set max_length=N to keep long answers whole",
    "the random-answer pool and the forget/normal splits are the task's, not the official code's (paper.md §1.2 Data)",
]

PRESET_NAMES = ("default", "paper", "faithful-code")

# `default` per task (and method), over the methods' dataclass defaults, which were tuned on the
# hallucination task. Measured on the embedded model, 2 CPU cores, seed 0 (docs/tuning-embedded.md):
# - copyright: a memorised book barely moves at lr 3e-5 in 80 steps (leak rate 100% -> 94%);
#   lr 1e-4 takes it to 7.6% with normal utility -3%;
# - harmful, unlearn: with ε3 = 1 utility falls 12%; ε3 = 3 keeps it at -6.5% (harm -67%);
# - hallucination, unlearn: ε3 = 1 passed on seed 0 (-66%, utility -8%) but cost 22% of the
#   utility on seed 1; ε3 = 3 gives -57% / utility -4% on seed 0 and -71% / -9.4% on seed 1.
TASK_DEFAULTS = {
    ("copyright", None): {"lr": 1e-4},
    ("harmful", "unlearn"): {"normal_weight": 3.0},
    ("hallucination", "unlearn"): {"normal_weight": 3.0},
}


def _canonical_model(model: str) -> str | None:
    """The paper model a name refers to: its hub id, or a local folder or alias with the same last part."""
    wanted = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return next((m for m in PAPER_MODELS if m.rsplit("/", 1)[-1].lower() == wanted), None)


def _paper_cell(model: str, task: str) -> tuple[dict, list[str]]:
    hyper = {**PAPER_SHARED, "lr": ASSUMED_LR, **CODE_DEFAULT_WEIGHTS}
    notes = []
    canonical = _canonical_model(model)
    if canonical is None or task not in PAPER_TASKS:
        missing = f"model '{model}'" if canonical is None else f"task '{task}'"
        notes.append(f"no paper entry for {missing}: using the generic paper settings (lr {ASSUMED_LR:g}, "
                     "weights 0.5/1/1, the official code's defaults)")
        return hyper, notes
    if canonical != model:
        notes.append(f"model '{model}' taken as {canonical}")
    notes.append(f"lr {ASSUMED_LR:g} is the official code's default, assumed, not from paper "
                 "(the paper gives 2e-6 to 2e-4 depending on model and task)")
    stated = STATED_WEIGHTS.get((canonical, task))
    if stated:
        hyper.update(stated[0])
        notes.append(stated[1])
    else:
        notes.append(f"loss weights 0.5/1/1 for {canonical} {task} are the official code's defaults, assumed, not from paper")
    for key in ((canonical, task), (canonical, None)):
        if key in CELL_NOTES:
            notes.append(CELL_NOTES[key])
    return hyper, notes


def _method_fields(method: str) -> set[str]:
    from dataclasses import fields

    from unlearnbench import registry

    return {f.name for f in fields(registry.get("method", method).Config)}


def resolve_preset(name: str, model: str, task: str, method: str | None = None) -> dict:
    """{"hyper": {...}, "template": ..., "notes": [...]} for one run of preset `name`.

    `hyper` holds every setting of the preset, loss weights included. With `method`, it keeps
    only the hyper-parameters that method has, and notes the others (GA has no ε1, SFT has no
    `faithful`), so the result can go straight to `method.Config.from_overrides`.
    """
    if name not in PRESET_NAMES:
        raise BenchError(unknown_name_message("preset", name, sorted(PRESET_NAMES)))
    if name == "default":
        hyper = {**TASK_DEFAULTS.get((task, None), {}), **TASK_DEFAULTS.get((task, method), {})}
        template = "auto"
        notes = [f"task '{task}' default: {', '.join(f'{k}={v:g}' for k, v in hyper.items())} "
                 "(tuned on the embedded model, docs/tuning-embedded.md)"] if hyper else []
    else:
        hyper, notes = _paper_cell(model, task)
        template = PAPER_TEMPLATE
        if name == "faithful-code":
            hyper["faithful"] = "code"
            notes.extend(FAITHFUL_CODE_NOTES)
    if method is not None and hyper:
        known = _method_fields(method)
        dropped = sorted(set(hyper) - known)
        if dropped:
            hyper = {k: v for k, v in hyper.items() if k in known}
            notes.append(f"method '{method}' has no {', '.join(dropped)}: not set")
    return {"hyper": hyper, "template": template, "notes": notes}
