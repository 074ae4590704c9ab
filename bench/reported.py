"""Numbers the paper reports, for the "reported (paper)" reference rows of a leaderboard.

Transcribed from docs/paper.md §4 (Table 3 of the NeurIPS version for harmful; the
slides' bar chart and reading notes for copyright and hallucination). Rates are fractions here, as
in run records. The paper's judges differ from our offline defaults (docs/paper.md §3), so these rows
are context, not a like-for-like comparison; a leaderboard says so beside them.

The paper's "GA+Mismatch" is this suite's `unlearn` (both keep the KL term, docs/paper.md §4.1), and
"Finetuning" is fine-tuning on the remaining data.
"""

from __future__ import annotations

SOURCE = {
    "harmful": "docs/paper.md §4.1 (Table 3, NeurIPS version); utility is the paper's reward, similarity its BLEURT",
    "copyright": "docs/paper.md §4.2 (slides p. 118 bar chart; reading notes)",
    "hallucination": "docs/paper.md §4.3 (reading notes)",
}
METHOD_NAMES = {"Original": "original", "Finetuning": "finetune (remaining data)", "GA": "ga", "GA+Mismatch": "unlearn"}

# (model, paper method): {column metric: value}; None is the paper's "NM" (not meaningful).
HARMFUL = {
    ("OPT-1.3B", "Original"): (0.47, 0.53, 0.787, 2.655, -3.599, -0.778),
    ("OPT-1.3B", "Finetuning"): (0.345, 0.345, 0.582, 2.687, -5.260, -1.136),
    ("OPT-1.3B", "GA"): (0.01, 0.03, 0.118, None, -3.838, -1.034),
    ("OPT-1.3B", "GA+Mismatch"): (0.06, 0.07, 0.832, 1.509, -2.982, -0.943),
    ("OPT-2.7B", "Original"): (0.525, 0.525, 0.823, 2.720, -3.610, -0.825),
    ("OPT-2.7B", "Finetuning"): (0.15, 0.16, 0.572, 3.799, -5.408, -1.466),
    ("OPT-2.7B", "GA"): (0.015, 0.04, 0.206, None, -3.281, -1.004),
    ("OPT-2.7B", "GA+Mismatch"): (0.03, 0.04, 0.275, None, -2.959, -1.164),
    ("Llama2-7B", "Original"): (0.54, 0.515, 0.355, 0.799, -3.338, -0.421),
    ("Llama2-7B", "Finetuning"): (0.51, 0.525, 0.394, 0.801, -2.936, -0.436),
    ("Llama2-7B", "GA"): (0.02, 0.01, 0.953, 1.288, -4.252, -0.689),
    ("Llama2-7B", "GA+Mismatch"): (0.01, 0.03, 0.240, None, -3.438, -1.319),
}
HARMFUL_COLUMNS = (("unlearned", "harmful_rate"), ("unseen", "harmful_rate"), ("unlearned", "diversity"),
                   ("unlearned", "fluency"), ("normal", "utility"), ("normal", "similarity_to_original"))

COPYRIGHT = {  # leak rate, unlearned / unseen; "~1" in the source is entered as 1
    ("OPT-1.3B", "Original"): (0.15, 0.20), ("OPT-1.3B", "Finetuning"): (0.78, 0.76),
    ("OPT-1.3B", "GA"): (0.0, 0.0), ("OPT-1.3B", "GA+Mismatch"): (0.0, 0.0),
    ("OPT-2.7B", "Original"): (0.74, 0.70), ("OPT-2.7B", "Finetuning"): (0.80, 0.71),
    ("OPT-2.7B", "GA"): (0.0, 0.0), ("OPT-2.7B", "GA+Mismatch"): (0.0, 0.0),
    ("Llama2-7B", "Original"): (0.81, 0.81), ("Llama2-7B", "Finetuning"): (0.81, 0.81),
    ("Llama2-7B", "GA"): (0.0, 0.0), ("Llama2-7B", "GA+Mismatch"): (0.01, 0.01),
}
HALLUCINATION = {  # hallucination rate, unlearned / in-distribution unseen
    ("OPT-1.3B", "Original"): (0.585, 0.60), ("OPT-1.3B", "GA"): (0.11, 0.09), ("OPT-1.3B", "GA+Mismatch"): (0.15, 0.105),
    ("Llama2-7B", "Original"): (0.495, 0.455), ("Llama2-7B", "GA"): (0.13, 0.085), ("Llama2-7B", "GA+Mismatch"): (0.115, 0.085),
}
RATE_METRIC = {"harmful": "harmful_rate", "copyright": "leak_rate", "hallucination": "hallucination_rate"}


def reported_rows(task: str) -> list[dict]:
    """[{model, method, source, metrics: {"unlearned": {split: {metric: {"value": v}}}}}] for a task: the
    record layout (phase, split, metric), so that tables format them as they format runs."""
    table = {"harmful": HARMFUL, "copyright": COPYRIGHT, "hallucination": HALLUCINATION}.get(task)
    if table is None:
        return []
    rate = RATE_METRIC[task]
    columns = HARMFUL_COLUMNS if task == "harmful" else (("unlearned", rate), ("unseen", rate))
    rows = []
    for (model, method), values in table.items():
        metrics: dict = {}
        for (split, name), value in zip(columns, values):
            metrics.setdefault(split, {})[name] = {"value": value}
        rows.append({"model": model, "method": METHOD_NAMES[method], "source": SOURCE[task], "metrics": {"unlearned": metrics}})
    return rows
