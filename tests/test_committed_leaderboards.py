"""The committed leaderboards are exactly what `publish` makes from the committed run records."""

import hashlib
import json
from pathlib import Path

import pytest

from unlearnbench.leaderboard import without_path
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
BOARDS = sorted((ROOT / "leaderboards").glob("*.md"))
BOARDS = [b for b in BOARDS if b.name != "README.md"]


def test_every_task_has_a_committed_leaderboard():
    assert {b.stem for b in BOARDS} == {"hallucination", "harmful", "copyright"}


@pytest.mark.parametrize("board", BOARDS, ids=[b.stem for b in BOARDS])
def test_republishing_the_committed_records_reproduces_the_leaderboard(board, tmp_path):
    records = json.loads(board.with_suffix(".records.json").read_text())
    run_dirs = sorted((ROOT / "leaderboards" / "runs" / board.stem).iterdir())
    # Every published entry is a committed run folder whose record files hash as published.
    assert len(run_dirs) == len(records["runs"])
    by_run = {e["run_id"]: e for e in records["runs"]}
    for run_dir in run_dirs:
        entry = by_run[run_dir.name]
        for name, digest in entry["sha256"].items():
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest, (run_dir, name)
    methods = {e["method"] for e in records["runs"]}
    assert {"unlearn", "ga"} <= methods
    for method in methods:
        assert len({e["seed"] for e in records["runs"] if e["method"] == method}) >= 3, method

    copy = tmp_path / board.name
    result = run_cli("publish", *map(str, run_dirs), "--leaderboard", str(copy), "--no-plots", timeout=300)
    assert result.returncode == 0, result.stderr
    regenerated = json.loads(copy.with_suffix(".records.json").read_text())
    # Entries record where they were published from (relative to their board), which differs for the copy.
    assert [without_path(e) for e in regenerated["runs"]] == [without_path(e) for e in records["runs"]]
    assert {e["path"] for e in records["runs"]} == {f"runs/{board.stem}/{d.name}" for d in run_dirs}
    # The committed page links its plots; without them the text is otherwise the same.
    committed = board.read_text()
    assert "## Plots" in committed
    without_plots = committed[:committed.index("## Plots")] + committed[committed.index("## Provenance"):]
    assert copy.read_text() == without_plots
    for png in ("training_curves.png", "before_after.png", "forget_vs_compute.png"):
        assert (board.parent / board.stem / png).is_file()


ROBUSTNESS_BOARDS = sorted((ROOT / "leaderboards" / "robustness").glob("*.md"))
ROBUSTNESS_BOARDS = [b for b in ROBUSTNESS_BOARDS if b.name != "README.md"]


@pytest.mark.parametrize("board", ROBUSTNESS_BOARDS, ids=[b.stem for b in ROBUSTNESS_BOARDS])
def test_the_robustness_boards_rebuild_from_their_attacked_records(board, tmp_path):
    records = json.loads(board.with_suffix(".records.json").read_text())
    run_dirs = sorted((board.parent / "runs" / board.stem).iterdir())
    assert len(run_dirs) == len(records["runs"]) and all("robustness" in e for e in records["runs"])
    for entry, run_dir in zip(sorted(records["runs"], key=lambda e: e["run_id"]), run_dirs):
        for name, digest in entry["sha256"].items():
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest, (run_dir, name)
        summary = json.loads((run_dir / "metrics.json").read_text())["attacks"]["summary"]
        assert {k: v for k, v in entry["robustness"].items() if k != "attack_limit"} == summary
    copy = tmp_path / board.name
    result = run_cli("publish", *map(str, run_dirs), "--leaderboard", str(copy), "--no-plots", timeout=300)
    assert result.returncode == 0, result.stderr
    committed = board.read_text()
    without_plots = committed[:committed.index("## Plots")] + committed[committed.index("## Provenance"):]
    assert copy.read_text() == without_plots
    assert "worst-case forget % (attacked)" in committed and (board.parent / board.stem / "robustness.png").is_file()
