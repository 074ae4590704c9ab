import pytest

from unlearnbench import registry
from unlearnbench.errors import BenchError


def test_builtin_entries_resolve_lazily():
    method = registry.get("method", "unlearn")
    assert method.name == "unlearn"
    assert registry.get("task", "hallucination").name == "hallucination"


def test_unknown_name_did_you_mean():
    with pytest.raises(BenchError, match="Did you mean 'diversity'"):
        registry.get("metric", "diversty")


def test_register_decorator_adds_an_entry():
    @registry.register("metric", "always_one_test")
    class AlwaysOne:
        name = "always_one_test"

    assert registry.get("metric", "always_one_test") is AlwaysOne
    assert "always_one_test" in registry.REGISTRIES["metric"].names()


def test_broken_lazy_entry_is_a_clear_error():
    registry.REGISTRIES["method"]._entries["broken_test"] = "unlearnbench.nowhere:Nothing"
    with pytest.raises(BenchError, match="could not be loaded"):
        registry.get("method", "broken_test")
