"""`unlearnbench compare`: several methods on the same model, data and seed, side by side with their
training compute — the paper's RLHF comparison (docs/paper.md §5: unlearning at ≈2% of full RLHF's time).

Each method is one ordinary run (runner.run) in runs/<compare-id>/<method>/; then

    compare.json / compare.md   one row per method: the task's forget rate on unlearned and unseen
                                prompts, diversity, fluency, utility, training FLOPs and wall seconds,
                                and the compute as a % of the full ppo pipeline's (when ppo is compared)
    compare.png                 the forget rate on unlearned prompts against training FLOPs, one point per method
    ppo_training.png            ppo's rollout reward and KL to the SFT model per PPO step (when ppo is compared)
    compute_to_target.png       with --eval-every: the forget rate on forget_val along training against FLOPs,
                                and in compare.md the compute each method needs to reach a target rate as a
                                share of ppo's (bench/compute_to_target.py)

With several seeds (`--seeds 0,1,2`) each method's runs are <method>/seed-<s>/ and a row is the
mean ± 95% CI over its seeds (ppo_training.png draws the lowest seed; compare.md gives each seed's
reward trend); the runs go seed by seed (every method at seed 0, then at seed 1, ...).
compare_plan.json records the methods, seeds and options before the first run; `compare --resume
FOLDER` finishes an interrupted comparison from it (a benchmark of several CPU hours can be spread
over sessions).

"sft" here is the paper's SFT row, SFT on the safe responses: the registered method `sft_safe`
(the plain `sft` method fine-tunes on the forget pairs, the unsafe responses).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from unlearnbench import registry
from unlearnbench.errors import BenchError
from unlearnbench.progress import say
from unlearnbench.records import load_json, read_jsonl_records, safe_name, write_json

ALIASES = {"sft": "sft_safe"}  # the paper's SFT row trains on the safe responses
BASELINE = "ppo"
PLAN = "compare_plan.json"  # what `compare --resume` finishes


def parse_methods(text: str) -> list[str]:
    """Method names, checked up front (did-you-mean), aliases resolved, duplicates refused."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        raise BenchError("--methods needs at least one method name, e.g. unlearn,ga,sft,ppo")
    known = registry.REGISTRIES["method"].names()
    resolved = []
    for name in names:
        target = ALIASES.get(name, name)
        if target not in known:
            raise BenchError(registry.unknown_name_message("method", name, sorted(set(known) | set(ALIASES))))
        if target in resolved:
            raise BenchError(f"--methods names '{target}' twice")
        resolved.append(target)
    return resolved


def split_overrides(hyper: dict, methods: list[str]) -> dict[str, dict]:
    """`--set key=v` goes to every method that has `key`; `--set method.key=v` to that method only."""
    from dataclasses import fields

    per_method = {m: {} for m in methods}
    known = {m: {f.name for f in fields(registry.get("method", m).Config)} for m in methods}
    for key, value in hyper.items():
        prefix, dot, name = key.partition(".")
        if dot:
            target = ALIASES.get(prefix, prefix)
            if target not in per_method:
                raise BenchError(f"--set {key}: '{prefix}' is not among the compared methods ({', '.join(methods)})")
            per_method[target][name] = value  # an unknown name is refused by the method's config
            continue
        takers = [m for m in methods if key in known[m]]
        if not takers:
            raise BenchError(f"--set {key}: none of the compared methods has this hyper-parameter")
        for m in takers:
            per_method[m][key] = value
    return per_method


