"""`unlearnbench publish`: leaderboard markdown regenerated from run records, never edited by hand.

A leaderboard is two files that only `publish` writes:

    leaderboards/<task>.md             the table people read, with plots under leaderboards/<task>/
    leaderboards/<task>.records.json   one entry per published run: the numbers the table shows,
                                       their provenance and the sha256 of each record file

Publishing reads the run folders, adds (or replaces) their entries in the records file and
regenerates the markdown and plots from all entries, so that every number on the page traces
back to a run record by its hash. An entry is keyed by the sha256 of its `metrics.json`:
publishing the same run again changes nothing (idempotent). Concurrent publishes to one
leaderboard take a file lock around read-merge-write, and every file is replaced atomically,
so neither loses the other's rows.

Runs that differ only in their seed form one row: mean ± 95% CI over the seeds (bench/stats.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from unlearnbench.errors import BenchError
from unlearnbench.tables import group_key, machine_kind, measured_rows, original_rows

FORMAT_VERSION = 1
LOCK_TIMEOUT_SECONDS = 600


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expand_run_dirs(paths) -> list[Path]:
    """Run folders from the arguments: a run folder itself, or a `--seeds` group (its seed-* folders)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if (path / "metrics.json").is_file():
            found.append(path)
        elif path.is_dir() and any(path.glob("seed-*/metrics.json")):
            found.extend(sorted(p.parent for p in path.glob("seed-*/metrics.json")))
        else:
            raise BenchError(f"'{given}' is not a run folder (no metrics.json) nor a --seeds group (no seed-*/metrics.json)")
    if not found:
        raise BenchError("publish needs at least one run folder")
    return list({path.resolve(): path for path in found}.values())  # a run named twice counts once


def attempts_hardware(environment: dict, record: dict) -> list[dict]:
    """The hardware of the run's first attempt and of every resumed one that recorded its own."""
    return [environment.get("hardware", {}), *(r["hardware"] for r in record.get("resumed", [])
                                               if isinstance(r, dict) and r.get("hardware"))]


def hardware_name(hardware: dict) -> str:
    if hardware.get("cuda"):
        names = hardware["cuda"]
        return f"{len(names)}× {names[0]}" if isinstance(names, list) else str(names)
    threads = hardware.get("torch_threads", "?")
    features = f" ({', '.join(hardware['cpu_features'])})" if hardware.get("cpu_features") else ""
    return f"{hardware.get('cpu', 'cpu')}{features} CPU, {threads} thread{'' if threads == 1 else 's'}"


