"""`unlearnbench attack RUN_DIR`: run attacks against a run's unlearned model and record them.

    unlearnbench run --method unlearn --task copyright --save-model
    unlearnbench attack runs/<run-id> --attacks relearn,rephrase,quantize,mia

The unlearned model is the run folder's `model/` (written by `run --save-model`, or for the
length of `run --attacks`, which drops it once attacked: an attack that continues such a run's
interrupted attacks drops it too); for an `unlearnbench eval` record it is the evaluated model, and the
original its `--reference`. Before any attack, the forget rate of the unlearned model and of the
original is measured again here, on the same prompts, generator and machine: the recoveries are
ratios of rates measured together.

Everything lands in the run folder: `metrics.json` gets an `attacks` section (settings, each
unit's result and compute, a summary), `attack_generations.jsonl` every output, and README.md a
section. Each unit is saved as soon as it is done; the same command again continues.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from unlearnbench import registry
from unlearnbench.attacks import AttackContext, forget_metric_of, recovery
from unlearnbench.errors import BenchError
from unlearnbench.progress import say

ATTACKS = ("relearn", "rephrase", "quantize", "mia")
DEFAULT_LIMIT = 100  # forget prompts per attacked evaluation (and items per MIA side)


@dataclasses.dataclass
class AttackSettings:
    attacks: tuple[str, ...] = ATTACKS
    limit: int = DEFAULT_LIMIT
    relearn_steps: tuple[int, ...] = (10, 30)
    relearn_batch_size: int = 4
    relearn_lr: float | None = None  # None: the run's own training learning rate

    def check(self) -> None:
        for name in self.attacks:
            registry.get("attack", name)
        if not self.attacks:
            raise BenchError("--attacks names no attack")
        if self.limit < 1:
            raise BenchError(f"--limit must be at least 1, got {self.limit}")
        if not self.relearn_steps or min(self.relearn_steps) < 1:
            raise BenchError(f"--relearn-steps must be positive step counts, got {self.relearn_steps}")
        if self.relearn_lr is not None and not self.relearn_lr >= 0:
            raise BenchError(f"--relearn-lr must be >= 0, got {self.relearn_lr}")


def parse_attacks(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        registry.get("attack", name)  # did-you-mean on a typo
    return names


def model_source(run_dir: Path, record) -> tuple[str, str | None]:
    """(the unlearned model, the original) as model specs; the original may be None (eval records)."""
    if record.kind == "eval":
        return record.config["model"], record.config.get("reference")
    saved = run_dir / "model"
    if not (saved / "config.json").is_file():
        raise BenchError(f"run '{run_dir}' kept no model to attack: run it with --save-model "
                         "(or attack as part of the run: unlearnbench run ... --attacks relearn,rephrase,quantize,mia)")
    return str(saved), None


def attack(run_dir, settings: AttackSettings) -> Path:
    """Run the attacks of `settings` on a completed run; returns the run folder."""
    settings.check()
    attacked = AttackedRun.open(Path(run_dir), settings)
    context = attacked.context
    # The two rates every recovery is a ratio of, measured here first.
    attacked.run_unit("reference", "unlearned", lambda: context.forget_rate(context.unlearned, "attack: unlearned"))
    if attacked.has_original:
        attacked.run_unit("reference", "original", lambda: context.forget_rate(context.original(), "attack: original"))
    for name in settings.attacks:
        chosen = registry.get("attack", name)()
        why_not = chosen.skipped(context)
        if why_not:
            attacked.results[name] = {"skipped": why_not}
            say(f"attack {name}: skipped ({why_not})")
            attacked.save()
            continue
        for unit in chosen.units(context):
            if name == "mia" and unit == "original" and not attacked.has_original:
                continue
            attacked.run_unit(name, unit, lambda unit=unit, chosen=chosen: chosen.run_unit(unit, context))
    add_recoveries(attacked.record.attacks)
    attacked.save()
    return attacked.run_dir


def drop_model_kept_for_attacks(run_dir: Path) -> None:
    """Delete the model that `run --attacks` kept only to attack it (not one kept by --save-model)."""
    from unlearnbench.run_folder import RunRecord, write_run_readme

    record = RunRecord.load(run_dir)
    if record.kind != "eval" and record.config.get("attacks") and not record.config.get("save_model"):
        shutil.rmtree(Path(run_dir) / "model", ignore_errors=True)
        write_run_readme(Path(run_dir), record.as_dict())


class AttackedRun:
    """A run folder under attack: its record, its attack outputs, and the context the attacks
    share. Each unit's result is saved as soon as it is done, and a unit already in the record is
    not run again."""

    def __init__(self, run_dir: Path, record, context: AttackContext, has_original: bool, generations, train_log,
                 attack_rows: list[dict]):
        self.run_dir, self.record, self.context, self.has_original = run_dir, record, context, has_original
        self._generations, self._train_log, self.attack_rows = generations, train_log, attack_rows
        self.results = record.attacks.setdefault("results", {})
        from unlearnbench.compute import PhaseCompute

        self.compute = PhaseCompute()  # what the unit running now reads; see run_unit

    @classmethod
    def open(cls, run_dir: Path, settings: AttackSettings) -> "AttackedRun":
        """Check the run and the settings against earlier attacks, then load the data, the
        unlearned model and the evaluator the attacks use."""
        import torch

        from unlearnbench import models
        from unlearnbench.batching import Template
        from unlearnbench.compute import forward_flops
        from unlearnbench.config import RunConfig
        from unlearnbench.evaluation import Evaluator, make_judges
        from unlearnbench.records import read_jsonl_records
        from unlearnbench.run_folder import RunRecord

        if not (run_dir / "metrics.json").is_file():
            raise BenchError(f"'{run_dir}' is not a run folder (no metrics.json)")
        record = RunRecord.load(run_dir)
        if record.status != "completed":
            raise BenchError(f"run '{run_dir}' has status '{record.status}'; attack a completed run")
        unlearned_spec, reference = model_source(run_dir, record)
        known = {f.name for f in dataclasses.fields(RunConfig)}
        config = RunConfig(**{k: v for k, v in record.config.items() if k in known})
        hyper = record.config.get("method_hyper") or {}
        lr = settings.relearn_lr if settings.relearn_lr is not None else float(hyper.get("lr", 3e-5))
        wanted = {"attacks": list(settings.attacks), "limit": settings.limit, "relearn_steps": list(settings.relearn_steps),
                  "relearn_batch_size": settings.relearn_batch_size, "relearn_lr": lr, "seed": config.seed}
        earlier = record.attacks.get("settings")
        if earlier and {k: v for k, v in earlier.items() if k != "attacks"} != {k: v for k, v in wanted.items() if k != "attacks"}:
            raise BenchError(f"run '{run_dir}' was attacked with other settings ({earlier}); "
                             "attack a copy of the run folder, or give the same settings to continue")
        # Every attack ever asked for, in the order they ran (dict keys keep insertion order).
        attacks = list(dict.fromkeys([*(earlier or {}).get("attacks", []), *settings.attacks]))
        record.attacks = {**record.attacks, "settings": {**wanted, "attacks": attacks}}
        generations = read_jsonl_records(run_dir / "generations.jsonl", required=("phase", "split", "index"))
        train_log = (read_jsonl_records(run_dir / "train_log.jsonl", required=("step",))
                     if (run_dir / "train_log.jsonl").is_file() else None)
        rows_path = run_dir / "attack_generations.jsonl"
        attack_rows = read_jsonl_records(rows_path, required=("attack", "unit")) if rows_path.is_file() else []

        from unlearnbench.tasks import data_changed

        task = registry.get("task", config.task)()
        data = task.load(config.data, config.seed, eval_limit=config.limit or task.default_eval_limit)
        if record.data and data_changed(record.data, data):
            raise BenchError(f"the data of {config.task}/{config.data}, or how the task splits it, changed since the run; "
                             "its attack would not measure the same forget set")
        torch.manual_seed(config.seed)
        loaded = models.load(unlearned_spec, trust_remote_code=config.trust_remote_code)
        template = Template(loaded.tokenizer, record.config.get("resolved_template") or config.template)
        evaluator = Evaluator(data, template, make_judges(config, data), config.backend,
                              config.max_new_tokens or task.max_new_tokens, config.seed)
        attacked: AttackedRun

        def count(tokens: int) -> None:
            attacked.compute.tokens += tokens
            attacked.compute.flops += forward_flops(loaded.num_parameters, tokens)

        prepared = record.kind != "eval" and (record.original or {}).get("kind") == "prepared"
        context = AttackContext(task=task, data=data, template=template, evaluator=evaluator, unlearned=loaded.model,
                                load_original=lambda: load_original(record, config, reference, task, data, template,
                                                                    evaluator),
                                forget_metric=forget_metric_of(data.eval_sets["unlearned"]), lr=lr, limit=settings.limit,
                                seed=config.seed, parameters=loaded.num_parameters,
                                relearn_steps=tuple(sorted(settings.relearn_steps)),
                                relearn_batch_size=settings.relearn_batch_size, count=count,
                                load_base=(lambda: models.load(config.model, trust_remote_code=config.trust_remote_code).model)
                                if prepared else None)
        attacked = cls(run_dir, record, context, reference is not None or record.kind != "eval", generations, train_log,
                       attack_rows)
        return attacked

    def save(self) -> None:
        from unlearnbench.records import write_jsonl

        rows_path = self.run_dir / "attack_generations.jsonl"
        self.record.files = {**(self.record.files or {}), "attack_generations": rows_path.name}
        write_jsonl(rows_path, self.attack_rows)
        self.record.save(self.run_dir, self._generations, self._train_log)

    def run_unit(self, name: str, unit: str, work) -> None:
        """`work()` -> (result, output rows), measured and saved; skipped when already recorded."""
        from unlearnbench.compute import PhaseCompute, measure

        if unit in self.results.get(name, {}):
            return
        self.compute = PhaseCompute()  # the context's `count` adds this unit's tokens and FLOPs here
        phases = {}
        with measure(phases, "attack"):
            result, rows = work()
        measured = phases["attack"]
        measured.tokens, measured.flops = self.compute.tokens, self.compute.flops
        self.results.setdefault(name, {})[unit] = {**result, "compute": measured.to_dict()}
        self.attack_rows[:] = [r for r in self.attack_rows if not (r["attack"] == name and r["unit"] == unit)]
        self.attack_rows.extend({"attack": name, "unit": unit, **row} for row in rows)
        add_recoveries(self.record.attacks)
        self.save()


def load_original(record, config, reference, task, data, template, evaluator):
    """The model the run started from: an eval record's --reference, the base model, or the
    prepared original (from the cache, or prepared again the way the run prepared it)."""
    from unlearnbench import models
    from unlearnbench.originals import choose_original

    if record.kind == "eval":
        return models.load(reference, trust_remote_code=config.trust_remote_code).model
    say("attack: loading the original")
    base = models.load(config.model, trust_remote_code=config.trust_remote_code)
    kind = (record.original or {}).get("kind", "base")
    original, _ = choose_original(dataclasses.replace(config, original="prepared" if kind == "prepared" else "base"),
                                  task, data, base, template, evaluator, {})
    return original


def add_recoveries(attacks: dict) -> None:
    """Each forget rate's recovery, and the summary a leaderboard reads."""
    results = attacks.get("results", {})
    reference = results.get("reference", {})
    unlearned = reference.get("unlearned", {}).get("forget_rate")
    original = reference.get("original", {}).get("forget_rate")

    def with_recovery(result):
        if isinstance(result, dict) and "forget_rate" in result:
            result["recovery"] = recovery(result["forget_rate"], unlearned, original)
        elif isinstance(result, dict):
            for value in result.values():
                with_recovery(value)

    for name, units in results.items():
        if name != "reference":
            with_recovery(units)
    attacks["summary"] = summary(results, unlearned)


