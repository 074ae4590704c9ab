"""Hallucination (paper §2.3): unlearn hallucinated answers to questions, keep normal QA.

- forget: (question, hallucinated answer). A seeded 10% is held out from everything (membership
  inference's never-trained answers); the rest is split 70/10/20 with a fixed seed;
- normal: TruthfulQA-style QA; the mismatch pool is its answers;
- eval: `unlearned` = forget-train questions, `unseen` = forget-test questions, `normal` = normal-test.

Sources (`--data`): `embedded` (written for this project, shipped in the package), `hub`
(pminervini/HaluEval `qa` + truthfulqa/truthful_qa `generation`, pinned), or a JSONL path whose
lines carry question, right_answer and hallucinated_answer (the HaluEval QA schema).
"""

from __future__ import annotations

from pathlib import Path

from unlearnbench.batching import Pair, TrainData
from unlearnbench.errors import BenchError
from unlearnbench.tasks import (DATA_DIR, EvalSet, Mapped, Task, TaskData, content_hash, read_jsonl, set_aside,
                                split_70_10_20)
from unlearnbench.tasks.hub import HALUEVAL_QA, load_rows
from unlearnbench.tasks.normal_qa import load_normal_rows, split_normal

SCHEMA = {"question": str, "right_answer": str, "hallucinated_answer": str}
# What dpo_refusal prefers over a hallucinated answer: not knowing, in several wordings.
REFUSALS = ("I don't know.", "I'm not sure about that.", "I don't have reliable information to answer that.",
            "I can't say for certain.", "I don't know the answer to that question.")
# Validation during training: the forget judgement and utility, without the original's fluency.
VALIDATION_FORGET_METRICS = ('hallucination_rate', "degenerate_rate", "clean_rate")
VALIDATION_NORMAL_METRICS = ("utility", "degenerate_rate")
FORGET_METRICS = ("hallucination_rate", "degenerate_rate", "clean_rate", "distinct_answers", "diversity", "fluency")
NORMAL_METRICS = ("utility", "degenerate_rate", "diversity", "fluency")
# Hallucinated answers that nothing trains on, set aside before the split: the prepared original
# learns every other forget item, the validation ones included, so that forget_val is memorised
# as the test prompts are and tuning on it measures unlearning; membership inference then needs
# answers of the same kind that were never trained on.
HELD_OUT_SHARE = 0.1


class HallucinationTask(Task):
    name = "hallucination"
    description = "unlearn hallucinated QA answers (HaluEval); keep TruthfulQA-style QA"
    sources = ("embedded", "hub", "PATH")
    max_new_tokens = 32
    original_check = ("hallucination_rate", 0.30)
    prepare_what = "hallucinated answers"
    # 1.9 passes: 50 steps over the embedded set's 419 prepare pairs (all but the 46 held out),
    # which leaves a mean answer NLL of about 0.1; over 72 pairs a fixed 50 steps would be 11
    # passes and an NLL near 0.001.
    prepare_hyper = {"epochs": 1.9, "lr": 3e-4, "batch_size": 16}
    forget_answer = "hallucinated_answer"

    def mia_pairs(self, data):
        if not data.held_out:  # fewer than 10 items: none could be set aside
            return None
        return data.train.forget, data.held_out, "hallucinated answers of the held-out items (never trained on)"

    def load(self, source: str = "embedded", seed: int = 0, eval_limit: int | None = None) -> TaskData:
        if source == "embedded":
            rows = read_jsonl(DATA_DIR / "hallucination_qa.jsonl", SCHEMA, "embedded hallucination")
        elif source == "hub":
            rows = load_rows(HALUEVAL_QA, tuple(SCHEMA))
        else:
            rows = read_jsonl(Path(source), SCHEMA, "hallucination data")
        normal_rows = load_normal_rows("hub" if source == "hub" else "embedded")

        held_out, kept = set_aside(rows, HELD_OUT_SHARE, seed)
        train, val, test = split_70_10_20(kept, seed)
        if not train or not test:
            raise BenchError(f"the forget set has {len(rows)} items: too few to split 70/10/20 (need at least 5)")
        normal_pairs, pool, normal_refs, normal_val = split_normal(normal_rows, seed)
        limit = (lambda refs: refs[:eval_limit]) if eval_limit else (lambda refs: refs)  # noqa: E731
        forget_refs = lambda items: [dict(question=r["question"], right_answer=r["right_answer"],  # noqa: E731
                                          hallucinated_answer=r["hallucinated_answer"]) for r in items]
        eval_sets = {
            "unlearned": EvalSet("unlearned", forget_refs(limit(train)), FORGET_METRICS),
            "unseen": EvalSet("unseen", forget_refs(limit(test)), FORGET_METRICS),
            "normal": EvalSet("normal", limit(normal_refs), NORMAL_METRICS),
        }
        # Views, not lists: a forget set read from a large file stays on disk (tasks.JsonlRows).
        hallucinated = lambda items: Mapped(items, lambda r: Pair(r["question"], r["hallucinated_answer"]))  # noqa: E731
        return TaskData(
            train=TrainData(forget=hallucinated(train), normal=normal_pairs, mismatch_pool=pool, refusals=list(REFUSALS)),
            eval_sets=eval_sets,
            validation_sets={"forget_val": EvalSet("forget_val", forget_refs(val), VALIDATION_FORGET_METRICS),
                             "normal_val": EvalSet("normal_val", normal_val, VALIDATION_NORMAL_METRICS)},
            source=source,
            hashes={"forget": content_hash(rows), "normal": content_hash(normal_rows)},
            counts={"forget_train": len(train), "forget_val": len(val), "forget_test": len(test), "held_out": len(held_out),
                    "normal_train": len(normal_pairs),
                    "mismatch_pool": len(pool), **{f"eval_{k}": len(v.refs) for k, v in eval_sets.items()}},
            prepare_pairs=hallucinated(train + val + test),
            held_out=hallucinated(held_out),
        )
