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
`UNLEARNBENCH_REUSE_ORIGINAL_EVAL=0` turns reuse off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

# Options that only shape training or what happens after it: the original's evaluation is the
# same whatever they are. Every other option, including any added later, is part of the key.
TRAINING_ONLY = {"method", "preset", "tuned", "hyper", "output_dir", "run_name", "checkpoint_every", "keep_checkpoint",
                 "save_model", "attacks", "eval_every", "eval_limit", "select", "max_utility_drop", "max_degenerate"}


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


def enabled(config) -> bool:
    from unlearnbench import registry

    if os.environ.get("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "1") == "0" or not config.evaluate_test_sets:
        return False
    # What the source hash cannot see: code registered from elsewhere that evaluates.
    return all(registry.REGISTRIES[kind].target(name).startswith("unlearnbench.")
               for kind in ("task", "metric", "judge", "generator") for name in registry.REGISTRIES[kind].names())


def key(config, record) -> str:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in TRAINING_ONLY}
    environment = record.environment or {}
    parts = {"source": source_hash(), "hardware": environment.get("hardware"), "packages": environment.get("packages"),
             "python": environment.get("python"), "original": record.original, "data": record.data, "config": fields}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _path(config, record) -> Path:
    from unlearnbench.models import cache_root

    return cache_root() / "original-evaluations" / f"{config.task}-{key(config, record)}.json"


def load(config, record) -> dict | None:
    """The stored evaluation for this run's original, or None."""
    if not enabled(config):
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

    if not enabled(config) or not record.metrics.get("original"):
        return
    rows = [r for r in generations if r["phase"] == "original"]
    path = _path(config, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"run_id": record.run_id, "metrics": record.metrics["original"],
                      "evaluated": record.evaluated["original"], "judges": record.judges, "generations": rows})
