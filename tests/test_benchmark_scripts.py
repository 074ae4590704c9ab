"""The scripts that make the committed boards across sessions: their plans, without running them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plan(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DRY_RUN": "1", **env})


def test_default_boards_plans_three_seeds_per_method_in_staging_then_the_swap(tmp_path):
    result = plan("default_boards.sh", "hallucination", "unlearn", "ga", STAGING=str(tmp_path))
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if " run --task " in line]
    assert len(runs) == 6
    assert all(f"--output-dir {tmp_path}/hallucination" in r and "--checkpoint-every 0" in r for r in runs)
    assert [r.split("--run-name ")[1].split()[0] for r in runs] == [
        f"hallucination-{m}-s{s}" for m in ("unlearn", "ga") for s in (0, 1, 2)]
    assert "leaderboards/hallucination.md rebuilt" in result.stdout.splitlines()[-1]


def test_default_boards_without_methods_says_how_to_call_it():
    result = plan("default_boards.sh", "hallucination")
    assert result.returncode == 2 and result.stderr.startswith("usage:")


def test_transfer_runs_plans_both_written_sets_in_staging_then_the_swap(tmp_path):
    completed = tmp_path / "hallucination-unlearn-data80-s0"
    completed.mkdir()
    (completed / "metrics.json").write_text('{"status": "completed"}')
    result = plan("transfer_runs.sh", STAGING=str(tmp_path), UNLEARNBENCH="unlearnbench")
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if " run --method " in line]
    assert runs == [f"+ unlearnbench run --method unlearn --task hallucination --seed 0 "
                    f"--data benchmarks/data/hallucination_qa_400.jsonl --output-dir {tmp_path} "
                    f"--run-name hallucination-unlearn-data400-s0 --checkpoint-every 0"]  # the finished one is skipped
    assert "benchmarks/runs/transfer/ replaced" in result.stdout.splitlines()[-1]


def test_robustness_boards_skips_an_attacked_run_continues_a_killed_one_and_restarts_one_without_model(tmp_path):
    folders = {name: tmp_path / "hallucination" / f"hallucination-{name}-s0" for name in ("unlearn", "ga", "npo", "rmu")}
    mia_done = '{"status": "completed", "attacks": {"results": {"mia": {"unlearned": {}}}}}'
    killed = '{"status": "completed", "attacks": {"results": {"relearn": {}}}}'  # killed before mia
    records = {"unlearn": mia_done,  # attacked: skipped
               "ga": mia_done,  # but its model is still there: killed while its attacks were saved
               "npo": killed, "rmu": killed}
    for name, folder in folders.items():
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(records[name])
    for name in ("ga", "npo"):
        (folders[name] / "model").mkdir()
        (folders[name] / "model" / "config.json").write_text("{}")
    result = plan("robustness_boards.sh", "hallucination", "unlearn", "ga", "npo", "rmu", STAGING=str(tmp_path),
                  UNLEARNBENCH="unlearnbench", SEEDS="0")
    assert result.returncode == 0, result.stderr
    attacks = [line for line in result.stdout.splitlines() if line.startswith("+ unlearnbench attack ")]
    assert attacks == [f"+ unlearnbench attack {folders[name]} --attacks relearn,rephrase,quantize,mia"
                       for name in ("ga", "npo")]  # their models are here: the attacks continue
    runs = [line for line in result.stdout.splitlines() if " run --task " in line]
    assert [r.split("--run-name ")[1].split()[0] for r in runs] == ["hallucination-rmu-s0"]
    assert all(r.endswith("--checkpoint-every 0 --attacks relearn,rephrase,quantize,mia") for r in runs)
    removed = [line for line in result.stdout.splitlines() if line.startswith("+ rm -rf ") and "leaderboards" not in line]
    assert removed == [f"+ rm -rf {folders['rmu']}"]
    assert "leaderboards/robustness/hallucination.md rebuilt" in result.stdout.splitlines()[-1]


def test_robustness_boards_runs_three_seeds_or_the_ones_it_is_given(tmp_path):
    for seeds, expected in ((None, ["s0", "s1", "s2"]), ("1 2", ["s1", "s2"])):
        result = plan("robustness_boards.sh", "copyright", "unlearn", STAGING=str(tmp_path),
                      **({"SEEDS": seeds} if seeds else {}))
        assert result.returncode == 0, result.stderr
        runs = [line for line in result.stdout.splitlines() if " run --task " in line]
        assert [r.split("--run-name ")[1].split()[0] for r in runs] == [f"copyright-unlearn-{s}" for s in expected]


def test_robustness_boards_refuses_seeds_it_cannot_run():
    for seeds in ("0,1,2", " "):
        result = plan("robustness_boards.sh", "copyright", "unlearn", SEEDS=seeds)
        assert result.returncode == 2 and "SEEDS" in result.stderr and result.stdout == ""
    result = plan("robustness_boards.sh", "copyright")
    assert result.returncode == 2 and result.stderr.startswith("usage:")
