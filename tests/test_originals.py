"""Preparing an original: its fine-tune is counted in passes over the prepare pairs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from unlearnbench.originals import original_cache_key, prepare_settings
from unlearnbench.tasks.copyright import CopyrightTask
from unlearnbench.tasks.hallucination import HallucinationTask
from unlearnbench.tasks.harmful import HarmfulTask


@pytest.mark.parametrize("task, pairs, steps", [
    (HallucinationTask, 419, 50),  # the embedded data: 1.9 · 419 / 16 = 49.76
    (HarmfulTask, 100, 40),        # 6.4 · 100 / 16 = 40
    (CopyrightTask, 282, 120),     # 6.8 · 282 / 16 = 119.85
    (HallucinationTask, 72, 9),    # 1.9 · 72 / 16 = 8.55: a small --data file, memorised about as deeply
    (HallucinationTask, 360, 43),  # 1.9 · 360 / 16 = 42.75
    (HallucinationTask, 1, 1),     # never zero steps
])
def test_prepare_steps_are_the_epochs_over_the_pairs(task, pairs, steps):
    settings = prepare_settings(task, pairs)
    assert settings["steps"] == steps and "epochs" not in settings
    assert settings["batch_size"] == 16 and settings["lr"] == task.prepare_hyper["lr"]


def test_fixed_steps_stay_fixed():
    task = SimpleNamespace(prepare_hyper={"steps": 6, "lr": 1e-2, "batch_size": 8})
    assert prepare_settings(task, 1000) == {"steps": 6, "lr": 1e-2, "batch_size": 8}


def test_the_cache_key_follows_which_pairs_are_prepared_not_only_how_many():
    """Two originals prepared on different items of the same file, as many of them, are different models."""
    from unlearnbench.batching import Pair

    config, loaded, template = SimpleNamespace(seed=0), SimpleNamespace(source="smollm2"), SimpleNamespace(kind="chat")
    pairs = [Pair(f"q{i}", f"a{i}") for i in range(419)]
    key = lambda prepared: original_cache_key(  # noqa: E731
        config, loaded, SimpleNamespace(hashes={"forget": "sha256:abc"}, prepare_pairs=prepared), HallucinationTask, template)
    assert key(pairs) == key([Pair(p.question, p.answer) for p in pairs])
    assert key(pairs) != key(pairs[:418] + [Pair("q419", "a419")])
    assert key(pairs) != key(pairs[:418] + [Pair("q418", "another answer")])
