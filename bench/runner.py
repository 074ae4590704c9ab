"""The pipeline: task -> original -> evaluate -> method.fit -> evaluate -> record.

Both the original and the unlearned model are evaluated on the same prompts with the same
generator and judges. Everything lands in runs/<run-id>/ and nothing measured is lost: the
record is rewritten (atomically) after every phase, and a failure or interruption keeps it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from unlearnbench import models, registry
from unlearnbench.compute import forward_flops, from_dicts, measure, total, training_flops
from unlearnbench.errors import BenchError, TrainingDiverged
from unlearnbench.presets import resolve_preset
from unlearnbench.progress import say
from unlearnbench.records import environment, load_json, safe_name, write_json, write_jsonl

FORGET_SPLITS = ("unlearned", "unseen")


@dataclass
class RunConfig:
    method: str = "unlearn"
    task: str = "hallucination"
    model: str = models.DEFAULT_MODEL
    data: str = "embedded"
    seed: int = 0
    preset: str = "default"
    hyper: dict = field(default_factory=dict)  # overrides of the method's hyper-parameters
    limit: int | None = None  # prompts per evaluation set
    output_dir: str = "runs"
    run_name: str | None = None
    template: str = "auto"
    original: str = "auto"  # auto | base | prepared
    backend: str = "hf"
    encoder: str = "all-MiniLM-L6-v2"
    utility_judge: str = "similarity"
    harm_judge: str = "embedded"  # or a moderation model id, e.g. PKU-Alignment/beaver-dam-7b
    similarity_judge: str = "embedding"  # similarity to the original's outputs; or a BLEURT-style id
    max_new_tokens: int | None = None
    trust_remote_code: bool = False
    checkpoint_every: int = 50  # training steps between checkpoints (0: only the final one)
    keep_checkpoint: bool = False  # keep the final training state once the run completes


def resolve_config(config: RunConfig):
    """Check every name and number before anything slow happens."""
    task = registry.get("task", config.task)()
    method_cls = registry.get("method", config.method)
    from unlearnbench.generation import choose_backend  # "auto" becomes vllm or hf; the record keeps which
    config = dataclasses.replace(config, backend=choose_backend(config.backend))
    preset = resolve_preset(config.preset, config.model, config.task, config.method)
    # Precedence: the method's dataclass defaults < a named preset < the user's flags.
    hyper = {**preset["hyper"], **config.hyper, "seed": config.seed}
    method = method_cls(method_cls.Config.from_overrides(hyper))
    if config.limit is not None and config.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {config.limit}")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
    if config.checkpoint_every < 0:
        raise BenchError(f"--checkpoint-every must be >= 0, got {config.checkpoint_every}")
    if config.original not in ("auto", "base", "prepared"):
        raise BenchError(f"--original must be auto, base or prepared, got {config.original!r}")
    if config.template == "auto":
        # A text-continuation task needs its own template whatever the preset's Q&A template says.
        config = dataclasses.replace(config, template=task.template or preset["template"])
    if config.template not in ("auto", "chat", "paper", "plain"):
        raise BenchError(f"--template must be auto, chat, paper or plain, got {config.template!r}")
    models.check(config.model)
    method.preset_notes = preset["notes"]
    return config, task, method


def make_run_dir(config: RunConfig) -> Path:
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


class Evaluator:
    """Generates for every evaluation set and scores the outputs with the task's metrics."""

    def __init__(self, data, template, judges: dict, generator_name: str, max_new_tokens: int, seed: int):
        from unlearnbench.generation import GenerationConfig

        self.data, self.template, self.judges = data, template, judges
        self.generator_name = generator_name
        # The original model's outputs per set: what similarity_to_original compares against.
        self.original_outputs: dict[str, list[str]] = {}
        self.generation = GenerationConfig(max_new_tokens=max_new_tokens, seed=seed,
                                           add_special_tokens=template.adds_special_tokens)

    def generator(self, model):
        generator = registry.get("generator", self.generator_name)()
        generator.load_weights(model, self.template.tokenizer)
        return generator

    def check_prompt_lengths(self, tokenizer, context: int | None) -> None:
        """Refuse prompts that cannot fit the model's context with room for the answer.

        Refused rather than truncated: a truncated question is a different question, and the
        scores of the other prompts would silently mix with answers to it.
        """
        if not context:
            return
        room = context - self.generation.max_new_tokens
        for split, eval_set in self.data.eval_sets.items():
            for i, question in enumerate(eval_set.questions):
                length = len(tokenizer(self.template.prompt(question),
                                       add_special_tokens=self.generation.add_special_tokens)["input_ids"])
                if length > room:
                    raise BenchError(f"prompt {i} of the '{split}' set is {length} tokens; the model's context of "
                                     f"{context} leaves room for {room} with {self.generation.max_new_tokens} new "
                                     "tokens: shorten it or lower --max-new-tokens")

    def evaluate(self, generator, phase: str, splits=None, only=None, counter=None, done=(),
                 on_split=None) -> tuple[dict, list[dict]]:
        """Generate and score each set; `done` names sets already recorded, which are skipped.

        `on_split(split, scores, rows)` receives each set's results as soon as it is scored, so a
        crash or an interruption loses at most the set in progress.
        """
        results, rows = {}, []
        for split, eval_set in self.data.eval_sets.items():
            if (splits and split not in splits) or split in done:
                continue
            prompts = [self.template.prompt(q) for q in eval_set.questions]
            outputs = generator.generate(prompts, self.generation, desc=f"{phase}: generating {split}")
            if counter is not None:
                counter(generator)
            if phase == "original":
                self.original_outputs[split] = outputs
            scores = {}
            for metric_name in eval_set.metrics:
                if only and metric_name not in only:
                    continue
                metric = registry.get("metric", metric_name)()
                judge = self.judges.get(metric.judge_kind) if metric.judge_kind else None
                refs = eval_set.refs
                if metric.judge_kind == "original_similarity":
                    refs = [dict(r, original_output=o) for r, o in zip(refs, self.original_outputs[split])]
                scores[metric_name] = metric.compute(outputs, refs, judge)
            results[split] = scores
            split_rows = [{"phase": phase, "split": split, "index": i, "question": ref["question"], "output": output,
                           **{m: s.per_item[i] for m, s in scores.items()}}
                          for i, (ref, output) in enumerate(zip(eval_set.refs, outputs))]
            rows += split_rows
            if on_split is not None:
                on_split(split, scores, split_rows)
        return results, rows


