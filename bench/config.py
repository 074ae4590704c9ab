"""What a run is asked to do: `RunConfig`, checked in full before anything slow starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from unlearnbench import models, registry
from unlearnbench.errors import BenchError
from unlearnbench.presets import resolve_preset


@dataclass
class RunConfig:
    method: str = "unlearn"
    task: str = "hallucination"
    model: str = models.DEFAULT_MODEL
    data: str = "embedded"
    seed: int = 0
    preset: str = "default"  # or "tuned", set by --from-tune together with `tuned`
    tuned: dict | None = None  # --from-tune: the study, trial and rule the settings came from
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
    save_model: bool = False  # write the unlearned model to <run>/model (what `unlearnbench attack` loads)
    attacks: tuple[str, ...] = ()  # attacks to run on the unlearned model once the run completes
    eval_every: int = 0  # score the validation slice every K training steps (0: never)
    eval_limit: int = 32  # prompts per validation set scored along training
    select: str = "last"  # "best": keep the best evaluated step under the selection rule (bench/selection.py)
    max_utility_drop: float = 0.10  # the rule's limits, for --select best
    max_degenerate: float = 0.10
    # False: generate on the validation slice only (eval_every), never on the test sets; what a
    # tune trial needs, since its objective reads validation rows alone.
    evaluate_test_sets: bool = True


def resolve_config(config: RunConfig):
    """Check every name and number before anything slow happens."""
    task = registry.get("task", config.task)()
    method_cls = registry.get("method", config.method)
    from unlearnbench.generation import choose_backend  # "auto" becomes vllm or hf; the record keeps which
    config = dataclasses.replace(config, backend=choose_backend(config.backend))
    if not config.evaluate_test_sets and not config.eval_every:
        raise BenchError("a run without its test sets must evaluate along training (eval_every), or it measures nothing")
    if (config.preset == "tuned") != (config.tuned is not None):
        raise BenchError("preset 'tuned' is what --from-tune TUNE_DIR sets; give --from-tune instead")
    # A tuned run starts where its study's trials started, from the default preset.
    preset = resolve_preset("default" if config.tuned else config.preset, config.model, config.task, config.method)
    if config.tuned:
        preset["notes"].append(f"tuned: the settings of {config.tuned['trial']}, selected among {config.tuned['trials']} "
                               f"trials of the study {config.tuned['study']} by its rule: {config.tuned['rule']}")
    # Precedence: the method's dataclass defaults < a named preset < the user's flags.
    hyper = {**preset["hyper"], **config.hyper, "seed": config.seed}
    method = method_cls(method_cls.Config.from_overrides(hyper))
    if config.limit is not None and config.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {config.limit}")
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
    if config.checkpoint_every < 0:
        raise BenchError(f"--checkpoint-every must be >= 0, got {config.checkpoint_every}")
    if config.eval_every < 0 or config.eval_limit < 1:
        raise BenchError(f"--eval-every must be >= 0 and --eval-limit >= 1, got {config.eval_every} and {config.eval_limit}")
    if config.select not in ("last", "best"):
        raise BenchError(f"--select must be last or best, got {config.select!r}")
    if config.select == "best" and not config.eval_every:
        raise BenchError("--select best chooses among the steps --eval-every evaluates: give --eval-every K too")
    if not (0 <= config.max_utility_drop and 0 <= config.max_degenerate <= 1):
        raise BenchError("--max-utility-drop must be >= 0 and --max-degenerate between 0 and 1")
    if config.eval_every and not method.monitors_training:
        raise BenchError(f"--eval-every is not available for {config.method} yet: its training loop is its own")
    if config.original not in ("auto", "base", "prepared"):
        raise BenchError(f"--original must be auto, base or prepared, got {config.original!r}")
    if config.template == "auto":
        # A text-continuation task needs its own template whatever the preset's Q&A template says.
        config = dataclasses.replace(config, template=task.template or preset["template"])
    if config.template not in ("auto", "chat", "paper", "plain"):
        raise BenchError(f"--template must be auto, chat, paper or plain, got {config.template!r}")
    for name in config.attacks:
        registry.get("attack", name)
    models.check(config.model)
    method.preset_notes = preset["notes"]
    return config, task, method
