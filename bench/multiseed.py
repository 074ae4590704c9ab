"""`run --seeds 0,1,2`: one ordinary run per seed inside a group folder, then a summary with the
mean and 95% confidence interval of every metric (bench/stats.py).

    runs/<group>/
        seed-0/ seed-1/ seed-2/   complete run folders (metrics.json, config.json, ...)
        summary.json              per-seed status and run ids; mean, CI and n per metric
        README.md                 the paper table with mean ± CI, and the per-seed values

A seed that fails (a NaN loss, a disk error) is recorded as such and the other seeds still run;
the command then exits non-zero. An interruption writes the summary of what finished first, and
`run --resume GROUP` finishes the group: completed seeds are kept, unfinished ones resume from
their checkpoints, seeds not yet started run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from unlearnbench.errors import BenchError


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2]; duplicates and non-integers are refused."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, dash, high = part.partition("-")
        try:
            seeds.extend(range(int(low), int(high) + 1) if dash else [int(low)])
        except ValueError:
            raise BenchError(f"--seeds expects non-negative integers like 0,1,2 or 0-2, got {text!r}") from None
    if not seeds:
        raise BenchError(f"--seeds expects at least one seed, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def run_seeds(config, seeds: list[int]) -> tuple[Path, list[str]]:
    """Run `config` once per seed; returns the group folder and one line per failed seed."""
    from unlearnbench.config import resolve_config
    from unlearnbench.run_folder import process_state, shared_run_dir

    resolve_config(config)  # every name and number is checked before the group folder exists
    group_name = config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{config.task}-{config.method}-seeds{'_'.join(map(str, seeds))}"
    group = shared_run_dir(dataclasses.replace(config, run_name=group_name), process_state())
    config = dataclasses.replace(config, output_dir=str(group), run_name=None)
    if process_state().is_main_process:
        write_summary(group, seeds, config)  # from the start, so that `--resume GROUP` knows the plan
    return group, _run_each(group, config, seeds)


def resume_seeds(group: Path) -> tuple[Path, list[str]]:
    """`run --resume GROUP`: finish the seeds of a group that did not complete, with the recorded config."""
    from unlearnbench.records import load_json
    from unlearnbench.config import RunConfig

    summary = load_json(group / "summary.json", required=("seeds", "config"))
    known = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in summary["config"].items() if k in known})
    config = dataclasses.replace(config, output_dir=str(group), run_name=None)
    return group, _run_each(group, config, summary["seeds"])


def _run_each(group: Path, config, seeds: list[int]) -> list[str]:
    """Run (or resume) every seed that has not completed; one line per seed that fails."""
    from unlearnbench.records import load_json
    from unlearnbench.run_folder import process_state
    from unlearnbench.runner import run

    failures: list[str] = []
    try:
        for seed in seeds:
            seed_dir = group / f"seed-{seed}"
            try:
                if (seed_dir / "metrics.json").is_file():
                    if load_json(seed_dir / "metrics.json").get("status") == "completed":
                        continue
                    run(resume=seed_dir)
                else:
                    if seed_dir.is_dir() and not any(seed_dir.iterdir()):
                        seed_dir.rmdir()  # claimed but never written: reclaim the name
                    run(dataclasses.replace(config, seed=seed, run_name=seed_dir.name))
            except BenchError as exc:  # includes a diverged run; its folder records the status
                failures.append(f"seed {seed}: {exc}")
    finally:
        if process_state().is_main_process:
            write_summary(group, seeds, config)
    return failures


def seed_records(group: Path) -> list[dict]:
    """The completed runs in a group folder, in seed order, each with its config attached."""
    from unlearnbench.run_folder import RunRecord

    records = []
    for run_dir in sorted(group.glob("seed-*"), key=lambda p: int(p.name.split("-", 1)[1]) if p.name[5:].isdigit() else 1 << 30):
        if not (run_dir / "metrics.json").is_file():
            continue
        record = RunRecord.load(run_dir)
        if record.status == "completed":
            records.append(record.as_dict())
    return records


def metric_summaries(records: list[dict]) -> dict:
    """{phase: {split: {metric: {mean, ci95, n, values}}}} over the records."""
    from unlearnbench.stats import summarize

    out: dict = {}
    for phase in ("original", "unlearned"):
        splits = {}
        for split, scores in records[0]["metrics"].get(phase, {}).items():
            splits[split] = {}
            for name in scores:
                values = [r["metrics"][phase][split][name]["value"] for r in records
                          if name in r["metrics"].get(phase, {}).get(split, {})]
                summary = summarize(values)
                splits[split][name] = {"mean": summary.mean, "ci95": summary.half_width, "n": summary.n, "values": values}
        out[phase] = splits
    return out


def write_summary(group: Path, seeds: list[int], config) -> None:
    from unlearnbench.records import atomic_write_text, load_json, write_json
    from unlearnbench.tables import paper_table

    statuses = {}
    for seed in seeds:
        record_file = group / f"seed-{seed}" / "metrics.json"
        statuses[str(seed)] = load_json(record_file).get("status", "unknown") if record_file.is_file() else "not started"
    records = seed_records(group)
    recorded = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "run_name")}
    summary = {"seeds": seeds, "config": recorded, "status": statuses, "runs": [f"seed-{r['config']['seed']}" for r in records],
               "confidence": 0.95, "interval": "Student t, mean ± t(0.975, n-1)·s/√n",
               "metrics": metric_summaries(records) if records else {}}
    write_json(group / "summary.json", summary)
    lines = [f"# {group.name}: {len(records)} of {len(seeds)} seeds completed", ""]
    lines += [f"- seed {seed}: {status} (`seed-{seed}/`)" for seed, status in statuses.items()]
    if records:
        config = records[0]["config"]
        lines += ["", f"`unlearnbench run --method {config['method']} --task {config['task']} --model {config['model']} "
                      f"--data {config['data']} --seeds {','.join(map(str, seeds))}`", ""]
        table = paper_table(records)
        if table:
            lines += ["Laid out as the paper's Table 3, mean ± 95% confidence interval over the completed seeds:", "", table, ""]
        lines += ["`summary.json` holds every metric on every set with its per-seed values; "
                  "`unlearnbench publish` puts the group on a leaderboard."]
    atomic_write_text(group / "README.md", "\n".join(lines) + "\n")