def original_cache_key(config: RunConfig, loaded, data, task, template) -> str:
    blob = json.dumps([loaded.source, data.hashes, config.seed, template.kind, task.prepare_hyper], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def choose_original(config, task, data, loaded, template, evaluator, compute):
    """Decide which model is "the original" that unlearning starts from (docs/paper.md §2.2).

    A task may need an original that actually shows the behaviour to unlearn. With
    --original auto the base model's rate on the unlearned prompts is measured; when it is under
    the task's threshold, the base model is fine-tuned on the task's prepare pairs first (the
    paper's memorising fine-tune for copyright). That model is cached, keyed by model, data and seed.
    """
    metric, threshold = task.original_check
    info = {"kind": "base", "model": config.model, "check": f"{metric} on unlearned prompts >= {threshold:.0%}"}
    if config.original == "base" or not data.prepare_pairs:
        return loaded.model, info
    cache_dir = models.cache_root() / "originals" / f"{task.name}-{original_cache_key(config, loaded, data, task, template)}"
    decision_file = cache_dir / "decision.json"
    decision = json.loads(decision_file.read_text()) if decision_file.is_file() else {}
    if config.original == "auto" and "base_rate" not in decision:
        with measure(compute, "original_check") as phase:
            generator = evaluator.generator(loaded.model)
            base, _ = evaluator.evaluate(generator, "original_check", splits=("unlearned",), only=(metric,))
            del generator
        decision["base_rate"] = base["unlearned"][metric].value
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(decision_file, decision)
    info["base_rate"] = decision.get("base_rate")
    if config.original == "auto" and decision["base_rate"] >= threshold:
        say(f"original: the base model's {metric} is {decision['base_rate']:.1%} (>= {threshold:.0%}); using it as is")
        return loaded.model, info
    prepared_dir = cache_dir / "model"
    info.update(kind="prepared", cache=str(prepared_dir), prepare=dict(method="sft", pairs=len(data.prepare_pairs),
                                                                        **task.prepare_hyper))
    if (prepared_dir / "config.json").is_file():
        say(f"original: loading the cached prepared model from {prepared_dir}")
        return models.load(str(prepared_dir)).model, info
    why = ("--original prepared" if info["base_rate"] is None
           else f"the base model's {metric} is {info['base_rate']:.1%} (< {threshold:.0%})")
    say(f"original: {why}; fine-tuning it on {len(data.prepare_pairs)} {task.prepare_what} first")
    from unlearnbench.batching import TrainData
    from unlearnbench.methods.sft import SupervisedFinetune

    sft = SupervisedFinetune(SupervisedFinetune.Config.from_overrides({**task.prepare_hyper, "seed": config.seed}))
    prepare_log = []
    with measure(compute, "prepare") as phase:
        # In place: the base weights are not needed once the prepared original exists.
        result = sft.fit(loaded.model, loaded.tokenizer,
                         TrainData(forget=data.prepare_pairs, normal=[], mismatch_pool=[]), template, prepare_log.append)
        phase.tokens = result.trained_tokens
        phase.flops = training_flops(loaded.num_parameters, result.trained_tokens)
    info["prepare"]["final_ce"] = prepare_log[-1]["ce"]
    models.save_atomically(result.model, loaded.tokenizer, prepared_dir)
    return result.model, info


def write_record(run_dir: Path, record: dict, compute: dict, generations: list[dict], train_log=None,
                 started: float | None = None) -> None:
    """Rewrite a run folder's files from the in-memory record (each file atomically)."""
    record["compute"] = {name: c.to_dict() for name, c in compute.items()} | {"total": total(compute).to_dict()}
    if started is not None:
        record["elapsed_seconds"] = round(time.time() - started, 2)
    write_json(run_dir / "config.json", {k: record[k] for k in ("run_id", "config", "environment") if k in record}
               | {"data": record.get("data")})
    write_json(run_dir / "metrics.json", {k: v for k, v in record.items() if k not in ("config", "environment")})
    if train_log is not None:
        write_jsonl(run_dir / "train_log.jsonl", train_log)
    write_jsonl(run_dir / "generations.jsonl", generations)
    write_run_readme(run_dir, record)


@contextlib.contextmanager
def recorded_outcome(record: dict, save):
    """Give the record its final status however the block ends, and save it: a failure, a NaN
    loss or an interruption keeps everything measured before it."""
    try:
        yield
    except TrainingDiverged as exc:
        record["status"] = "diverged"
        record["error"] = str(exc)
        raise
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        raise
    except Exception as exc:
        record["status"] = "failed"
        record["error"] = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            save()
        except BenchError:
            pass  # the disk refused the final save: the last complete record on disk stands


def load_resume(run_dir) -> tuple[RunConfig, dict, list[dict], list[dict]]:
    """The config, record, train log and generations of an unfinished run, validated."""
    from unlearnbench.records import read_jsonl_records

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"--resume: '{run_dir}' is not a run folder")
    saved = load_json(run_dir / "config.json", required=("run_id", "config"))
    record = load_json(run_dir / "metrics.json", required=("run_id", "status"))
    if record["status"] == "completed":
        raise BenchError(f"run '{run_dir}' already completed; nothing to resume")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in saved["config"].items() if k in known})
    config = dataclasses.replace(config, output_dir=str(run_dir.parent), run_name=run_dir.name)
    record["config"], record["environment"] = saved["config"], saved.get("environment")
    train_log = read_jsonl_records(run_dir / "train_log.jsonl", required=("step",))
    generations = read_jsonl_records(run_dir / "generations.jsonl", required=("phase", "split", "index"))
    return config, record, train_log, generations


