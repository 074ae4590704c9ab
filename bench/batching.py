"""Turn (question, answer) pairs into padded tensors whose labels cover the answer only.

Every loss in the paper is computed on the answer y, never on the prompt x. The answer start
comes from the tokenizer's character offsets of the full text, not from tokenising the prompt
alone: with BPE tokenizers the space before the answer merges into the first answer token, so
`len(tokenize(prompt)) - 1` (the official code) can drop the first answer token (docs/paper.md §1.5 #2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterator

import torch

IGNORE = -100


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str


class Template:
    """How a question becomes model input. `chat` uses the tokenizer's chat template."""

    PAPER = "### Question: {question}\n ### Answer: "

    def __init__(self, tokenizer, kind: str = "auto"):
        if kind == "auto":
            kind = "chat" if getattr(tokenizer, "chat_template", None) else "paper"
        self.kind = kind
        self.tokenizer = tokenizer

    def prompt(self, question: str) -> str:
        if self.kind == "chat":
            messages = [{"role": "user", "content": question}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if self.kind == "paper":
            return self.PAPER.format(question=question)
        return question  # "plain": text continuation (copyright-style prompts)

    @property
    def adds_special_tokens(self) -> bool:
        # A chat template already writes BOS and role markers into the text.
        return self.kind != "chat"


def encode(template: Template, question: str, answer: str, max_length: int, add_eos: bool = True) -> tuple[list[int], int]:
    """Token ids of prompt + answer (+ EOS), and the index of the first answer token."""
    tokenizer = template.tokenizer
    prompt = template.prompt(question)
    encoded = tokenizer(
        prompt + answer, add_special_tokens=template.adds_special_tokens, return_offsets_mapping=True
    )
    ids = list(encoded["input_ids"])
    start = next((i for i, (_, end) in enumerate(encoded["offset_mapping"]) if end > len(prompt)), len(ids))
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if len(ids) > max_length:
        # Keep the answer: drop prompt tokens from the left, then answer tokens from the right.
        overflow = min(len(ids) - max_length, start)
        ids, start = ids[overflow:], start - overflow
        ids = ids[:max_length]
    return ids, start


# The official random-mismatch loss weights shifted positions from len(BatchEncoding) = 2 on
# (docs/paper.md §1.5 #1); labels mark targets, and shifted position j predicts token j + 1.
OFFICIAL_MISMATCH_LABEL_START = 3


def encode_official(template: Template, question: str, answer: str, max_length: int,
                    mismatch: bool = False) -> tuple[list[int], int]:
    """Token ids and label start as the official code builds them (docs/paper.md §1.2, `faithful="code"`).

    No EOS is appended (the official texts end with the answer). The label start is
    len(tokenize(prompt)): the official start_locs = len(tokenize(prompt)) − 1 indexes the
    shifted frame, whose position j predicts token j + 1. With BPE tokenizers the prompt's
    trailing space is its own token when tokenised alone, so the first answer token is left out
    (docs/paper.md §1.5 #2). A mismatch sequence starts at OFFICIAL_MISMATCH_LABEL_START whatever its
    prompt. The official code never truncates (§1.5 #9); `max_length` is kept so that one long
    item cannot exhaust memory, and truncates as `encode` does.
    """
    tokenizer = template.tokenizer
    prompt = template.prompt(question)
    special = template.adds_special_tokens
    ids = list(tokenizer(prompt + answer, add_special_tokens=special)["input_ids"])
    start = len(tokenizer(prompt, add_special_tokens=special)["input_ids"])
    if len(ids) > max_length:
        overflow = min(len(ids) - max_length, start)
        ids, start = ids[overflow:], start - overflow
        ids = ids[:max_length]
    return ids, OFFICIAL_MISMATCH_LABEL_START if mismatch else start


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # IGNORE everywhere except answer tokens
    pad_id: int | None = None  # the official code finds padding by id, not by attention mask

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.pad_id)

    @property
    def answer_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_left(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch for generation: (input_ids, attention_mask)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def reshuffled_batches(items: list, size: int, seed: int) -> Iterator[list]:
    """Batches of `size` items without end: each pass over the items in a new seeded order, a
    batch that runs past the end of one pass completed from the next."""
    rng, order = random.Random(seed), []
    while True:
        if len(order) < size:
            order += rng.sample(range(len(items)), len(items))
        yield [items[i] for i in order[:size]]
        order = order[size:]


def collate(encoded: list[tuple[list[int], int]], pad_id: int) -> Batch:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for row, (ids, start) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return Batch(input_ids, attention, labels, pad_id)


@dataclass
class TrainData:
    """What a training method may draw from. Which sets a method uses is its own business."""

    forget: list[Pair]
    normal: list[Pair]
    mismatch_pool: list[str]
    # (prompt, chosen, rejected): preference pairs for methods that learn from them (ppo); the
    # harmful task fills it with (prompt, safe response, unsafe response).
    preferences: list[tuple[str, str, str]] = field(default_factory=list)
    # Answers a method may prefer over the forget answers (dpo_refusal): "I don't know" and the
    # like, in several wordings, filled by each task.
    refusals: list[str] = field(default_factory=list)
    # One answer per forget pair, drawn in step with it when a method `uses` "chosen".
    chosen: list[Pair] = field(default_factory=list)


@dataclass
class Step:
    forget: Batch | None = None
    normal: Batch | None = None
    mismatch: Batch | None = None
    chosen: Batch | None = None  # the chosen answers of this step's forget pairs, row for row

    @property
    def batches(self) -> tuple:
        return (self.forget, self.normal, self.mismatch, self.chosen)

    def to(self, device) -> "Step":
        return Step(*(b.to(device) if b is not None else None for b in self.batches))

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.batches if b is not None)


