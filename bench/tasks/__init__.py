"""Tasks: what to forget, what to keep, and how to evaluate both.

A task turns a data source into `TaskData`:
- `train`: the forget pairs, the normal pairs and the random-mismatch answer pool;
- `eval_sets`: `unlearned` (forget-train prompts), `unseen` (forget-test prompts) and
  `normal` (normal-test prompts), each with per-item references and the metrics that apply;
- `prepare_pairs`: what the optional `prepare` step fine-tunes on to make the "original";
- `held_out`: forget pairs that nothing trains on or evaluates, where a task sets some aside
  (membership inference compares the forget answers with them).
"""

from __future__ import annotations

import hashlib
import json
import random
from array import array
from collections.abc import Sequence
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
    # The validation splits (the paper's 10%), for choosing during training: `forget_val` and
    # `normal_val`. Never a prompt of `eval_sets`, which report the result.
    validation_sets: dict[str, EvalSet] = field(default_factory=dict)
    preferences: list[tuple[str, str, str]] = field(default_factory=list)  # (prompt, chosen, rejected)
    held_out: Sequence[Pair] = field(default_factory=list)


class Task:
    name = "base"
    description = ""
    sources = ("embedded",)
    max_new_tokens = 32
    # Prompts per evaluation set unless --limit says otherwise. The paper's rates are all
    # multiples of 0.5%, which suggests 200 prompts per set (docs/paper.md §2.1).
    default_eval_limit: int | None = 200
    # (metric, threshold): the original must show at least this much of the behaviour to unlearn,
    # else `prepare_pairs` are fine-tuned into it first (see runner.choose_original).
    original_check: tuple[str, float] = ("", 0.0)
    # The fine-tune that prepares an original: lr, batch_size and either `epochs` (passes over the
    # prepare pairs, so that a larger or smaller --data file is memorised as deeply) or fixed `steps`.
    prepare_hyper: dict = {}
    prepare_what = "pairs"
    # The prompt template the task needs, or None for the run's (--template auto: the model's
    # chat template where it has one). Text-continuation tasks need "plain".
    template: str | None = None
    # The field of a forget ref that holds the answer to forget (relearning fine-tunes on it).
    forget_answer = "answer"

    def load(self, source: str, seed: int, eval_limit: int | None = None) -> TaskData:
        raise NotImplementedError

    def validation_pairs(self, data: TaskData, name: str) -> list[Pair]:
        """(prompt, answer) pairs of a validation set: `forget_val` with the answer to forget,
        `normal_val` with its first correct answer. Unlearning never trains on these."""
        refs = data.validation_sets[name].refs
        if name == "forget_val":
            return [Pair(r["question"], r[self.forget_answer]) for r in refs]
        return [Pair(r["question"], r["correct_answers"][0]) for r in refs]

    def mia_pairs(self, data: TaskData) -> tuple[Sequence[Pair], Sequence[Pair], str] | None:
        """(members, non-members, what the non-members are) for membership inference, or None
        where the original never trained on the forget answers (no memorisation to detect) or the
        data is too small to hold never-trained answers out."""
        return None


def data_changed(recorded: dict, data: TaskData) -> bool:
    """Whether a run's recorded data differs from what the task loads today: the file's content
    (hashes) or how it is split (counts), either of which changes what the run's prompts mean."""
    return recorded.get("hashes") != data.hashes or recorded.get("counts", data.counts) != data.counts


# Files above this size stay on disk and are read item by item (JsonlRows): a forget set may
# not fit in memory. Smaller ones are held as a list.
IN_MEMORY_BYTES = 64 * 2**20


class JsonlRows(Sequence):
    """The rows of a validated JSONL file, read from disk when indexed.

    Hand-rolled rather than an Arrow-backed `datasets.Dataset`: the validation pass already
    visits every line and yields the byte offsets for free, and Arrow's schema inference fails
    on files whose extra fields vary in type, which our schema allows.
    """

    def __init__(self, path: Path, offsets: array):
        self.path, self.offsets = Path(path), offsets
        self._handle = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Subset(self, range(len(self))[index])
        if self._handle is None:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for the task's lifetime
        self._handle.seek(self.offsets[index])
        return json.loads(self._handle.readline())


