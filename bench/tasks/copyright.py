"""Copyrighted text (paper §2.2): make a model that memorised a book stop reproducing it.

As in the paper, the run first fine-tunes the model on the book until it leaks (the "prepare"
step, cached); that model is the original. Unlearning then works on passages of the book:

- items: every sentence beginning of the book gives one (prompt, continuation): the prompt is
  the sentence's first PROMPT_CHARS characters (cut back to a word boundary), the continuation
  the true next CONTINUATION_CHARS characters, compared with the greedy completion (leak BLEU);
- forget: the items, split 70/10/20 with a fixed seed; eval `unlearned` (train) and `unseen` (test);
- prepare: every item (the whole book);
- normal: other book-style text in the same prompt/continuation format (the paper's BookCorpus),
  eval `normal` on its test passages; the mismatch pool is its continuations.

Sources: the book is `--book PATH` (a UTF-8 text file; `--data PATH` is the same) or the
embedded original story (about 5,000 words, written for this project); the normal text is
embedded passages, or BookCorpus with `--data hub`.
"""

from __future__ import annotations

import re
from pathlib import Path

from unlearnbench.batching import Pair, TrainData
from unlearnbench.errors import BenchError
from unlearnbench.tasks import DATA_DIR, EvalSet, Mapped, Task, TaskData, content_hash, read_jsonl, split_70_10_20

PROMPT_CHARS = 80
CONTINUATION_CHARS = 200
MIN_CONTINUATION_CHARS = 150  # sentences this close to the end of the text give no item
MIN_ITEMS = 20
# What dpo_refusal prefers over reproducing the book: declining, in several wordings.
REFUSALS = ("I can't reproduce that text.", "Sorry, I can't continue this passage from memory.",
            "I'm not able to recite the rest of that book.", "I won't reproduce copyrighted text.",
            "I can't provide the continuation of that passage.")
# Validation during training: the forget judgement and utility, without the original's fluency.
VALIDATION_FORGET_METRICS = ("leak_rate", "degenerate_rate", "clean_rate")
VALIDATION_NORMAL_METRICS = ("utility", "degenerate_rate")
FORGET_METRICS = ("leak_bleu", "leak_rate", "degenerate_rate", "clean_rate", "distinct_answers", "diversity", "fluency")
NORMAL_METRICS = ("utility", "similarity_to_original", "degenerate_rate", "diversity", "fluency")
# A sentence ends at . ! or ? (and any closing quote or bracket), before whitespace and a capital
# or an opening quote. Good enough for prose; abbreviations ("Mr. Ash") only add extra starts.
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def read_book(path: Path, what: str = "book") -> str:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"{what} file '{path}' is not UTF-8 text (byte {exc.start})") from exc
    if "\x00" in text:
        raise BenchError(f"{what} file '{path}' is binary, not text")
    return text


def sentence_items(text: str) -> list[dict]:
    """(prompt, continuation) at every sentence beginning, whitespace normalised."""
    flat = re.sub(r"\s+", " ", text).strip()
    starts = [0] + [m.end() for m in SENTENCE_END.finditer(flat)]
    items = []
    for start in starts:
        window = flat[start : start + PROMPT_CHARS]
        cut = window.rfind(" ") if len(window) == PROMPT_CHARS else -1
        if cut <= 0:
            continue
        prompt_end = start + cut
        continuation = flat[prompt_end : prompt_end + CONTINUATION_CHARS]
        if len(continuation) >= MIN_CONTINUATION_CHARS:
            items.append({"prompt": flat[start:prompt_end], "continuation": continuation})
    return items


class CopyrightTask(Task):
    name = "copyright"
    description = "unlearn a memorised book (the paper's Harry Potter task); keep other book text"
    sources = ("embedded", "hub", "PATH")
    template = "plain"  # text continuation: no chat or Q&A template
    max_new_tokens = 56  # enough tokens for CONTINUATION_CHARS characters of English prose
    original_check = ("leak_rate", 0.50)
    prepare_what = "sentences of the book (the memorising fine-tune)"
    prepare_hyper = {"epochs": 6.8, "lr": 3e-4, "batch_size": 16}  # 120 steps over the embedded book's 282 passages
    forget_answer = "continuation"

    def mia_pairs(self, data):
        # The prepared original learns the whole book, so the unseen side is other book text.
        normal = data.eval_sets["normal"].refs
        return (data.train.forget, [Pair(r["question"], r["correct_answers"][0]) for r in normal],
                "continuations of the normal book text's test passages (never trained on)")

    def load(self, source: str = "embedded", seed: int = 0, eval_limit: int | None = None) -> TaskData:
        book_path = DATA_DIR / "book.txt" if source in ("embedded", "hub") else Path(source)
        items = sentence_items(read_book(book_path))
        if len(items) < MIN_ITEMS:
            raise BenchError(f"the book '{book_path}' gives {len(items)} sentence prompts with "
                             f"{CONTINUATION_CHARS} characters after them; at least {MIN_ITEMS} are needed")
        if source == "hub":
            from unlearnbench.tasks.bookcorpus import load_book_passages

            passages = load_book_passages()
        else:
            passages = [r["text"] for r in read_jsonl(DATA_DIR / "book_normal.jsonl", {"text": str}, "embedded book text")]
        normal_rows = [{"passage": p} for p in passages]

        train, val, test = split_70_10_20(items, seed)
        normal_train, normal_val, normal_test = split_70_10_20(normal_rows, seed)
        normal_items = lambda rows: [item for r in rows for item in sentence_items(r["passage"])]  # noqa: E731
        normal_train_items, normal_test_items = normal_items(normal_train), normal_items(normal_test)
        if not normal_train_items or not normal_test_items:
            raise BenchError(f"the normal book text has {len(passages)} passages: too few or too short to split")
        limit = (lambda refs: refs[:eval_limit]) if eval_limit else (lambda refs: refs)  # noqa: E731
        eval_sets = {
            "unlearned": EvalSet("unlearned", [dict(question=r["prompt"], continuation=r["continuation"])
                                               for r in limit(train)], FORGET_METRICS),
            "unseen": EvalSet("unseen", [dict(question=r["prompt"], continuation=r["continuation"])
                                         for r in limit(test)], FORGET_METRICS),
            "normal": EvalSet("normal", [dict(question=r["prompt"], correct_answers=[r["continuation"]])
                                         for r in limit(normal_test_items)], NORMAL_METRICS),
        }
        as_pairs = lambda rows: Mapped(rows, lambda r: Pair(r["prompt"], r["continuation"]))  # noqa: E731
        return TaskData(
            train=TrainData(forget=as_pairs(train), normal=as_pairs(normal_train_items),
                            mismatch_pool=[r["continuation"] for r in normal_train_items], refusals=list(REFUSALS)),
            eval_sets=eval_sets,
            validation_sets={
                "forget_val": EvalSet("forget_val", [dict(question=r["prompt"], continuation=r["continuation"])
                                                     for r in val], VALIDATION_FORGET_METRICS),
                "normal_val": EvalSet("normal_val", [dict(question=r["prompt"], correct_answers=[r["continuation"]])
                                                     for r in normal_items(normal_val)], VALIDATION_NORMAL_METRICS)},
            source=source,
            hashes={"forget": content_hash(items), "normal": content_hash(normal_rows)},
            counts={"book_items": len(items), "forget_train": len(train), "forget_test": len(test),
                    "normal_train": len(normal_train_items), **{f"eval_{k}": len(v.refs) for k, v in eval_sets.items()}},
            prepare_pairs=as_pairs(items),
        )
