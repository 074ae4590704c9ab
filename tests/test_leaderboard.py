"""Multi-seed runs, their confidence intervals, and leaderboards published from run records."""

import hashlib
import json
import math
import os
import re
import time

import pytest

from unlearnbench.errors import BenchError
from unlearnbench.multiseed import parse_seeds
from unlearnbench.stats import summarize
from conftest import invoke, popen_cli, run_cli


def wait_for_stderr(process, fragment, deadline_seconds=300):
    """Read the process's stderr line by line until `fragment` appears; fail if it exits or the
    deadline passes first. A wait on what the test needs, not on a guessed delay."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    seen = ""
    deadline = time.time() + deadline_seconds
    while time.time() < deadline:
        if selector.select(timeout=1):
            # Unbuffered: text left in a reader's buffer would be invisible to the next select.
            seen += os.read(process.stderr.fileno(), 1 << 16).decode("utf-8", "replace")
            if fragment in seen:
                return
        assert process.poll() is None, seen
    raise AssertionError(f"no {fragment!r} within {deadline_seconds} s: {seen}")


# --- statistics ------------------------------------------------------------------------------


def test_mean_and_95_percent_interval_match_hand_computation():
    # values 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.302652729749464 (tables), half-width t·s/√3
    summary = summarize([1.0, 2.0, 3.0])
    assert summary.mean == pytest.approx(2.0)
    assert summary.half_width == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-12)
    assert summary.n == 3
    assert summary.format() == "2.000 ± 2.484"
    # two values 0.2, 0.4: s = √0.02, t(0.975, 1) = 12.706204736174698
    two = summarize([0.2, 0.4])
    assert two.half_width == pytest.approx(12.706204736174698 * math.sqrt(0.02) / math.sqrt(2), rel=1e-12)
    assert two.format(scale=100, digits=1) == "30.0 ± 127.1"


def test_one_value_has_no_interval_and_unmeasurable_values_are_left_out():
    assert summarize([0.25]).format(100, 1) == "25.0"
    assert summarize([None, 0.5, float("nan")]).n == 1
    assert summarize([None]).format() == "NM"


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), ("0-2", [0, 1, 2]), ("3, 7", [3, 7]), ("0-1,5", [0, 1, 5])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a,b", "1,1", "0-1,1", "-1", "1.5"])
def test_parse_seeds_refuses_bad_lists(text):
    with pytest.raises(BenchError, match="--seeds"):
        parse_seeds(text)


# --- multi-seed runs through the CLI ---------------------------------------------------------

TINY = ("--steps", "2", "--limit", "2", "--original", "base", "--checkpoint-every", "0")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A real `--seeds 0,1` group and one single-seed run of another method, on the tiny Llama."""
    root = tmp_path_factory.mktemp("runs")
    group = run_cli("run", "--method", "unlearn", "--model", str(tiny_model_dir), *TINY, "--seeds", "0,1",
                    "--output-dir", str(root), "--run-name", "group")
    assert group.returncode == 0, group.stderr
    single = run_cli("run", "--method", "ga", "--model", str(tiny_model_dir), *TINY, "--seed", "0",
                     "--output-dir", str(root), "--run-name", "ga-s0")
    assert single.returncode == 0, single.stderr
    return root, group.stdout


