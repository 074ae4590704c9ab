"""Evaluation: generate for every evaluation set and score the outputs with the task's judges.

The original and the unlearned model go through the same `Evaluator`, so both are scored on the
same prompts with the same generator settings and judges.
"""

from __future__ import annotations

import time

from unlearnbench import registry
from unlearnbench.compute import forward_flops
from unlearnbench.errors import BenchError


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

    def score(self, eval_set, outputs: list[str], only=None) -> dict:
        metric_names = [m for m in eval_set.metrics if not only or m in only]
        return score_outputs(metric_names, outputs, eval_set.refs, {"tokenizer": self.template.tokenizer, **self.judges},
                             self.original_outputs.get(eval_set.name))

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
                 on_split=None, eval_sets: dict | None = None) -> tuple[dict, list[dict]]:
        """Generate and score each set (the task's evaluation sets unless `eval_sets` says
        others); `done` names sets already recorded, which are skipped.

        `on_split(split, scores, rows)` receives each set's results as soon as it is scored, so a
        crash or an interruption loses at most the set in progress.
        """
        results, rows = {}, []
        for split, eval_set in (eval_sets or self.data.eval_sets).items():
            if (splits and split not in splits) or split in done:
                continue
            prompts = [self.template.prompt(q) for q in eval_set.questions]
            outputs = generator.generate(prompts, self.generation, desc=f"{phase}: generating {split}")
            if counter is not None:
                counter(generator)
            if phase == "original":
                self.original_outputs[split] = outputs
            scores = self.score(eval_set, outputs, only)
            results[split] = scores
            split_rows = [{"phase": phase, "split": split, "index": i, "question": ref["question"], "output": output,
                           **{m: s.per_item[i] for m, s in scores.items()}}
                          for i, (ref, output) in enumerate(zip(eval_set.refs, outputs))]
            rows += split_rows
            if on_split is not None:
                on_split(split, scores, split_rows)
        return results, rows


def score_outputs(metric_names, outputs: list[str], refs: list[dict], judges: dict, original_outputs=None) -> dict:
    """Each metric on these outputs, in the order given: a metric that combines others
    (`needs_scores`) sees the per-item results of those listed before it."""
    scores = {}
    for metric_name in metric_names:
        metric = registry.get("metric", metric_name)()
        judge = judges.get(metric.judge_kind) if metric.judge_kind else None
        metric_refs = refs
        if metric.judge_kind == "original_similarity":
            metric_refs = [dict(r, original_output=o) for r, o in zip(refs, original_outputs)]
        if metric.needs_scores:
            metric_refs = [dict(r, scores={m: s.per_item[i] for m, s in scores.items()}) for i, r in enumerate(refs)]
        scores[metric_name] = metric.compute(outputs, metric_refs, judge)
    return scores


def make_judges(config, data) -> dict:
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


def scores_as_dicts(results: dict) -> dict:
    """Metric results as record dicts, without the per-item scores (those live in generations.jsonl)."""
    return {split: {name: {k: v for k, v in r.to_dict().items() if k != "per_item"} for name, r in scores.items()}
            for split, scores in results.items()}


def judge_names(results: dict) -> dict:
    """Metric -> its judge's name, with the judge's measured agreement with people where the
    metric is a decision a reader can check (docs/judges.md)."""
    from unlearnbench.labelled_set import VALIDATED_METRICS, agreement_note

    return {name: f"{r.judge_name}; {agreement_note(name, r.judge_name)}" if name in VALIDATED_METRICS else r.judge_name
            for scores in results.values() for name, r in scores.items()}


OUTPUTS_ALONG_TRAINING = "eval_generations.jsonl"


