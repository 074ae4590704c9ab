"""`unlearnbench compare`: methods validated up front, one run each, one table with compute as % of ppo."""

import json
import shutil

import pytest

from unlearnbench import runner
from unlearnbench.compare import parse_methods, split_overrides
from unlearnbench.errors import BenchError
from conftest import invoke


def test_methods_are_checked_with_did_you_mean_and_sft_means_safe_sft():
    assert parse_methods("unlearn, ga,sft,ppo") == ["unlearn", "ga", "sft_safe", "ppo"]
    with pytest.raises(BenchError, match="Did you mean 'ppo'"):
        parse_methods("unlearn,ppp")
    with pytest.raises(BenchError, match="twice"):
        parse_methods("sft,sft_safe")
    with pytest.raises(BenchError, match="at least one"):
        parse_methods(" , ")


def test_overrides_go_to_the_methods_that_have_them():
    split = split_overrides({"steps": 2, "ppo.rm_steps": 3, "mismatch_k": 1}, ["unlearn", "ppo"])
    assert split == {"unlearn": {"steps": 2, "mismatch_k": 1}, "ppo": {"steps": 2, "rm_steps": 3}}
    with pytest.raises(BenchError, match="none of the compared methods"):
        split_overrides({"rm_stepz": 3}, ["unlearn", "ppo"])
    with pytest.raises(BenchError, match="not among the compared methods"):
        split_overrides({"npo.beta": 3}, ["unlearn", "ppo"])


def test_unknown_method_fails_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran"))
    code, _, err = invoke(capsys, "compare", "--methods", "unlearn,gaa", "--output-dir", str(tmp_path))
    assert code == 2 and "Did you mean 'ga'" in err and len(err.strip().splitlines()) == 1


def fake_record(rate, flops, wall, status="completed"):
    scores = lambda r: {"harmful_rate": {"value": r}, "diversity": {"value": 0.5}, "fluency": {"value": 3.0}}  # noqa: E731
    metrics = {phase: {"unlearned": scores(r), "unseen": scores(r), "normal": {"utility": {"value": 0.4}}}
               for phase, r in (("original", 0.9), ("unlearned", rate))}
    return {"status": status, "original": {"kind": "prepared"}, "metrics": metrics,
            "compute": {"train": {"flops": flops, "wall_seconds": wall}}}


def test_table_gives_compute_as_a_share_of_ppo(tmp_path, capsys, monkeypatch):
    values = {"unlearn": (0.1, 2e12, 20.0), "sft_safe": (0.4, 1e12, 10.0), "ppo": (0.05, 1e14, 1000.0)}

    def fake_run(config, resume=None):
        folder = tmp_path / "cmp" / config.run_name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"run_id": config.run_name, **fake_record(*values[config.method])}))
        (folder / "config.json").write_text(json.dumps({"run_id": config.run_name, "config": {"method": config.method}}))
        return folder
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(runner, "resolve_config", lambda config: (config, None, None))
    code, out, err = invoke(capsys, "compare", "--methods", "unlearn,sft,ppo", "--output-dir", str(tmp_path),
                            "--compare-id", "cmp")
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["unlearn"]["flops_pct_of_ppo"] == pytest.approx(2.0)
    assert rows["sft_safe"]["wall_pct_of_ppo"] == pytest.approx(1.0)
    assert rows["ppo"]["flops_pct_of_ppo"] == pytest.approx(100.0)
    assert rows["original (prepared)"]["metrics"]["harm % unlearned ↓"] == 0.9
    assert rows["unlearn"]["metrics"]["utility ↑ (normal)"] == 0.4
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| unlearn " in table and "2.0" in table and "harm % unseen" in table
    assert "±" not in table  # one seed: values alone, no interval
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "sft_safe" in out
    assert result["ppo_reward"] is None and not (tmp_path / "cmp" / "ppo_training.png").exists()  # no PPO log here