def compare(base, methods: list[str], compare_id: str | None = None, seeds: list[int] | None = None,
            target: float | None = None, tolerance: float = 0.05) -> Path:
    """Run each method with `base` (a RunConfig: task, model, data, seed, limit...) into one folder,
    once per seed of `seeds` (default: base's seed)."""
    from unlearnbench import runner

    per_method = split_overrides(base.hyper, methods)
    # Every configuration is checked before the first (slow) run starts.
    for m in methods:
        runner.resolve_config(dataclasses.replace(base, method=m, hyper=per_method[m]))
    root = Path(base.output_dir).expanduser()
    compare_id = safe_name(compare_id or f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{base.task}-s{base.seed}")
    folder = root / compare_id
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError as exc:
        raise BenchError(f"compare folder '{folder}' exists already: choose another --compare-id") from exc
    except OSError as exc:
        raise BenchError(f"cannot write to '{folder}': {exc.strerror or exc}") from exc
    seeds = seeds or [base.seed]
    # The plan is written before the first run, so that `compare --resume` can finish any part of it.
    write_json(folder / PLAN, {"methods": methods, "seeds": seeds, "target": target, "tolerance": tolerance,
                               "config": {k: v for k, v in dataclasses.asdict(base).items()
                                          if k not in ("method", "seed", "run_name", "output_dir")}})
    say(f"compare {folder}: if it is interrupted, `unlearnbench compare --resume {folder}` finishes it")
    return _run_plan(folder, base, methods, seeds, target, tolerance)


def resume_compare(folder: Path) -> Path:
    """`compare --resume FOLDER`: keep the completed runs, continue the interrupted ones from their
    checkpoints, start the missing ones, then rebuild the table, all with the recorded plan."""
    folder = Path(folder)
    if not (folder / PLAN).is_file():
        raise BenchError(f"--resume: '{folder}' has no {PLAN}; it is not a compare folder (or predates resuming)")
    return _run_plan(folder, *_plan_of(folder))


def _plan_of(folder: Path):
    """The recorded plan of a compare folder: (base RunConfig, methods, seeds, target, tolerance)."""
    from unlearnbench.config import RunConfig

    if not (folder / PLAN).is_file():
        raise BenchError(f"'{folder}' has no {PLAN}; it is not a compare folder (or predates resuming)")
    plan = load_json(folder / PLAN, required=("methods", "seeds", "config"))
    known = {f.name for f in dataclasses.fields(RunConfig)}
    base = RunConfig(**{k: v for k, v in plan["config"].items() if k in known})
    return base, plan["methods"], plan["seeds"], plan.get("target"), plan.get("tolerance", 0.05)


def is_compare_folder(folder: Path) -> bool:
    return (Path(folder) / PLAN).is_file()


def compare_runs(folder: Path) -> list[Path]:
    """Every run folder a comparison holds so far, method by method."""
    return [d for m in _plan_of(folder)[1] for d in run_folders(folder, m)]


def rebuild_comparison(folder: Path) -> dict:
    """The table, compute-to-target and plots again from the run records (after `rescore`), with
    the recorded plan; a run that did not complete is reported by its status, as a compare does."""
    from unlearnbench.run_folder import RunRecord

    base, methods, _, target, tolerance = _plan_of(folder)
    outcomes: dict = {}
    for m in methods:
        for run_dir in run_folders(folder, m):
            record = RunRecord.load(run_dir)
            if record.status != "completed":
                seed = None if run_dir.name == m else int(run_dir.name.removeprefix("seed-"))
                _note_failure(outcomes, m, record.error or record.status, seed)
    return write_comparison(folder, methods, outcomes, target, tolerance, limits=base)


def _run_plan(folder: Path, base, methods: list[str], seeds: list[int], target, tolerance) -> Path:
    per_method = split_overrides(base.hyper, methods)
    several = len(seeds) > 1
    outcomes: dict = {}
    try:
        # Seed by seed, so that a comparison stopped part-way has every method at its first seeds.
        plan = [(seed, m) for seed in seeds for m in methods]
        for number, (seed, m) in enumerate(plan, start=1):
            config = dataclasses.replace(base, method=m, seed=seed, hyper=per_method[m],
                                         output_dir=str(folder / m if several else folder),
                                         run_name=f"seed-{seed}" if several else m)
            say(f"compare: run {number} of {len(plan)}: {m}, seed {seed}")
            failure = _run_or_continue(config, folder)
            if failure:  # diverged or failed: its record is kept and the table says so
                _note_failure(outcomes, m, failure, seed if several else None)
    except KeyboardInterrupt:
        # The table of what finished, so that a stopped comparison shows where it stands.
        try:
            write_comparison(folder, methods, outcomes, target, tolerance, limits=base)
            say(f"compare: stopped; the runs so far are in {folder / 'compare.md'}, and "
                f"`unlearnbench compare --resume {folder}` finishes the rest")
        except Exception:  # noqa: BLE001 - a half-written run must not hide the interruption itself
            pass
        raise
    write_comparison(folder, methods, outcomes, target, tolerance, limits=base)
    return folder


def _note_failure(outcomes: dict, method: str, failure: str, seed: int | None) -> None:
    """Add a run's failure to its method's line under the table ("seed 2: ..." when there are several)."""
    worded = failure if seed is None else f"seed {seed}: {failure}"
    outcomes[method] = "; ".join(filter(None, [outcomes.get(method), worded]))


def _run_or_continue(config, folder: Path) -> str | None:
    """Run one method and seed, or pick up what an earlier, interrupted compare left; the failure, if any."""
    from unlearnbench import runner
    from unlearnbench.run_folder import RunRecord

    run_dir = Path(config.output_dir) / config.run_name
    try:
        if not (run_dir / "metrics.json").is_file():
            if run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # claimed but never written: reclaim the name
            elif run_dir.is_dir():  # killed before its first record: keep what is there, start again
                _set_aside(run_dir, folder, config)
            runner.run(config)
            return None
        record = RunRecord.load(run_dir)
        if record.status == "completed":
            return None
        if record.status == "diverged":  # an outcome, not an accident: running it again gives it again
            return record.error or "diverged"
        method = runner.resolve_config(config)[2]
        try:
            method.check_resume()
        except BenchError:  # a method without checkpoints (ppo) starts again; its partial run is kept aside
            _set_aside(run_dir, folder, config)
            runner.run(config)
            return None
        runner.run(resume=run_dir)  # interrupted, killed or failed: continue from its checkpoint
    except BenchError as exc:
        return str(exc)
    return None


def _set_aside(run_dir: Path, folder: Path, config) -> None:
    aside = folder / "restarted" / f"{config.method}-{config.run_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.parent.mkdir(exist_ok=True)
    run_dir.rename(aside)


def run_folders(folder: Path, method: str) -> list[Path]:
    """A method's run folders in a comparison: <method>/ for one seed, <method>/seed-*/ for several."""
    if (folder / method / "metrics.json").is_file():
        return [folder / method]
    return sorted(p.parent for p in (folder / method).glob("seed-*/metrics.json"))


def ppo_reward_trend(train_log: list[dict], greedy: list | None = None, window: int = 10) -> dict | None:
    """Did PPO raise the reward? The mean rollout reward of the first and of the last `window` PPO
    steps, the KL to the SFT model at the end, and, where `ppo` recorded them, the greedy reward on
    held-out prompts before PPO and after it ([[steps done, reward], ...], first and last)."""
    rows = [r for r in train_log if "reward" in r]
    if len(rows) < 2:
        return None
    window = min(window, len(rows) // 2)
    mean = lambda part, key: sum(r[key] for r in part) / len(part)  # noqa: E731
    first, last = rows[:window], rows[-window:]
    trend = {"steps": len(rows), "window": window, "reward_first": mean(first, "reward"),
             "reward_last": mean(last, "reward"), "reward_gain": mean(last, "reward") - mean(first, "reward"),
             "kl_last": mean(last, "kl")}
    if greedy and len(greedy) >= 2:
        trend.update(greedy_reward_before=greedy[0][1], greedy_reward_after=greedy[-1][1],
                     greedy_reward_gain=greedy[-1][1] - greedy[0][1])
    return trend


def _value(metrics: dict, phase: str, split: str, name: str):
    return metrics.get(phase, {}).get(split, {}).get(name, {}).get("value")


def comparison(folder: Path, methods: list[str], outcomes: dict, ppo_logs: dict | None = None) -> dict:
    """The comparison table's data; `ppo_logs` maps each ppo seed to its train_log.jsonl rows, when ppo ran."""
    from unlearnbench.stats import summarize
    from unlearnbench.tables import paper_columns

    from unlearnbench.compute_to_target import machine_of
    from unlearnbench.run_folder import RunRecord

    per_seed = {m: [RunRecord.load(d).as_dict() for d in run_folders(folder, m)] for m in methods}
    # Seconds are only comparable on one machine kind (FLOPs on any), as in compute-to-target.
    machines = sorted({machine_of(d) or "unrecorded" for m in methods for d in run_folders(folder, m)})
    records = {m: runs[0] for m, runs in per_seed.items() if runs}
    with_metrics = [r for r in records.values() if r.get("metrics", {}).get("original")]
    columns = paper_columns(with_metrics[0]["metrics"]) if with_metrics else []
    columns = [c for c in columns if c[2] != "similarity_to_original"]

    def mean(values):
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    def summaries(values_of) -> tuple[dict, dict, dict]:
        """Each column's mean, 95% CI half-width (None below two values) and number of seeds that
        measured it (a failed seed or an NM fluency leaves a value out)."""
        found = {h: summarize(values_of(s, n)) for h, s, n, _ in columns}
        return ({h: x.mean for h, x in found.items()}, {h: x.half_width for h, x in found.items()},
                {h: x.n for h, x in found.items()})

    def train_of(m, key):
        return mean([r.get("compute", {}).get("train", {}).get(key) for r in per_seed.get(m, [])])

    base = {"flops": train_of(BASELINE, "flops"), "wall_seconds": train_of(BASELINE, "wall_seconds")}
    rows = []
    if with_metrics:
        first = with_metrics[0]
        originals = [r for runs in per_seed.values() for r in runs if r.get("metrics", {}).get("original")]
        by_seed = {r["config"].get("seed", 0): r for r in originals}  # each seed's original once
        means, ci95, measured = summaries(lambda s, n: [_value(r["metrics"], "original", s, n)
                                                        for r in by_seed.values()])
        rows.append({"method": f"original ({first.get('original', {}).get('kind', '?')})", "status": "-",
                     "seeds": len(by_seed), "metrics": means, "ci95": ci95, "measured_seeds": measured})
    for m in methods:
        runs = per_seed.get(m, [])
        statuses = sorted({r.get("status", "missing") for r in runs}) or ["missing"]
        flops, wall = train_of(m, "flops"), train_of(m, "wall_seconds")
        means, ci95, measured = summaries(lambda s, n: [_value(r.get("metrics", {}), "unlearned", s, n) for r in runs])
        stage_names = list(dict.fromkeys(k for r in runs for k in r.get("compute", {}) if k.startswith("train:")))
        row = {"method": m, "status": statuses[0] if len(statuses) == 1 else "/".join(statuses), "seeds": len(runs),
               "error": outcomes.get(m), "metrics": means, "ci95": ci95, "measured_seeds": measured,
               "train_flops": flops, "train_wall_seconds": wall,
               "stages": {k.split(":", 1)[1]: {key: mean([r.get("compute", {}).get(k, {}).get(key) for r in runs])
                                               for key in ("flops", "wall_seconds")} for k in stage_names}}
        if base.get("flops") and flops is not None:
            row["flops_pct_of_ppo"] = 100.0 * flops / base["flops"]
        if base.get("wall_seconds") and wall is not None and len(machines) == 1:
            row["wall_pct_of_ppo"] = 100.0 * wall / base["wall_seconds"]
        rows.append(row)
    greedy = {r["config"].get("seed", 0): r.get("train", {}).get("greedy_reward", {})
              for r in per_seed.get(BASELINE, [])}
    trends = {seed: ppo_reward_trend(log, greedy.get(seed, {}).get("after_ppo_steps"))
              for seed, log in (ppo_logs or {}).items()}
    first_seed = min((seed for seed, trend in trends.items() if trend), default=None)
    return {"folder": str(folder), "methods": methods, "baseline": BASELINE if base.get("flops") else None,
            "columns": [{"header": h, "split": s, "metric": n, "scale": k} for h, s, n, k in columns], "rows": rows,
            # ppo_reward / ppo_greedy_reward: the first seed's, which ppo_training.png draws
            "ppo_reward": trends.get(first_seed), "ppo_greedy_reward": greedy.get(first_seed) or None,
            "ppo_reward_seed": first_seed, "ppo_reward_by_seed": {str(k): v for k, v in sorted(trends.items())},
            "machines": machines}


def markdown(result: dict) -> str:
    from tabulate import tabulate

    columns = result["columns"]
    headers = ["method", "status", *[c["header"] for c in columns], "train FLOPs", "train wall s",
               "FLOPs % of ppo", "wall % of ppo"]

    def cell(value, scale=1.0, digits=3, half_width=None, measured=None, seeds=1):
        if value is None:
            return "-"
        return (f"{value * scale:.{digits}f}" + ("" if half_width is None else f" ± {half_width * scale:.{digits}f}")
                + (f" (n={measured} of {seeds})" if measured is not None and measured < seeds else ""))

    table = []
    for row in result["rows"]:
        ci95, measured = row.get("ci95", {}), row.get("measured_seeds", {})
        table.append([row["method"], row["status"],
                      *[cell(row["metrics"].get(c["header"]), c["scale"], 1 if c["scale"] == 100 else 3,
                             ci95.get(c["header"]), measured.get(c["header"]), row.get("seeds", 1)) for c in columns],
                      "-" if row.get("train_flops") is None else f"{row['train_flops']:.3g}",
                      cell(row.get("train_wall_seconds"), 1, 1), cell(row.get("flops_pct_of_ppo"), 1, 1),
                      cell(row.get("wall_pct_of_ppo"), 1, 1)])
    lines = [f"# Comparison in {result['folder']}", "",
             "Each method's unlearned model; the first row is the original they all start from. Compute is the "
             "training phase only (ppo: SFT + reward model + PPO; FLOPs estimated as in bench/compute.py)."
             + (" Each metric cell is the mean ± 95% CI over the seeds (Student t; bench/stats.py), each compute "
                "cell the mean; status is every seed's." if any(r.get("seeds", 1) > 1 for r in result["rows"]) else ""),
             "",
             tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), ""]
    failed = [r for r in result["rows"] if r.get("error")]
    lines += [f"- {r['method']}: {r['error']}" for r in failed]
    if len(result.get("machines", [])) > 1:
        lines += ["", f"The runs come from {len(result['machines'])} machine kinds ({'; '.join(result['machines'])}): "
                      "wall-time shares are left out, and the original row averages originals evaluated on different "
                      "kinds; FLOPs compare across kinds."]
    ppo_row = next((r for r in result["rows"] if r["method"] == BASELINE and r.get("stages")), None)
    if ppo_row:
        over = f" (mean over {ppo_row['seeds']} seeds)" if ppo_row.get("seeds", 1) > 1 else ""
        flops = lambda value: "-" if value is None else f"{value:.3g}"  # noqa: E731
        lines += ["", f"ppo stages{over}: " + ", ".join(f"{name} {flops(c['flops'])} FLOPs / {cell(c['wall_seconds'], 1, 1)} s"
                                                         for name, c in ppo_row["stages"].items())]
    trends = result.get("ppo_reward_by_seed") or ({"0": result["ppo_reward"]} if result.get("ppo_reward") else {})
    for seed, trend in trends.items():
        if not trend:
            continue
        which = f"ppo seed {seed}" if len(trends) > 1 else "ppo"
        lines += ["", f"{which} reward (reward-model score of the rollouts): {trend['reward_first']:.3f} over the first "
                      f"{trend['window']} PPO steps, {trend['reward_last']:.3f} over the last {trend['window']} "
                      f"({trend['reward_gain']:+.3f}); KL to the SFT model at the end {trend['kl_last']:.2f}"
                  + (f"; greedy reward on held-out prompts {trend['greedy_reward_before']:.3f} before PPO, "
                     f"{trend['greedy_reward_after']:.3f} after ({trend['greedy_reward_gain']:+.3f})"
                     if "greedy_reward_gain" in trend else "") + "."]
    if result.get("ppo_reward"):
        seed = result.get("ppo_reward_seed")
        lines += ["", "Every step: train_log.jsonl in each ppo run folder."
                  + (f" The plot shows seed {seed}." if len(trends) > 1 else ""),
                  "", "![ppo reward and KL per step](ppo_training.png)"]
    lines += ["", "![forget rate against training compute](compare.png)", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    from unlearnbench.plots import _pyplot, _save

    if not result["columns"]:
        return
    column = result["columns"][0]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    original = result["rows"][0] if result["rows"] and result["rows"][0]["status"] == "-" else None
    if original and original["metrics"].get(column["header"]) is not None:
        ax.axhline(original["metrics"][column["header"]] * column["scale"], color="grey", linestyle="--", linewidth=1,
                   label="original")
    spans = []
    for row in result["rows"]:
        value = row["metrics"].get(column["header"])
        if row["status"] == "-" or value is None or not row.get("train_flops"):
            continue
        spans.append(row["train_flops"])
        ax.plot(row["train_flops"], value * column["scale"], "o", label=row["method"])
    if spans and max(spans) > 10 * min(spans):
        ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, estimated from parameters × tokens)")
    ax.set_ylabel(column["header"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def write_comparison(folder: Path, methods: list[str], outcomes: dict, target: float | None = None,
                     tolerance: float = 0.05, limits=None) -> dict:
    from unlearnbench import compute_to_target as to_target
    from unlearnbench.records import atomic_write_text

    ppo_runs = run_folders(folder, BASELINE) if BASELINE in methods else []
    ppo_logs = {load_json(d / "config.json", required=("config",))["config"].get("seed", 0):
                read_jsonl_records(d / "train_log.jsonl") for d in ppo_runs}
    result = comparison(folder, methods, outcomes, ppo_logs)
    reached = to_target.compute_to_target({m: run_folders(folder, m) for m in methods}, target, tolerance, limits)
    if reached is not None:
        result["compute_to_target"] = reached
    write_json(folder / "compare.json", result)
    atomic_write_text(folder / "compare.md", markdown(result) + ("\n".join(to_target.markdown(reached)) if reached else ""))
    if reached is not None and reached.get("target") is not None:
        to_target.plot(reached, folder / "compute_to_target.png")
    plot(result, folder / "compare.png")
    if result.get("ppo_reward"):
        from unlearnbench.plots import ppo_training

        ppo_training(ppo_logs[result["ppo_reward_seed"]], folder / "ppo_training.png",
                     greedy=result["ppo_greedy_reward"])
    return result