class StepSampler:
    """Draws one step's batches: forget and normal cycle through reshuffled epochs.

    The mismatch batch pairs every forget question with `mismatch_k` answers drawn without
    replacement from the pool (paper Eqn. for L_rdn), from the sampler's own seeded RNG.

    `faithful="code"` draws as the official loop does (docs/paper.md §1.2, §1.4): the forget set in
    file order, the normal set reshuffled each pass, both restarting together when the shorter
    runs out (`zip` of two DataLoaders, so a long forget set is only ever seen up to the normal
    set's length); a final partial batch is kept as a DataLoader keeps it (one process only:
    with several, a partial global batch cannot be split evenly); one draw of K answers shared by
    every forget item; and sequences built by `encode_official`.

    With several processes every process draws the same global batch (same seed) and keeps its
    own slice, so N processes with batch b see what one process with batch N·b sees. The
    position in the data is the number of steps drawn: `skip(n)` replays n draws without
    tokenising anything, which is how a resumed run finds its place.
    """

    ENCODED_CACHE_SIZE = 100_000  # bounded: a forget set may not fit in memory

    def __init__(self, data: TrainData, template: Template, batch_size: int, seed: int,
                 uses: tuple[str, ...], mismatch_k: int = 0, max_length: int = 256, shuffle: bool = True,
                 normal_batch_size: int | None = None, process_index: int = 0, num_processes: int = 1,
                 faithful: str = "paper"):
        self.data, self.template, self.batch_size = data, template, batch_size
        self.official = faithful == "code"
        self.uses, self.mismatch_k, self.max_length, self.shuffle = uses, mismatch_k, max_length, shuffle
        self.process_index, self.num_processes = process_index, num_processes
        self.rng = random.Random(seed)
        sizes = {"forget": batch_size, "normal": normal_batch_size or batch_size}
        self._sizes = sizes
        global_sizes = {name: sizes[name] * num_processes for name in sizes if name in uses}
        if self.official:
            self._passes = self._official_passes(global_sizes)
        else:
            self._streams = {name: self._cycle(getattr(data, name), size) for name, size in global_sizes.items()}
        self._cache: dict[tuple[bool, str, str], tuple[list[int], int]] = {}

    def _cycle(self, pairs, size: int) -> Iterator[list[int]]:
        if len(pairs) < size:
            raise ValueError(f"{len(pairs)} items cannot fill a global batch of {size}")
        while True:
            order = list(range(len(pairs)))
            if self.shuffle:
                self.rng.shuffle(order)
            for i in range(0, len(order) - size + 1, size):
                yield order[i : i + size]

    def _official_passes(self, sizes: dict[str, int]) -> Iterator[dict[str, list[int]]]:
        sets = {name: getattr(self.data, name) for name in sizes}
        for name, pairs in sets.items():
            if len(pairs) < sizes[name]:
                raise ValueError(f"{len(pairs)} items cannot fill a global batch of {sizes[name]}")
        keep_partial = self.num_processes == 1
        while True:
            orders = {}
            for name, pairs in sets.items():
                orders[name] = list(range(len(pairs)))
                if name != "forget" and self.shuffle:
                    self.rng.shuffle(orders[name])
            length = min((math.ceil if keep_partial else math.floor)(len(orders[name]) / sizes[name]) for name in sets)
            for k in range(length):
                yield {name: orders[name][k * sizes[name] : (k + 1) * sizes[name]] for name in sets}

    def _mine(self, indices: list[int], name: str) -> list[int]:
        size = self._sizes[name]
        return indices[self.process_index * size : (self.process_index + 1) * size]

    def _draw(self) -> tuple[list[int] | None, list[int] | None, list[list[int]] | None]:
        """This step's item indices: forget, normal, and per forget item its mismatch answers."""
        forget = normal = mismatch = None
        if self.official:
            drawn = next(self._passes)
            forget, normal = drawn.get("forget"), drawn.get("normal")
        else:
            if "forget" in self.uses:
                forget = next(self._streams["forget"])
            if "normal" in self.uses:
                normal = next(self._streams["normal"])
        if "mismatch" in self.uses and self.mismatch_k > 0 and forget is not None:
            pool_size = len(self.data.mismatch_pool)
            if self.official:  # random.sample once per step, shared by the batch (docs/paper.md §1.2 #2)
                mismatch = [self.rng.sample(range(pool_size), self.mismatch_k)] * len(forget)
            else:
                mismatch = [self.rng.sample(range(pool_size), self.mismatch_k) for _ in forget]
        return forget, normal, mismatch

    def skip(self, steps: int) -> None:
        for _ in range(steps):
            self._draw()

    def _batch(self, pairs: list[Pair], mismatch: bool = False) -> Batch:
        encoded = []
        for pair in pairs:
            # The official code masks a mismatch sequence differently from the same pair as a forget item.
            key = (mismatch and self.official, pair.question, pair.answer)
            if key not in self._cache:
                if len(self._cache) >= self.ENCODED_CACHE_SIZE:
                    self._cache.clear()
                if self.official:
                    self._cache[key] = encode_official(self.template, pair.question, pair.answer, self.max_length, mismatch)
                else:
                    self._cache[key] = encode(self.template, pair.question, pair.answer, self.max_length)
            encoded.append(self._cache[key])
        return collate(encoded, self.template.tokenizer.pad_token_id)

    def __next__(self) -> Step:
        forget, normal, mismatch = self._draw()
        step = Step()
        if forget is not None:
            mine = self._mine(list(range(len(forget))), "forget")
            forget_pairs = [self.data.forget[forget[i]] for i in mine]
            step.forget = self._batch(forget_pairs)
            if mismatch is not None:
                pool = self.data.mismatch_pool
                step.mismatch = self._batch([Pair(pair.question, pool[j])
                                             for pair, i in zip(forget_pairs, mine) for j in mismatch[i]], mismatch=True)
            if "chosen" in self.uses:
                step.chosen = self._batch([self.data.chosen[forget[i]] for i in mine])
        if normal is not None:
            step.normal = self._batch([self.data.normal[j] for j in self._mine(normal, "normal")])
        return step

    def __iter__(self):
        return self