def run(config: RunConfig | None = None, resume: str | Path | None = None) -> Path:
    """Run the pipeline, or with `resume` continue an unfinished run in its own folder.

    Resuming reloads the recorded config, skips every evaluation set already recorded, and
    continues training from the last checkpoint (the train log is cut back to that step, so the
    final curve is the one an uninterrupted run writes).
    """
    import torch

    from unlearnbench.batching import Template
    from unlearnbench.metrics.judges import LanguageModelJudge
    from unlearnbench.training import Checkpointing

    previous = None
    if resume is not None:
        config, previous, train_log, generations = load_resume(resume)
    config, task, method = resolve_config(config)
    if previous is not None:
        method.check_resume()  # before anything below rewrites the record or cuts the train log
    # Under `accelerate launch` every process trains; only the main one evaluates and writes.
    state = process_state()
    main = state.is_main_process
    run_dir = Path(resume) if resume is not None else _shared_run_dir(config, state)
    started = time.time()
    compute: dict = {}
    if previous is None:
        train_log, generations = [], []
        record: dict = {
            "run_id": run_dir.name,
            "status": "running",
            "config": {**dataclasses.asdict(config), "method_hyper": dataclasses.asdict(method.config),
                       "preset_notes": method.preset_notes},
            "environment": environment(),
            "files": {"generations": "generations.jsonl", "train_log": "train_log.jsonl", "metrics": "metrics.json"},
        }
    else:
        record = previous
        record["status"] = "running"
        record.pop("error", None)
        record.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S"))
        started -= record.get("elapsed_seconds", 0)
        compute.update(from_dicts(record.get("compute", {})))

    def save():
        if main:
            write_record(run_dir, record, compute, generations, train_log, started)

    def recorded_splits(phase: str) -> set[str]:
        """Sets of `phase` with both metrics and every generation on disk."""
        counts = record.get("evaluated", {}).get(phase, {})
        return {split for split, count in counts.items() if split in record.get("metrics", {}).get(phase, {})
                and sum(1 for r in generations if r["phase"] == phase and r["split"] == split) == count}

    def keep_split(phase: str):
        def on_split(split, scores, rows):
            record.setdefault("metrics", {}).setdefault(phase, {})[split] = _as_dicts({split: scores})[split]
            record.setdefault("evaluated", {}).setdefault(phase, {})[split] = len(rows)
            generations[:] = [r for r in generations if not (r["phase"] == phase and r["split"] == split)] + rows
            record["judges"] = {**record.get("judges", {}), **_judge_names({split: scores})}
            save()
        return on_split

    save()
    say(f"run {run_dir}" + (" (resumed)" if previous else ""))
    with recorded_outcome(record, save):
        torch.manual_seed(config.seed)
        with measure(compute, "data"):
            data = task.load(config.data, config.seed, eval_limit=config.limit or task.default_eval_limit)
        if hasattr(method, "check_data"):  # e.g. ppo needs preference pairs: say so before anything slow
            method.check_data(data.train)
        if previous and previous.get("data") and previous["data"].get("hashes") != data.hashes:
            raise BenchError(f"the data of {config.task}/{config.data} changed since this run started; "
                             "start a new run instead of resuming")
        record["data"] = {"source": config.data, "hashes": data.hashes, "counts": data.counts, "seed": config.seed}
        with measure(compute, "load"):
            loaded = models.load(config.model, trust_remote_code=config.trust_remote_code)
            template = Template(loaded.tokenizer, config.template)
            judges = make_judges(config, data)
        if hasattr(judges.get("harm"), "accuracy"):
            record["harm_judge"] = {"held_out_accuracy": judges["harm"].accuracy,
                                    "held_out_items": judges["harm"].held_out_size}
        record["config"]["resolved_template"] = template.kind
        evaluator = Evaluator(data, template, judges, config.backend,
                              config.max_new_tokens or task.max_new_tokens, config.seed)
        evaluator.check_prompt_lengths(loaded.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None))
        generation_counter = GenerationCounter(loaded.num_parameters)

        if main:
            original, record["original"] = choose_original(config, task, data, loaded, template, evaluator, compute)
        state.wait_for_everyone()
        if not main:  # the main process has prepared (and cached) the original if one was needed
            original, record["original"] = choose_original(config, task, data, loaded, template, evaluator, {})
        save()

        with measure(compute, "eval_original") as phase:
            generator = evaluator.generator(original)
            # The fluency judge is the original model; the generator's copy serves, kept frozen.
            judge_model = generator.model if generator.model is not original else copy.deepcopy(original)
            kind = record["original"]["kind"]
            judges["lm"] = LanguageModelJudge(judge_model, template, f"nll under the original ({kind} {config.model})")
            for split in recorded_splits("original"):  # resumed: what similarity_to_original compares with
                rows = sorted((r for r in generations if r["phase"] == "original" and r["split"] == split),
                              key=lambda r: r["index"])
                evaluator.original_outputs[split] = [r["output"] for r in rows]
            if main:
                evaluator.evaluate(generator, "original", counter=generation_counter.bind(phase),
                                   done=recorded_splits("original"), on_split=keep_split("original"))
                record["generator"] = {**generator.describe(), "generation": evaluator.generation.to_dict()}
            del generator
        save()

        checkpoint_dir = run_dir / "checkpoint"
        checkpointing = Checkpointing(checkpoint_dir, every=config.checkpoint_every, resume=previous is not None)
        if previous is not None:
            done = checkpointing.saved_step()
            train_log[:] = [row for row in train_log if row["step"] <= done]
            if done:
                say(f"resuming training after step {done} from {checkpoint_dir}")

        def on_checkpoint(step):
            record["train"] = {**record.get("train", {}), "checkpoint_step": step}
            save()
        checkpointing.on_save = on_checkpoint
        state.wait_for_everyone()
        with measure(compute, "train") as phase:
            try:
                result = method.fit(original, loaded.tokenizer, data.train, template, train_log.append,
                                    frozen_original=judge_model, checkpointing=checkpointing)
            finally:
                # A multi-stage method (ppo) measures each stage itself ("train:sft", ...), kept
                # even when a later stage fails; they are parts of "train", not added to the total.
                compute.update({f"train:{name}": c for name, c in getattr(method, "stage_compute", {}).items()})
                save()
            phase.tokens = result.trained_tokens + result.reference_tokens
            phase.flops = training_flops(loaded.num_parameters, result.trained_tokens, result.reference_tokens,
                                         lora=method.config.lora)
        record["train"] = {**record.get("train", {}), "steps": result.steps,
                           "trainable_parameters": result.trainable_parameters,
                           **getattr(method, "train_record", {})}  # e.g. ppo's reward-model accuracy
        save()

        if main:
            with measure(compute, "eval_unlearned") as phase:
                generator = evaluator.generator(result.model)
                evaluator.evaluate(generator, "unlearned", counter=generation_counter.bind(phase),
                                   done=recorded_splits("unlearned"), on_split=keep_split("unlearned"))
                del generator
            record["status"] = "completed"
            if not config.keep_checkpoint:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
                record["train"].pop("checkpoint_step", None)
        state.wait_for_everyone()
    return run_dir


