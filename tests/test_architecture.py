"""The package's layout stays a pipeline: no module imports one that imports it back."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"bench": "unlearnbench", "methods": "unlearnbench.methods", "metrics": "unlearnbench.metrics"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top or inside a function alike."""
    graph = {}
    for name, path in known.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    assert {"unlearnbench.runner", "unlearnbench.methods.npo", "unlearnbench.metrics.diversity"} <= set(known)
    graph = import_graph(known)
    assert "unlearnbench.tables" in graph["unlearnbench.leaderboard"]  # the graph sees real imports
    assert cycles(graph) == []


def test_run_reads_as_the_pipeline_in_at_most_60_lines():
    source = (ROOT / "bench" / "runner.py").read_text()
    run = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= 60
    body = ast.get_source_segment(source, run)
    phases = ["load_data", "load_model", "choose_original", "evaluate_original", "fit", 'evaluate("unlearned"', "complete"]
    positions = [body.index(p) for p in phases]
    assert positions == sorted(positions)
