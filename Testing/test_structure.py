"""The engine's shape (issue 21, thin files with one concern each), read from its source.

- no import cycle between smilecore's modules, counting imports inside functions (a lazy import
  hides a cycle from Python, not from the design);
- no function or method over MAX_FUNCTION_LINES lines, no file over MAX_FILE_LINES lines.

That the engine never imports Slicer (slicer, qt, ctk, vtk) and the modules' logic never imports
qt is test_packaging.py's `test_layers_import_only_what_they_may`.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "smilecore"
PACKAGE = "smilecore"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450

ENGINE_FILES = sorted(ENGINE.glob("*.py"))


def module_name(path: Path) -> str:
    return path.stem  # "__init__" for the package itself


def engine_imports(path: Path, modules: set[str]) -> set[str]:
    """The engine modules that `path` imports anywhere in it (top level, functions, methods):
    `from .x import y`, `from . import x`, `from smilecore.x import y`, `from smilecore import x`,
    `import smilecore.x`. A name imported from the package that is not a module (`from . import
    __version__`) is an import of the package's __init__."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                continue  # beyond the package: not an engine module
            if node.level == 1:
                parts = node.module.split(".") if node.module else []
            elif node.module and node.module.split(".")[0] == PACKAGE:
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.add(parts[0])
            else:  # from . import a, b / from smilecore import a, b
                found |= {a.name if a.name in modules else "__init__" for a in node.names}
    return found & modules - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p) for p in ENGINE_FILES}
    return {module_name(p): engine_imports(p, modules) for p in ENGINE_FILES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            if state[nxt] == 0:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state[node] == 0:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_reads_every_kind_of_import(tmp_path):
    source = """
import os
import smilecore.a
from smilecore.b import x
from smilecore import c, __version__
from . import d
from .e import y
from .. import elsewhere
from numpy import f


def lazy():
    from .g import z
"""
    (tmp_path / "m.py").write_text(source)
    modules = {"a", "b", "c", "d", "e", "f", "g", "m", "__init__"}
    assert engine_imports(tmp_path / "m.py", modules) == {"a", "b", "c", "d", "e", "g", "__init__"}
    assert {"gated", "unet"} <= import_graph()["networks"]


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_between_engine_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in smilecore: " + " -> ".join(cycle)


def long_functions(path: Path) -> list[str]:
    """'name (line N): L lines' for every function or method over MAX_FUNCTION_LINES lines,
    from its `def` line to its last line (decorators not counted)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{node.name} (line {node.lineno}): {length} lines")
    return out


@pytest.mark.parametrize("path", ENGINE_FILES, ids=[p.name for p in ENGINE_FILES])
def test_engine_functions_are_short(path):
    too_long = long_functions(path)
    assert not too_long, f"{path.name}: over {MAX_FUNCTION_LINES} lines: " + "; ".join(too_long)


@pytest.mark.parametrize("path", ENGINE_FILES, ids=[p.name for p in ENGINE_FILES])
def test_engine_files_are_short(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_FILE_LINES, f"{path.name}: {n} lines, more than {MAX_FILE_LINES}"