def evaluate_model(config: RunConfig, reference: str | None = None) -> Path:
    """Score an existing model on a task without training: `unlearnbench eval`.

    For models unlearned elsewhere. The record holds one phase, "evaluated"; with `reference`
    (the model it started from) that model is evaluated too, as the "original" phase, so the
    before/after table, the paper table and similarity_to_original work as in a run. Without
    it, similarity_to_original has nothing to compare with and is left out.
    """
    from unlearnbench.batching import Template
    from unlearnbench.metrics.judges import LanguageModelJudge

    task = registry.get("task", config.task)()
    registry.get("generator", config.backend)
    if config.limit is not None and config.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {config.limit}")
    for spec in filter(None, (config.model, reference)):
        models.check(spec)
    run_dir = make_run_dir(config)
    compute: dict = {}
    generations: list[dict] = []
    record: dict = {"run_id": run_dir.name, "status": "running", "kind": "eval",
                    "config": {**dataclasses.asdict(config), "method": "eval", "reference": reference},
                    "environment": environment(), "original": {"kind": "reference" if reference else "none",
                                                               "model": reference}}

    def save():
        write_record(run_dir, record, compute, generations)

    save()
    with recorded_outcome(record, save):
        with measure(compute, "data"):
            data = task.load(config.data, config.seed, eval_limit=config.limit or task.default_eval_limit)
        if not reference:
            for eval_set in data.eval_sets.values():
                eval_set.metrics = tuple(m for m in eval_set.metrics if m != "similarity_to_original")
        record["data"] = {"source": config.data, "hashes": data.hashes, "counts": data.counts, "seed": config.seed}
        template_kind = config.template if config.template != "auto" else (task.template or "auto")
        phases = ([("original", reference)] if reference else []) + [("unlearned", config.model)]
        judges = evaluator = None
        for phase, spec in phases:
            with measure(compute, f"eval_{phase}") as measured:
                loaded = models.load(spec, trust_remote_code=config.trust_remote_code)
                template = Template(loaded.tokenizer, template_kind)
                if evaluator is None:
                    judges = make_judges(config, data)
                    evaluator = Evaluator(data, template, judges, config.backend,
                                          config.max_new_tokens or task.max_new_tokens, config.seed)
                # Fluency is judged by the reference model when there is one, else by the model itself.
                if phase == "original" or not reference:
                    judges["lm"] = LanguageModelJudge(loaded.model, template, f"nll under {spec}")
                evaluator.template = template
                generator = evaluator.generator(loaded.model)
                results, rows = evaluator.evaluate(generator, phase, counter=GenerationCounter(loaded.num_parameters).bind(measured))
            generations += rows
            record.setdefault("metrics", {})[phase] = _as_dicts(results)
            record["judges"] = _judge_names(results)
            save()
        record["status"] = "completed"
    return run_dir


