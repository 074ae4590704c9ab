"""Name -> implementation registries for tasks, methods, metrics, generators and models.

Modelled on lm-evaluation-harness: entries register with a decorator, may be lazy
("module:attr" strings imported on first use, so that optional heavy backends are never
imported by `--help` or `list`), third-party packages add entries through entry points,
and an unknown name gets a did-you-mean error.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Callable

from unlearnbench.errors import BenchError

KINDS = ("task", "method", "metric", "generator", "model", "judge", "attack")

# Built-in entries are lazy so that listing them imports nothing heavy.
_BUILTINS: dict[str, dict[str, str]] = {
    "task": {
        "hallucination": "unlearnbench.tasks.hallucination:HallucinationTask",
        "harmful": "unlearnbench.tasks.harmful:HarmfulTask",
        "copyright": "unlearnbench.tasks.copyright:CopyrightTask",
    },
    "method": {
        "unlearn": "unlearnbench.methods.unlearn:Unlearn",
        "ga": "unlearnbench.methods.ga:GradientAscent",
        "sft": "unlearnbench.methods.sft:SupervisedFinetune",
        "sft_safe": "unlearnbench.methods.sft:SafeSFT",
        "npo": "unlearnbench.methods.npo:NPO",
        "ppo": "unlearnbench.methods.ppo:PPO",
        "graddiff": "unlearnbench.methods.graddiff:GradDiff",
        "simnpo": "unlearnbench.methods.simnpo:SimNPO",
        "rmu": "unlearnbench.methods.rmu:RMU",
        "dpo_refusal": "unlearnbench.methods.dpo_refusal:DPORefusal",
        "wga": "unlearnbench.methods.wga:WGA",
    },
    "metric": {
        "hallucination_rate": "unlearnbench.metrics.hallucination_rate:HallucinationRate",
        "diversity": "unlearnbench.metrics.diversity:Diversity",
        "degenerate_rate": "unlearnbench.metrics.degenerate_rate:DegenerateRate",
        "clean_rate": "unlearnbench.metrics.clean_rate:CleanRate",
        "distinct_answers": "unlearnbench.metrics.distinct_answers:DistinctAnswers",
        "fluency": "unlearnbench.metrics.fluency:Fluency",
        "utility": "unlearnbench.metrics.utility:Utility",
        "harmful_rate": "unlearnbench.metrics.harmful_rate:HarmfulRate",
        "leak_bleu": "unlearnbench.metrics.leak_bleu:LeakBleu",
        "leak_rate": "unlearnbench.metrics.leak_rate:LeakRate",
        "similarity_to_original": "unlearnbench.metrics.similarity_to_original:SimilarityToOriginal",
    },
    "generator": {
        "hf": "unlearnbench.generation.hf:HFGenerator",
        "vllm": "unlearnbench.generation.vllm:VLLMGenerator",  # imports vllm itself only when used
        "ctranslate2": "unlearnbench.generation.ct2:CTranslate2Generator",  # imports ctranslate2 only when used
    },
    "judge": {
        "minilm-bertscore": "unlearnbench.metrics.judges:TokenSimilarityJudge",
        "reward-model": "unlearnbench.metrics.judges:RewardModelJudge",
        "embedded-harm-classifier": "unlearnbench.metrics.harm_classifier:EmbeddedHarmJudge",
        "beaver-dam": "unlearnbench.metrics.beaver_dam:BeaverDamJudge",
        "sentence-similarity": "unlearnbench.metrics.judges:SentenceSimilarityJudge",
    },
    "attack": {
        "relearn": "unlearnbench.attacks.relearn:Relearn",
        "rephrase": "unlearnbench.attacks.rephrase:Rephrase",
        "quantize": "unlearnbench.attacks.quantize:Quantize",
        "mia": "unlearnbench.attacks.mia:MembershipInference",
    },
}


# What an entry of a kind must subclass; checked when it is registered or first loaded, so a
# wrong plugin fails with its name instead of deep inside a run.
_BASES = {"method": "unlearnbench.methods:Method", "attack": "unlearnbench.attacks:Attack"}


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = dict(_BUILTINS.get(kind, {}))
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            self._load_plugins()
            existing = self._entries.get(name)
            if existing is not None and existing is not obj and existing != f"{obj.__module__}:{obj.__qualname__}":
                raise BenchError(f"{self.kind} '{name}' is already registered ({self.target(name)}); "
                                 "choose another name")
            self._check_base(name, obj)
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry (tests, and plugins that replace one of theirs deliberately)."""
        self._entries.pop(name, None)

    def _check_base(self, name: str, obj: Any) -> None:
        if self.kind not in _BASES:
            return
        base = _import(_BASES[self.kind])
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise BenchError(f"{self.kind} '{name}' must be a subclass of {base.__module__}.{base.__qualname__}, "
                             f"got {obj!r}")

    def _load_plugins(self) -> None:
        # Third-party packages declare e.g. [project.entry-points."unlearnbench.methods"].
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"unlearnbench.{self.kind}s"):
            self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def target(self, name: str) -> str:
        """Where an entry lives, without importing it (for `unlearnbench list`)."""
        self._load_plugins()
        entry = self._entries[name]
        return entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"

    def get(self, name: str) -> Any:
        self._load_plugins()
        if name not in self._entries:
            raise BenchError(unknown_name_message(self.kind, name, self.names()))
        entry = self._entries[name]
        if isinstance(entry, str):
            try:
                loaded = _import(entry)
            except (ImportError, AttributeError) as exc:
                raise BenchError(f"{self.kind} '{name}' could not be loaded from {entry}: {exc}") from exc
            self._check_base(name, loaded)
            self._entries[name] = entry = loaded
        return entry


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Known: {', '.join(known)}"


REGISTRIES = {kind: Registry(kind) for kind in KINDS}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """`@register("method", "npo")` adds an entry to a registry."""
    return REGISTRIES[kind].register(name)


def get(kind: str, name: str) -> Any:
    return REGISTRIES[kind].get(name)