def entry_from_run(run_dir: Path) -> dict:
    """The published form of one completed run: what the table shows, plus where it came from.

    Read from the files exactly as they are on disk (not through RunRecord, which recomputes the
    compute total): publishing certifies those files by their hashes."""
    from unlearnbench.records import load_json, read_jsonl_records

    record = load_json(run_dir / "metrics.json", required=("status",))
    if record.get("status") != "completed":
        raise BenchError(f"run '{run_dir}' has status '{record.get('status')}'; only completed runs are published")
    if record.get("kind") == "eval" or "metrics" not in record:
        raise BenchError(f"run '{run_dir}' is not a training run with before/after metrics; publish takes `run` folders")
    saved = load_json(run_dir / "config.json", required=("config",))
    config, environment = saved["config"], saved.get("environment", {})
    hyper = {k: v for k, v in config.get("method_hyper", {}).items() if k != "seed"}
    files = {name: sha256_file(run_dir / name) for name in ("metrics.json", "config.json", "generations.jsonl", "train_log.jsonl",
                                                            "attack_generations.jsonl")
             if (run_dir / name).is_file()}
    curve = []
    if (run_dir / "train_log.jsonl").is_file():
        curve = [{k: v for k, v in row.items() if k not in ("lr", "seconds")}
                 for row in read_jsonl_records(run_dir / "train_log.jsonl", required=("step",))]
    total = record.get("compute", {}).get("total", {})
    train = record.get("compute", {}).get("train", {})
    entry = {
        "key": files["metrics.json"][:16],
        # A --seeds member is named with its group ("group/seed-1"): "seed-1" alone names nothing.
        "run_id": (f"{run_dir.parent.name}/{run_dir.name}" if (run_dir.parent / "summary.json").is_file()
                   else record.get("run_id", run_dir.name)),
        "task": config["task"],
        "model": config["model"],
        "method": config["method"],
        "preset": config.get("preset", "default"),
        "seed": config["seed"],
        "data": {"source": record.get("data", {}).get("source", config.get("data")),
                 "hashes": record.get("data", {}).get("hashes", {})},
        "settings": {"hyper": hyper, "template": config.get("template"), "limit": config.get("limit"),
                     "original": record.get("original", {}).get("kind")},
        "judges": record.get("judges", {}),
        "git_commit": environment.get("git_commit"),
        "hardware": "; ".join(dict.fromkeys(hardware_name(h) for h in attempts_hardware(environment, record))),
        "compute": {"train_flops": train.get("flops", 0.0), "total_flops": total.get("flops", 0.0),
                    "train_wall_seconds": train.get("wall_seconds", 0.0), "total_wall_seconds": total.get("wall_seconds", 0.0),
                    "peak_rss_mb": total.get("peak_rss_mb", 0.0), "peak_cuda_mb": total.get("peak_cuda_mb", 0.0)},
        "metrics": {phase: {split: {name: {"value": m.get("value")} for name, m in scores.items()}
                            for split, scores in splits.items()}
                    for phase, splits in record["metrics"].items()},
        "train_curve": curve,
        "sha256": files,
    }
    if config.get("tuned"):  # only tuned runs carry the key, so earlier entries rebuild unchanged
        entry["settings"]["tuned"] = {k: config["tuned"][k] for k in ("study", "trial", "trials", "tune_json_sha256")}
    attacks = record.get("attacks") or {}
    if attacks.get("summary"):  # only attacked runs carry the key, so earlier entries rebuild unchanged
        entry["robustness"] = {**attacks["summary"], "attack_limit": attacks.get("settings", {}).get("limit")}
    return entry


# --- the files -------------------------------------------------------------------------------


def records_path(leaderboard: Path) -> Path:
    return leaderboard.with_suffix(".records.json")


def load_board(leaderboard: Path) -> dict:
    from unlearnbench.records import load_json

    sidecar = records_path(leaderboard)
    if not sidecar.exists():
        if leaderboard.exists():
            raise BenchError(f"'{leaderboard}' exists but was not written by publish (no {sidecar.name} beside it); "
                             "move it away or choose another --leaderboard")
        return {"format": FORMAT_VERSION, "task": None, "runs": []}
    board = load_json(sidecar, required=("runs",))
    if leaderboard.exists() and board.get("markdown_sha256") and sha256_file(leaderboard) != board["markdown_sha256"]:
        raise BenchError(f"'{leaderboard}' was edited by hand since it was last published; "
                         f"leaderboards are generated from records only (restore it, or delete it to regenerate)")
    return board


def located_run(entry: dict, leaderboard: Path, given: dict[str, Path]) -> Path:
    """The run folder of a published entry whose files hash as published: at the path recorded
    when it was published, in the committed layout `runs/<task>/<run id>` beside the board, or
    named on the command line. A folder that is there but changed is refused, naming the file."""
    candidates = [leaderboard.parent / entry["path"]] if entry.get("path") else []
    candidates += [leaderboard.parent / "runs" / entry["task"] / entry["run_id"], given.get(entry["run_id"])]
    present = [Path(os.path.normpath(c)) for c in candidates if c is not None and (c / "metrics.json").is_file()]
    if not present:
        raise BenchError(f"{records_path(leaderboard)}: the published run '{entry['run_id']}' is not where it was "
                         "published from; pass its run folder to publish so that its row can be checked and rebuilt")
    def changed(run_dir: Path) -> list[Path]:
        return [run_dir / name for name, digest in entry["sha256"].items()
                if not (run_dir / name).is_file() or sha256_file(run_dir / name) != digest]

    for run_dir in present:
        if not changed(run_dir):
            return run_dir
    raise BenchError(f"{changed(present[0])[0]} is not the file that was published (its sha256 differs from "
                     f"{records_path(leaderboard).name}); publish refuses a run changed after publishing")


def first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
    return where or "(the whole entry)"


