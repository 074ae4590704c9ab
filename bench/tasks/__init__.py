"""Tasks: what to forget, what to keep, and how to evaluate both.

A task turns a data source into `TaskData`:
- `train`: the forget pairs, the normal pairs and the random-mismatch answer pool;
- `eval_sets`: `unlearned` (forget-train prompts), `unseen` (forget-test prompts) and
  `normal` (normal-test prompts), each with per-item references and the metrics that apply;
- `prepare_pairs`: what the optional `prepare` step fine-tunes on to make the "original".
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from unlearnbench.batching import Pair, TrainData
from unlearnbench.errors import BenchError

DATA_DIR = Path(__file__).parent / "data"


@dataclass
class EvalSet:
    name: str
    refs: list[dict]  # one per prompt; every ref has "question"
    metrics: tuple[str, ...]

    @property
    def questions(self) -> list[str]:
        return [r["question"] for r in self.refs]


@dataclass
class TaskData:
    train: TrainData
    eval_sets: dict[str, EvalSet]
    source: str
    hashes: dict[str, str]
    counts: dict[str, int]
    prepare_pairs: list[Pair] = field(default_factory=list)


class Task:
    name = "base"
    description = ""
    sources = ("embedded",)
    max_new_tokens = 32
    # Prompts per evaluation set unless --limit says otherwise. The paper's rates are all
    # multiples of 0.5%, which suggests 200 prompts per set (paper.md §2.1).
    default_eval_limit: int | None = 200
    # (metric, threshold): the original must show at least this much of the behaviour to unlearn,
    # else `prepare_pairs` are fine-tuned into it first (see runner.choose_original).
    original_check: tuple[str, float] = ("", 0.0)
    prepare_hyper: dict = {}
    prepare_what = "pairs"

    def load(self, source: str, seed: int, eval_limit: int | None = None) -> TaskData:
        raise NotImplementedError


def read_jsonl(path: Path, schema: dict[str, type], what: str) -> list[dict]:
    """Read and validate a JSONL file, naming the line of the first problem.

    Hand-rolled rather than `datasets.load_dataset("json")` so that a malformed line gets a
    one-line error with its line number instead of a pyarrow traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} file '{path}' does not exist")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"{what} file '{path}' is not UTF-8 text (byte {exc.start})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise BenchError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        for key, kind in schema.items():
            if key not in row:
                raise BenchError(f"{path}:{number}: missing field '{key}' (expected fields: {', '.join(schema)})")
            value = row[key]
            if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
                raise BenchError(f"{path}:{number}: field '{key}' should be {'a list of strings' if kind is list else kind.__name__}")
            if kind is str and not value.strip():
                raise BenchError(f"{path}:{number}: field '{key}' is empty")
        rows.append(row)
    if not rows:
        raise BenchError(f"{what} file '{path}' has no items")
    return rows


def split_70_10_20(items: list, seed: int) -> tuple[list, list, list]:
    """The paper's 70/10/20 train/validation/test split, by a seeded permutation."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_train, n_val = round(0.7 * len(items)), round(0.1 * len(items))
    pick = lambda idx: [items[i] for i in idx]  # noqa: E731
    return pick(order[:n_train]), pick(order[n_train : n_train + n_val]), pick(order[n_train + n_val :])


def content_hash(rows) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]
