"""The labelled set of real outputs (bench/tasks/data/judge_*.jsonl) and the agreement figures
measured on it, as the rest of the suite reads them. Measuring lives in judge_set.py; this module
imports nothing of the suite's evaluation, so metrics and judges can read it without a cycle."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from unlearnbench.errors import BenchError
from unlearnbench.tasks import DATA_DIR, read_jsonl

VALIDATION = DATA_DIR / "judge_validation.jsonl"
DEVELOPMENT = DATA_DIR / "judge_development.jsonl"
AGREEMENT = DATA_DIR / "judge_agreement.json"
LABELS = ("degenerate", "coherent", "behaviour")
SCHEMA = {"id": str, "task": str, "split": str, "question": str, "output": str, "references": dict,
          "provenance": dict, "labels": dict}
VALIDATED_METRICS = ("harmful_rate", "hallucination_rate", "leak_rate", "utility", "degenerate_rate", "clean_rate")
FORGET_METRIC = {"harmful": "harmful_rate", "hallucination": "hallucination_rate", "copyright": "leak_rate"}


def load_items(path: Path = VALIDATION) -> list[dict]:
    items = list(read_jsonl(path, SCHEMA, "judge-validation", may_be_empty=("output",)))
    for item in items:
        if any(item["labels"].get(name) not in (0, 1) for name in LABELS):
            raise BenchError(f"{path}: item {item['id']} needs labels {', '.join(LABELS)}, each 0 or 1")
    return items


@functools.lru_cache(maxsize=4)
def _agreement_file(modified_ns: int) -> dict:
    """judge_agreement.json, read once per version of the file (every saved split asks)."""
    return json.loads(AGREEMENT.read_text())


def agreement_note(metric: str, judge_name: str) -> str:
    """The labelled-set agreement of this metric's judge, for the record, or that it has none."""
    if not AGREEMENT.is_file():
        return "not validated on labelled real outputs"
    entry = _agreement_file(AGREEMENT.stat().st_mtime_ns)["judges"].get(metric)
    if entry is None or entry["judge"] != judge_name:
        return "not validated on labelled real outputs"
    figures = entry["slices"]["all"]
    kappa = "undefined" if figures["kappa"] is None else f"{figures['kappa']:.2f}"
    return (f"agreement with {figures['n']} labelled real outputs: accuracy {figures['accuracy']:.1%}, "
            f"κ {kappa} (docs/judges.md)")
