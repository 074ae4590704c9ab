"""`unlearnbench tune`: Optuna over a method's declared space, selected on the validation split only."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, invoke

from unlearnbench.tune import TuneConfig, outcome, select

ARGS = ("--method", "npo", "--steps", "2", "--limit", "2", "--eval-limit", "3", "--max-new-tokens", "4",
        "--original", "base", "--max-utility-drop", "1", "--max-degenerate", "1")


def tune_cli(capsys, model, output, *extra):
    return invoke(capsys, "tune", *ARGS, "--model", str(model), "--output-dir", str(output), *extra)


def test_selection_rule_by_hand():
    config = TuneConfig(run=None, max_utility_drop=0.10, max_degenerate=0.10)
    results = [
        {"trial": 0, "forget": 0.05, "utility": 0.50, "utility_drop": 0.20, "degenerate": 0.0},  # lost too much utility
        {"trial": 1, "forget": 0.10, "utility": 0.60, "utility_drop": 0.05, "degenerate": 0.30},  # too degenerate
        {"trial": 2, "forget": 0.20, "utility": 0.60, "utility_drop": 0.05, "degenerate": 0.05},
        {"trial": 3, "forget": 0.20, "utility": 0.62, "utility_drop": 0.02, "degenerate": 0.00},  # ties on forget: utility
        {"trial": 4, "forget": 0.30, "utility": 0.70, "utility_drop": 0.00, "degenerate": 0.00},
    ]
    assert select(results, config)["trial"] == 3
    assert select(results[:2], config) is None


def test_pareto_front_leaves_out_broken_and_dominated_trials():
    from unlearnbench.selection import pareto_front

    limits = TuneConfig(run=None, max_utility_drop=0.10, max_degenerate=0.10)
    results = [
        {"trial": 0, "forget": 0.00, "utility": 0.90, "degenerate": 0.50},  # broken: would dominate everything
        {"trial": 1, "forget": 0.00, "utility": 0.40, "degenerate": 0.00},
        {"trial": 2, "forget": 0.10, "utility": 0.40, "degenerate": 0.00},  # dominated by trial 1
        {"trial": 3, "forget": 0.20, "utility": 0.60, "degenerate": 0.10},  # at the limit: counts
        {"trial": 4, "forget": 0.30, "utility": 0.55, "degenerate": 0.00},  # dominated by trial 3
        {"trial": 5, "forget": 0.50, "utility": 0.70, "degenerate": 0.00},
    ]
    assert [r["trial"] for r in pareto_front(results, limits)] == [1, 3, 5]


def test_outcome_reads_the_first_and_last_validation_rows(tmp_path):
    log = tmp_path / "eval_log.jsonl"
    rows = [{"step": 0, "train_flops": 0, "train_seconds": 0, "forget_val/harmful_rate": 0.8,
             "forget_val/degenerate_rate": 0.0, "normal_val/utility": 0.5},
            {"step": 80, "train_flops": 9e12, "train_seconds": 100, "forget_val/harmful_rate": 0.1,
             "forget_val/degenerate_rate": 0.05, "normal_val/utility": 0.45}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = outcome(log)
    assert result["forget"] == 0.1 and result["forget_before"] == 0.8 and result["degenerate"] == 0.05
    assert result["utility_drop"] == pytest.approx(1 - 0.45 / 0.5)


def test_tune_runs_trials_and_resumes_the_same_study(tiny_model_dir, tmp_path, capsys):
    code, out, err = tune_cli(capsys, tiny_model_dir, tmp_path, "--trials", "2")
    assert code == 0, err
    group = tmp_path / "tune-hallucination-npo-s0"
    first = json.loads((group / "tune.json").read_text())
    assert first["trials"] == 2 and (group / "study.db").is_file() and (group / "tune.png").is_file()
    assert {"lr", "beta", "normal_weight"} == set(first["results"][0]["params"])
    # the first trial is what an untuned `run` uses: npo's defaults
    assert first["results"][0]["params"] == {"lr": 3e-05, "beta": 0.1, "normal_weight": 1.0}
    assert first["results"][1]["params"] != first["results"][0]["params"]
    assert all((group / r["run"] / "eval_log.jsonl").is_file() for r in first["results"])
    # a trial generates on the validation slice only: no test set is evaluated, before or after
    trial = json.loads((group / first["results"][0]["run"] / "metrics.json").read_text())
    assert trial["status"] == "completed" and not trial.get("metrics") and "eval_original" in trial["compute"]
    assert not (group / first["results"][0]["run"] / "generations.jsonl").read_text().strip()
    assert "validation split only" in first["rule"] and "selected:" in out

    # A killed tune leaves a trial running: the next call marks it failed, runs its parameters
    # again, and continues the study to the new count.
    import optuna

    study = optuna.load_study(study_name=group.name, storage=f"sqlite:///{group / 'study.db'}")
    stale = study.ask({"lr": optuna.distributions.FloatDistribution(1e-6, 1e-4, log=True),
                       "beta": optuna.distributions.FloatDistribution(0.02, 2.0, log=True),
                       "normal_weight": optuna.distributions.FloatDistribution(0.1, 10.0, log=True)})
    code, _, err = tune_cli(capsys, tiny_model_dir, tmp_path, "--trials", "4")
    assert code == 0, err
    again = json.loads((group / "tune.json").read_text())
    assert again["trials"] == 4
    assert again["results"][:2] == first["results"]  # the same study, continued
    assert [r["params"] for r in again["results"]].count(first["results"][0]["params"]) == 1  # defaults once
    assert any(r["params"] == stale.params for r in again["results"][2:])
    # and the resumed process draws new points, not the first process's again
    drawn = [json.dumps(r["params"], sort_keys=True) for r in again["results"]]
    assert len(set(drawn)) == len(drawn), drawn


def test_tune_never_reads_a_test_split(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Poison every reported (test) reference: the trials' objectives and the selection stay the same."""
    code, _, err = tune_cli(capsys, tiny_model_dir, tmp_path / "clean", "--trials", "2")
    assert code == 0, err
    from unlearnbench.tasks.hallucination import HallucinationTask

    load, calls = HallucinationTask.load, []

    def poisoned(self, *args, **kwargs):
        data = load(self, *args, **kwargs)
        calls.append(1)
        for eval_set in data.eval_sets.values():
            for ref in eval_set.refs:
                ref.update({k: "poisoned " + v for k, v in ref.items() if k != "question" and isinstance(v, str)})
        return data

    monkeypatch.setattr(HallucinationTask, "load", poisoned)
    code, _, err = tune_cli(capsys, tiny_model_dir, tmp_path / "poisoned", "--trials", "2")
    assert code == 0, err
    read = lambda root: json.loads((root / "tune-hallucination-npo-s0" / "tune.json").read_text())  # noqa: E731
    clean, dirty = read(tmp_path / "clean"), read(tmp_path / "poisoned")
    strip = lambda r: {k: v for k, v in r.items() if k != "train_seconds"}  # noqa: E731
    assert [strip(r) for r in clean["results"]] == [strip(r) for r in dirty["results"]]
    assert (clean["selected"] or {}).get("trial") == (dirty["selected"] or {}).get("trial")
    assert len(calls) >= 2  # every trial loaded the poisoned data