class ValidationMonitor:
    """Evaluation along training (`--eval-every K`): every K steps, and before the first and after
    the last, generate for the first `limit` prompts of each validation set and score them.

    One row per evaluation goes to eval_log.jsonl: the step, the training FLOPs so far (the
    suite's count), the training wall seconds so far (without the time spent here), and every
    metric as "<set>/<metric>". Every output, with its per-item scores, goes to
    eval_generations.jsonl, so that `rescore` can recompute the log with a better judge. Only
    validation prompts are used: the test sets decide nothing.
    `compute` is what the evaluations cost, a phase of its own in the run's record.

    With `select` (limits with max_utility_drop and max_degenerate: `run --select best`), the
    weights of the best step after step 0 under the selection rule (bench/selection.py) are kept
    in `best_dir`, and `finish` puts them back into the model when training ends.
    """

    def __init__(self, evaluator: Evaluator, validation_sets: dict, every: int, limit: int, steps: int,
                 parameters: int, lora: bool, path, select=None, best_dir=None, kept=None):
        import json

        from unlearnbench.compute import PhaseCompute
        from unlearnbench.tasks import EvalSet

        self.evaluator, self.every, self.steps, self.path = evaluator, every, steps, path
        self.outputs_path = path.with_name(OUTPUTS_ALONG_TRAINING)
        self.select, self.best_dir = select, best_dir
        self.kept = kept  # bench/original_evaluations.py: the row before training, reused across runs
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        self.first = rows[0] if rows else None  # a resumed run keeps its step-0 row
        best_file = best_dir / "best.json" if best_dir is not None else None
        self.best = json.loads(best_file.read_text()) if best_file is not None and best_file.is_file() else None
        self.selected = None  # what `finish` selected
        self.sets = {name: EvalSet(name, s.refs[:limit], s.metrics) for name, s in validation_sets.items()}
        self.parameters, self.lora = parameters, lora
        self.compute = PhaseCompute()
        self.count = GenerationCounter(parameters).bind(self.compute)
        self.started = time.perf_counter()

    def __call__(self, step: int, model, trained_tokens: int, reference_tokens: int) -> None:
        import json

        from unlearnbench.compute import training_flops

        if step % self.every and step != self.steps:
            return
        began, began_cpu = time.perf_counter(), time.process_time()
        was_training = model.training
        row = {"step": step, "train_flops": training_flops(self.parameters, trained_tokens, reference_tokens, self.lora),
               "train_seconds": round(began - self.started - self.compute.wall_seconds, 3)}
        place = self.kept.step_zero_place(model) if step == 0 and self.kept is not None else None
        stored = self.kept.load(place, "rows") if place is not None else None
        if stored is not None:
            row.update({**stored["metrics"], "reused_from": stored["run"]})
            outputs = stored["rows"]
        else:
            results, outputs = self.evaluator.evaluate(self.evaluator.generator(model), f"step {step}",
                                                       counter=self.count, eval_sets=self.sets)
            row.update({f"{name}/{metric}": result.value for name, scores in results.items()
                        for metric, result in scores.items()})
            outputs = [{"step": step, **{k: v for k, v in r.items() if k != "phase"}} for r in outputs]
            if place is not None:
                self.kept.store_step_zero(place, {k: v for k, v in row.items() if "/" in k}, outputs)
        model.train(was_training)
        with open(self.outputs_path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in outputs)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        self.first = self.first or row
        if self.select is not None and step > 0:
            self.keep_if_best(step, row, model)
        self.compute.wall_seconds += time.perf_counter() - began
        self.compute.cpu_seconds += time.process_time() - began_cpu

    def keep_if_best(self, step: int, row: dict, model) -> None:
        import json
        import os

        from safetensors.torch import save_model

        from unlearnbench.records import write_json
        from unlearnbench.selection import best, outcome

        result = {"step": step, **outcome(self.first, row)}
        if best([r for r in (self.best, result) if r is not None], self.select, order="step") is not result:
            return
        self.best_dir.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed, so that best.json never names weights that are half on disk.
        save_model(model, str(self.best_dir / "model.safetensors.tmp"))
        os.replace(self.best_dir / "model.safetensors.tmp", self.best_dir / "model.safetensors")
        write_json(self.best_dir / "best.json", result)
        self.best = json.loads(json.dumps(result))

    def finish(self, model) -> None:
        """With `select`: put the selected step's weights back, and say what was selected in `selected`."""
        if self.select is None:
            return
        from safetensors.torch import load_model

        from unlearnbench.selection import rule

        if self.best is None:
            self.selected = {"rule": rule(self.select), "step": None,
                             "note": "no step after step 0 was within both limits; the last step's model is kept"}
            return
        load_model(model, str(self.best_dir / "model.safetensors"))
        self.selected = {"rule": rule(self.select), **self.best}