class Subset(Sequence):
    """A view of some rows of a sequence, by index: splits without copying the rows."""

    def __init__(self, base: Sequence, indices):
        if isinstance(base, Subset):  # a split of a split: index the rows themselves
            base, indices = base.base, [base.indices[i] for i in indices]
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Subset(self.base, self.indices[index])
        return self.base[self.indices[index]]

    def __add__(self, other: "Subset") -> "Subset":
        if not isinstance(other, Subset) or other.base is not self.base:
            return NotImplemented
        return Subset(self.base, list(self.indices) + list(other.indices))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


class Mapped(Sequence):
    """`fn` applied to each item of a sequence on access (pairs from rows, without a copy)."""

    def __init__(self, base: Sequence, fn):
        self.base, self.fn = base, fn

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.fn(row) for row in self.base[index]]
        return self.fn(self.base[index])


def read_jsonl(path: Path, schema: dict[str, type], what: str, may_be_empty: tuple[str, ...] = ()) -> Sequence[dict]:
    """Read and validate a JSONL file, naming the line of the first problem.

    One streaming pass, so memory does not grow with the file; files above IN_MEMORY_BYTES come
    back as a JsonlRows view. Hand-rolled rather than `datasets.load_dataset("json")` so that a
    malformed line gets a one-line error with its line number instead of a pyarrow traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} file '{path}' does not exist")
    lazy = path.stat().st_size > IN_MEMORY_BYTES
    rows, offsets = [], array("Q")
    with open(path, "rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, 1):
            start, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BenchError(f"{path}:{number}: not UTF-8 text (byte {exc.start} of the line)") from exc
            if not line.strip():
                continue
            row = _validated(line, schema, f"{path}:{number}", may_be_empty)
            if lazy:
                offsets.append(start)
            else:
                rows.append(row)
    if not rows and not offsets:
        raise BenchError(f"{what} file '{path}' has no items")
    return JsonlRows(path, offsets) if lazy else rows


def _validated(line: str, schema: dict[str, type], where: str, may_be_empty: tuple[str, ...] = ()) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{where}: malformed JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise BenchError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key, kind in schema.items():
        if key not in row:
            raise BenchError(f"{where}: missing field '{key}' (expected fields: {', '.join(schema)})")
        value = row[key]
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise BenchError(f"{where}: field '{key}' should be {'a list of strings' if kind is list else kind.__name__}")
        if kind is str and not value.strip() and key not in may_be_empty:
            raise BenchError(f"{where}: field '{key}' is empty")
    return row


def set_aside(items: Sequence, share: float, seed: int) -> tuple[Subset, Subset]:
    """(a seeded `share` of the items, the rest), views in a seeded order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_aside = int(len(items) * share)
    return Subset(items, order[:n_aside]), Subset(items, order[n_aside:])


def split_70_10_20(items: Sequence, seed: int) -> tuple[Subset, Subset, Subset]:
    """The paper's 70/10/20 train/validation/test split, by a seeded permutation (views, not copies)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_train, n_val = round(0.7 * len(items)), round(0.1 * len(items))
    return (Subset(items, order[:n_train]), Subset(items, order[n_train : n_train + n_val]),
            Subset(items, order[n_train + n_val :]))


def content_hash(rows: Sequence) -> str:
    """sha256 of the rows as one JSON list (sorted keys), computed row by row."""
    digest = hashlib.sha256(b"[")
    for i, row in enumerate(rows):
        digest.update(((", " if i else "") + json.dumps(row, sort_keys=True, ensure_ascii=False)).encode())
    digest.update(b"]")
    return "sha256:" + digest.hexdigest()[:16]
