"""The house's shape: data flows one way (no import circle among catcli's modules, counting imports
inside functions), and tests and benches use only catcli's public names."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "catcli"


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import` / `from ... import` anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, names in _imports(path):
            if module not in modules:
                continue
            # `from catcli import x` imports the module catcli.x when there is one
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            edges.update(t for t in targets if t != name)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_catcli_modules_import_each_other_without_a_circle():
    graph = _graph()
    assert "catcli.trainers.lifecycle" in graph["catcli.trainers.sft"]  # the walk sees real edges
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_tests_and_benches_import_no_private_catcli_name():
    private = []
    for path in [*(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]:
        for module, names in _imports(path):
            if module.startswith("catcli"):
                private += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_")]
                private += [f"{path.name}: import {module}" for part in module.split(".") if part.startswith("_")]
    assert private == []
