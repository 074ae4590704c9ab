"""A run folder and its record: claimed once, rewritten atomically after every phase.

    runs/<run-id>/
        config.json        what a rerun needs: run id, config, environment, data
        metrics.json       everything measured: status, metrics per phase and split, compute, ...
        generations.jsonl  every prompt, output and per-item score
        train_log.jsonl    every loss term at every training step
        README.md          the tables, the judges and what each file holds

`RunRecord` is the one object behind the two JSON files: read once with `RunRecord.load`,
written with `save`, and merged nowhere else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unlearnbench.compute import from_dicts, total
from unlearnbench.errors import BenchError, TrainingDiverged
from unlearnbench.records import (atomic_write_text, load_json, read_jsonl_records, safe_name, write_json,
                                  write_jsonl)

CONFIG_KEYS = ("run_id", "config", "environment", "data")  # config.json; metrics.json holds the rest


@dataclass
class RunRecord:
    run_id: str
    config: dict
    environment: dict | None = None
    status: str = "running"
    kind: str | None = None  # "eval" for `unlearnbench eval`; absent for a training run
    error: str | None = None
    files: dict | None = None
    data: dict | None = None
    original: dict | None = None
    harm_judge: dict | None = None
    generator: dict | None = None
    metrics: dict = field(default_factory=dict)  # phase -> split -> metric -> {value, judge, ...}
    evaluated: dict = field(default_factory=dict)  # phase -> split -> items written to generations.jsonl
    judges: dict = field(default_factory=dict)  # metric -> the judge that scored it
    train: dict | None = None
    resumed: list = field(default_factory=list)
    compute: dict = field(default_factory=dict)  # phase -> PhaseCompute
    attacks: dict = field(default_factory=dict)  # `unlearnbench attack`: settings, results per attack, summary
    elapsed_seconds: float | None = None
    extra: dict = field(default_factory=dict)  # keys a newer or older version wrote, kept as they were

    def as_dict(self) -> dict:
        """The record as one dict (config and measurements together), as tables read it."""
        out = {"run_id": self.run_id, "status": self.status}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("run_id", "status", "extra") or value is None or value == [] or value == {}:
                continue
            out[f.name] = self.compute_dict() if f.name == "compute" else value
        return out | self.extra

    def compute_dict(self) -> dict:
        return {name: c.to_dict() for name, c in self.compute.items()} | {"total": total(self.compute).to_dict()}

    def save(self, run_dir: Path, generations: list[dict], train_log: list[dict] | None = None) -> None:
        """Rewrite the folder's files from this record (each file atomically)."""
        record = self.as_dict()
        write_json(run_dir / "config.json", {k: record.get(k) for k in CONFIG_KEYS if k in record or k == "data"})
        write_json(run_dir / "metrics.json", {k: v for k, v in record.items() if k not in ("config", "environment")})
        if train_log is not None:
            write_jsonl(run_dir / "train_log.jsonl", train_log)
        write_jsonl(run_dir / "generations.jsonl", generations)
        write_run_readme(run_dir, record)

    @classmethod
    def load(cls, run_dir: Path) -> "RunRecord":
        """Both record files of a run folder, validated, as one record."""
        run_dir = Path(run_dir)
        saved = load_json(run_dir / "config.json", required=("run_id", "config"))
        measured = load_json(run_dir / "metrics.json", required=("run_id", "status"))
        merged = {**measured, "config": saved["config"], "environment": saved.get("environment")}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "compute"}
        record = cls(**{k: v for k, v in merged.items() if k in known},
                     extra={k: v for k, v in merged.items() if k not in known and k != "compute"})
        record.compute = from_dicts(measured.get("compute", {}))
        return record


def load_unfinished(run_dir) -> tuple[RunRecord, list[dict], list[dict]]:
    """The record, train log and generations of a run to resume, validated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"--resume: '{run_dir}' is not a run folder")
    record = RunRecord.load(run_dir)
    if record.status == "completed":
        raise BenchError(f"run '{run_dir}' already completed; nothing to resume")
    train_log = read_jsonl_records(run_dir / "train_log.jsonl", required=("step",))
    generations = read_jsonl_records(run_dir / "generations.jsonl", required=("phase", "split", "index"))
    return record, train_log, generations


@contextlib.contextmanager
def recorded_outcome(record: RunRecord, save):
    """Give the record its final status however the block ends, and save it: a failure, a NaN
    loss or an interruption keeps everything measured before it."""
    try:
        yield
    except TrainingDiverged as exc:
        record.status, record.error = "diverged", str(exc)
        raise
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except Exception as exc:
        record.status = "failed"
        record.error = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            save()
        except BenchError:
            pass  # the disk refused the final save: the last complete record on disk stands


def make_run_dir(config) -> Path:
    """Claim a new folder for the run under its output root (mkdir is the claim)."""
    name = config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{config.task}-{config.method}-s{config.seed}"
    root = Path(config.output_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        run_dir = root / safe_name(name)
        suffix = 1
        # mkdir is the claim: two runs started at once with the same name get different folders.
        while True:
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                suffix += 1
                run_dir = root / f"{safe_name(name)}-{suffix}"
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write to output directory '{root}': {exc.strerror or exc}") from exc
    return run_dir


def process_state():
    """accelerate's view of the processes of this run (one, unless under `accelerate launch`).

    ACCELERATE_USE_CPU=1 asks for CPU processes (gloo); accelerate's Accelerator honours it but
    a bare PartialState, created first here, would not.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def shared_run_dir(config, state) -> Path:
    """The main process claims the folder; the others learn its name."""
    if state.num_processes == 1:
        return make_run_dir(config)
    from accelerate.utils import broadcast_object_list

    holder = [str(make_run_dir(config)) if state.is_main_process else None]
    broadcast_object_list(holder)
    return Path(holder[0])


