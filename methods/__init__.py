"""Unlearning methods. One file per method; each states its loss.

A gradient method subclasses `Method`, declares which batches it draws (`uses`), its
hyper-parameters (a dataclass subclassing `TrainConfig`), and writes only

    loss(model, step, reference) -> {"total": ..., <named terms>...}

The shared loop in `unlearnbench.training` does the rest (optimizer, schedule, precision,
logging of every named term, the NaN guard). Methods whose loop differs override `fit`.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields
from typing import ClassVar

from unlearnbench.errors import BenchError


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise BenchError(f"{name} must be a positive finite number, got {value}")


def check_non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
        raise BenchError(f"{name} must be finite and >= 0, got {value}")


def _described(hint) -> str:
    named = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    return named.get(hint) or ("a comma-separated list" if typing.get_origin(hint) is tuple else str(hint))


def coerce(name: str, value, hint):
    """`value` as the config field's declared type, or one clear error naming the field.

    --set and YAML values arrive as JSON or strings; a string where a number belongs would
    otherwise fail deep inside a comparison instead of at the command line.
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(name, value, inner[0]) if len(inner) == 1 else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint in (int, float):
        if isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if hint is float:
                return float(value)
            if isinstance(value, int) or value.is_integer():
                return int(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    else:
        return value
    raise BenchError(f"hyper-parameter {name} must be {_described(hint)}, got {value!r}")


@dataclass
class TrainConfig:
    # Defaults tuned for the embedded 135M model on 2 CPU cores (docs/methods.md, "Defaults"); the paper's
    # own settings for paper-scale models are `--preset paper` (bench/presets.py).
    steps: int = 80
    lr: float = 3e-5
    batch_size: int = 2
    normal_batch_size: int | None = None  # None: same as batch_size (the paper uses 2 and 2)
    weight_decay: float = 0.01
    warmup_steps: int = 0
    # The linear schedule reaches lr 0 at this step; None: at `steps`. The official code decays
    # to 0 at step 1000 however long it runs (docs/paper.md §1.4), which `faithful="code"` mirrors.
    schedule_steps: int | None = None
    max_grad_norm: float = 1.0
    max_length: int = 256
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it fast (hardware.py), else fp32
    shuffle: bool = True
    seed: int = 0

    # The hyper-parameters a leaderboard's provenance names after steps, lr and batch size.
    # None: every field the method's config adds to the ones above.
    shown: ClassVar[tuple[str, ...] | None] = None
    # What a tuner may search, field -> (kind, low, high) with kind "log", "uniform" or "int":
    # declared next to the fields it names, so a contributed method is searchable as it stands.
    search_space: ClassVar[dict] = {"lr": ("log", 1e-6, 1e-4)}

    @classmethod
    def shown_fields(cls) -> tuple[str, ...]:
        if cls.shown is not None:
            return cls.shown
        shared = {f.name for f in fields(TrainConfig)}
        return tuple(f.name for f in fields(cls) if f.name not in shared)

    def batch_size_of(self, name: str) -> int:
        """Items drawn per step from the `forget` or `normal` set."""
        return (self.normal_batch_size or self.batch_size) if name == "normal" else self.batch_size

    def validate(self) -> None:
        if self.steps < 1:
            raise BenchError(f"--steps must be at least 1, got {self.steps}")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise BenchError(f"--lr must be a positive finite number, got {self.lr}")
        if self.batch_size < 1 or (self.normal_batch_size is not None and self.normal_batch_size < 1):
            raise BenchError(f"batch sizes must be at least 1, got {self.batch_size} and {self.normal_batch_size}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise BenchError(f"schedule_steps must be at least 1, got {self.schedule_steps}")
        if self.max_length < 8:
            raise BenchError(f"max_length must be at least 8, got {self.max_length}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise BenchError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")

    @classmethod
    def from_overrides(cls, overrides: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise BenchError(f"unknown hyper-parameter(s) for this method: {', '.join(unknown)}. Known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        config = cls(**{key: coerce(key, value, hints[key]) for key, value in overrides.items()})
        config.validate()
        return config


FAITHFUL_MODES = ("paper", "code")
OFFICIAL_SCHEDULE_STEPS = 1000  # max_unlearn_steps default of the official code (docs/paper.md §1.3)


@dataclass
class FaithfulConfig(TrainConfig):
    """A method with two readings: `faithful="paper"` is the paper's loss with the official code's
    bugs fixed; `"code"` reproduces the official code's exact semantics (docs/paper.md §1.2, §1.5),
    so that its numbers can be told apart from the paper's on the same data."""

    faithful: str = "paper"
    shown: ClassVar[tuple[str, ...] | None] = ("faithful",)

    def __post_init__(self):
        if self.faithful == "code" and self.schedule_steps is None:
            self.schedule_steps = OFFICIAL_SCHEDULE_STEPS

    def validate(self) -> None:
        super().validate()
        if self.faithful not in FAITHFUL_MODES:
            raise BenchError(f"faithful must be 'paper' (the paper's losses) or 'code' (the official code's exact "
                             f"semantics), got {self.faithful!r}")


class Method:
    name = "base"
    description = ""  # one line, shown by `unlearnbench list`
    monitors_training = True  # fit calls `monitor` along training (--eval-every)
    Config = TrainConfig
    uses: tuple[str, ...] = ("forget",)  # which batches the sampler draws each step
    needs_reference = False

    def __init__(self, config: TrainConfig):
        self.config = config

    def monitored_steps(self) -> int:
        """The steps --eval-every counts: the monitor evaluates every K of them and after the last."""
        return self.config.steps

    def check_data(self, data) -> None:
        """Refuse training data this method cannot use, before anything slow (ppo: preference pairs)."""

    def loss(self, model, step, reference) -> dict:
        """The step's loss terms: {"total": ..., <named terms>}. `reference` is the frozen original
        (training.FrozenReference: logits by default, full outputs with hidden states on request)."""
        raise NotImplementedError

    def trainable_parameters(self, model) -> list:
        """The parameters this method trains; the shared loop freezes the rest for the run.
        Default: every parameter that requires gradients (all, or LoRA's adapters)."""
        return [p for p in model.parameters() if p.requires_grad]

    def check_resume(self) -> None:
        """Raise a BenchError if an interrupted run of this method cannot be continued. The runner
        asks before it writes anything, so a refusal leaves the run folder as it was."""

    def fit(self, model, tokenizer, data, template, log, accelerator=None, frozen_original=None, checkpointing=None,
            stage_compute: dict | None = None, monitor=None):
        """Train `model` and return a TrainResult. A method whose training has stages measures each
        into `stage_compute` (bench/compute.py `measure`), which the caller keeps even if a later
        stage fails; a gradient method needs neither and uses the shared loop. `monitor` is the
        evaluation along training (training.train)."""
        from unlearnbench.training import train

        return train(self, model, tokenizer, data, template, log, accelerator=accelerator,
                     frozen_original=frozen_original, checkpointing=checkpointing, monitor=monitor)
