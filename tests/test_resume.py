"""Checkpoint and resume: a run killed in training or in evaluation continues to the same result."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from unlearnbench import runner
from unlearnbench.methods.unlearn import Unlearn
from conftest import assert_one_line_error, loss_interrupted_at, popen_cli, run_cli


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def tiny_config(model_dir, out, name, **overrides):
    return runner.RunConfig(model=str(model_dir), hyper={"steps": 12, "lr": 1e-3}, limit=3, original="base",
                            max_new_tokens=4, output_dir=str(out), run_name=name, checkpoint_every=5, **overrides)


def values(metrics):
    return {(phase, split, name): -1.0 if m["value"] is None else m["value"] for phase, splits in metrics["metrics"].items()
            for split, scores in splits.items() for name, m in scores.items()}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_dir = runner.run(tiny_config(tiny_model_dir, out, "whole"))
    return read_jsonl(run_dir / "train_log.jsonl"), json.loads((run_dir / "metrics.json").read_text())


def assert_same_run(run_dir, uninterrupted):
    log, metrics = uninterrupted
    resumed_log = read_jsonl(run_dir / "train_log.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 13))
    for a, b in zip(resumed_log, log):
        for term in ("total", "forget_ce", "mismatch_ce", "normal_kl", "lr"):
            assert a[term] == pytest.approx(b[term], rel=1e-5, abs=1e-6), (a["step"], term)
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed"]
    assert values(resumed) == pytest.approx(values(metrics), rel=1e-5, abs=1e-6)
    assert not (run_dir / "checkpoint").exists()  # removed once the run completed


def test_interrupted_training_resumes_to_the_same_curve(tiny_model_dir, tmp_path, uninterrupted, monkeypatch):
    real_loss = Unlearn.loss
    monkeypatch.setattr(Unlearn, "loss", loss_interrupted_at(real_loss, 8))
    with pytest.raises(KeyboardInterrupt):
        runner.run(tiny_config(tiny_model_dir, tmp_path, "cut"))
    run_dir = tmp_path / "cut"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["train"]["checkpoint_step"] == 5
    progress = json.loads((run_dir / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 5 and progress["trained_tokens"] > 0
    monkeypatch.setattr(Unlearn, "loss", real_loss)
    steps_run = []
    original_fit = Unlearn.fit
    monkeypatch.setattr(Unlearn, "fit", lambda self, *a, **k: original_fit(
        self, *a[:4], lambda row: (steps_run.append(row["step"]), a[4](row)), **k))
    runner.run(resume=run_dir)
    assert steps_run == list(range(6, 13))  # steps 1-5 came from the checkpoint
    assert_same_run(run_dir, uninterrupted)


def test_interrupted_evaluation_does_not_regenerate_what_it_wrote(tiny_model_dir, tmp_path, uninterrupted, monkeypatch):
    real_evaluate = runner.Evaluator.evaluate
    generated = []

    def on_split_then_interrupt(self, generator, phase, **kwargs):
        keep = kwargs["on_split"]

        def on_split(split, scores, rows):
            generated.append((phase, split))
            keep(split, scores, rows)
            if phase == "unlearned" and split == "unseen":
                raise KeyboardInterrupt
        return real_evaluate(self, generator, phase, **{**kwargs, "on_split": on_split})

    monkeypatch.setattr(runner.Evaluator, "evaluate", on_split_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run(tiny_config(tiny_model_dir, tmp_path, "cut-eval"))
    run_dir = tmp_path / "cut-eval"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert generated[-2:] == [("unlearned", "unlearned"), ("unlearned", "unseen")]
    generated.clear()
    monkeypatch.setattr(runner.Evaluator, "evaluate", lambda self, generator, phase, **kwargs: real_evaluate(
        self, generator, phase, **{**kwargs, "on_split": lambda s, sc, r: (generated.append((phase, s)), kwargs["on_split"](s, sc, r))}))
    runner.run(resume=run_dir)
    assert generated == [("unlearned", "normal")]  # only the set that was not yet written
    assert_same_run(run_dir, uninterrupted)
    generations = read_jsonl(run_dir / "generations.jsonl")
    assert len(generations) == 2 * 3 * 3 and len({(g["phase"], g["split"], g["index"]) for g in generations}) == 18


@pytest.mark.slow
def test_sigkill_mid_training_then_cli_resume(tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--steps", "20", "--lr", "1e-4", "--limit", "2", "--original", "base",
            "--max-new-tokens", "4", "--checkpoint-every", "5", "--output-dir", str(tmp_path)]
    whole = run_cli("run", *args, "--run-name", "whole")
    assert whole.returncode == 0, whole.stderr
    process = popen_cli("run", *args, "--run-name", "killed", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / "checkpoint" / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and not progress.exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no handler, no final save: only what the checkpoint wrote
    process.wait(timeout=60)
    killed_at = json.loads(progress.read_text())["step"]
    assert killed_at < 20
    resumed = run_cli("run", "--resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = read_jsonl(tmp_path / "killed" / "train_log.jsonl"), read_jsonl(tmp_path / "whole" / "train_log.jsonl")
    assert [r["step"] for r in a] == list(range(1, 21))
    assert [r["total"] for r in a] == pytest.approx([r["total"] for r in b], rel=1e-5, abs=1e-6)


def test_resume_refuses_flags_and_completed_runs(tiny_model_dir, tmp_path, uninterrupted):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "config.json").write_text(json.dumps({"run_id": "done", "config": {}}))
    (tmp_path / "done" / "metrics.json").write_text(json.dumps({"run_id": "done", "status": "completed"}))
    assert_one_line_error(run_cli("run", "--resume", str(tmp_path / "done")), "already completed")
    assert_one_line_error(run_cli("run", "--resume", str(tmp_path / "done"), "--steps", "3"), "drop --steps")


def test_the_log_is_saved_before_its_checkpoint_and_a_kill_between_renames_keeps_the_checkpoint(tmp_path):
    import torch
    from accelerate import Accelerator

    from unlearnbench.training import Checkpointing

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(2, 2))
    checkpointing = Checkpointing(tmp_path / "checkpoint")
    visible_when_logged = []
    checkpointing.on_save = lambda step: visible_when_logged.append(checkpointing.saved_step())
    checkpointing.save(accelerator, 3)
    checkpointing.save(accelerator, 6)
    # each log save happened while the checkpoint on disk was still the previous one
    assert visible_when_logged == [0, 3] and checkpointing.saved_step() == 6
    # a kill after `checkpoint` moved aside and before `checkpoint.partial` took its place
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert checkpointing.saved_step() == 6 and (tmp_path / "checkpoint" / "progress.json").is_file()
