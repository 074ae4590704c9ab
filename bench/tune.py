"""`unlearnbench tune`: search a method's hyper-parameters on the validation split, by one rule.

    unlearnbench tune --method npo --task harmful --trials 12 --steps 80

Each trial is an ordinary run (a folder in the tune's group folder) with `--eval-every` set to
its step count, so its eval_log.jsonl holds the validation scores before and after training.
The objective reads those rows only, never a test set, by the rule of bench/selection.py:

    forget       = the forget rate on forget_val after training
    utility drop = 1 − utility(normal_val, after) / utility(normal_val, before)
    degenerate   = the degenerate rate on forget_val after training
    selected     = argmin forget  subject to  utility drop ≤ max_utility_drop  and  degenerate ≤ max_degenerate
                   (ties: the higher utility)

The search is Optuna's TPE sampler (seeded by the seed plus the trials so far), with the two
limits as trial constraints, over the search space the method's config declares (`search_space`,
next to its fields). The study is an SQLite file in the group folder: run the same command again
and it continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from unlearnbench import selection
from unlearnbench.errors import BenchError


@dataclasses.dataclass
class TuneConfig:
    run: object  # the RunConfig each trial starts from (method, task, model, seed, limits, ...)
    trials: int = 12
    max_utility_drop: float = 0.10
    max_degenerate: float = 0.10


def outcome(eval_log: Path) -> dict:
    """The objective's inputs from a finished trial's eval_log.jsonl (validation rows only)."""
    rows = [json.loads(line) for line in eval_log.read_text().splitlines() if line.strip()]
    return selection.outcome(rows[0], rows[-1])


def feasible(result: dict, config: TuneConfig) -> bool:
    return selection.feasible(result, config)


def select(results: list[dict], config: TuneConfig) -> dict | None:
    return selection.best(results, config, order="trial")


def suggest(trial, space: dict) -> dict:
    params = {}
    for name, (kind, low, high) in space.items():
        if kind == "int":
            params[name] = trial.suggest_int(name, int(low), int(high))
        else:
            params[name] = trial.suggest_float(name, low, high, log=kind == "log")
    return params


def default_params(base, space: dict) -> dict | None:
    """The searched fields' values in an untuned `run` with the same flags (method defaults <
    preset < --set), or None when one lies outside its search range."""
    from unlearnbench.config import resolve_config

    _, _, method = resolve_config(base)
    params = {name: getattr(method.config, name) for name in space}
    inside = all(low <= params[name] <= high for name, (_, low, high) in space.items())
    return params if inside else None


def tune(config: TuneConfig, group: Path) -> dict:
    import optuna

    from unlearnbench import registry
    from unlearnbench.progress import bar
    from unlearnbench.runner import run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = config.run
    space = registry.get("method", base.method).Config.search_space
    unknown = sorted(set(space) & set(base.hyper))
    if unknown:
        raise BenchError(f"--set fixes {', '.join(unknown)}, which the search varies; drop it or tune without it")
    group.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=group.name, storage=f"sqlite:///{group / 'study.db'}", direction="minimize",
                                load_if_exists=True)
    # A sampler seeded with the seed alone would, in a resumed process, draw the same random
    # start-up points again and spend trials on repeats: offset the seed by the trials so far.
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # A trial of a killed tune: mark it failed and run it again with the same parameters.
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(stale.params, skip_if_exists=False)
    # The settings `run` would use are one of the trials, so the selection is never worse on
    # validation than the untuned default (skip_if_exists: once per study, also when resumed).
    defaults = default_params(base, space)
    if defaults is not None:
        study.enqueue_trial(defaults, skip_if_exists=True)
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    for _ in bar(range(done, config.trials), desc=f"tuning {base.method} on {base.task}", unit="trial",
                 initial=done, total=config.trials):
        trial = study.ask()
        params = suggest(trial, space)
        name = f"trial-{trial.number:03d}"
        # every=10^9: validation only before the first step and after the last, the two rows
        # the objective reads; the test sets are not generated on at all (a third of a trial's time).
        run_config = dataclasses.replace(base, hyper={**base.hyper, **params}, output_dir=str(group), run_name=name,
                                         eval_every=10**9, evaluate_test_sets=False)
        run_dir = Path(run(run_config))
        status = json.loads((run_dir / "metrics.json").read_text()).get("status")
        if status != "completed":  # diverged, say: a failed trial, which the sampler learns from
            trial.set_user_attr("run", name)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        result = outcome(run_dir / "eval_log.jsonl")
        trial.set_user_attr("result", result)
        trial.set_user_attr("run", name)
        # Feasible when both are ≤ 0: the sampler learns where the limits hold.
        trial.set_constraint("utility_drop", result["utility_drop"] - config.max_utility_drop)
        trial.set_constraint("degenerate", result["degenerate"] - config.max_degenerate)
        study.tell(trial, result["forget"])
    return summarise(study, config, group, space)


def summarise(study, config: TuneConfig, group: Path, space: dict) -> dict:
    import optuna

    results = [{"trial": t.number, "run": t.user_attrs["run"], "params": t.params, **t.user_attrs["result"]}
               for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    chosen = select(results, config)
    base = config.run
    summary = {
        "method": base.method, "task": base.task, "model": base.model, "seed": base.seed,
        "trials": len(results), "search_space": {k: list(v) for k, v in space.items()},
        "fixed": base.hyper,
        "sampler": f"optuna TPESampler(seed={base.seed} + trials already in the study), constraints: the two limits",
        "rule": selection.rule(config),
        "selected": chosen, "results": results,
    }
    (group / "tune.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    from unlearnbench.plots import tune_plot

    tune_plot(results, chosen, config, group / "tune.png")
    return summary


def selected_settings(group: Path, method: str, task: str, model: str) -> tuple[dict, dict]:
    """What `run --from-tune GROUP` runs: the study's fixed flags and its selected trial's
    parameters, and the provenance the run records (study, trial, trial count, rule, the hash
    of tune.json), so that a board can say where a tuned row's settings came from."""
    from unlearnbench.leaderboard import sha256_file
    from unlearnbench.records import load_json

    path = group / "tune.json"
    if not path.is_file():
        raise BenchError(f"--from-tune: no tune.json in '{group}'; run `unlearnbench tune` there first")
    summary = load_json(path, required=("method", "task", "model", "fixed", "rule", "selected", "trials"))
    for key, wanted in (("method", method), ("task", task), ("model", model)):
        if summary[key] != wanted:
            raise BenchError(f"--from-tune: '{group}' tuned {key} '{summary[key]}', but this run asks for '{wanted}'")
    chosen = summary["selected"]
    if not chosen:
        raise BenchError(f"--from-tune: no trial in '{group}' met its rule, so it selected nothing to run")
    provenance = {"study": group.name, "trial": chosen["run"], "trials": summary["trials"], "rule": summary["rule"],
                  "params": chosen["params"], "tune_json_sha256": sha256_file(path)}
    return {**summary["fixed"], **chosen["params"]}, provenance
