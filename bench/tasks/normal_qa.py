"""The normal (retain) set shared by the QA tasks: TruthfulQA-style questions and answers.

Same Q&A format as the forget set, as the paper advises (docs/paper.md §1.1, lesson 3).
"""

from __future__ import annotations

from unlearnbench.batching import Pair
from unlearnbench.errors import BenchError
from unlearnbench.tasks import DATA_DIR, read_jsonl, split_70_10_20
from unlearnbench.tasks.hub import TRUTHFULQA_GENERATION, load_rows

SCHEMA = {"question": str, "best_answer": str, "correct_answers": list, "incorrect_answers": list}


def load_normal_rows(source: str) -> list[dict]:
    if source == "hub":
        return load_rows(TRUTHFULQA_GENERATION, tuple(SCHEMA))
    return read_jsonl(DATA_DIR / "normal_qa.jsonl", SCHEMA, "embedded normal QA")


def split_normal(rows: list[dict], seed: int):
    """-> (train pairs, mismatch pool, test refs, validation refs). Only the train split feeds training."""
    train, val, test = split_70_10_20(rows, seed)
    if not train or not test:
        raise BenchError(f"the normal set has {len(rows)} items: too few to split 70/10/20")
    pairs = [Pair(r["question"], r["best_answer"]) for r in train]
    # The random-mismatch pool: correct answers of the normal *train* split. The official code
    # also drew from incorrect answers and from val/test rows (docs/paper.md §1.2); we keep test
    # references out of training.
    pool = sorted({a for r in train for a in [r["best_answer"], *r["correct_answers"]] if a.strip()})
    as_refs = lambda items: [{"question": r["question"], "correct_answers": [r["best_answer"], *r["correct_answers"]]}  # noqa: E731
                             for r in items]
    return pairs, pool, as_refs(test), as_refs(val)