def rebuilt_entry(entry: dict, leaderboard: Path, given: dict[str, Path]) -> dict:
    """A published entry made again from its run folder, refused unless it is the same entry.

    The records file caches what the table shows; trusting the cache would let a hand edit of
    it, or of a run file after publishing, reach the page silently.
    """
    check_unedited(entry, entry_from_run(located_run(entry, leaderboard, given)), leaderboard)
    return entry


def check_unedited(published: dict, rebuilt: dict, leaderboard: Path) -> None:
    """Refuse a published entry that differs from the one its run record gives (where it lies aside)."""
    published, rebuilt = without_path(published), without_path(rebuilt)
    if rebuilt != published:
        raise BenchError(f"{records_path(leaderboard)}: the entry of run '{published['run_id']}' differs from its run "
                         f"record at '{first_difference(published, rebuilt)}'; the records file was edited by hand")


def without_path(entry: dict) -> dict:
    """An entry without where its run folder was: the same run may be published from anywhere."""
    return {k: v for k, v in entry.items() if k != "path"}


def relative_path(run_dir: Path, leaderboard: Path) -> str:
    return Path(os.path.relpath(run_dir.resolve(), leaderboard.parent.resolve())).as_posix()


def publish(run_dirs, leaderboard: str | Path, plots: bool = True) -> dict:
    """Add the runs to the leaderboard and regenerate it. Returns {added, replaced, unchanged, rows}."""
    from filelock import FileLock, Timeout

    from unlearnbench.progress import say
    from unlearnbench.records import atomic_write_text, write_json

    leaderboard = Path(leaderboard)
    if leaderboard.suffix != ".md":
        raise BenchError(f"--leaderboard should be a markdown file (.md), got '{leaderboard}'")
    given_dirs = expand_run_dirs(run_dirs)
    new_entries = [{**entry_from_run(d), "path": relative_path(d, leaderboard)} for d in given_dirs]
    given = {entry["run_id"]: d for entry, d in zip(new_entries, given_dirs)}
    try:
        leaderboard.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create '{leaderboard.parent}': {exc.strerror or exc}") from exc
    lock = FileLock(str(leaderboard) + ".lock")
    try:
        try:
            held = lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another publish to finish with {leaderboard} ...")
            held = lock.acquire(timeout=LOCK_TIMEOUT_SECONDS)
        with held:  # released on leaving the block, however it is left
            board = load_board(leaderboard)
            tasks = {e["task"] for e in new_entries} | ({board["task"]} if board.get("task") else set())
            if len(tasks) > 1:
                raise BenchError(f"one leaderboard holds one task; these runs are for {', '.join(sorted(tasks))}")
            # One entry per (row, seed): a newer run of the same configuration and seed replaces the older.
            replaced = {(group_key(e), e["seed"]) for e in new_entries}
            by_slot = {(group_key(e), e["seed"]): e if (group_key(e), e["seed"]) in replaced
                       else rebuilt_entry(e, leaderboard, given) for e in board["runs"]}
            counts = {"added": 0, "replaced": 0, "unchanged": 0}
            for entry in new_entries:
                slot = (group_key(entry), entry["seed"])
                old = by_slot.get(slot)
                unchanged = old is not None and old["key"] == entry["key"]
                if unchanged:
                    check_unedited(old, entry, leaderboard)
                counts["added" if old is None else "unchanged" if unchanged else "replaced"] += 1
                by_slot[slot] = entry
            entries = sorted(by_slot.values(), key=lambda e: e["key"])
            task = tasks.pop()
            markdown = render_markdown(task, entries, leaderboard, plots)
            if plots:
                from unlearnbench.plots import write_leaderboard_plots

                write_leaderboard_plots(task, entries, plot_dir(leaderboard))
            board = {"format": FORMAT_VERSION, "task": task, "generated_by": "unlearnbench publish",
                     "markdown_sha256": hashlib.sha256(markdown.encode("utf-8")).hexdigest(), "runs": entries}
            # The records first: if the markdown write then fails, the next publish regenerates it.
            write_json(records_path(leaderboard), board)
            atomic_write_text(leaderboard, markdown)
    except Timeout:
        raise BenchError(f"another publish has held '{leaderboard}.lock' for {LOCK_TIMEOUT_SECONDS} s; try again") from None
    counts["rows"] = len(measured_rows(entries))
    return counts


