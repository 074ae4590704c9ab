"""The pipeline: task -> original -> evaluate -> method.fit -> evaluate -> record.

Both the original and the unlearned model are evaluated on the same prompts with the same
generator and judges. Everything lands in runs/<run-id>/ and nothing measured is lost: the
record is rewritten (atomically) after every phase, and a failure or interruption keeps it.
`run` and `evaluate_model` (`unlearnbench eval`) share one `Pipeline`; each reads as its steps.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
from pathlib import Path

from unlearnbench import models, original_evaluations, registry
from unlearnbench.compute import measure, training_flops
from unlearnbench.config import RunConfig, resolve_config
from unlearnbench.errors import BenchError
from unlearnbench.evaluation import Evaluator, GenerationCounter, judge_names, make_judges, scores_as_dicts
from unlearnbench.originals import choose_original
from unlearnbench.progress import say
from unlearnbench.records import environment
from unlearnbench.run_folder import (RunRecord, load_unfinished, make_run_dir, process_state, recorded_outcome,
                                     shared_run_dir)
from unlearnbench.tables import comparison_table, paper_table  # noqa: F401  (the CLI's and tests' entry points)

__all__ = ["Pipeline", "RunConfig", "Evaluator", "evaluate_model", "make_run_dir", "paper_table", "resolve_config", "run"]


def run(config: RunConfig | None = None, resume: str | Path | None = None) -> Path:
    """Run the pipeline, or with `resume` continue an unfinished run in its own folder.

    Resuming reloads the recorded config, skips every evaluation set already recorded, and
    continues training from the last checkpoint (the train log is cut back to that step, so the
    final curve is the one an uninterrupted run writes). Under `accelerate launch` every process
    trains; only the main one evaluates and writes.
    """
    import torch

    state = process_state()
    pipeline = Pipeline.resumed(resume, state) if resume is not None else Pipeline.started(config, state)
    config, task, method = pipeline.config, pipeline.task, pipeline.method
    say(f"run {pipeline.run_dir}" + (" (resumed)" if resume is not None else ""))
    with recorded_outcome(pipeline.record, pipeline.save):
        torch.manual_seed(config.seed)
        data = pipeline.load_data()
        method.check_data(data.train)
        loaded, template, evaluator = pipeline.load_model(config.model, data)
        original = pipeline.choose_original(data, loaded, template, evaluator, state)
        judge_model = pipeline.evaluate_original(original, loaded, template, evaluator)
        result = pipeline.fit(original, loaded, data, template, evaluator, judge_model, state)
        if state.is_main_process:
            if config.evaluate_test_sets:
                pipeline.evaluate("unlearned", result.model, evaluator, loaded.num_parameters)
            if config.save_model or config.attacks:
                models.save_atomically(result.model, loaded.tokenizer, pipeline.run_dir / "model")
            pipeline.complete()
        state.wait_for_everyone()
    if config.attacks and state.is_main_process:
        attack_after_run(pipeline.run_dir, config)
    return pipeline.run_dir


def attack_after_run(run_dir: Path, config: RunConfig) -> None:
    """`run --attacks`: attack the saved model, then drop it unless --save-model asked to keep it.
    An interrupted attack keeps the model, and `unlearnbench attack RUN_DIR` continues."""
    from unlearnbench.attack import DEFAULT_LIMIT, AttackSettings, attack, drop_model_kept_for_attacks

    # A run evaluated on --limit N prompts is attacked on at most N prompts (and MIA items) too.
    limit = min(config.limit, DEFAULT_LIMIT) if config.limit else DEFAULT_LIMIT
    attack(run_dir, AttackSettings(attacks=tuple(config.attacks), limit=limit))
    drop_model_kept_for_attacks(run_dir)


def evaluate_model(config: RunConfig, reference: str | None = None) -> Path:
    """Score an existing model on a task without training: `unlearnbench eval`.

    For models unlearned elsewhere. The record holds one phase, "unlearned"; with `reference`
    (the model it started from) that model is evaluated too, as the "original" phase, so the
    before/after table, the paper table and similarity_to_original work as in a run. Without
    it, similarity_to_original has nothing to compare with and is left out.
    """
    from unlearnbench.metrics.judges import LanguageModelJudge

    pipeline = Pipeline.for_evaluation(config, reference)
    with recorded_outcome(pipeline.record, pipeline.save):
        data = pipeline.load_data(compare_with_original=reference is not None)
        evaluator = None
        for phase, spec in ([("original", reference)] if reference else []) + [("unlearned", config.model)]:
            loaded, template, evaluator = pipeline.load_model(spec, data, evaluator, phase=f"eval_{phase}")
            # Fluency is judged by the reference model when there is one, else by the model itself.
            if phase == "original" or not reference:
                evaluator.judges["lm"] = LanguageModelJudge(loaded.model, template, f"nll under {spec}")
            pipeline.evaluate(phase, loaded.model, evaluator, loaded.num_parameters, measured_as=f"eval_{phase}")
        pipeline.complete()
    return pipeline.run_dir


class Pipeline:
    """One run's folder, record, compute and outputs, and the phases that fill them."""

    def __init__(self, config: RunConfig, run_dir: Path, record: RunRecord, main: bool = True,
                 train_log=None, generations=None, task=None, method=None, resuming: bool = False):
        self.config, self.run_dir, self.record, self.main = config, Path(run_dir), record, main
        self.task = task or registry.get("task", config.task)()
        self.method = method
        self.train_log = train_log if train_log is not None else []
        self.generations = generations if generations is not None else []
        self.resuming = resuming
        self.started = time.time() - (record.elapsed_seconds or 0)

    # --- starting -----------------------------------------------------------------------------

    @classmethod
    def started(cls, config: RunConfig, state) -> "Pipeline":
        config, task, method = resolve_config(config)
        run_dir = shared_run_dir(config, state)
        record = RunRecord(run_id=run_dir.name, environment=environment(),
                           config={**dataclasses.asdict(config), "method_hyper": dataclasses.asdict(method.config),
                                   "preset_notes": method.preset_notes},
                           files={"generations": "generations.jsonl", "train_log": "train_log.jsonl",
                                  "metrics": "metrics.json"})
        pipeline = cls(config, run_dir, record, state.is_main_process, task=task, method=method)
        pipeline.save()
        return pipeline

    @classmethod
    def resumed(cls, run_dir, state) -> "Pipeline":
        record, train_log, generations = load_unfinished(run_dir)
        known = {f.name for f in dataclasses.fields(RunConfig)}
        config = RunConfig(**{k: v for k, v in record.config.items() if k in known})
        config = dataclasses.replace(config, output_dir=str(Path(run_dir).parent), run_name=Path(run_dir).name)
        config, task, method = resolve_config(config)
        method.check_resume()  # before anything below rewrites the record or cuts the train log
        record.status, record.error = "running", None
        # Each attempt names its machine and code: a run resumed elsewhere measured on two machines.
        now = environment()
        record.resumed.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "hardware": now["hardware"],
                               "git_commit": now["git_commit"]})
        pipeline = cls(config, run_dir, record, state.is_main_process, train_log, generations, task, method, resuming=True)
        pipeline.save()
        return pipeline

    @classmethod
    def for_evaluation(cls, config: RunConfig, reference: str | None) -> "Pipeline":
        task = registry.get("task", config.task)()
        registry.get("generator", config.backend)
        if config.limit is not None and config.limit < 1:
            raise BenchError(f"--limit must be at least 1, got {config.limit}")
        for spec in filter(None, (config.model, reference)):
            models.check(spec)
        run_dir = make_run_dir(config)
        record = RunRecord(run_id=run_dir.name, kind="eval", environment=environment(),
                           config={**dataclasses.asdict(config), "method": "eval", "reference": reference},
                           original={"kind": "reference" if reference else "none", "model": reference})
        pipeline = cls(config, run_dir, record, task=task)
        pipeline.save()
        return pipeline

    def save(self) -> None:
        if self.main:
            self.record.elapsed_seconds = round(time.time() - self.started, 2)
            self.record.save(self.run_dir, self.generations, self.train_log if self.record.kind != "eval" else None)

    def complete(self) -> None:
        self.record.status = "completed"
        if self.method is not None and not self.config.keep_checkpoint:
            shutil.rmtree(self.run_dir / "checkpoint", ignore_errors=True)
            shutil.rmtree(self.run_dir / "best", ignore_errors=True)
            (self.record.train or {}).pop("checkpoint_step", None)
        self.save()

    # --- the phases ---------------------------------------------------------------------------

    def load_data(self, compare_with_original: bool = True):
        from unlearnbench.tasks import data_changed

        config = self.config
        with measure(self.record.compute, "data"):
            data = self.task.load(config.data, config.seed, eval_limit=config.limit or self.task.default_eval_limit)
        if not compare_with_original:
            for eval_set in data.eval_sets.values():
                eval_set.metrics = tuple(m for m in eval_set.metrics if m != "similarity_to_original")
        if self.record.data and data_changed(self.record.data, data):
            raise BenchError(f"the data of {config.task}/{config.data}, or how the task splits it, changed since this "
                             "run started; start a new run instead of resuming")
        self.record.data = {"source": config.data, "hashes": data.hashes, "counts": data.counts, "seed": config.seed}
        return data

    def load_model(self, spec: str, data, evaluator: Evaluator | None = None, phase: str = "load"):
        """The model, its template and the evaluator (made once, with the judges, for the first model)."""
        from unlearnbench.batching import Template

        config = self.config
        with measure(self.record.compute, phase):
            loaded = models.load(spec, trust_remote_code=config.trust_remote_code)
            template = Template(loaded.tokenizer, self._template_kind())
            judges = make_judges(config, data) if evaluator is None else evaluator.judges
        if evaluator is None:
            if hasattr(judges.get("harm"), "accuracy"):
                self.record.harm_judge = {"held_out_accuracy": judges["harm"].accuracy,
                                          "held_out_items": judges["harm"].held_out_size}
            evaluator = Evaluator(data, template, judges, config.backend,
                                  config.max_new_tokens or self.task.max_new_tokens, config.seed)
            evaluator.check_prompt_lengths(loaded.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None))
        evaluator.template = template
        if self.record.kind != "eval":
            self.record.config["resolved_template"] = template.kind
        return loaded, template, evaluator

    def _template_kind(self) -> str:
        if self.record.kind == "eval" and self.config.template == "auto":
            return self.task.template or "auto"
        return self.config.template

    def choose_original(self, data, loaded, template, evaluator, state):
        # The main process prepares (and caches) the original if one is needed; the others then load it.
        reused_from = (self.record.original or {}).get("evaluation_from")  # a resumed run keeps saying so
        if self.main:
            original, self.record.original = choose_original(self.config, self.task, data, loaded, template, evaluator,
                                                             self.record.compute)
        state.wait_for_everyone()
        if not self.main:
            original, self.record.original = choose_original(self.config, self.task, data, loaded, template, evaluator, {})
        if reused_from:
            self.record.original["evaluation_from"] = reused_from
        self.save()
        return original

    def evaluate_original(self, original, loaded, template, evaluator):
        """Evaluate the original; returns the frozen copy of it that judges fluency and anchors training."""
        from unlearnbench.metrics.judges import LanguageModelJudge

        with measure(self.record.compute, "eval_original") as measured:
            generator = evaluator.generator(original)
            # The generator's copy serves as the frozen original when it is one.
            judge_model = generator.model if generator.model is not original else copy.deepcopy(original)
            kind = self.record.original["kind"]
            evaluator.judges["lm"] = LanguageModelJudge(judge_model, template,
                                                        f"nll under the original ({kind} {self.config.model})")
            kept = original_evaluations.OriginalEvaluations(self.config, self.record, loaded.tokenizer, self.run_dir)
            place = kept.test_sets_place(original) if self.main else None
            if not self.record.metrics.get("original"):
                stored = kept.load(place, "evaluated", "judges", "generations")
                if stored is not None:
                    self.adopt_original_evaluation(stored)
            for split in self.recorded_splits("original"):  # resumed: what similarity_to_original compares with
                rows = sorted((r for r in self.generations if r["phase"] == "original" and r["split"] == split),
                              key=lambda r: r["index"])
                evaluator.original_outputs[split] = [r["output"] for r in rows]
            if self.main:
                if self.config.evaluate_test_sets:
                    self._evaluate_sets("original", generator, evaluator, loaded.num_parameters, measured)
                self.record.generator = {**generator.describe(), "generation": evaluator.generation.to_dict()}
                if "evaluation_from" not in self.record.original:  # a reused evaluation is not kept again
                    kept.store_original(place, self.generations)
            del generator
        self.save()
        return judge_model

    def adopt_original_evaluation(self, stored: dict) -> None:
        """Take an earlier run's scores and outputs of this same original (bench/original_evaluations.py)."""
        self.record.metrics["original"] = stored["metrics"]
        self.record.evaluated["original"] = stored["evaluated"]
        self.record.judges = {**stored["judges"], **self.record.judges}
        self.record.original = {**self.record.original, "evaluation_from": stored["run"]}
        self.generations[:] = [r for r in self.generations if r["phase"] != "original"] + stored["generations"]
        say(f"original: its evaluation is reused from {stored['run']} (same original, data, settings and code)")
        self.save()

    def evaluate(self, phase: str, model, evaluator: Evaluator, parameters: int, measured_as: str | None = None) -> None:
        """Generate and score every evaluation set of `phase` not yet recorded, saving after each."""
        with measure(self.record.compute, measured_as or f"eval_{phase}") as measured:
            generator = evaluator.generator(model)
            self._evaluate_sets(phase, generator, evaluator, parameters, measured)

    def _evaluate_sets(self, phase, generator, evaluator, parameters, measured) -> None:
        evaluator.evaluate(generator, phase, counter=GenerationCounter(parameters).bind(measured),
                           done=self.recorded_splits(phase), on_split=self._keep_split(phase))

    def recorded_splits(self, phase: str) -> set[str]:
        """Sets of `phase` with both metrics and every generation on disk."""
        counts = self.record.evaluated.get(phase, {})
        return {split for split, count in counts.items() if split in self.record.metrics.get(phase, {})
                and sum(1 for r in self.generations if r["phase"] == phase and r["split"] == split) == count}

    def _keep_split(self, phase: str):
        def on_split(split, scores, rows):
            self.record.metrics.setdefault(phase, {})[split] = scores_as_dicts({split: scores})[split]
            self.record.evaluated.setdefault(phase, {})[split] = len(rows)
            self.generations[:] = [r for r in self.generations if not (r["phase"] == phase and r["split"] == split)] + rows
            self.record.judges = {**self.record.judges, **judge_names({split: scores})}
            self.save()
        return on_split

    def fit(self, original, loaded, data, template, evaluator, judge_model, state):
        """Train from the original, checkpointing as configured; a resumed run continues its checkpoint."""
        from unlearnbench.training import Checkpointing

        record, method = self.record, self.method
        checkpointing = Checkpointing(self.run_dir / "checkpoint", every=self.config.checkpoint_every,
                                      resume=self.resuming)
        if self.resuming:
            done = checkpointing.saved_step()
            self.train_log[:] = [row for row in self.train_log if row["step"] <= done]
            if done:
                say(f"resuming training after step {done} from {checkpointing.directory}")

        def on_checkpoint(step):
            record.train = {**(record.train or {}), "checkpoint_step": step}
            self.save()
        checkpointing.on_save = on_checkpoint
        state.wait_for_everyone()
        stages: dict = {}
        monitor = self.validation_monitor(data, evaluator, loaded, checkpointing, state)
        try:
            with measure(record.compute, "train") as phase:
                try:
                    result = method.fit(original, loaded.tokenizer, data.train, template, self.train_log.append,
                                        frozen_original=judge_model, checkpointing=checkpointing, stage_compute=stages,
                                        monitor=monitor)
                finally:
                    # A multi-stage method (ppo) measures each stage itself ("train:sft", ...), kept
                    # even when a later stage fails; they are parts of "train", not added to the total.
                    record.compute.update({f"train:{name}": c for name, c in stages.items()})
                    self.save()
                phase.tokens = result.trained_tokens + result.reference_tokens
                phase.flops = training_flops(loaded.num_parameters, result.trained_tokens, result.reference_tokens,
                                             lora=method.config.lora)
        finally:
            if monitor is not None:  # its time is evaluation, not training, also in a cut attempt
                self.move_monitor_compute(monitor)
        record.train = {**(record.train or {}), "steps": result.steps, "trainable_parameters": result.trainable_parameters,
                        **result.record}
        if monitor is not None and monitor.selected is not None:
            record.train["selected"] = monitor.selected
        self.save()
        return result

    def move_monitor_compute(self, monitor) -> None:
        """Move this attempt's evaluation-along-training time out of "train" into its own phase
        (adding to an earlier attempt's, as `measure` does for every phase)."""
        from unlearnbench.compute import combine

        compute = self.record.compute
        compute["train"].wall_seconds -= monitor.compute.wall_seconds
        compute["train"].cpu_seconds -= monitor.compute.cpu_seconds
        earlier = compute.get("eval_along_training")
        compute["eval_along_training"] = combine(earlier, monitor.compute) if earlier else monitor.compute
        self.save()

    def validation_monitor(self, data, evaluator, loaded, checkpointing, state):
        """The evaluation along training of --eval-every, or None. A resumed run keeps the rows up
        to its checkpoint and continues the log."""
        import json

        from unlearnbench.evaluation import OUTPUTS_ALONG_TRAINING, ValidationMonitor

        config = self.config
        if config.eval_every and state.num_processes > 1:
            # The monitor runs on the main process and would see its share of the tokens only.
            raise BenchError("--eval-every runs in one process for now; drop it or run without accelerate launch")
        if not config.eval_every:
            return None
        done = checkpointing.saved_step() if self.resuming else 0
        for name in ("eval_log.jsonl", OUTPUTS_ALONG_TRAINING):  # cut back to the checkpoint, as the train log
            path = self.run_dir / name
            kept = [line for line in (path.read_text().splitlines() if path.is_file() else [])
                    if line.strip() and json.loads(line)["step"] <= done]
            path.write_text("".join(line + "\n" for line in kept))
        self.record.files = {**(self.record.files or {}), "eval_log": "eval_log.jsonl",
                             "eval_generations": OUTPUTS_ALONG_TRAINING}
        best_dir = self.run_dir / "best"
        if (best_dir / "best.json").is_file() and json.loads((best_dir / "best.json").read_text())["step"] > done:
            shutil.rmtree(best_dir)  # kept after the checkpoint the run resumes from: those steps run again
        return ValidationMonitor(evaluator, data.validation_sets, config.eval_every, config.eval_limit,
                                 self.method.monitored_steps(), loaded.num_parameters, self.method.config.lora,
                                 self.run_dir / "eval_log.jsonl",
                                 select=config if config.select == "best" else None, best_dir=best_dir,
                                 kept=original_evaluations.OriginalEvaluations(config, self.record, loaded.tokenizer,
                                                                               self.run_dir))
