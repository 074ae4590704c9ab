"""`unlearnbench rescore`: a finished run's recorded outputs scored again with today's judges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, invoke

RUN = Path(__file__).resolve().parents[1] / "leaderboards" / "runs" / "copyright" / "copyright-ga-s0"


@pytest.fixture()
def run_copy(tmp_path, tokenizer):  # the tokenizer fixture converts the embedded model once
    target = tmp_path / RUN.name
    shutil.copytree(RUN, target)
    return target


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]


def test_rescore_recomputes_text_scores_and_keeps_fluency(run_copy, capsys):
    before = json.loads((run_copy / "metrics.json").read_text())
    rows = rows_of(run_copy)
    for row in rows:  # stale scores, as an older judge would have left them
        row["diversity"] = 0.123
        row.pop("degenerate_rate", None)
    (run_copy / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    code, out, err = invoke(capsys, "rescore", str(run_copy))
    assert code == 0, err
    after = json.loads((run_copy / "metrics.json").read_text())
    rescored = rows_of(run_copy)
    for phase in ("original", "unlearned"):
        for split in ("unlearned", "unseen", "normal"):
            scored = [r for r in rescored if r["phase"] == phase and r["split"] == split]
            for name in ("diversity", "degenerate_rate"):
                # every metric value is the mean of its per-item scores, as recorded beside the outputs
                assert after["metrics"][phase][split][name]["value"] == pytest.approx(
                    sum(r[name] for r in scored) / len(scored))
            assert all(r["diversity"] != 0.123 for r in scored)
            # fluency needs the original model: kept exactly as generated
            assert after["metrics"][phase][split]["fluency"] == before["metrics"][phase][split]["fluency"]
            assert [r["fluency"] for r in scored] == [r["fluency"] for r in rows
                                                       if r["phase"] == phase and r["split"] == split]
    assert "degenerate_rate" in after["rescored"]["metrics"] and "fluency" not in after["rescored"]["metrics"]
    assert after["compute"] == before["compute"] and after["train"] == before["train"]
    assert "degenerate_rate" in (run_copy / "README.md").read_text()
    assert "rescored" in out

    # rescoring again changes no score
    code, _, err = invoke(capsys, "rescore", str(run_copy))
    again = json.loads((run_copy / "metrics.json").read_text())
    assert code == 0, err
    assert again["metrics"] == after["metrics"]


def test_rescore_refuses_outputs_of_other_prompts(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["config"]["seed"] = 7  # another seed draws other prompts
    (run_copy / "config.json").write_text(json.dumps(config))
    before = (run_copy / "generations.jsonl").read_bytes()
    code, _, err = invoke(capsys, "rescore", str(run_copy))
    assert_one_line_error(code, err, "prompts of generations.jsonl are not the task's")
    assert (run_copy / "generations.jsonl").read_bytes() == before  # nothing written


def test_rescore_refuses_an_unfinished_run(run_copy, capsys):
    record = json.loads((run_copy / "metrics.json").read_text())
    (run_copy / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    code, _, err = invoke(capsys, "rescore", str(run_copy))
    assert_one_line_error(code, err, "only completed runs are rescored")


def test_rescore_recomputes_the_evaluation_along_training_from_its_outputs(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--method", "ga", "--steps", "2",
                          "--limit", "2", "--original", "base", "--max-new-tokens", "3", "--eval-every", "1",
                          "--eval-limit", "2", "--output-dir", str(tmp_path), "--run-name", "along")
    assert code == 0, err
    run_dir = tmp_path / "along"
    log = [json.loads(line) for line in (run_dir / "eval_log.jsonl").read_text().splitlines()]
    outputs = [json.loads(line) for line in (run_dir / "eval_generations.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [0, 1, 2]
    assert sorted({(r["step"], r["split"]) for r in outputs}) == [(s, v) for s in (0, 1, 2)
                                                                  for v in ("forget_val", "normal_val")]
    for row in log:  # each logged value is the mean of the kept per-item scores
        kept = [r for r in outputs if r["step"] == row["step"] and r["split"] == "forget_val"]
        assert row["forget_val/degenerate_rate"] == pytest.approx(sum(r["degenerate_rate"] for r in kept) / len(kept))
    # a stale judge's numbers, as an older version would have logged them
    stale = [{**row, "forget_val/degenerate_rate": 0.5, "normal_val/utility": -1.0} for row in log]
    (run_dir / "eval_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    code, _, err = invoke(capsys, "rescore", str(run_dir))
    assert code == 0, err
    rescored = [json.loads(line) for line in (run_dir / "eval_log.jsonl").read_text().splitlines()]
    for before, after in zip(log, rescored):  # the same judges give back what was logged
        assert after.keys() == before.keys()
        assert all(after[k] == pytest.approx(v, abs=1e-6) for k, v in before.items())
    assert "degenerate_rate" in json.loads((run_dir / "metrics.json").read_text())["rescored"]["eval_log"]
