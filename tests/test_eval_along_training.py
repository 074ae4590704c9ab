"""`--eval-every K`: the validation split scored along training, into eval_log.jsonl."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, invoke, loss_interrupted_at

from unlearnbench import registry


def test_eval_every_logs_validation_scores_with_cumulative_flops(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, "run", "--method", "npo", "--model", str(tiny_model_dir), "--steps", "3",
                          "--limit", "2", "--original", "base", "--max-new-tokens", "4", "--eval-every", "2",
                          "--eval-limit", "3", "--output-dir", str(tmp_path), "--run-name", "along")
    assert code == 0, err
    run_dir = tmp_path / "along"
    rows = [json.loads(line) for line in (run_dir / "eval_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 3]  # before training, every 2 steps, and the last step
    flops = [r["train_flops"] for r in rows]
    assert flops[0] == 0 and flops[0] < flops[1] < flops[2]
    assert {"forget_val/hallucination_rate", "forget_val/clean_rate", "normal_val/utility"} <= set(rows[0])
    record = json.loads((run_dir / "metrics.json").read_text())
    # the suite's count: the curve ends at the run's training FLOPs
    assert flops[-1] == record["compute"]["train"]["flops"]
    assert record["compute"]["eval_along_training"]["wall_seconds"] > 0
    assert record["files"]["eval_log"] == "eval_log.jsonl"


def test_the_validation_sets_share_no_prompt_with_the_reported_sets():
    for task in ("hallucination", "harmful", "copyright"):
        data = registry.get("task", task)().load("embedded", 0)
        reported = {q for s in data.eval_sets.values() for q in s.questions}
        validation = {q for s in data.validation_sets.values() for q in s.questions}
        assert validation and not reported & validation, task
        assert set(data.validation_sets) == {"forget_val", "normal_val"}


def test_bad_eval_every_is_one_line(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--eval-every", "-1",
                          "--output-dir", str(tmp_path))
    assert_one_line_error(code, err, "--eval-every must be >= 0")
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_ppo_is_evaluated_along_its_ppo_steps_from_the_flops_of_sft_and_the_reward_model(tiny_model_dir, tmp_path,
                                                                                          capsys):
    from test_ppo_method import ppo_args

    code, _, err = invoke(capsys, *ppo_args(tiny_model_dir, tmp_path, "ppo", "--eval-every", "1", "--eval-limit", "2",
                                            "--select", "best", "--max-degenerate", "1"))
    assert code == 0, err
    record = json.loads((tmp_path / "ppo" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "eval_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # PPO steps
    compute = record["compute"]
    # the curve starts at what SFT and the reward model cost, and ends at the whole pipeline's FLOPs
    assert rows[0]["train_flops"] == pytest.approx(compute["train:sft"]["flops"] + compute["train:reward_model"]["flops"])
    assert rows[-1]["train_flops"] == pytest.approx(compute["train"]["flops"])
    assert "forget_val/harmful_rate" in rows[0] and compute["eval_along_training"]["wall_seconds"] > 0
    assert compute["train:ppo"]["wall_seconds"] <= compute["train"]["wall_seconds"]
    assert record["train"]["selected"]["step"] in (1, 2)  # --select best chooses among the PPO steps


def test_a_resumed_run_keeps_its_eval_log_up_to_the_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    """Interrupted at step 8 with a checkpoint at 5: the rows after 5 were written by steps that
    are run again, so they go, and the resumed run logs steps 6 to 12 once each."""
    import pytest

    from unlearnbench import runner
    from unlearnbench.methods.unlearn import Unlearn

    config = runner.RunConfig(model=str(tiny_model_dir), hyper={"steps": 12, "lr": 1e-3}, limit=2, original="base",
                              max_new_tokens=4, output_dir=str(tmp_path), run_name="cut", checkpoint_every=5,
                              eval_every=3, eval_limit=2)
    real_loss = Unlearn.loss
    monkeypatch.setattr(Unlearn, "loss", loss_interrupted_at(real_loss, 8))
    with pytest.raises(KeyboardInterrupt):
        runner.run(config)
    log = tmp_path / "cut" / "eval_log.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 3, 6]
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())["compute"]["eval_along_training"]
    assert cut["wall_seconds"] > 0 and cut["tokens"] > 0  # the cut attempt's evaluations are kept apart
    monkeypatch.setattr(Unlearn, "loss", real_loss)
    runner.run(resume=tmp_path / "cut")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 3, 6, 9, 12]
    flops = [r["train_flops"] for r in rows]
    assert flops == sorted(flops) and len(set(flops)) == len(flops)
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())["compute"]["eval_along_training"]
    assert resumed["tokens"] > cut["tokens"]  # both attempts' evaluations add up


def test_select_best_keeps_the_best_steps_weights(tiny_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    common = ["--method", "ga", "--model", str(tiny_model_dir), "--limit", "2", "--original", "base",
              "--max-new-tokens", "3", "--eval-limit", "2", "--output-dir", str(tmp_path), "--save-model",
              "--checkpoint-every", "0"]
    # Every step ties on the tiny model (all outputs degenerate, rates 0): the rule's tie-break
    # keeps the earliest step after step 0, so the model is the one after step 1.
    code, _, err = invoke(capsys, "run", *common, "--steps", "3", "--eval-every", "1", "--select", "best",
                          "--max-degenerate", "1", "--run-name", "best")
    assert code == 0, err
    code, _, err = invoke(capsys, "run", *common, "--steps", "1", "--run-name", "one-step")
    assert code == 0, err
    selected = json.loads((tmp_path / "best" / "metrics.json").read_text())["train"]["selected"]
    assert selected["step"] == 1 and "lowest forget rate on forget_val" in selected["rule"]
    kept, one_step = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("best", "one-step"))
    assert kept.keys() == one_step.keys() and all(torch.equal(kept[k], one_step[k]) for k in kept)
    assert not (tmp_path / "best" / "best").exists()  # the kept weights go with the checkpoint
    # With the default limit on degeneracy no step qualifies, and the record says so.
    code, _, err = invoke(capsys, "run", *common, "--steps", "2", "--eval-every", "1", "--select", "best",
                          "--run-name", "none")
    assert code == 0, err
    selected = json.loads((tmp_path / "none" / "metrics.json").read_text())["train"]["selected"]
    assert selected["step"] is None and "last step" in selected["note"]


def test_select_best_needs_eval_every(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, "run", "--model", str(tiny_model_dir), "--select", "best", "--output-dir", str(tmp_path))
    assert_one_line_error(code, err, "--eval-every")
    assert list(tmp_path.iterdir()) == []
