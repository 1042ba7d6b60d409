"""The import graph of ``model/`` has no circle, counting imports inside functions too (a function-level import
that closes a circle is the same coupling, deferred), and the configuration module imports nothing of model/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports anywhere in its source (module or function level)."""
    folder = ROOT / package
    modules = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per circle found by a depth-first search (empty when the graph has none)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node], _ = "open", stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        state[node], _ = "done", stack.pop()

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_model_has_no_import_circle() -> None:
    graph = import_graph("model")
    assert {"model.config", "model.preflight", "model.encoders", "model.visual"} <= set(graph)  # the graph is read
    assert "model.config" in graph["model.preflight"]
    assert cycles(graph) == []
    # validation is pure: it needs no other module of model/ but model.inputs (how a value is read and shown),
    # which needs none
    assert graph["model.config"] <= {"model.inputs"} and graph["model.inputs"] == set()


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
