"""The judge-validation set: real outputs labelled by reading, and each judge's agreement with them.

    unlearnbench validate-judges     → docs/judges.md and bench/tasks/data/judge_agreement.json

The set (bench/tasks/data/judge_validation.jsonl) holds outputs of the committed leaderboard
runs, drawn by scripts/sample_judge_set.py and labelled by reading against
docs/labelling-guide.md. Its `development` twin (judge_development.jsonl) has disjoint prompts;
the embedded harm judge trains on it and the degeneracy thresholds were set on it. Each judge
is scored here through the very metric that uses it in a run, so the figures describe what the
leaderboards report:

    accuracy = (1/n) Σ [judged_i = label_i]
    κ        = (p_o − p_e) / (1 − p_e)    Cohen's kappa: p_o the accuracy, p_e the agreement
                                           expected by chance from the two marginal rates
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearnbench.labelled_set import AGREEMENT, DEVELOPMENT, FORGET_METRIC, LABELS, VALIDATION, load_items


def agreement(labels: list[int], judged: list[int]) -> dict:
    """Accuracy, Cohen's κ and the confusion matrix [[tn, fp], [fn, tp]] (rows: the label)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    if not labels:
        return {"n": 0}
    # κ is undefined when the labels hold one class (a slice of degenerate outputs only, say).
    kappa = float(cohen_kappa_score(labels, judged, labels=[0, 1])) if len(set(labels)) > 1 else None
    return {"n": len(labels), "accuracy": sum(a == b for a, b in zip(labels, judged)) / len(labels),
            "kappa": kappa, "confusion": confusion_matrix(labels, judged, labels=[0, 1]).tolist()}


def judged_items(items: list[dict], judges: dict, useful_threshold: float) -> list[dict]:
    """Every item with the metrics' per-item decisions, as {metric: 0/1} under "judged"."""
    from unlearnbench.evaluation import score_outputs

    groups: dict[tuple[str, bool], list[dict]] = {}
    for item in items:
        groups.setdefault((item["task"], item["split"] == "normal"), []).append(item)
    for (task, normal), group in sorted(groups.items()):
        names = ["utility", "degenerate_rate"] if normal else [FORGET_METRIC[task], "degenerate_rate", "clean_rate"]
        refs = [{"question": i["question"], **i["references"]} for i in group]
        scores = score_outputs(names, [i["output"] for i in group], refs, judges)
        for n, item in enumerate(group):
            item["judge_names"] = {name: scores[name].judge_name for name in names}
            item["judged"] = {name: int(scores[name].per_item[n] > 0.5) for name in names if name != "utility"}
            if normal:
                item["utility_score"] = scores["utility"].per_item[n]
                item["judged"]["utility"] = int(item["utility_score"] >= useful_threshold)
    return items


def label_of(item: dict, metric: str) -> int:
    labels = item["labels"]
    if metric == "degenerate_rate":
        return labels["degenerate"]
    if metric == "clean_rate":
        return 1 - max(labels["behaviour"], labels["degenerate"])
    return labels["behaviour"]


SLICES = {
    "all": lambda i: True,
    "coherent outputs": lambda i: i["labels"]["coherent"] == 1,
    "degenerate outputs": lambda i: i["labels"]["degenerate"] == 1,
    "originals": lambda i: i["provenance"]["producer"] == "original",
    "unlearned, PPO and SFT": lambda i: i["provenance"]["producer"] != "original",
}


def agreement_table(items: list[dict]) -> dict:
    """{metric: {"judge": name, "slices": {slice: agreement}}} over the items each metric judges."""
    table = {}
    metrics = sorted({m for i in items for m in i["judged"]})
    for metric in metrics:
        judged = [i for i in items if metric in i["judged"]]
        table[metric] = {"judge": judged[0]["judge_names"][metric], "slices": {
            name: agreement([label_of(i, metric) for i in judged if keep(i)],
                            [i["judged"][metric] for i in judged if keep(i)]) for name, keep in SLICES.items()}}
    return table


def best_threshold(items: list[dict]) -> float:
    """The utility score that best separates useful from not useful answers on these items, by
    balanced accuracy (few answers are useful: plain accuracy would pick "none is")."""
    scored = sorted((i["utility_score"], i["labels"]["behaviour"]) for i in items if "utility_score" in i)
    positives = sum(label for _, label in scored)
    negatives = len(scored) - positives
    best, best_balanced = 0.5, -1.0
    for threshold, _ in scored:
        hits = sum(s >= threshold and label for s, label in scored)
        rejections = sum(s < threshold and not label for s, label in scored)
        balanced = (hits / max(positives, 1) + rejections / max(negatives, 1)) / 2
        if balanced > best_balanced:
            best, best_balanced = threshold, balanced
    return round(best, 4)


def utility_auc(items: list[dict]) -> float | None:
    """ROC AUC of the utility score against the useful label: threshold-free."""
    from sklearn.metrics import roc_auc_score

    scored = [(i["utility_score"], i["labels"]["behaviour"]) for i in items if "utility_score" in i]
    labels = {label for _, label in scored}
    return float(roc_auc_score([l for _, l in scored], [s for s, _ in scored])) if len(labels) == 2 else None


def reader_agreement(items: list[dict]) -> dict:
    """How often two readers agreed on the items both labelled, per label."""
    both = [i for i in items if "second_reading" in i]
    return {name: agreement([i["second_reading"][name] for i in both], [i["labels"][name] for i in both]) for name in LABELS}


def validate(output: Path = Path("docs/judges.md")) -> dict:
    from unlearnbench.metrics.judges import harm_judge, similarity_judge, utility_judge
    from unlearnbench.progress import say

    similarity = similarity_judge()
    # The run defaults (bench/config.py): the judges every committed leaderboard row used.
    judges = {"similarity": similarity, "harm": harm_judge("embedded", similarity),
              "utility": utility_judge("similarity", similarity)}
    development = judged_items(load_items(DEVELOPMENT), judges, useful_threshold=0.0)
    threshold = best_threshold(development)
    validation = judged_items(load_items(VALIDATION), judges, useful_threshold=threshold)
    table = agreement_table(validation)
    result = {"set": {"validation_items": len(validation), "development_items": len(development),
                      "useful_threshold": threshold, "utility_auc": utility_auc(validation),
                      "readers": reader_agreement(validation + development)},
              "judges": table}
    from unlearnbench.judge_report import render

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(result, validation))
    AGREEMENT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    say(f"wrote {output} and {AGREEMENT.name}")
    return result
