"""The training loop under `accelerate launch`: 2 CPU processes (gloo) match 1 process with the same
effective batch (2 processes × batch 1 = 1 process × batch 2)."""

import json
import socket
import sys
from pathlib import Path

import pytest

from conftest import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_cpu_processes_match_one_with_the_same_effective_batch(tiny_model_dir, tmp_path):
    # Answers of equal token length, so that the mean of two one-item means is the two-item mean.
    colours = ["red", "blue", "green", "black", "white", "brown", "pink", "gold"]
    data = tmp_path / "forget.jsonl"
    data.write_text("".join(json.dumps({"question": f"What colour is box {i}?", "right_answer": "It is red.",
                                        "hallucinated_answer": f"It is {colours[i % 8]}."}) + "\n" for i in range(40)))
    common = ["run", "--method", "ga", "--model", str(tiny_model_dir), "--data", str(data), "--steps", "6",
              "--lr", "1e-3", "--limit", "2", "--original", "base", "--max-new-tokens", "4",
              "--output-dir", str(tmp_path / "runs")]
    single = run_cli(*common, "--batch-size", "2", "--run-name", "one")
    assert single.returncode == 0, single.stderr
    # the user's own data under untuned defaults: one line says how to tune them on it
    assert f"unlearnbench tune --method ga --task hallucination --data {data}, then run --from-tune" in single.stdout
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--main_process_port", str(free_port())]
    double = run_cli(*common, "--batch-size", "1", "--run-name", "two", launcher=launcher,
                     extra_env={"ACCELERATE_USE_CPU": "1"})
    assert double.returncode == 0, double.stderr[-3000:]
    # One folder for the two processes: the main process names it and writes it.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]
    one, two = read_log(tmp_path / "runs" / "one"), read_log(tmp_path / "runs" / "two")
    assert [r["step"] for r in two] == list(range(1, 7))
    assert [r["lr"] for r in two] == pytest.approx([r["lr"] for r in one])  # one schedule step per optimizer step
    # Adam's first steps amplify float noise in near-zero gradients, hence the tolerance.
    assert [r["total"] for r in two] == pytest.approx([r["total"] for r in one], rel=2e-4)
    assert one[-1]["total"] < one[0]["total"] - 0.05  # the curve moved, so the match means something
    metrics = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["compute"]["train"]["tokens"] == json.loads(
        (tmp_path / "runs" / "one" / "metrics.json").read_text())["compute"]["train"]["tokens"]
