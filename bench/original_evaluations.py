"""The original's evaluation, kept and reused by later runs that start from the same original.

Every run scores its original on the test sets before training: about two minutes of generation
and judging on 2 cores, and the same for every method and preset that starts from that original
(greedy decoding, the same prompts, judges and code). A comparison of five methods, or a board's
presets, then pays it once per seed instead of once per run.

A stored evaluation is reused only when everything it depends on is equal. Its key hashes:
- the suite's source (every file of the package: any edit makes a new key),
- the machine kind (CPU model and features, GPUs), since greedy outputs differ between kinds,
- the installed versions of torch, transformers and the other recorded packages,
- the original (kind, model, preparation, cache), the data's hashes and every run option that is
  not about training (task, seed, limit, template, backend, judges, encoder, generation length).
Code registered from outside the package (a plugin's task, metric, judge or generator) is not
covered by the source hash, so nothing is reused while such code is registered.

The record says where its original's scores came from (`original.evaluation_from`).

The first row of the evaluation along training (`--eval-every`, and every tune trial) scores the
model before its first step on the validation slice. For most methods that model is the original,
for `ppo` it is the model after SFT, so that row is keyed by a fingerprint of the weights as well
(`StepZero`), and its eval_log row names the run it came from (`reused_from`).

`UNLEARNBENCH_REUSE_ORIGINAL_EVAL=0` turns reuse off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

# Options that shape training, what happens after it, or which evaluations run at all: the
# original's scores are the same whatever they are. Every other option, including any added
# later, is part of the key.
NOT_IN_KEY = {"method", "preset", "tuned", "hyper", "output_dir", "run_name", "checkpoint_every", "keep_checkpoint",
              "save_model", "attacks", "eval_every", "eval_limit", "select", "max_utility_drop", "max_degenerate",
              "evaluate_test_sets"}


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 over the package's files (path and bytes), wherever methods/ and metrics/ live."""
    import unlearnbench
    import unlearnbench.methods
    import unlearnbench.metrics

    roots = {Path(m.__file__).resolve().parent for m in (unlearnbench, unlearnbench.methods, unlearnbench.metrics)}
    digest = hashlib.sha256()
    for root in sorted(roots):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{path.relative_to(root.parent)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def enabled() -> bool:
    from unlearnbench import registry

    if os.environ.get("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "1") == "0":
        return False
    # What the source hash cannot see: code registered from elsewhere that evaluates.
    return all(registry.REGISTRIES[kind].target(name).startswith("unlearnbench.")
               for kind in ("task", "metric", "judge", "generator") for name in registry.REGISTRIES[kind].names())


def key(config, record) -> str:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_KEY}
    environment = record.environment or {}
    original = {k: v for k, v in (record.original or {}).items() if k != "evaluation_from"}  # a reusing run's own note
    parts = {"source": source_hash(), "hardware": environment.get("hardware"), "packages": environment.get("packages"),
             "python": environment.get("python"), "original": original, "data": record.data, "config": fields}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _path(config, record) -> Path:
    from unlearnbench.models import cache_root

    return cache_root() / "original-evaluations" / f"{config.task}-{key(config, record)}.json"


def load(config, record) -> dict | None:
    """The stored evaluation for this run's original, or None."""
    if not (enabled() and config.evaluate_test_sets):
        return None
    path = _path(config, record)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or a damaged file: evaluate as usual
    return stored if {"run_id", "metrics", "evaluated", "judges", "generations"} <= set(stored) else None


def store(config, record, generations: list[dict]) -> None:
    """Keep this run's evaluation of its original for the runs after it."""
    from unlearnbench.records import write_json

    if not (enabled() and config.evaluate_test_sets and record.metrics.get("original")):
        return
    rows = [r for r in generations if r["phase"] == "original"]
    path = _path(config, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"run_id": record.run_id, "metrics": record.metrics["original"],
                      "evaluated": record.evaluated["original"], "judges": record.judges, "generations": rows})


def weights_fingerprint(model) -> str:
    """sha256 over every parameter and buffer, by name: equal only for the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class StepZero:
    """The validation row before the first training step, stored and reused like the original's evaluation."""

    def __init__(self, config, record):
        self.config, self.record = config, record

    def _path(self, model) -> Path | None:
        if not enabled():
            return None
        from unlearnbench.models import cache_root

        parts = [key(self.config, self.record), self.config.eval_limit, weights_fingerprint(model)]
        name = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
        return cache_root() / "original-evaluations" / f"{self.config.task}-step0-{name}.json"

    def load(self, model) -> dict | None:
        path = self._path(model)
        try:
            stored = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
        except (OSError, ValueError):
            return None
        return stored if stored and {"run_id", "metrics"} <= set(stored) else None

    def store(self, model, metrics: dict) -> None:
        from unlearnbench.records import write_json

        path = self._path(model)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"run_id": self.record.run_id, "metrics": metrics})
