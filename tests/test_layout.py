"""The package's layout: dependencies point one way (no import cycle among
taskbus's modules, TYPE_CHECKING and function-local imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import taskbus

ROOT = Path(taskbus.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["taskbus", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found.update(target for target in targets if target in known)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in ROOT.rglob("*.py")}
    known = set(paths)
    return {name: _imports(path, name, known) for name, path in paths.items()}


def _cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    # The package itself and its public facades import everything below them; a
    # cycle through `taskbus/__init__.py` only is how Python packages work.
    facades = {"taskbus", "taskbus.stores", "taskbus.integrations"}
    edges = {name: deps - facades for name, deps in graph.items() if name not in facades}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(edges.get(name, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        state[name] = 2
        stack.pop()
        return None

    for name in sorted(edges):
        if name not in state and (found := visit(name)) is not None:
            return found
    return None


def test_no_import_cycle_among_taskbus_modules() -> None:
    cycle = _cycle_from(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"taskbus.a": {"taskbus.b"}, "taskbus.b": {"taskbus.c"}, "taskbus.c": {"taskbus.a"}}
    assert _cycle_from(graph) == ["taskbus.a", "taskbus.b", "taskbus.c", "taskbus.a"]
