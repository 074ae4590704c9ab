"""CONTRIBUTING.md's hidden-state method is a working method in one file, with no `fit` of its own."""

import copy
import re
from pathlib import Path

import torch

from unlearnbench import registry
from unlearnbench.batching import Template
from unlearnbench.training import train

from test_faithful import make_data

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def steering_example() -> str:
    text = CONTRIBUTING.read_text()
    section = text[text.index("## A method that steers hidden states"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_hidden_state_method_trains_only_its_layers_and_steers_them(tokenizer, tiny_model):
    namespace = {"__name__": "steer_example"}
    try:
        exec(compile(steering_example(), "CONTRIBUTING.md", "exec"), namespace)
        Steer = registry.get("method", "steer_example")
        assert Steer is namespace["Steer"] and "fit" not in Steer.__dict__  # the shared loop trains it
        before = copy.deepcopy(tiny_model)
        method = Steer(Steer.Config.from_overrides({"steps": 8, "lr": 1e-2, "layer": 1, "precision": "fp32"}))
        log = []
        result = train(method, tiny_model, tokenizer, make_data(4, 4), Template(tokenizer, "chat"), log.append)
    finally:
        registry.REGISTRIES["method"].unregister("steer_example")
    assert {"total", "steer", "retain"} <= set(log[0])
    assert log[-1]["steer"] < log[0]["steer"]  # the forget states moved towards c·u
    changed = {name for name, p in result.model.named_parameters()
               if not torch.equal(p, dict(before.named_parameters())[name])}
    assert changed and all(".mlp." in name and name.startswith("model.layers.") for name in changed)
    # layer 1: the MLPs of layers 0 and 1 (ℓ−2 … ℓ, clipped at 0)
    assert result.trainable_parameters == sum(p.numel() for layer in before.model.layers[:2] for p in layer.mlp.parameters())
    assert all(p.requires_grad for p in result.model.parameters())  # frozen for the run only
