import json

import pytest

from unlearnbench.errors import BenchError
from unlearnbench.tasks import hub, split_70_10_20
from unlearnbench.tasks.hallucination import HallucinationTask


def test_embedded_data_sizes_and_splits():
    data = HallucinationTask().load("embedded", seed=0)
    forget_total = data.counts["forget_train"] + data.counts["forget_test"]
    assert forget_total >= 0.9 * 300
    assert len(data.train.normal) >= 0.7 * 300 - 1
    # 70/10/20 of the forget set
    n = round(data.counts["forget_train"] / 0.7)
    assert data.counts["forget_test"] == pytest.approx(0.2 * n, abs=2)
    unlearned = set(data.eval_sets["unlearned"].questions)
    unseen = set(data.eval_sets["unseen"].questions)
    assert unlearned and unseen and not unlearned & unseen
    assert {p.question for p in data.train.forget} == unlearned
    normal_eval = set(data.eval_sets["normal"].questions)
    assert not normal_eval & {p.question for p in data.train.normal}
    assert data.hashes["forget"].startswith("sha256:")


def test_hallucination_prepares_validation_and_holds_out_membership_non_members():
    """Tuning reads forget_val, so the original must have learned it as it learned the test
    prompts; membership inference needs answers of the same kind that nothing trained on."""
    task = HallucinationTask()
    data = task.load("embedded", seed=0)
    questions = lambda pairs: {p.question for p in pairs}  # noqa: E731
    prepared, held_out = questions(data.prepare_pairs), questions(data.held_out)
    forget_val = set(data.validation_sets["forget_val"].questions)
    unlearned, unseen = set(data.eval_sets["unlearned"].questions), set(data.eval_sets["unseen"].questions)
    assert prepared == unlearned | forget_val | unseen and forget_val and not forget_val & (unlearned | unseen)
    assert held_out and not held_out & prepared
    assert data.counts["held_out"] == len(data.held_out) == int(0.1 * (len(prepared) + len(held_out)))
    members, non_members, _ = task.mia_pairs(data)
    assert questions(members) == unlearned and questions(non_members) == held_out


def test_hallucination_data_too_small_to_hold_out_has_no_membership_inference(tmp_path):
    path = tmp_path / "nine.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{i}?", "right_answer": "R.", "hallucinated_answer": f"H{i}."}) + "\n"
                            for i in range(9)))
    task = HallucinationTask()
    data = task.load(str(path), seed=0)
    assert len(data.held_out) == 0 and len(data.prepare_pairs) == 9 and task.mia_pairs(data) is None


def test_split_is_seeded_and_disjoint():
    items = list(range(100))
    a = split_70_10_20(items, 1)
    assert a == split_70_10_20(items, 1)
    assert a != split_70_10_20(items, 2)
    assert [len(x) for x in a] == [70, 10, 20]
    assert sorted(a[0] + a[1] + a[2]) == items


def test_eval_limit_caps_each_set():
    data = HallucinationTask().load("embedded", seed=0, eval_limit=7)
    assert all(len(s.refs) == 7 for s in data.eval_sets.values())


def test_hub_loader_reads_hub_schema_offline(tmp_path, monkeypatch):
    """The hub path runs on local files in the HaluEval QA and TruthfulQA generation schemas."""
    import datasets

    halu = tmp_path / "halueval_qa.jsonl"
    halu.write_text("".join(json.dumps({"knowledge": "k", "question": f"Question {i}?", "right_answer": f"right {i}",
                                        "hallucinated_answer": f"wrong {i}"}) + "\n" for i in range(20)))
    tqa = tmp_path / "truthful_qa.jsonl"
    tqa.write_text("".join(json.dumps({"type": "Adversarial", "category": "Misc", "question": f"Normal {i}?",
                                       "best_answer": f"best {i}", "correct_answers": [f"best {i}", f"also {i}"],
                                       "incorrect_answers": [f"no {i}"], "source": "s"}) + "\n" for i in range(20)))
    calls = []

    def local_load_dataset(repo, config, revision, split):
        calls.append((repo, config, revision, split))
        path = halu if repo == hub.HALUEVAL_QA.repo else tqa
        return datasets.load_dataset("json", data_files=str(path), split="train")

    monkeypatch.setattr(hub, "load_dataset", local_load_dataset)
    data = HallucinationTask().load("hub", seed=0)
    assert calls[0] == (hub.HALUEVAL_QA.repo, "qa", hub.HALUEVAL_QA.revision, "data")
    assert calls[1] == (hub.TRUTHFULQA_GENERATION.repo, "generation", hub.TRUTHFULQA_GENERATION.revision, "validation")
    # 2 of the 20 held out, the other 18 split 70/10/20
    assert data.counts["held_out"] == 2 and data.counts["forget_train"] == 13 and data.counts["forget_test"] == 3
    assert data.train.forget[0].answer.startswith("wrong")
    assert data.eval_sets["normal"].refs[0]["correct_answers"][0].startswith("best")


