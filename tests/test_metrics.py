"""Metric formulas pinned to hand-computed values, with stand-in judges that return fixed scores."""

import pytest
import torch

from unlearnbench.metrics.diversity import Diversity
from unlearnbench.metrics.fluency import Fluency
from unlearnbench.metrics.hallucination_rate import HallucinationRate
from unlearnbench.metrics.judges import TokenSimilarityJudge
from unlearnbench.metrics.utility import Utility


class FixedSimilarity:
    """Stand-in similarity judge: looks the (candidate, reference) score up in a table."""

    name = "fixed-table"

    def __init__(self, table):
        self.table = table

    def f1(self, candidates, references):
        return [self.table[(c, r)] for c, r in zip(candidates, references)]


def test_hallucination_rate_rule():
    refs = [{"question": "q", "right_answer": "R", "hallucinated_answer": "H"}] * 4
    outputs = ["a", "b", "c", "d"]
    table = {
        ("a", "H"): 0.90, ("a", "R"): 0.80,  # 0.90 > 1.1*0.80=0.88 -> hallucinated
        ("b", "H"): 0.87, ("b", "R"): 0.80,  # 0.87 < 0.88 -> within the 10% margin
        ("c", "H"): 0.30, ("c", "R"): 0.10,  # ratio 3 but below the 0.5 relevance floor
        ("d", "H"): 0.60, ("d", "R"): 0.90,  # closer to the right answer
    }
    result = HallucinationRate().compute(outputs, refs, FixedSimilarity(table))
    assert result.per_item == [1.0, 0.0, 0.0, 0.0]
    assert result.value == pytest.approx(0.25)
    assert result.judge_name == "fixed-table" and result.higher_is_better is False
    paper_rule = HallucinationRate(floor=0.0).compute(outputs, refs, FixedSimilarity(table))
    assert paper_rule.value == pytest.approx(0.5)


class CharacterTokenizer:
    """Stand-in tokenizer: one token per character, so the counts are visible by eye."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def __len__(self):
        return 0x110000


def test_diversity_unique_over_total_subword_tokens():
    # "abab": 2 distinct of 4; "": 0 by definition; "abcd": 4 of 4
    result = Diversity().compute(["abab", "", "abcd"], None, CharacterTokenizer())
    assert result.per_item == pytest.approx([2 / 4, 0.0, 1.0])
    assert result.value == pytest.approx((0.5 + 0 + 1) / 3)
    assert "subword tokens" in result.judge_name


def test_diversity_sees_repetition_without_spaces(tokenizer):
    """The space-free loop that scored 1.000 as one distinct word scores near 0 on subword tokens."""
    loop, prose = "firehose" * 60, "The Mercator projection stretches areas near the poles, so Greenland looks huge."
    result = Diversity().compute([loop, prose], None, tokenizer)
    ids = tokenizer(loop, add_special_tokens=False)["input_ids"]
    assert result.per_item[0] == pytest.approx(len(set(ids)) / len(ids)) and result.per_item[0] < 0.05
    assert result.per_item[1] > 0.8


class FixedNLL:
    name = "fixed-nll"

    def __init__(self, values):
        self.values = values

    def answer_nll(self, questions, answers):
        return self.values


def test_fluency_mean_nll_and_nm():
    refs = [{"question": "q"}] * 3
    ok = Fluency().compute(["a fine answer", "another fine one", "x x x"], refs, FixedNLL([2.0, 4.0, 0.1]))
    assert ok.per_item == [2.0, 4.0, None]  # "x x x" has one distinct token: trivial
    assert ok.value == pytest.approx(3.0)
    nm = Fluency().compute(["", "   ", "a real answer"], refs, FixedNLL([0.0, 0.0, 2.0]))
    assert nm.value is None and nm.display() == "NM"


def test_utility_takes_best_correct_answer():
    refs = [{"question": "q1", "correct_answers": ["A", "B"]}, {"question": "q2", "correct_answers": ["C"]}]
    table = {("o1", "A"): 0.2, ("o1", "B"): 0.7, ("o2", "C"): 0.4}
    result = Utility().compute(["o1", "o2"], refs, FixedSimilarity(table))
    assert result.per_item == pytest.approx([0.7, 0.4])
    assert result.value == pytest.approx(0.55)


class FixedReward:
    name = "fixed-reward"

    def reward(self, questions, answers):
        return [len(a) * 1.0 for a in answers]


def test_utility_with_reward_model_judge():
    refs = [{"question": "q", "correct_answers": ["x"]}] * 2
    result = Utility().compute(["ab", "abcd"], refs, FixedReward())
    assert result.value == pytest.approx(3.0) and result.judge_name == "fixed-reward"


def bare_similarity_judge(embeddings):
    judge = TokenSimilarityJudge.__new__(TokenSimilarityJudge)
    judge._cache = embeddings
    judge.name = "hand-vectors"
    return judge


def test_bertscore_f1_formula_on_hand_vectors():
    # candidate tokens a1=(1,0), a2=(0,1); reference token b1=(1,0)
    # P = mean(max cos per candidate token) = (1 + 0)/2 = 0.5; R = max over candidate = 1; F1 = 2*0.5*1/1.5
    judge = bare_similarity_judge({"cand": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "ref": torch.tensor([[1.0, 0.0]])})
    judge._embed = lambda texts: None
    assert judge.f1(["cand"], ["ref"]) == pytest.approx([2 * 0.5 * 1.0 / 1.5])


def test_bertscore_f1_empty_side_is_zero():
    judge = bare_similarity_judge({"": torch.zeros((0, 2)), "ref": torch.tensor([[1.0, 0.0]])})
    judge._embed = lambda texts: None
    assert judge.f1([""], ["ref"]) == [0.0]


def test_minilm_judge_separates_matching_answers():
    judge = TokenSimilarityJudge()
    output = "The capital of Australia is Sydney."
    to_h, to_r = judge.f1([output, output], ["The capital of Australia is Sydney.", "The capital of Australia is Canberra."])
    assert to_h == pytest.approx(1.0, abs=1e-4)
    assert to_h > 1.1 * to_r
    assert "all-MiniLM-L6-v2" in judge.name and "stand-in" in judge.name


def test_distinct_answers_counts_different_answers_over_prompts():
    from unlearnbench.metrics.distinct_answers import DistinctAnswers

    outputs = ["No, the Earth is round.", "no,  the earth is ROUND.", "No, the Earth is round.\n", "I can't help.", "Paris."]
    result = DistinctAnswers().compute(outputs)
    # three copies of one answer (case and whitespace aside) share one count; 3 different answers of 5
    assert result.per_item == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0, 1.0])
    assert result.value == pytest.approx(3 / 5)
    assert DistinctAnswers().compute(["same"] * 4).value == pytest.approx(1 / 4)
    assert DistinctAnswers().compute(["a", "b"]).value == 1.0