def make_judges(config: RunConfig, data) -> dict:
    """The judges the task's metrics consult, by kind; only those some metric needs are loaded."""
    from unlearnbench.metrics.judges import harm_judge, original_similarity_judge, similarity_judge, utility_judge

    kinds = {registry.get("metric", name).judge_kind for s in data.eval_sets.values() for name in s.metrics}
    similarity = similarity_judge(config.encoder)
    judges = {"similarity": similarity}
    if "utility" in kinds:
        judges["utility"] = utility_judge(config.utility_judge, similarity, config.trust_remote_code)
    if "harm" in kinds:
        judges["harm"] = harm_judge(config.harm_judge, similarity, config.trust_remote_code)
    if "original_similarity" in kinds:
        judges["original_similarity"] = original_similarity_judge(config.similarity_judge, similarity,
                                                                  config.trust_remote_code)
    return judges


def process_state():
    """accelerate's view of the processes of this run (one, unless under `accelerate launch`).

    ACCELERATE_USE_CPU=1 asks for CPU processes (gloo); accelerate's Accelerator honours it but
    a bare PartialState, created first here, would not.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _shared_run_dir(config: RunConfig, state) -> Path:
    """The main process claims the folder; the others learn its name."""
    if state.num_processes == 1:
        return make_run_dir(config)
    from accelerate.utils import broadcast_object_list

    holder = [str(make_run_dir(config)) if state.is_main_process else None]
    broadcast_object_list(holder)
    return Path(holder[0])


class GenerationCounter:
    """Adds a generator's token counts and forward FLOPs to the phase being measured."""

    def __init__(self, parameters: int):
        self.parameters = parameters

    def bind(self, phase):
        def count(generator):
            counts = getattr(generator, "last_counts", {})
            tokens = counts.get("prompt_tokens", 0) + counts.get("generated_tokens", 0)
            phase.tokens += tokens
            phase.flops += forward_flops(self.parameters, tokens)
        return count


