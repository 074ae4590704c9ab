"""BookCorpus passages: the copyright task's normal set (same text-completion format as the book).

`bookcorpus/bookcorpus` on `main` is a loading script (bookcorpus.py downloading
books_large_p1/p2.txt), which `datasets` >= 4 refuses to run. The hub's parquet conversion of the
same data lives on the repository's `refs/convert/parquet` branch as
`plain_text/train/0000.parquet` ... `0009.parquet`, 74,004,228 rows with one column, `text`, one
sentence per row, in corpus order (public code reads exactly these URLs, e.g.
`.../bookcorpus/bookcorpus/resolve/refs%2Fconvert%2Fparquet/plain_text/train/000{i}.parquet`).
A branch name is not an immutable pin: no commit hash of that branch could be confirmed offline,
so a later re-conversion by the hub would change the data silently. The first shard
alone holds ~7.4M sentences, far more than the few hundred thousand words a normal set needs, so
only it is downloaded.

The text is the corpus as published: lowercased and tokenized ("he said , `` no . ''").
It is kept as is rather than detokenized, so that what the model sees is the corpus itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from unlearnbench.tasks.pku_saferlhf import HubFiles, load_split

BOOKCORPUS_PARQUET = HubFiles("bookcorpus/bookcorpus", "refs/convert/parquet", {"train": "plain_text/train/0000.parquet"})

TARGET_WORDS = 60
MAX_WORDS = 120


def passages_from_sentences(sentences: Sequence[str], limit: int, min_words: int = 40,
                            target_words: int = TARGET_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Consecutive sentences joined (single spaces) until a passage reaches `target_words` words,
    never past `max_words`; passages under `min_words` (the end of the data, or a sentence too long
    to add) are dropped and the walk goes on from where it stopped.

    Passage k starts no earlier than sentence k * (len / limit): the passages are spread evenly over
    the corpus instead of coming from its first two or three books, and never overlap.
    """
    n = len(sentences)
    if limit <= 0 or n == 0:
        return []
    step = max(1, n // limit)
    passages: list[str] = []
    cursor = 0
    while len(passages) < limit:
        cursor = max(cursor, len(passages) * step)
        if cursor >= n:
            break
        words: list[str] = []
        end = cursor
        while end < n and len(words) < target_words:
            sentence = sentences[end].split()
            if words and len(words) + len(sentence) > max_words:
                break
            words += sentence
            end += 1
        if min_words <= len(words) <= max_words:
            passages.append(" ".join(words))
        cursor = end
    return passages


def load_book_passages(limit: int = 2000, min_words: int = 40) -> list[str]:
    """Up to `limit` passages of ~60-120 words (at least `min_words`) from the pinned BookCorpus shard."""
    rows = load_split(BOOKCORPUS_PARQUET, "train", ("text",))
    # A lazy column: indexing reads single rows from the memory-mapped Arrow file, so the shard's
    # millions of sentences are never turned into Python strings at once.
    return passages_from_sentences(rows["text"], limit, min_words=min_words)