def test_seeds_run_each_seed_and_summarise_with_intervals(runs):
    root, stdout = runs
    group = root / "group"
    assert sorted(p.name for p in group.iterdir()) == ["README.md", "seed-0", "seed-1", "summary.json"]
    summary = json.loads((group / "summary.json").read_text())
    assert summary["status"] == {"0": "completed", "1": "completed"}
    per_seed = [json.loads((group / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [json.loads((group / f"seed-{s}" / "config.json").read_text())["config"]["seed"] for s in (0, 1)] == [0, 1]
    for phase in ("original", "unlearned"):
        values = [r["metrics"][phase]["unlearned"]["hallucination_rate"]["value"] for r in per_seed]
        cell = summary["metrics"][phase]["unlearned"]["hallucination_rate"]
        assert cell["values"] == values and cell["n"] == 2
        assert cell["mean"] == pytest.approx(sum(values) / 2)
        assert cell["ci95"] == pytest.approx(12.706204736174698 * abs(values[0] - values[1]) / 2, abs=1e-12)
    assert "mean ± 95% CI, 2 seeds" in stdout and "2 of 2 seeds completed" in stdout
    assert "Table 3" in (group / "README.md").read_text()


def test_seeds_with_seed_is_refused(tmp_path):
    result = run_cli("run", "--seeds", "0,1", "--seed", "3", "--output-dir", str(tmp_path))
    assert result.returncode == 2 and "not both" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- publishing ------------------------------------------------------------------------------


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(r"[OM]\d+", cells[0]) and cells[1] == "measured":
            rows[cells[0]] = cells
    return rows


def test_publish_traces_every_number_to_a_run_record(runs, tmp_path):
    root, _ = runs
    board = tmp_path / "boards" / "hallucination.md"
    result = run_cli("publish", str(root / "group"), str(root / "ga-s0"), "--leaderboard", str(board))
    assert result.returncode == 0, result.stderr
    assert "3 run(s) added" in result.stdout and "2 measured row(s)" in result.stdout
    markdown = board.read_text()
    rows = table_rows(markdown)
    header = next(line for line in markdown.splitlines() if line.startswith("| #"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rate = columns.index("halluc. % unlearned ↓")

    records = {s: json.loads((root / "group" / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)}
    ga = json.loads((root / "ga-s0" / "metrics.json").read_text())
    unlearn_row = next(r for r in rows.values() if r[3] == "unlearn")
    ga_row = next(r for r in rows.values() if r[3] == "ga")
    assert unlearn_row[5] == "0,1" and ga_row[5] == "0"
    values = [records[s]["metrics"]["unlearned"]["unlearned"]["hallucination_rate"]["value"] for s in (0, 1)]
    assert unlearn_row[rate] == summarize(values).format(100, 1)
    assert ga_row[rate] == f"{ga['metrics']['unlearned']['unlearned']['hallucination_rate']['value'] * 100:.1f}"
    # The original is counted once per seed, though two methods ran on seed 0.
    original_row = next(r for r in rows.values() if r[3].startswith("original"))
    assert original_row[5] == "0,1"

    # Provenance: each run's id and the hash of its metrics.json, the commit and the hardware.
    for path, name in ((root / "group" / "seed-0", "group/seed-0"), (root / "group" / "seed-1", "group/seed-1"),
                       (root / "ga-s0", "ga-s0")):
        digest = hashlib.sha256((path / "metrics.json").read_bytes()).hexdigest()
        assert f"{name}: {digest[:12]}" in markdown
    sidecar = json.loads(board.with_suffix(".records.json").read_text())
    assert {e["sha256"]["metrics.json"] for e in sidecar["runs"]} == {
        hashlib.sha256((p / "metrics.json").read_bytes()).hexdigest()
        for p in (root / "group" / "seed-0", root / "group" / "seed-1", root / "ga-s0")}
    assert "reported (paper)" in markdown and "| measured" in markdown
    assert "| 58.5 " in markdown  # OPT-1.3B original hallucination rate, docs/paper.md §4.3
    for png in ("training_curves.png", "before_after.png", "forget_vs_compute.png"):
        assert (board.parent / "hallucination" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(hallucination/{png})" in markdown


def test_publish_is_idempotent_and_refuses_hand_edits(runs, tmp_path):
    root, _ = runs
    board = tmp_path / "hallucination.md"
    assert run_cli("publish", str(root / "group"), "--leaderboard", str(board)).returncode == 0
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    again = run_cli("publish", str(root / "group" / "seed-1"), str(root / "group"), "--leaderboard", str(board))
    assert again.returncode == 0 and "0 run(s) added" in again.stdout and "2 already published" in again.stdout
    assert {p: p.read_bytes() for p in snapshot} == snapshot

    board.write_text(board.read_text().replace("measured", "MEASURED", 1))
    edited = board.read_bytes()
    refused = run_cli("publish", str(root / "ga-s0"), "--leaderboard", str(board))
    assert refused.returncode == 2 and "edited by hand" in refused.stderr and "Traceback" not in refused.stderr
    assert board.read_bytes() == edited


def test_hostile_publish_refuses_a_tampered_records_file_or_run_file(runs, tmp_path, capsys):
    """Every kept row is rebuilt from its run folder: a hand edit of the records file, or a run
    file changed after publishing, is refused with one line and nothing is written."""
    import shutil

    root, _ = runs
    runs_copy = tmp_path / "runs"
    shutil.copytree(root / "group", runs_copy / "group")
    board = tmp_path / "board" / "hallucination.md"
    assert invoke(capsys, "publish", str(runs_copy / "group"), "--leaderboard", str(board))[0] == 0
    sidecar = board.with_suffix(".records.json")
    published = json.loads(sidecar.read_text())

    def refused(*fragments):
        before = {p: p.read_bytes() for p in board.parent.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
        code, _, err = invoke(capsys, "publish", str(root / "ga-s0"), "--leaderboard", str(board))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert all(f in err for f in fragments), err
        assert {p: p.read_bytes() for p in before} == before  # nothing written

    # A value of the records file changed by hand.
    tampered = json.loads(sidecar.read_text())
    tampered["runs"][0]["metrics"]["unlearned"]["unlearned"]["hallucination_rate"]["value"] = 0.407
    sidecar.write_text(json.dumps(tampered, indent=2))
    refused(sidecar.name, "metrics.unlearned.unlearned.hallucination_rate.value", "edited by hand")
    sidecar.write_text(json.dumps(published, indent=2))

    # A run file changed after it was published.
    generations = runs_copy / "group" / "seed-1" / "generations.jsonl"
    original = generations.read_bytes()
    generations.write_bytes(original.replace(b'"output": "', b'"output": "X', 1))
    refused(str(generations), "not the file that was published")
    generations.write_bytes(original)

    # A published run folder that is gone cannot be checked.
    (runs_copy / "group").rename(runs_copy / "moved")
    # Both seeds are gone; publish names whichever entry it checks first, and entries are ordered
    # by the hash of their metrics.json, which differs from run to run.
    refused("group/seed-", "pass its run folder")
    (runs_copy / "moved").rename(runs_copy / "group")

    # Restored, the same publish goes through and rebuilds the kept rows from their folders.
    code, out, _ = invoke(capsys, "publish", str(root / "ga-s0"), "--leaderboard", str(board))
    assert code == 0 and "1 run(s) added" in out


def test_concurrent_publishes_keep_both_rows(runs, tmp_path):
    """Both publishers start while the lock is held, then race for it the moment it is released."""
    from filelock import FileLock

    root, _ = runs
    board = tmp_path / "hallucination.md"
    lock = FileLock(str(board) + ".lock")
    lock.acquire()
    try:
        loud = {"UNLEARNBENCH_QUIET": "0"}  # the wait message is what the test waits for
        first = popen_cli("publish", str(root / "group"), "--leaderboard", str(board), extra_env=loud)
        second = popen_cli("publish", str(root / "ga-s0"), "--leaderboard", str(board), extra_env=loud)
        for process in (first, second):  # both have started and are waiting on the lock
            wait_for_stderr(process, "waiting for another publish to finish")
        assert first.poll() is None and second.poll() is None
        assert not board.exists()
    finally:
        lock.release()
    for process in (first, second):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    rows = table_rows(board.read_text())
    assert sorted(r[3] for r in rows.values() if r[0].startswith("M")) == ["ga", "unlearn"]
    assert len(json.loads(board.with_suffix(".records.json").read_text())["runs"]) == 3


def test_publish_refuses_bad_input_with_one_line(runs, tmp_path):
    root, _ = runs
    (tmp_path / "hand.md").write_text("# my table\n")
    cases = [
        ((str(tmp_path / "nowhere"), "--leaderboard", str(tmp_path / "a.md")), "not a run folder"),
        ((str(root / "group"), "--leaderboard", str(tmp_path / "hand.md")), "not written by publish"),
        ((str(root / "group"), "--leaderboard", str(tmp_path / "board.txt")), "markdown file"),
    ]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    record = json.loads((root / "ga-s0" / "metrics.json").read_text())
    (unfinished / "metrics.json").write_text(json.dumps({**record, "status": "interrupted"}))
    (unfinished / "config.json").write_text((root / "ga-s0" / "config.json").read_text())
    cases.append(((str(unfinished), "--leaderboard", str(tmp_path / "b.md")), "only completed runs"))
    other_task = tmp_path / "other-task"
    other_task.mkdir()
    (other_task / "metrics.json").write_text((root / "ga-s0" / "metrics.json").read_text())
    saved = json.loads((root / "ga-s0" / "config.json").read_text())
    saved["config"]["task"] = "harmful"
    (other_task / "config.json").write_text(json.dumps(saved))
    cases.append(((str(root / "ga-s0"), str(other_task), "--leaderboard", str(tmp_path / "c.md")), "one task"))
    for args, message in cases:
        result = run_cli("publish", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (tmp_path / "hand.md").read_text() == "# my table\n"
    assert not any((tmp_path / name).exists() for name in ("a.md", "b.md", "c.md"))


def test_a_diverging_seed_is_recorded_and_the_others_still_run(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from unlearnbench.cli import main
    from unlearnbench.methods.unlearn import Unlearn

    real = Unlearn.loss

    def nan_on_seed_0(self, model, step, reference):
        terms = real(self, model, step, reference)
        if self.config.seed == 0:
            terms["total"] = terms["total"] * float("nan")
        return terms
    monkeypatch.setattr(Unlearn, "loss", nan_on_seed_0)
    monkeypatch.setenv("UNLEARNBENCH_QUIET", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", str(tiny_model_dir), *TINY, "--seeds", "0,1", "--output-dir", str(tmp_path), "--run-name", "g"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "1 of 2 seeds did not complete" in err and "seed 0" in err and "non-finite" in err
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["status"] == {"0": "diverged", "1": "completed"} and summary["runs"] == ["seed-1"]
    assert summary["metrics"]["unlearned"]["unlearned"]["hallucination_rate"]["n"] == 1
    assert json.loads((tmp_path / "g" / "seed-0" / "metrics.json").read_text())["status"] == "diverged"


def test_an_interrupted_group_resumes_only_what_did_not_complete(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from unlearnbench.cli import main
    from unlearnbench.methods.unlearn import Unlearn

    real = Unlearn.loss
    calls = {"seed 1": 0}

    def interrupt_seed_1_once(self, model, step, reference):
        if self.config.seed == 1:
            calls["seed 1"] += 1
            if calls["seed 1"] == 2:
                raise KeyboardInterrupt
        return real(self, model, step, reference)
    monkeypatch.setattr(Unlearn, "loss", interrupt_seed_1_once)
    monkeypatch.setenv("UNLEARNBENCH_QUIET", "1")
    args = ["--model", str(tiny_model_dir), "--steps", "2", "--limit", "2", "--original", "base", "--checkpoint-every", "1"]
    with pytest.raises(SystemExit) as first:
        main(["run", *args, "--seeds", "0-2", "--output-dir", str(tmp_path), "--run-name", "g"])
    assert first.value.code == 130
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["status"] == {"0": "completed", "1": "interrupted", "2": "not started"}
    seed_0 = (tmp_path / "g" / "seed-0" / "metrics.json").read_bytes()

    capsys.readouterr()
    main(["run", "--resume", str(tmp_path / "g")])  # returns normally on success
    assert "3 of 3 seeds completed" in capsys.readouterr().out
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["status"] == {"0": "completed", "1": "completed", "2": "completed"}
    assert (tmp_path / "g" / "seed-0" / "metrics.json").read_bytes() == seed_0  # kept, not rerun
    assert json.loads((tmp_path / "g" / "seed-1" / "metrics.json").read_text())["resumed"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["README.md", "seed-0", "seed-1", "seed-2", "summary.json"]


def test_training_curves_plot_terms_and_statistics_but_not_timings_or_schedules():
    from unlearnbench.plots import is_plotted_term

    kept = ["total", "forget_ce", "normal_kl", "reward", "kl", "greedy_reward", "rm_accuracy", "response_tokens"]
    dropped = ["step", "seconds", "ppo_seconds", "lr", "ppo_lr", "rm_lr", "kl_coef"]
    assert [k for k in kept + dropped if is_plotted_term(k)] == kept


def test_a_new_run_named_like_a_published_one_does_not_hide_it(runs, tmp_path, capsys):
    """A kept row is rebuilt from the folder whose files hash as published, not from whichever
    folder has its run id: a rerun with other settings under the same name is just a new row."""
    import shutil

    root, _ = runs
    board = tmp_path / "board" / "hallucination.md"
    assert invoke(capsys, "publish", str(root / "ga-s0"), "--leaderboard", str(board))[0] == 0
    rerun = tmp_path / "elsewhere" / "ga-s0"
    shutil.copytree(root / "ga-s0", rerun)
    saved = json.loads((rerun / "config.json").read_text())
    saved["config"]["method_hyper"]["lr"] = 1e-3
    (rerun / "config.json").write_text(json.dumps(saved))
    code, out, err = invoke(capsys, "publish", str(rerun), "--leaderboard", str(board))
    assert code == 0 and "1 run(s) added" in out and "2 measured row(s)" in out, err


def test_original_rows_split_by_machine_kind_but_not_by_thread_count():
    from unlearnbench.tables import original_rows

    def entry(key, seed, hardware):
        return {"key": key, "model": "m", "method": "ga", "seed": seed, "data": {"source": "embedded"},
                "settings": {"original": "prepared", "template": "auto", "limit": None}, "judges": {},
                "hardware": hardware}

    amx = "Intel(R) Xeon(R) Processor (AMX-BF16, AVX2) CPU, 2 threads"
    rows = original_rows([entry("a", 0, "x86_64 CPU, 1 thread"), entry("b", 1, "x86_64 CPU, 2 threads"),
                          entry("c", 0, amx)])
    assert [label for label, _ in rows] == ["O1", "O2"]
    kinds = [sorted(m["key"] for m in members) for _, members in rows]
    assert sorted(kinds) == [["a", "b"], ["c"]]  # one thread or two: the same kind, one row