def test_several_seeds_give_mean_and_ci_cells_mean_ppo_stages_and_each_seeds_reward(tmp_path):
    from unlearnbench.compare import write_comparison

    folder = tmp_path / "cmp"
    for seed, rate, rewards in ((0, 0.1, [1.0, 1.0, 2.0, 2.0]), (1, 0.3, [1.0, 1.0, 1.5, 1.5])):
        for method in ("ppo", "unlearn"):
            run = folder / method / f"seed-{seed}"
            run.mkdir(parents=True)
            record = fake_record(rate if method == "unlearn" else 0.0, 1e12, 10.0)
            if method == "unlearn" and seed == 1:
                record["metrics"]["unlearned"]["unlearned"]["fluency"]["value"] = None  # NM on this seed
            if method == "ppo":
                record["compute"].update({"train:sft": {"flops": 1e11 * (seed + 1), "wall_seconds": 10.0 + seed},
                                          "train:ppo": {"flops": 9e11, "wall_seconds": 90.0}})
                log = [{"step": i + 1, "reward": r, "kl": 0.5} for i, r in enumerate(rewards)]
                (run / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))
            (run / "metrics.json").write_text(json.dumps({"run_id": f"{method}-{seed}", **record}))
            (run / "config.json").write_text(json.dumps({"run_id": f"{method}-{seed}", "config": {"seed": seed}}))
    result = write_comparison(folder, ["ppo", "unlearn"], {})
    unlearn = next(r for r in result["rows"] if r["method"] == "unlearn")
    # rates 0.1 and 0.3: mean 0.2, s = 0.2/√2, half-width t_{0.975,1} · s/√2 = 12.7062 × 0.1
    assert unlearn["metrics"]["harm % unlearned ↓"] == pytest.approx(0.2)
    assert unlearn["ci95"]["harm % unlearned ↓"] == pytest.approx(1.27062047362)
    assert unlearn["ci95"]["utility ↑ (normal)"] == 0.0  # both seeds 0.4
    ppo = next(r for r in result["rows"] if r["method"] == "ppo")
    assert ppo["stages"]["sft"] == {"flops": 1.5e11, "wall_seconds": 10.5}
    text = (folder / "compare.md").read_text()
    assert "| 20.0 ± 127.1 " in text and "ppo stages (mean over 2 seeds): sft 1.5e+11 FLOPs / 10.5 s" in text
    assert "| 3.000 (n=1 of 2) " in text  # fluency measured on one seed only
    # each seed's reward trend, first two steps against the last two: +1.0 and +0.5
    reward_lines = {line.split(" reward")[0]: line for line in text.splitlines() if line.startswith("ppo seed")}
    assert "(+1.000)" in reward_lines["ppo seed 0"] and "(+0.500)" in reward_lines["ppo seed 1"]
    assert result["ppo_reward_seed"] == 0 and result["ppo_reward"]["reward_gain"] == pytest.approx(1.0)
    # a seed without a usable log (one PPO step) leaves the plot and the headline trend to the next seed
    (folder / "ppo" / "seed-0" / "train_log.jsonl").write_text(json.dumps({"step": 1, "reward": 1.0, "kl": 0.5}) + "\n")
    again = write_comparison(folder, ["ppo", "unlearn"], {})
    assert again["ppo_reward_seed"] == 1 and again["ppo_reward"]["reward_gain"] == pytest.approx(0.5)
    assert "ppo seed 0 reward" not in (folder / "compare.md").read_text()