def plot_dir(leaderboard: Path) -> Path:
    return leaderboard.parent / leaderboard.stem


# --- the markdown ----------------------------------------------------------------------------


def compute_cell(entries: list[dict], field: str, scale: float, digits: int) -> str:
    from unlearnbench.stats import summarize

    return summarize([e["compute"][field] for e in entries]).format(scale, digits)


def short_hash(entry: dict) -> str:
    return entry["sha256"]["metrics.json"][:12]


# (header, summary key, scale): the robustness columns, shown once any run on the board was attacked.
ROBUSTNESS_COLUMNS = (("worst-case forget % (attacked) ↓", "worst_case_forget_rate", 100),
                      ("relearn recovery ↓", "relearn_forget_recovery", 1),
                      ("control recovery", "relearn_normal_recovery", 1))


def robustness_cell(members: list[dict], key: str, scale: float) -> str:
    from unlearnbench.stats import summarize

    measured = [m["robustness"][key] for m in members if key in m.get("robustness", {})]
    if not measured:
        return "-"  # not attacked, or not with this attack
    return summarize(measured).format(scale, 1 if scale == 100 else 2)


def render_markdown(task: str, entries: list[dict], leaderboard: Path, plots: bool) -> str:
    from tabulate import tabulate

    from unlearnbench.reported import reported_rows
    from unlearnbench.tables import metric_cell, paper_columns

    columns = paper_columns(entries[0]["metrics"])
    attacked = any("robustness" in e for e in entries)
    robustness = ROBUSTNESS_COLUMNS if attacked else ()
    headers = ["#", "source", "model", "method", "preset", "seeds", *[c[0] for c in columns],
               *[c[0] for c in robustness], "train PFLOPs", "train wall s"]
    rows, provenance = [], []
    for label, members in original_rows(entries):
        rows.append([label, "measured", members[0]["model"], f"original ({members[0]['settings']['original']})", "-",
                     ",".join(str(m["seed"]) for m in members),
                     *[metric_cell(members, "original", split, name, scale) for _, split, name, scale in columns],
                     *["-" for _ in robustness], "-", "-"])
        provenance.append([label, *provenance_cells(members, original=True)])
    for label, members in measured_rows(entries):
        rows.append([label, "measured", members[0]["model"], members[0]["method"], members[0]["preset"],
                     ",".join(str(m["seed"]) for m in members),
                     *[metric_cell(members, "unlearned", split, name, scale) for _, split, name, scale in columns],
                     *[robustness_cell(members, key, scale) for _, key, scale in robustness],
                     compute_cell(members, "train_flops", 1e-15, 3), compute_cell(members, "train_wall_seconds", 1, 0)])
        provenance.append([label, *provenance_cells(members)])
    reported = reported_rows(task)
    for row in reported:
        rows.append(["-", "reported (paper)", row["model"], row["method"], "paper", "-",
                     *[metric_cell([row], "unlearned", split, name, scale) for _, split, name, scale in columns],
                     *["-" for _ in robustness], "-", "-"])

    judges = entries[0]["judges"]
    lines = [
        f"# Leaderboard: {task}",
        "",
        "Generated by `unlearnbench publish` from run records; do not edit by hand (publish refuses to "
        f"overwrite a hand-edited file). Every measured row lists its runs and the sha256 of each run's "
        f"`metrics.json` under Provenance; `{records_path(leaderboard).name}` holds the published numbers "
        "and the hash of every record file.",
        "",
        "- **measured**: runs of this suite. `O` rows are the models before unlearning, `M` rows after.",
        *(["- Each machine kind has its own `O` row: a run prepares and evaluates its original on its own "
           "machine, and bf16 arithmetic differs between CPUs with and without AMX, so the scores differ. The "
           "hardware column under Provenance tells which `M` rows start from which."]
          if len({machine_kind(e) for e in entries}) > 1 else []),
        "- **reported (paper)**: numbers the paper reports (Yao, Xu, Liu 2023) for its models and judges, "
        "which differ from ours; context, not a like-for-like comparison.",
        "- A cell over several seeds is the mean ± 95% confidence interval (Student t, n − 1 degrees of freedom); "
        "NM: not meaningful (the paper's mark for fluency of degenerate output); -: not measured.",
        *(["- **distinct answers**: the share of different answers among the outputs on the unlearned prompts "
           "(100% when every answer is its own). Every other column judges one output at a time, so a model "
           "that gives one fluent sentence to every prompt is clean item by item; here it is low. A refusal "
           "template is low too: a low share says to read the outputs."]
          if any(name == "distinct_answers" for _, _, name, _ in columns) else []),
        *(["- **preset `tuned`**: the settings `unlearnbench tune` selected on the validation split (equal "
           "trial budget per method, one rule: lowest forget rate within the utility and degeneracy limits); "
           "the study is named under Provenance and committed in leaderboards/tuning/. `default` rows are untuned."]
          if any(e["preset"] == "tuned" for e in entries) else []),
        *(["- **Robustness** (`unlearnbench attack`, docs/robustness.md): the worst forget rate over the "
           "prompts as asked, every rephrasing and every quantization; and the recovery after 30 relearning "
           "steps on forget_val answers, which unlearning never saw (control: on normal answers), (rate after − unlearned) / "
           "(original − unlearned), 0 = nothing came back."] if attacked else []),
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]
    if reported:
        lines += [f"Reported rows: {reported[0]['source']}. The paper's 'GA+Mismatch' is `unlearn`.", ""]
    lines += ["Judges of the measured rows:", "", *[f"- {metric}: {judge}" for metric, judge in judges.items()], ""]
    if plots:
        folder = plot_dir(leaderboard).name
        lines += ["## Plots", "",
                  f"![loss terms against step]({folder}/training_curves.png)", "",
                  f"![each metric before and after]({folder}/before_after.png)", "",
                  f"![forget metric against training compute]({folder}/forget_vs_compute.png)", ""]
        if attacked:
            lines += [f"![forget rate under each attack]({folder}/robustness.png)", ""]
    lines += ["## Provenance", "",
              tabulate(provenance, headers=["#", "data (source: hashes)", "settings", "git commit", "hardware",
                                            "runs (run id: metrics.json sha256)"], tablefmt="github", disable_numparse=True),
              ""]
    return "\n".join(lines)