def _as_dicts(results: dict) -> dict:
    return {split: {name: {k: v for k, v in r.to_dict().items() if k != "per_item"} for name, r in scores.items()}
            for split, scores in results.items()}


def _judge_names(results: dict) -> dict:
    return {name: r.judge_name for scores in results.values() for name, r in scores.items()}


def comparison_rows(record: dict) -> list[list]:
    """Rows of split, metric, original, unlearned, relative change: the before/after table."""
    metrics = record.get("metrics", {})
    before, after = metrics.get("original", {}), metrics.get("unlearned", {})
    rows = []
    for split, scores in before.items():
        for name, b in scores.items():
            a = after.get(split, {}).get(name)
            show = lambda r: "NM" if r is None or r["value"] is None else f"{r['value']:.3f}"  # noqa: E731
            change = ""
            if a and a["value"] is not None and b["value"] not in (None, 0):
                change = f"{(a['value'] - b['value']) / abs(b['value']):+.0%}"
            arrow = "↑" if b["higher_is_better"] else "↓"
            rows.append([split, f"{name} {arrow}", show(b), show(a) if a else "-", change])
    return rows


def comparison_table(record: dict, fmt: str = "github") -> str:
    from tabulate import tabulate

    return tabulate(comparison_rows(record), headers=["split", "metric", "original", "unlearned", "change"],
                    tablefmt=fmt, disable_numparse=True)


