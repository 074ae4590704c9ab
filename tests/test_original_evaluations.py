"""The original's evaluation is reused by a later run of the same original, data, settings and code,
and by no other."""

import json

from conftest import invoke


def run(capsys, tiny_model_dir, out, name, *extra):
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--steps", "1", "--limit", "2",
                          "--original", "base", "--max-new-tokens", "3", "--output-dir", str(out),
                          "--run-name", name, *extra)
    assert code == 0, err
    record = json.loads((out / name / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / name / "generations.jsonl").read_text().splitlines()]
    return record, [r for r in rows if r["phase"] == "original"]


def test_a_second_run_of_the_same_original_reuses_its_evaluation(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "1")
    monkeypatch.setenv("UNLEARNBENCH_CACHE", str(tmp_path / "cache"))
    first, first_rows = run(capsys, tiny_model_dir, tmp_path, "ga", "--method", "ga", "--eval-every", "1",
                            "--eval-limit", "2")
    assert "evaluation_from" not in first["original"]
    stored = sorted(p.name.split("-")[1] for p in (tmp_path / "cache" / "original-evaluations").iterdir())
    assert stored == ["step0", "test"]  # the row before training, and the test sets' evaluation

    # Another method, same original: the scores and outputs are the first run's, and it says so.
    second, second_rows = run(capsys, tiny_model_dir, tmp_path, "npo", "--method", "npo", "--eval-every", "1",
                              "--eval-limit", "2")
    assert second["original"]["evaluation_from"] == str(tmp_path / "ga")
    # the validation row before training too: same weights, same slice
    logs = [[json.loads(line) for line in (tmp_path / name / "eval_log.jsonl").read_text().splitlines()]
            for name in ("ga", "npo")]
    assert "reused_from" not in logs[0][0] and logs[1][0]["reused_from"] == str(tmp_path / "ga")
    assert {k: v for k, v in logs[1][0].items() if "/" in k} == {k: v for k, v in logs[0][0].items() if "/" in k}
    assert "reused_from" not in logs[1][1]  # after a step the model is another
    outputs = [[json.loads(line) for line in (tmp_path / name / "eval_generations.jsonl").read_text().splitlines()]
               for name in ("ga", "npo")]
    assert [r for r in outputs[1] if r["step"] == 0] == [r for r in outputs[0] if r["step"] == 0] != []
    assert second["metrics"]["original"] == first["metrics"]["original"] and second_rows == first_rows
    assert second["status"] == "completed" and second["metrics"]["unlearned"]  # the rest as always
    assert set(second["metrics"]["unlearned"]) == set(first["metrics"]["unlearned"])
    for split, scores in first["metrics"]["unlearned"].items():
        assert set(second["metrics"]["unlearned"][split]) == set(scores)

    # A setting that changes the evaluation (here the generation length) gets its own.
    third, _ = run(capsys, tiny_model_dir, tmp_path, "longer", "--method", "ga", "--max-new-tokens", "4")
    assert "evaluation_from" not in third["original"]
    # and a different seed too
    fourth, _ = run(capsys, tiny_model_dir, tmp_path, "seed1", "--method", "ga", "--seed", "1")
    assert "evaluation_from" not in fourth["original"]


def test_no_reuse_with_a_judge_that_is_not_shipped(tmp_path, monkeypatch):
    from unlearnbench.config import RunConfig
    from unlearnbench.original_evaluations import enabled

    monkeypatch.setenv("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "1")

    assert enabled(RunConfig())
    assert not enabled(RunConfig(harm_judge="PKU-Alignment/beaver-dam-7b"))  # could change behind its name
    assert not enabled(RunConfig(encoder=str(tmp_path)))


def test_no_reuse_when_turned_off(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "0")
    monkeypatch.setenv("UNLEARNBENCH_CACHE", str(tmp_path / "cache"))
    run(capsys, tiny_model_dir, tmp_path, "a", "--method", "ga")
    second, _ = run(capsys, tiny_model_dir, tmp_path, "b", "--method", "ga")
    assert "evaluation_from" not in second["original"]
    assert not (tmp_path / "cache" / "original-evaluations").exists()


def test_the_weights_fingerprint_tells_models_apart(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from unlearnbench.original_evaluations import weights_fingerprint

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    again = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert weights_fingerprint(model) == weights_fingerprint(again)
    with torch.no_grad():
        next(again.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(model) != weights_fingerprint(again)