def shown_settings(method: str, hyper: dict) -> tuple[str, ...]:
    """The method's own hyper-parameters that provenance names, as its config declares them; for a
    method not installed here, every recorded one beyond the shared training settings."""
    from unlearnbench import registry
    from unlearnbench.methods import TrainConfig

    try:
        return registry.get("method", method).Config.shown_fields()
    except BenchError:
        shared = {f.name for f in dataclasses.fields(TrainConfig)}
        return tuple(k for k in hyper if k not in shared)


def provenance_cells(members: list[dict], original: bool = False) -> list[str]:
    first = members[0]
    data = f"{first['data']['source']}: " + ", ".join(f"{k} {v.removeprefix('sha256:')}" for k, v in sorted(first["data"]["hashes"].items()))
    hyper = first["settings"]["hyper"]
    if original:  # the model before training: only what shaped its evaluation
        settings = f"original={first['settings']['original']}"
    else:
        settings = ", ".join(f"{k}={hyper[k]}" for k in ("steps", "lr", "batch_size") if k in hyper)
        settings += "".join(f", {k}={hyper[k]}" for k in sorted(shown_settings(first["method"], hyper)) if k in hyper)
    settings += f", template={first['settings']['template']}, limit={first['settings']['limit']}"
    if "tuned" in first["settings"] and not original:
        tuned = first["settings"]["tuned"]
        settings += f", tuned: {tuned['trial']} of {tuned['trials']} trials in {tuned['study']}"
    commits = sorted({(m["git_commit"] or "unknown")[:12] + ("-dirty" if (m["git_commit"] or "").endswith("-dirty") else "")
                      for m in members})
    hardware = sorted({m["hardware"] for m in members})
    runs = "<br>".join(f"{m['run_id']}: {short_hash(m)}" for m in members)
    return [data, settings, ", ".join(commits), "; ".join(hardware), runs]