def test_hub_failure_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub\nmore lines")

    monkeypatch.setattr(hub, "load_dataset", offline)
    with pytest.raises(BenchError, match="could not load pminervini/HaluEval/qa@b1171838:data from the hub: Couldn't reach"):
        HallucinationTask().load("hub", seed=0)


def test_non_utf8_file(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"question": "caf\xe9?", "right_answer": "r", "hallucinated_answer": "h"}\n')
    with pytest.raises(BenchError, match="not UTF-8"):
        HallucinationTask().load(str(bad), seed=0)


def test_a_forget_set_larger_than_memory_streams_from_disk(tmp_path, monkeypatch):
    """Above IN_MEMORY_BYTES the file is validated in one streaming pass and read item by item:
    memory grows with the number of items (8-byte offsets), not with their size."""
    import gc

    import psutil

    import unlearnbench.tasks as tasks
    from unlearnbench.tasks.hallucination import HallucinationTask

    HallucinationTask().load("embedded", 0, eval_limit=5)  # imports and the normal set, outside the measurement
    padding = "x" * 2000
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for i in range(20_000):
            handle.write(json.dumps({"question": f"Question {i}?", "right_answer": f"Right {i}.",
                                     "hallucinated_answer": f"Wrong {i}.", "notes": padding}) + "\n")
    size_mb = path.stat().st_size / 2**20
    monkeypatch.setattr(tasks, "IN_MEMORY_BYTES", 2**20)
    gc.collect()
    before = psutil.Process().memory_info().rss
    data = HallucinationTask().load(str(path), 0, eval_limit=5)
    grown_mb = (psutil.Process().memory_info().rss - before) / 2**20
    assert size_mb > 38 and grown_mb < size_mb / 4, (size_mb, grown_mb)
    assert isinstance(data.train.forget.base.base, tasks.JsonlRows)
    assert len(data.train.forget) == 12_600  # 70% of the 18,000 left after holding out 10%
    pair = data.train.forget[123]
    assert pair.question.startswith("Question ") and pair.answer.startswith("Wrong ")
    assert data.hashes["forget"].startswith("sha256:")
    assert len(data.eval_sets["unlearned"].refs) == 5


@pytest.mark.parametrize("run", ["harmful/harmful-ppo-s1", "copyright/copyright-ga-s2"])
def test_the_committed_runs_prompts_are_the_tasks_prompts_today(run):
    """A change of how a task splits its data must show here: a committed run's evaluated prompts,
    in order, are the ones the task gives for its seed and limit."""
    from pathlib import Path

    from unlearnbench import registry

    run_dir = Path(__file__).resolve().parents[1] / "leaderboards" / "runs" / run
    config = json.loads((run_dir / "config.json").read_text())["config"]
    task = registry.get("task", config["task"])()
    data = task.load(config["data"], config["seed"], eval_limit=config["limit"] or task.default_eval_limit)
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    for split, eval_set in data.eval_sets.items():
        recorded = [r["question"] for r in sorted(rows, key=lambda r: r["index"])
                    if r["phase"] == "unlearned" and r["split"] == split]
        assert recorded and recorded == eval_set.questions


def test_a_run_is_refused_when_its_data_or_its_split_changed():
    from types import SimpleNamespace

    from unlearnbench.tasks import data_changed

    data = SimpleNamespace(hashes={"forget": "sha256:a"}, counts={"forget_train": 293, "held_out": 46})
    assert not data_changed({"hashes": {"forget": "sha256:a"}, "counts": {"forget_train": 293, "held_out": 46}}, data)
    assert data_changed({"hashes": {"forget": "sha256:b"}, "counts": data.counts}, data)
    # same file, split another way (a record from before the held-out part)
    assert data_changed({"hashes": {"forget": "sha256:a"}, "counts": {"forget_train": 326}}, data)