def test_tune_refuses_fixing_what_it_searches(tiny_model_dir, tmp_path, capsys):
    code, _, err = tune_cli(capsys, tiny_model_dir, tmp_path, "--trials", "1", "--set", "beta=0.5")
    assert_one_line_error(code, err, "--set fixes beta")


def test_run_from_tune_runs_the_selected_settings_and_says_so_on_the_board(tiny_model_dir, tmp_path, capsys):
    code, _, err = tune_cli(capsys, tiny_model_dir, tmp_path, "--trials", "2")
    assert code == 0, err
    group = tmp_path / "tune-hallucination-npo-s0"
    chosen = json.loads((group / "tune.json").read_text())["selected"]
    code, out, err = invoke(capsys, "run", "--method", "npo", "--model", str(tiny_model_dir), "--from-tune", str(group),
                            "--limit", "2", "--max-new-tokens", "4", "--original", "base", "--output-dir", str(tmp_path),
                            "--run-name", "tuned", "--set", "batch_size=1")
    assert code == 0, err
    assert "defaults were chosen on the embedded data" not in out  # embedded data, and tuned anyway
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    hyper = config["config"]["method_hyper"]
    assert config["config"]["preset"] == "tuned" and config["config"]["tuned"]["trial"] == chosen["run"]
    assert {k: hyper[k] for k in chosen["params"]} == chosen["params"]
    assert hyper["steps"] == 2 and hyper["batch_size"] == 1  # the study's fixed flags, and the user's flags on top
    board = tmp_path / "board.md"
    code, _, err = invoke(capsys, "publish", str(tmp_path / "tuned"), "--leaderboard", str(board), "--no-plots")
    assert code == 0, err
    text = board.read_text()
    assert "| tuned " in text and f"tuned: {chosen['run']} of 2 trials in {group.name}" in text

    # What --from-tune refuses, in one line each, before anything slow starts.
    code, _, err = invoke(capsys, "run", "--method", "ga", "--model", str(tiny_model_dir), "--from-tune", str(group))
    assert_one_line_error(code, err, "tuned method 'npo'", "'ga'")
    code, _, err = invoke(capsys, "run", "--method", "npo", "--model", str(tiny_model_dir), "--from-tune", str(group),
                          "--preset", "paper")
    assert_one_line_error(code, err, "--preset or --from-tune")
    summary = json.loads((group / "tune.json").read_text())
    (group / "tune.json").write_text(json.dumps({**summary, "selected": None}))  # no trial met the rule
    code, _, err = invoke(capsys, "run", "--method", "npo", "--model", str(tiny_model_dir), "--from-tune", str(group))
    assert_one_line_error(code, err, "selected nothing")
    code, _, err = invoke(capsys, "run", "--method", "npo", "--from-tune", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "no tune.json")
    code, _, err = invoke(capsys, "run", "--method", "npo", "--preset", "tuned")
    assert_one_line_error(code, err, "--from-tune")