def test_ppo_reward_trend_compares_the_first_and_last_steps():
    from unlearnbench.compare import ppo_reward_trend

    log = [{"step": 1, "sft_ce": 2.0}] + [{"step": 1 + i, "reward": float(i), "kl": 0.1 * i} for i in range(1, 7)]
    trend = ppo_reward_trend(log, window=2)
    # first two PPO steps: rewards 1, 2 -> 1.5; last two: 5, 6 -> 5.5; KL 0.5, 0.6 -> 0.55
    assert trend == pytest.approx({"steps": 6, "window": 2, "reward_first": 1.5, "reward_last": 5.5,
                                   "reward_gain": 4.0, "kl_last": 0.55})
    assert ppo_reward_trend(log, window=10)["window"] == 3  # never more than half the steps
    assert ppo_reward_trend(log[:2]) is None
    greedy = ppo_reward_trend(log, [[0, 2.0], [3, 2.5], [6, 3.25]], window=2)
    assert (greedy["greedy_reward_before"], greedy["greedy_reward_after"]) == (2.0, 3.25)
    assert greedy["greedy_reward_gain"] == pytest.approx(1.25)


def test_compare_runs_each_method_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    code, out, err = invoke(capsys, "compare", "--methods", "sft,ppo", "--model", str(tiny_model_dir),
                            "--original", "base", "--limit", "2", "--max-new-tokens", "4", "--output-dir", str(tmp_path),
                            "--compare-id", "tiny", "--set", "steps=2", "--set", "batch_size=2",
                            "--set", "ppo.sft_steps=2", "--set", "ppo.rm_steps=2", "--set", "ppo.response_length=4",
                            "--set", "ppo.rm_batch_size=2", "--set", "ppo.sft_batch_size=2")
    assert code == 0, err
    folder = tmp_path / "tiny"
    for method in ("sft_safe", "ppo"):
        assert json.loads((folder / method / "metrics.json").read_text())["status"] == "completed"
    result = json.loads((folder / "compare.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert 0 < rows["sft_safe"]["flops_pct_of_ppo"] < 100
    assert set(rows["ppo"]["stages"]) == {"sft", "reward_model", "ppo"}
    assert (folder / "compare.png").is_file() and "sft_safe" in (folder / "compare.md").read_text()
    assert result["ppo_reward"]["steps"] >= 1 and (folder / "ppo_training.png").read_bytes()[:4] == b"\x89PNG"
    assert "ppo reward" in (folder / "compare.md").read_text()
    greedy = json.loads((folder / "ppo" / "metrics.json").read_text())["train"]["greedy_reward"]
    assert [done for done, _ in greedy["after_ppo_steps"]] == [0, 2] and greedy["prompts"] >= 1
    assert "greedy reward on held-out prompts" in (folder / "compare.md").read_text()


def fake_run(folder, seed, flops, rates, seconds=None, cpu=None, utility=None, degenerate=None):
    folder.mkdir(parents=True)
    environment = {"hardware": {"cpu": cpu, "cpu_features": ["AVX2"], "cpu_count": 2, "cuda": []}} if cpu else {}
    (folder / "config.json").write_text(json.dumps({"run_id": folder.name, "config": {"seed": seed},
                                                    "environment": environment}))
    seconds = seconds or [f / 1e10 for f in flops]
    rows = [{"step": i, "train_flops": f, "train_seconds": s, "forget_val/harmful_rate": r}
            for i, (f, s, r) in enumerate(zip(flops, seconds, rates))]
    if utility:
        for row, u, d in zip(rows, utility, degenerate):
            row.update({"normal_val/utility": u, "forget_val/degenerate_rate": d})
    (folder / "eval_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_compute_to_target_pairs_each_seed_with_ppos(tmp_path):
    from unlearnbench.compute_to_target import compute_to_target

    runs = {"ppo": [fake_run(tmp_path / "ppo0", 0, [1e12, 2e12, 3e12], [0.9, 0.5, 0.1]),
                    fake_run(tmp_path / "ppo1", 1, [1e12, 2e12, 3e12], [0.9, 0.6, 0.2])],
            "unlearn": [fake_run(tmp_path / "u0", 0, [0, 1e11, 2e11], [0.9, 0.15, 0.1]),
                        fake_run(tmp_path / "u1", 1, [0, 1e11, 2e11], [0.9, 0.3, 0.25])]}
    result = compute_to_target(runs)
    assert result["target"] == pytest.approx(0.2)  # ppo's final rates 0.1 and 0.2: mean 0.15, + 0.05
    ppo, unlearn = result["methods"]["ppo"], result["methods"]["unlearn"]
    assert ppo["reached"] == [0, 1] and ppo["flops"]["mean"] == 3e12  # seed 1 reaches exactly 0.2 at its last step
    assert unlearn["reached"] == [0] and unlearn["not_reached"] == [1]
    assert unlearn["steps_at_target"] == {"0": 1} and ppo["steps_at_target"] == {"0": 2, "1": 2}
    assert unlearn["flops_pct_of_ppo"]["mean"] == pytest.approx(100 * 1e11 / 3e12) and unlearn["paired_seeds"] == [0]
    # a given target decides alone; unreachable for everyone, nothing is paired
    strict = compute_to_target(runs, target=0.05)
    assert strict["methods"]["ppo"]["reached"] == [] and "flops_pct_of_ppo" not in strict["methods"]["unlearn"]
    assert compute_to_target({"ga": [tmp_path / "nowhere"]}) is None


def test_compute_to_target_counts_a_step_only_within_the_selection_limits(tmp_path):
    from types import SimpleNamespace

    from unlearnbench.compute_to_target import compute_to_target, markdown

    limits = SimpleNamespace(max_utility_drop=0.1, max_degenerate=0.1)
    runs = {"ppo": [fake_run(tmp_path / "ppo0", 0, [1e12, 2e12], [0.9, 0.1], utility=[0.5, 0.48], degenerate=[0, 0])],
            # ga meets the rate at step 1 only by breaking (60% degenerate), then never within the limits
            "ga": [fake_run(tmp_path / "ga0", 0, [0, 1e11, 2e11], [0.9, 0.0, 0.0], utility=[0.5, 0.5, 0.2],
                            degenerate=[0, 0.6, 0.05])],
            # unlearn's step 1 is within both limits: utility 0.46 is down 8% from 0.5
            "unlearn": [fake_run(tmp_path / "u0", 0, [0, 1e11, 2e11], [0.9, 0.15, 0.1], utility=[0.5, 0.46, 0.3],
                                 degenerate=[0, 0.1, 0])]}
    result = compute_to_target(runs, target=0.2, limits=limits)
    ga, unlearn = result["methods"]["ga"], result["methods"]["unlearn"]
    assert ga["reached"] == [] and ga["only_outside_limits"] == [0] and "flops_pct_of_ppo" not in ga
    assert unlearn["reached"] == [0] and unlearn["flops"]["mean"] == 1e11 and unlearn["steps_at_target"] == {"0": 1}
    assert unlearn["flops_pct_of_ppo"]["mean"] == pytest.approx(5.0)  # 1e11 / ppo's 2e12
    text = "\n".join(markdown(result))
    assert "0 of 1 (1 more only outside the limits)" in text and "down by at most 10%" in text
    unlearn_line = next(line for line in text.splitlines() if line.startswith("| unlearn"))
    assert [c.strip() for c in unlearn_line.split("|")[2:4]] == ["1 of 1", "0: 1"]  # seed 0 reached it at step 1
    # without limits the rate decides alone
    assert compute_to_target(runs, target=0.2)["methods"]["ga"]["flops"]["mean"] == 1e11


def test_compute_to_target_pairs_seconds_only_on_the_same_machine_kind(tmp_path):
    from unlearnbench.compute_to_target import compute_to_target, markdown

    runs = {"ppo": [fake_run(tmp_path / "ppo0", 0, [1e12, 2e12], [0.9, 0.1], [100, 200], cpu="Xeon"),
                    fake_run(tmp_path / "ppo1", 1, [1e12, 2e12], [0.9, 0.1], [100, 200], cpu="Xeon")],
            "ga": [fake_run(tmp_path / "ga0", 0, [0, 1e11], [0.9, 0.1], [0, 10], cpu="Xeon"),
                   fake_run(tmp_path / "ga1", 1, [0, 1e11], [0.9, 0.1], [0, 40], cpu="EPYC")]}
    result = compute_to_target(runs, target=0.2)
    ga = result["methods"]["ga"]
    assert ga["flops_pct_of_ppo"]["mean"] == pytest.approx(5.0) and ga["flops_pct_of_ppo"]["n"] == 2
    assert ga["seconds_pct_of_ppo"]["mean"] == pytest.approx(5.0) and ga["seconds_pct_of_ppo"]["n"] == 1  # 10 / 200
    assert ga["seconds_unpaired_seeds"] == [1]
    text = "\n".join(markdown(result))
    assert "2 machine kinds" in text and "left out: ga seeds 1" in text
    # a run resumed on another machine pairs with no one-machine run
    (tmp_path / "ga0" / "metrics.json").write_text(json.dumps({"resumed": [
        {"at": "t", "hardware": {"cpu": "EPYC", "cpu_features": ["AVX2"], "cpu_count": 2, "cuda": []}}]}))
    again = compute_to_target(runs, target=0.2)["methods"]["ga"]
    assert again["seconds_pct_of_ppo"]["n"] == 0 and again["seconds_unpaired_seeds"] == [0, 1]


def test_compare_with_seeds_and_eval_every_reports_compute_to_target(tiny_model_dir, tmp_path, capsys):
    # ppo's own evaluation along training is tested in test_eval_along_training; here two quick methods
    # and a given target (the default one needs ppo) exercise the layout, the table and the plot.
    code, out, err = invoke(capsys, "compare", "--methods", "ga", "--model", str(tiny_model_dir), "--limit", "2",
                            "--original", "base", "--max-new-tokens", "3", "--seeds", "0,1", "--eval-every", "1",
                            "--eval-limit", "2", "--output-dir", str(tmp_path), "--compare-id", "ctt",
                            "--set", "steps=2", "--target", "0.5", "--task", "hallucination")
    assert code in (0, None), err
    folder = tmp_path / "ctt"
    assert sorted(p.name for p in (folder / "ga").iterdir()) == ["seed-0", "seed-1"]
    result = json.loads((folder / "compare.json").read_text())
    reached = result["compute_to_target"]
    assert reached["target"] == 0.5 and reached["how"] == "given (--target)"
    assert set(reached["methods"]) == {"ga"} and reached["methods"]["ga"]["seeds"] == [0, 1]
    ga = next(r for r in result["rows"] if r["method"] == "ga")
    runs = [json.loads((folder / "ga" / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert ga["seeds"] == 2 and ga["train_flops"] == pytest.approx(sum(r["compute"]["train"]["flops"] for r in runs) / 2)
    assert "## Compute to target" in out and (folder / "compute_to_target.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_resume_keeps_completed_runs_continues_the_rest_and_restarts_ppo(tiny_model_dir, tmp_path, capsys):
    tiny = ["--model", str(tiny_model_dir), "--original", "base", "--limit", "2", "--max-new-tokens", "3",
            "--output-dir", str(tmp_path), "--compare-id", "cmp", "--set", "steps=2", "--set", "batch_size=2",
            "--set", "ppo.sft_steps=2", "--set", "ppo.rm_steps=2", "--set", "ppo.response_length=3",
            "--set", "ppo.rm_batch_size=2", "--set", "ppo.sft_batch_size=2", "--set", "ppo.ppo_steps=2"]
    code, _, err = invoke(capsys, "compare", "--methods", "ga,sft,ppo", *tiny)
    assert code == 0, err
    folder = tmp_path / "cmp"
    plan = json.loads((folder / "compare_plan.json").read_text())
    assert plan["methods"] == ["ga", "sft_safe", "ppo"] and plan["seeds"] == [0]
    # What a killed comparison leaves: ga never started, sft_safe and ppo stopped part-way.
    shutil.rmtree(folder / "ga")
    for method in ("sft_safe", "ppo"):
        record_file = folder / method / "metrics.json"
        record_file.write_text(record_file.read_text().replace('"status": "completed"', '"status": "interrupted"'))
    code, out, err = invoke(capsys, "compare", "--resume", str(folder))
    assert code == 0, err
    records = {m: json.loads((folder / m / "metrics.json").read_text()) for m in ("ga", "sft_safe", "ppo")}
    assert {m: r["status"] for m, r in records.items()} == dict.fromkeys(records, "completed")
    assert records["sft_safe"].get("resumed") and not records["ga"].get("resumed")  # sft_safe continued in its folder
    assert records["sft_safe"]["resumed"][0]["hardware"]["cpu_count"] >= 1  # each attempt names its machine
    aside = list((folder / "restarted").iterdir())  # ppo cannot resume: started again, the partial run kept
    assert len(aside) == 1 and aside[0].name.startswith("ppo-ppo-")
    assert json.loads((aside[0] / "metrics.json").read_text())["status"] == "interrupted"
    assert {r["method"] for r in json.loads((folder / "compare.json").read_text())["rows"]} >= {"ga", "sft_safe", "ppo"}
    # A diverged run is an outcome: a second resume does not run it again and the table says why;
    # the completed runs are left as they are.
    kept = {m: (folder / m / "metrics.json").read_bytes() for m in ("sft_safe", "ppo")}
    record_file = folder / "ga" / "metrics.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "status": "diverged", "error": "loss became non-finite at step 2"}))
    code, out, err = invoke(capsys, "compare", "--resume", str(folder))
    assert code == 2 and "ga did not complete" in err
    assert "ga: loss became non-finite at step 2" in (folder / "compare.md").read_text()
    assert json.loads(record_file.read_text())["status"] == "diverged"
    assert {m: (folder / m / "metrics.json").read_bytes() for m in kept} == kept
    # After a judge changes, `rescore` takes the compare folder: its completed runs, then its table.
    (folder / "compare.md").unlink()
    code, out, err = invoke(capsys, "rescore", str(folder))
    assert code in (0, None), err
    assert "status is 'diverged'" in out and "rebuilt compare.md" in out
    assert all("rescored" in json.loads((folder / m / "metrics.json").read_text()) for m in ("sft_safe", "ppo"))
    assert "rescored" not in json.loads(record_file.read_text())
    assert "ga: loss became non-finite at step 2" in (folder / "compare.md").read_text()


def test_compare_resume_refuses_other_options_and_non_compare_folders(tmp_path, capsys):
    code, _, err = invoke(capsys, "compare", "--resume", str(tmp_path), "--methods", "ga")
    assert code == 2 and "drop --methods" in err
    code, _, err = invoke(capsys, "compare", "--resume", str(tmp_path), "--set", "steps=2")
    assert code == 2 and "drop --set" in err and "--sets" not in err  # as the flag is spelled
    code, _, err = invoke(capsys, "compare", "--resume", str(tmp_path))
    assert code == 2 and "compare_plan.json" in err and len(err.strip().splitlines()) == 1


def test_a_stopped_compare_writes_the_table_of_what_finished(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from unlearnbench import compare as compare_module

    real = compare_module._run_or_continue

    def stopped_at_sft(config, folder):
        if config.method == "sft_safe":
            raise KeyboardInterrupt
        return real(config, folder)

    monkeypatch.setattr(compare_module, "_run_or_continue", stopped_at_sft)
    code, _, err = invoke(capsys, "compare", "--methods", "ga,sft", "--model", str(tiny_model_dir), "--original", "base",
                          "--limit", "2", "--max-new-tokens", "3", "--output-dir", str(tmp_path), "--compare-id", "cmp",
                          "--set", "steps=1", "--set", "batch_size=2")
    assert code == 130 and "interrupted" in err
    rows = {r["method"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]}
    assert rows["ga"]["status"] == "completed" and rows["sft_safe"]["status"] == "missing"
