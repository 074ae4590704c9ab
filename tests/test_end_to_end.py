"""The whole pipeline on the embedded model, with a few steps and a few prompts."""

import json
from pathlib import Path

import pytest

from unlearnbench import runner
from unlearnbench.errors import TrainingDiverged
from unlearnbench.methods.unlearn import Unlearn
from conftest import popen_cli, run_cli


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_cli_run_writes_a_complete_record(tmp_path, smol):
    result = run_cli("run", "--method", "unlearn", "--task", "hallucination", "--steps", "2", "--limit", "4",
                     "--max-new-tokens", "16", "--original", "base", "--output-dir", str(tmp_path), "--run-name", "e2e")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "e2e"
    assert "hallucination_rate" in result.stdout and str(run_dir) in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["method_hyper"]["steps"] == 2
    assert config["environment"]["packages"]["torch"]
    assert config["data"]["hashes"]["forget"].startswith("sha256:")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["original"]["kind"] == "base"
    for phase in ("original", "unlearned"):
        assert set(metrics["metrics"][phase]) == {"unlearned", "unseen", "normal"}
        assert 0.0 <= metrics["metrics"][phase]["unlearned"]["hallucination_rate"]["value"] <= 1.0
    assert "MiniLM" in metrics["judges"]["hallucination_rate"]
    assert metrics["generator"]["backend"] == "hf" and metrics["generator"]["generation"]["do_sample"] is False
    for phase in ("load", "eval_original", "train", "eval_unlearned"):
        compute = metrics["compute"][phase]
        assert compute["wall_seconds"] > 0 and compute["peak_rss_mb"] > 0
    assert metrics["compute"]["train"]["flops"] > 0 and metrics["compute"]["train"]["tokens"] > 0
    log = read_jsonl(run_dir / "train_log.jsonl")
    assert [row["step"] for row in log] == [1, 2]
    assert {"total", "forget_ce", "mismatch_ce", "normal_kl", "lr"} <= set(log[0])
    generations = read_jsonl(run_dir / "generations.jsonl")
    assert len(generations) == 2 * 3 * 4
    assert (run_dir / "README.md").read_text().startswith("# Run e2e")


@pytest.mark.slow
def test_ga_with_lora_runs(tmp_path, smol):
    record_dir = runner.run(runner.RunConfig(method="ga", hyper={"steps": 2, "lora": True}, limit=2, original="base", max_new_tokens=8,
                                             output_dir=str(tmp_path), run_name="ga-lora"))
    metrics = json.loads((record_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["train"]["trainable_parameters"] < smol.num_parameters / 10


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_what_was_measured(tmp_path, smol, monkeypatch):
    real_loss = Unlearn.loss

    def loss_turning_nan(self, model, step, reference):
        terms = real_loss(self, model, step, reference)
        if len(self.seen) >= 1:
            terms["total"] = terms["total"] * float("nan")
        self.seen.append(1)
        return terms

    monkeypatch.setattr(Unlearn, "seen", [], raising=False)
    monkeypatch.setattr(Unlearn, "loss", loss_turning_nan)
    with pytest.raises(TrainingDiverged, match="non-finite at step 2"):
        runner.run(runner.RunConfig(hyper={"steps": 5}, limit=2, original="base", max_new_tokens=8, output_dir=str(tmp_path), run_name="nan"))
    metrics = json.loads((tmp_path / "nan" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "step 2" in metrics["error"]
    assert "original" in metrics["metrics"]  # the before-evaluation survived
    log = read_jsonl(tmp_path / "nan" / "train_log.jsonl")
    assert len(log) == 2 and log[-1]["total"] != log[-1]["total"]  # NaN logged at the failing step


@pytest.mark.slow
def test_prepared_original_is_made_once_and_cached(tmp_path, tiny_model_dir, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARNBENCH_CACHE", str(cache))
    from unlearnbench.tasks.hallucination import HallucinationTask

    monkeypatch.setattr(HallucinationTask, "prepare_hyper", {"steps": 2, "lr": 1e-4, "batch_size": 2})
    config = runner.RunConfig(model=str(tiny_model_dir), hyper={"steps": 1}, limit=2, max_new_tokens=4,
                              original="prepared", output_dir=str(tmp_path))
    first = json.loads((runner.run(config) / "metrics.json").read_text())
    assert first["original"]["kind"] == "prepared" and "prepare" in first["compute"]
    cached = list((cache / "originals").glob("hallucination-*/model/config.json"))
    assert len(cached) == 1
    second = json.loads((runner.run(config) / "metrics.json").read_text())
    assert second["original"]["kind"] == "prepared" and "prepare" not in second["compute"]


@pytest.mark.slow
def test_sigterm_keeps_the_record_and_says_interrupted(tmp_path, tiny_model_dir):
    import signal
    import time

    # The tiny Llama: the signal path is the same for any model, and the embedded one only adds minutes.
    process = popen_cli("run", "--model", str(tiny_model_dir), "--steps", "100000", "--limit", "2", "--original", "base",
                        "--max-new-tokens", "4", "--output-dir", str(tmp_path), "--run-name", "killed",
                        "--checkpoint-every", "2")
    metrics_file = tmp_path / "killed" / "metrics.json"
    deadline = time.time() + 600
    # Signal once training has provably taken steps (its first checkpoint exists), however
    # loaded the machine is, rather than after a fixed delay.
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoint" / "progress.json").exists():
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "interrupted" in stderr
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "interrupted"
    assert "original" in metrics["metrics"]
    assert read_jsonl(tmp_path / "killed" / "train_log.jsonl")  # the steps done before the signal