FORGET_RATES = {"harmful_rate": "harm %", "leak_rate": "leak %", "hallucination_rate": "halluc. %"}


def paper_columns(metrics: dict) -> list[tuple[str, str, str, float]]:
    """The paper's Table 3 columns present in a record: (header, split, metric, scale)."""
    original = metrics.get("original", {})
    rate = next((m for m in FORGET_RATES if m in original.get("unlearned", {})), None)
    if rate is None:
        return []
    columns = [(f"{FORGET_RATES[rate]} unlearned ↓", "unlearned", rate, 100), (f"{FORGET_RATES[rate]} unseen ↓", "unseen", rate, 100),
               ("diversity ↑", "unlearned", "diversity", 1), ("fluency ↓", "unlearned", "fluency", 1),
               ("utility ↑ (normal)", "normal", "utility", 1), ("similarity ↑ (normal)", "normal", "similarity_to_original", 1)]
    if "leak_bleu" in original.get("unlearned", {}):
        columns.insert(2, ("leak BLEU unlearned ↓", "unlearned", "leak_bleu", 1))
    return [c for c in columns if c[2] in original.get(c[1], {})]


def metric_cell(records: list[dict], phase: str, split: str, name: str, scale: float) -> str:
    """One table cell: the value, or across seeds the mean ± 95% CI (bench/stats.py); NM where unmeasurable."""
    from unlearnbench.stats import summarize

    found = [r["metrics"][phase][split][name]["value"] for r in records
             if name in r.get("metrics", {}).get(phase, {}).get(split, {})]
    if not found:
        return "-"
    summary = summarize(found)
    cell = summary.format(scale, 1 if scale == 100 else 3)
    # Some seeds NM (degenerate output): say over how many the rest is taken.
    return cell if summary.mean is None or summary.n == len(found) else f"{cell} (n={summary.n} of {len(found)})"


def paper_table(records: dict | list[dict], fmt: str = "github") -> str:
    """The paper's Table 3 layout: one row per model (original, unlearned), the task's rate on
    unlearned and unseen prompts, diversity and fluency on unlearned prompts, utility and
    similarity to the original on normal prompts. Several records (seeds) give mean ± 95% CI."""
    from tabulate import tabulate

    records = [records] if isinstance(records, dict) else records
    columns = paper_columns(records[0].get("metrics", {}))
    if not columns:
        return ""
    first = records[0]
    rows = []
    for phase, label in (("original", f"original ({first.get('original', {}).get('kind', '?')})"),
                         ("unlearned", first.get("config", {}).get("method", "unlearned"))):
        if phase in first.get("metrics", {}):
            rows.append([label, *[metric_cell(records, phase, split, name, scale) for _, split, name, scale in columns]])
    headers = ["model", *[c[0] for c in columns]]
    if len(records) > 1:
        headers[0] = f"model (mean ± 95% CI, {len(records)} seeds)"
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def write_run_readme(run_dir: Path, record: dict) -> None:
    from unlearnbench.records import atomic_write_text

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
    if (run_dir / "checkpoint").is_dir():
        lines.append("- `checkpoint/`: the training state at the last checkpoint; "
                     f"`unlearnbench run --resume {run_dir}` continues from it")
    atomic_write_text(run_dir / "README.md", "\n".join(lines) + "\n")
