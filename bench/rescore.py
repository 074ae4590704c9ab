"""`unlearnbench rescore RUN_DIR...`: score a finished run's recorded outputs again with today's judges.

When a judge or a metric improves, the outputs a run generated are still valid evidence; only
their scores are stale. Rescoring reads `generations.jsonl`, recomputes every metric the task
now lists that can be computed from text (with the run's own judge settings), and rewrites
the per-item scores, `metrics.json` and the README. Metrics that need a model forward pass
(fluency: the original model's NLL) keep their recorded values and judge. A run evaluated along
training (`--eval-every`) that kept those outputs (`eval_generations.jsonl`) has its
`eval_log.jsonl` rescored the same way, so that its curves and compute-to-target follow the new
judge too. The record says what was rescored, when and by which commit, under "rescored".
Nothing else in the folder changes, and no model is trained or run.
"""

from __future__ import annotations

import time
from pathlib import Path

from unlearnbench import registry
from unlearnbench.errors import BenchError

KEPT_KINDS = ("lm",)  # judges that need a language model: their recorded scores stay


def rescore(run_dir: Path, judge_cache: dict | None = None) -> list[str]:
    """Rescore one run folder in place; returns the metrics recomputed. `judge_cache` keeps the
    judges between calls, keyed by the settings that choose them."""
    from types import SimpleNamespace

    from unlearnbench import models
    from unlearnbench.evaluation import judge_names, make_judges, scores_as_dicts
    from unlearnbench.records import git_commit, load_json, read_jsonl_records, write_json, write_jsonl
    from unlearnbench.run_folder import write_run_readme

    run_dir = Path(run_dir)
    saved = load_json(run_dir / "config.json", required=("config",))
    record = load_json(run_dir / "metrics.json", required=("status", "metrics"))
    if record["status"] != "completed":
        raise BenchError(f"run '{run_dir}' has status '{record['status']}'; only completed runs are rescored")
    config = SimpleNamespace(**saved["config"])
    rows = read_jsonl_records(run_dir / "generations.jsonl", required=("phase", "split", "index", "question", "output"))
    task = registry.get("task", config.task)()
    data = task.load(config.data, config.seed, eval_limit=config.limit or task.default_eval_limit)
    # make_judges loads only what the task needs: the task is part of the key.
    settings = (config.task, config.model, config.encoder, config.harm_judge, config.utility_judge, config.similarity_judge)
    judge_cache = {} if judge_cache is None else judge_cache
    if settings not in judge_cache:
        judge_cache[settings] = {"tokenizer": models.load_tokenizer(models.resolve(config.model), config.trust_remote_code),
                                 **make_judges(config, data)}
    judges = judge_cache[settings]
    by_phase: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_phase.setdefault((row["phase"], row["split"]), []).append(row)
    recomputed: set[str] = set()
    for (phase, split), phase_rows in by_phase.items():
        eval_set = data.eval_sets.get(split)
        phase_rows.sort(key=lambda r: r["index"])
        if eval_set is None or [r["question"] for r in phase_rows] != eval_set.questions[:len(phase_rows)]:
            raise BenchError(f"{run_dir}: the '{split}' prompts of generations.jsonl are not the task's "
                             "(other data, seed or limit); rescoring needs the prompts the run was scored on")
        originals = [r["output"] for r in sorted(by_phase.get(("original", split), []), key=lambda r: r["index"])]
        scores = score_rows(eval_set, phase_rows, judges, originals)
        kept = {m: v for m, v in record["metrics"][phase][split].items() if m not in scores}
        record["metrics"][phase][split] = {**scores_as_dicts({split: scores})[split], **kept}
        record["judges"] = {**record.get("judges", {}), **judge_names({split: scores})}
        recomputed |= set(scores)
    along_training = rescore_eval_log(run_dir, data, judges)
    record["rescored"] = {"metrics": sorted(recomputed), "git_commit": git_commit(),
                          **({"eval_log": sorted(along_training)} if along_training else {}),
                          "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "kept": "fluency and other language-model scores, as generated"}
    write_jsonl(run_dir / "generations.jsonl", rows)
    write_json(run_dir / "metrics.json", record)
    write_run_readme(run_dir, {**record, "config": saved["config"]})
    return sorted(recomputed)


def score_rows(eval_set, rows: list[dict], judges: dict, originals=None) -> dict:
    """Score recorded outputs (in index order) with every metric of the set that needs only text
    and text judges; each row gets its per-item scores. Returns {metric: result}."""
    from unlearnbench.evaluation import score_outputs

    names = [m for m in eval_set.metrics if registry.get("metric", m)().judge_kind not in KEPT_KINDS]
    scores = score_outputs(names, [r["output"] for r in rows], eval_set.refs[:len(rows)], judges, originals)
    for name, result in scores.items():
        for row, value in zip(rows, result.per_item):
            row[name] = value
    return scores


def rescore_eval_log(run_dir: Path, data, judges: dict) -> set[str]:
    """Recompute eval_log.jsonl's validation scores from eval_generations.jsonl; the metrics
    recomputed (none when the run kept no outputs along training)."""
    import json

    from unlearnbench.evaluation import OUTPUTS_ALONG_TRAINING
    from unlearnbench.records import atomic_write_text, read_jsonl_records, write_jsonl

    outputs_file = run_dir / OUTPUTS_ALONG_TRAINING
    if not outputs_file.is_file():
        return set()
    rows = read_jsonl_records(outputs_file, required=("step", "split", "index", "question", "output"))
    log = read_jsonl_records(run_dir / "eval_log.jsonl", required=("step",))
    by_step = {row["step"]: row for row in log}
    groups: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["step"], row["split"]), []).append(row)
    recomputed: set[str] = set()
    for (step, split), group in sorted(groups.items()):
        eval_set = data.validation_sets.get(split)
        group.sort(key=lambda r: r["index"])
        if eval_set is None or step not in by_step or \
                [r["question"] for r in group] != eval_set.questions[:len(group)]:
            raise BenchError(f"{run_dir}: the '{split}' prompts of {OUTPUTS_ALONG_TRAINING} at step {step} are not "
                             "the task's validation prompts (other data, seed or limit)")
        scores = score_rows(eval_set, group, judges)
        by_step[step].update({f"{split}/{name}": result.value for name, result in scores.items()})
        recomputed |= set(scores)
    write_jsonl(outputs_file, rows)
    atomic_write_text(run_dir / "eval_log.jsonl", "".join(json.dumps(row) + "\n" for row in log))
    return recomputed
