import subprocess
import sys

import pytest

from unlearnbench import registry
from unlearnbench.errors import BenchError
from unlearnbench.methods import Method


@pytest.fixture()
def scratch_names():
    """Names a test registers, removed afterwards so no other test sees them."""
    added = []
    yield added
    for kind, name in added:
        registry.REGISTRIES[kind].unregister(name)


def test_builtin_entries_resolve_lazily():
    # In a fresh interpreter: listing names imports no method module; getting one imports it.
    code = ("import sys; from unlearnbench import registry; names = registry.REGISTRIES['method'].names(); "
            "before = 'unlearnbench.methods.unlearn' in sys.modules; m = registry.get('method', 'unlearn'); "
            "print(before, 'unlearnbench.methods.unlearn' in sys.modules, m.name, 'unlearn' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "unlearn", "True"], out.stderr
    assert registry.get("task", "hallucination").name == "hallucination"


def test_unknown_name_did_you_mean():
    with pytest.raises(BenchError, match="Did you mean 'diversity'"):
        registry.get("metric", "diversty")


def test_register_decorator_adds_an_entry(scratch_names):
    scratch_names.append(("metric", "always_one_test"))

    @registry.register("metric", "always_one_test")
    class AlwaysOne:
        name = "always_one_test"

    assert registry.get("metric", "always_one_test") is AlwaysOne
    assert "always_one_test" in registry.REGISTRIES["metric"].names()


def test_a_name_collision_is_refused(scratch_names):
    with pytest.raises(BenchError, match="method 'unlearn' is already registered .*unlearnbench.methods.unlearn"):
        @registry.register("method", "unlearn")
        class Impostor(Method):
            pass
    assert registry.get("method", "unlearn").__name__ == "Unlearn"

    scratch_names.append(("method", "twice_test"))

    @registry.register("method", "twice_test")
    class Once(Method):
        pass
    with pytest.raises(BenchError, match="already registered"):
        registry.register("method", "twice_test")(type("Twice", (Method,), {}))


def test_a_method_must_subclass_method(scratch_names):
    with pytest.raises(BenchError, match="must be a subclass of unlearnbench.methods.Method"):
        @registry.register("method", "not_a_method_test")
        class NotAMethod:
            pass
    assert "not_a_method_test" not in registry.REGISTRIES["method"].names()
    # A lazy or plugin entry is checked when first loaded.
    scratch_names.append(("method", "lazy_not_a_method_test"))
    registry.REGISTRIES["method"]._entries["lazy_not_a_method_test"] = "unlearnbench.errors:BenchError"
    with pytest.raises(BenchError, match="must be a subclass"):
        registry.get("method", "lazy_not_a_method_test")


def test_broken_lazy_entry_is_a_clear_error(scratch_names):
    scratch_names.append(("method", "broken_test"))
    registry.REGISTRIES["method"]._entries["broken_test"] = "unlearnbench.nowhere:Nothing"
    with pytest.raises(BenchError, match="could not be loaded"):
        registry.get("method", "broken_test")
