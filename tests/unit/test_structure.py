"""The package's shape: no import loop between testbed's modules, and config.py holds schemas only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "testbed"


def module_name(path: Path) -> str:
    """testbed/expert.py -> expert; testbed/analysis/load.py -> analysis.load; a package's __init__ -> its name."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST) -> list[ast.stmt]:
    """Import statements anywhere in the module (function-level too), except under `if TYPE_CHECKING:`."""
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for node in ast.walk(block)
    }
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skipped]


def imports(path: Path, modules: set[str]) -> set[str]:
    """The testbed modules `path` imports at run time."""
    found = set()
    for node in runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "testbed":
            base = node.module.removeprefix("testbed").lstrip(".")
            names = {f"{base}.{a.name}".lstrip(".") for a in node.names}
            found |= (names & modules) or {base}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("testbed.") for a in node.names if a.name.startswith("testbed.")}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) - {module_name(p)} for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def walk(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                found.append([*path[path.index(dep) :], dep])
            elif len(path) < len(graph):
                walk(dep, [*path, dep])

    for start in graph:
        walk(start, [start])
    return found


def test_no_import_loop() -> None:
    assert cycles(import_graph()) == []


def test_config_imports_nothing_of_the_testbed() -> None:
    assert import_graph()["config"] == set()


def test_the_graph_sees_packages() -> None:
    graph = import_graph()
    assert {"analysis", "analysis.frontier", "report", "report.figures"} <= set(graph)
    assert "analysis" in graph["report"] or any(m.startswith("analysis") for m in graph["report"])


def test_the_cycle_finder_finds_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}})[0] == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": set()}) == []
