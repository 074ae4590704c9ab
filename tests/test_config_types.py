"""Hyper-parameters from --set, YAML and presets take their config field's type, or fail in one line."""

import pytest

from unlearnbench.errors import BenchError
from unlearnbench.methods.unlearn import UnlearnConfig


@pytest.mark.parametrize("given, expected", [
    ({"lr": "1e-4"}, {"lr": 1e-4}), ({"lr": 3}, {"lr": 3.0}), ({"steps": "3"}, {"steps": 3}), ({"steps": 4.0}, {"steps": 4}),
    ({"lora": "true"}, {"lora": True}), ({"schedule_steps": None}, {"schedule_steps": None}),
    ({"lora_targets": "q_proj, v_proj"}, {"lora_targets": ("q_proj", "v_proj")}), ({"faithful": "code"}, {"faithful": "code"}),
])
def test_values_become_the_fields_type(given, expected):
    config = UnlearnConfig.from_overrides(given)
    assert {k: getattr(config, k) for k in expected} == expected
    assert all(type(getattr(config, k)) is type(v) for k, v in expected.items())


@pytest.mark.parametrize("given, message", [
    ({"lr": "abc"}, "lr must be a number, got 'abc'"), ({"lr": True}, "lr must be a number, got True"),
    ({"steps": 2.5}, "steps must be an integer, got 2.5"), ({"steps": "2.5"}, "steps must be an integer, got '2.5'"),
    ({"lora": "maybe"}, "lora must be true or false"), ({"faithful": 3}, "faithful must be text, got 3"),
    ({"lora_targets": [1, 2]}, "lora_targets must be a comma-separated list"),
])
def test_a_value_of_the_wrong_type_is_one_clear_error(given, message):
    with pytest.raises(BenchError, match=message):
        UnlearnConfig.from_overrides(given)