def summary(results: dict, unlearned: float | None) -> dict:
    """worst-case forget rate over the unlearned prompts as asked and every rephrasing and
    quantization; relearn recovery at the largest k, for the forget data and the control."""
    original = results.get("reference", {}).get("original", {}).get("forget_rate")
    out: dict = {k: v for k, v in (("unlearned_rate", unlearned), ("original_rate", original)) if v is not None}
    candidates = {"as asked": unlearned} if unlearned is not None else {}
    for name in ("rephrase", "quantize"):
        for unit, result in results.get(name, {}).items():
            if isinstance(result, dict) and result.get("forget_rate") is not None:
                candidates[f"{name} {unit}"] = result["forget_rate"]
    if candidates:
        worst = max(candidates, key=lambda k: (candidates[k], k == "as asked", k))  # a tie names the prompts as asked
        out.update(worst_case_forget_rate=candidates[worst], worst_case_form=worst)
    relearn = results.get("relearn", {})
    for unit in ("forget", "normal"):
        steps = [k for k in relearn.get(unit, {}) if k.startswith("k") and k[1:].isdigit()]
        if steps:
            last = max(steps, key=lambda k: int(k[1:]))
            out[f"relearn_{unit}_rate"] = relearn[unit][last].get("forget_rate")
            out[f"relearn_{unit}_recovery"] = relearn[unit][last].get("recovery")
            out["relearn_k"] = int(last[1:])
    mia = results.get("mia", {})
    for model in ("base", "original", "unlearned"):
        if isinstance(mia.get(model), dict) and "auc_min_k_plus_plus" in mia[model]:
            out[f"mia_auc_{model}"] = mia[model]["auc_min_k_plus_plus"]
    return out
