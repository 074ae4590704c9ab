"""The original: the model unlearning starts from, base or prepared (docs/paper.md §2.2)."""

from __future__ import annotations

import hashlib
import json

from unlearnbench import models
from unlearnbench.compute import measure, training_flops
from unlearnbench.progress import say
from unlearnbench.records import write_json


def prepare_settings(task, pairs: int) -> dict:
    """The prepare fine-tune's settings for `pairs` prepare pairs: the task's `epochs` as steps,
    steps = max(1, round(epochs · pairs / batch_size)); a task may give fixed `steps` instead."""
    settings = dict(task.prepare_hyper)
    epochs = settings.pop("epochs", None)
    if epochs is not None:
        settings["steps"] = max(1, round(epochs * pairs / settings["batch_size"]))
    return settings


def original_cache_key(config, loaded, data, task, template) -> str:
    # Keyed by the steps the epochs come to, and by the prepare pairs themselves: the data hash
    # names the whole file, and a change of which items are prepared must not find an original
    # fine-tuned on others.
    settings = prepare_settings(task, len(data.prepare_pairs))
    pairs = hashlib.sha256()
    for pair in data.prepare_pairs:
        pairs.update(json.dumps([pair.question, pair.answer]).encode())
    blob = json.dumps([loaded.source, data.hashes, config.seed, template.kind, settings, pairs.hexdigest()],
                      sort_keys=True)
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
    settings = prepare_settings(task, len(data.prepare_pairs))
    info.update(kind="prepared", cache=str(prepared_dir), prepare={"method": "sft", "pairs": len(data.prepare_pairs),
                                                                        **task.prepare_hyper, **settings})
    if (prepared_dir / "config.json").is_file():
        say(f"original: loading the cached prepared model from {prepared_dir}")
        return models.load(str(prepared_dir)).model, info
    why = ("--original prepared" if info["base_rate"] is None
           else f"the base model's {metric} is {info['base_rate']:.1%} (< {threshold:.0%})")
    say(f"original: {why}; fine-tuning it on {len(data.prepare_pairs)} {task.prepare_what} first")
    from unlearnbench.batching import TrainData
    from unlearnbench.methods.sft import SupervisedFinetune

    sft = SupervisedFinetune(SupervisedFinetune.Config.from_overrides({**settings, "seed": config.seed}))
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
