"""The import graph follows the layers of docs/architecture.md: no import runs upward, and there is no cycle,
counting imports made inside functions too (so no function-local import hides a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import actdistill

PACKAGE = Path(actdistill.__file__).parent

# Lower layers never import higher ones; a module may import its own layer only without forming a cycle.
LAYERS: list[tuple[str, ...]] = [
    ("actdistill", "actdistill.errors", "actdistill.registry", "actdistill.utils"),
    ("actdistill.config", "actdistill.batch"),
    ("actdistill.data", "actdistill.models", "actdistill.eval"),
    ("actdistill.distill",),
    ("actdistill.ssl", "actdistill.detect"),
    ("actdistill.engine",),
    ("actdistill.apps", "actdistill.analysis", "actdistill.deploy", "actdistill.demo"),
    ("actdistill.cli", "actdistill.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer; add it to LAYERS and docs/architecture.md"
    return rank


def imports(path: Path, known: set[str]) -> set[str]:
    """actdistill modules imported anywhere in `path` (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actdistill"):
            for alias in node.names:  # `from actdistill.x import y` may import the submodule y
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("actdistill"))
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {name: imports(path, known) - {name} for name, path in paths.items()}


def test_no_import_runs_upward():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in graph().items()
        for b in targets
        if layer(b) > layer(a) and not (a == "actdistill" and b.startswith("actdistill."))
    ]
    assert not upward, "\n".join(sorted(upward))


def test_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_layers_cover_every_module():
    for name in graph():
        layer(name)