def write_run_readme(run_dir: Path, record: dict) -> None:
    from unlearnbench.tables import comparison_table, paper_table

    config = record["config"]
    lines = [
        f"# Run {record['run_id']}",
        "",
        f"Status: **{record['status']}**" + (f" ({record['error']})" if record.get("error") else ""),
        "",
        (f"`unlearnbench eval --model {config['model']} --task {config['task']} --data {config['data']} "
         f"--seed {config['seed']}" + (f" --reference {config['reference']}`" if config.get("reference") else "`"))
        if record.get("kind") == "eval" else
        f"`unlearnbench run --method {config['method']} --task {config['task']} --model {config['model']} "
        f"--data {config['data']} --seed {config['seed']}`",
        "",
    ]
    if record.get("original"):
        lines += [f"Original model: {record['original'].get('kind')} ({json.dumps(record['original'])})", ""]
    if record.get("metrics"):
        table = paper_table(record)
        lines += ["Laid out as the paper's Table 3:", "", table, ""] if table else []
        lines += ["Every metric on every set:", "", comparison_table(record), ""]
    if record.get("judges"):
        lines += ["Judges:", *[f"- {m}: {j}" for m, j in record["judges"].items()], ""]
    lines += [
        "Files:",
        "- `config.json`: everything a rerun needs (config, method hyper-parameters, package versions, git commit, data hashes)",
        "- `metrics.json`: metrics per split for the original and the unlearned model, compute per phase, status",
        "- `generations.jsonl`: every prompt, output and per-item score, for both models",
        "- `train_log.jsonl`: every loss term at every training step",
    ]
    if record.get("attacks", {}).get("results"):
        lines[lines.index("Files:"):lines.index("Files:")] = attack_section(record["attacks"])
        lines.append("- `attack_generations.jsonl`: every output of every attack, with its per-item scores")
    if (run_dir / "model").is_dir():
        lines.append("- `model/`: the unlearned model (Hugging Face format); `unlearnbench attack` loads it")
    if (run_dir / "checkpoint").is_dir():
        lines.append("- `checkpoint/`: the training state at the last checkpoint; "
                     f"`unlearnbench run --resume {run_dir}` continues from it")
    atomic_write_text(run_dir / "README.md", "\n".join(lines) + "\n")


def attack_section(attacks: dict) -> list[str]:
    """The README's robustness section: every attacked forget rate with its recovery."""
    from tabulate import tabulate

    def cell(value, percent=True):
        return "—" if value is None else (f"{value:.1%}" if percent else f"{value:.3f}")

    rows, auc_rows = [], []
    for name, units in attacks["results"].items():
        if "skipped" in units:
            rows.append([name, "skipped", units["skipped"], "", ""])
            continue
        for unit, result in units.items():
            measured = {unit: result} if "forget_rate" in result else {
                f"{unit} {k}": r for k, r in result.items() if isinstance(r, dict) and "forget_rate" in r}
            for label, r in measured.items():
                rows.append([name, label, cell(r["forget_rate"]), cell(r.get("recovery"), percent=False),
                             cell(r.get("degenerate_rate"))])
            if "auc_loss" in result:
                auc_rows.append([unit, *(cell(result[f"auc_{s}"], percent=False)
                                         for s in ("loss", "zlib", "min_k", "min_k_plus_plus"))])
    mia = attacks["results"].get("mia", {})
    auc_table = ([f"Membership inference, ROC AUC of forget-train answers ({next(iter(mia.values())).get('members')}) "
                  f"against {next(iter(mia.values())).get('non_member_source')} (0.5: looks unseen):", "",
                  tabulate(auc_rows, headers=["model", "LOSS", "zlib", "Min-K%", "Min-K%++"], tablefmt="github"), ""]
                 if auc_rows else [])
    settings = attacks.get("settings", {})
    summary = attacks.get("summary", {})
    return ["## Robustness (`unlearnbench attack`)", "",
            f"At most {settings.get('limit')} forget prompts per evaluation; relearning at lr {settings.get('relearn_lr')}, "
            f"batch {settings.get('relearn_batch_size')}, k = {settings.get('relearn_steps')}. Recovery = (rate under "
            "attack − unlearned rate) / (original rate − unlearned rate), both measured again by the attack.", "",
            tabulate(rows, headers=["attack", "form", "forget rate", "recovery", "degenerate"], tablefmt="github"), "",
            *auc_table,
            "Summary: " + ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                                    for k, v in summary.items()), ""]
