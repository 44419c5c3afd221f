"""rlhf_core's import graph, read with ``ast`` (module-level AND function-level imports), as contracts:

- rlhf_core never imports Qt, pyqtgraph or ``app`` (``test_imports.py`` imports every module with them blocked);
- no import cycles between rlhf_core modules, counting imports inside functions;
- an in-package import inside a function says why on its line or the line above (it keeps start-up fast:
  torch/transformers/SB3 load only when needed); any other belongs at the top of the module;
- layers go one way (:data:`LAYERS`): a module imports only from its own layer or lower ones.
"""

from __future__ import annotations

import pytest

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "rlhf_core"
GUI = ("PySide6", "PyQt5", "PyQt6", "PySide2", "shiboken6", "pyqtgraph", "app")
#: words a function-level import's comment uses to say it keeps start-up fast
WHY_WORDS = ("start-up", "torch", "transformers", "SB3")

#: Lowest first; a module belongs to the longest prefix listed. Analyses sit below the jobs because
#: trainers and labellers log them as evidence (length bias, agreement); they read models, not trainers.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("rlhf_core", "rlhf_core.paths", "rlhf_core.kinds", "rlhf_core.config", "rlhf_core.metrics",
              "rlhf_core.runtime", "rlhf_core.input_files", "rlhf_core.rewards.outcomes", "rlhf_core.devices",
              "rlhf_core.io.tensorboard")),  # the metric sink execute_job adds: a leaf that imports nothing of ours
    ("store", ("rlhf_core.store",)),
    ("jobs", ("rlhf_core.jobs", "rlhf_core.registry", "rlhf_core.resume")),
    ("envs/text", ("rlhf_core.envs", "rlhf_core.text")),
    ("rewards", ("rlhf_core.rewards",)),
    ("analysis", ("rlhf_core.analysis",)),
    ("sources/labelers/trainers", ("rlhf_core.sources", "rlhf_core.labelers", "rlhf_core.trainers")),
    ("io", ("rlhf_core.io",)),
    ("experiments", ("rlhf_core.experiments", "rlhf_core.sweeps", "rlhf_core.sweeps_ray", "rlhf_core.rounds")),
    ("cli", ("rlhf_core.cli", "rlhf_core.demo", "rlhf_core.__main__")),
]


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a submodule where ``from pkg import sub`` names one)
    line: int
    in_function: bool
    why: bool  # a comment on the line or the line above gives a start-up reason


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _in_package(path: Path) -> bool:
    """Whether every folder from rlhf_core down to ``path`` is a package. A folder without __init__.py
    holds data, not modules: rlhf_core/io/cluster/template/train.py is copied into cluster exports and
    runs there with TRL only, never imported here (test_imports.py skips it the same way)."""
    return all((folder / "__init__.py").is_file() for folder in path.parents if folder.is_relative_to(PACKAGE))


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if _in_package(p)}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _comment_says_why(lines: list[str], node: ast.stmt) -> bool:
    nearby = lines[node.lineno - 2:(node.end_lineno or node.lineno)] if node.lineno > 1 else lines[:node.end_lineno]
    comments = [line.split("#", 1)[1] for line in nearby if "#" in line]
    return any(word in c for c in comments for word in WHY_WORDS)


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    source = path.read_text()
    lines = source.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(name, alias.name, child.lineno, in_function, _comment_says_why(lines, child)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in MODULES else base
                    out.append(Import(name, target, child.lineno, in_function, _comment_says_why(lines, child)))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return out


ALL_IMPORTS = [imp for name in MODULES for imp in imports_of(name)]
INTERNAL = [imp for imp in ALL_IMPORTS if imp.target in MODULES and imp.target != imp.source]


def where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line}"


def layer_of(name: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # the package itself is listed for its __init__ only, not as a prefix of every module
            covers = name == prefix or (prefix != "rlhf_core" and name.startswith(prefix + "."))
            if covers and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{name} is in no layer: add it to LAYERS"
    return rank


def test_core_never_imports_the_gui():
    offenders = [f"{where(i)} imports {i.target}" for i in ALL_IMPORTS if i.target.split(".")[0] in GUI]
    assert not offenders, "rlhf_core must not import Qt/pyqtgraph/app:\n" + "\n".join(offenders)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in INTERNAL:
        graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    report = []
    for component in cycles:
        members = set(component)
        edges = [f"  {where(i)}: {i.source} -> {i.target}" for i in INTERNAL
                 if i.source in members and i.target in members]
        report.append(" <-> ".join(component) + "\n" + "\n".join(edges))
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(report)


def test_function_level_imports_say_why():
    offenders = [f"{where(i)}: {i.target}" for i in INTERNAL if i.in_function and not i.why]
    assert not offenders, (
        "in-package imports inside functions: import at the top of the module, or (only where it keeps "
        f"start-up fast) say so in a comment with one of {WHY_WORDS}:\n" + "\n".join(offenders))


def test_layers_go_one_way():
    names = [n for n, _ in LAYERS]
    offenders = [f"{where(i)}: {i.source} ({names[layer_of(i.source)]}) imports {i.target} "
                 f"({names[layer_of(i.target)]})"
                 for i in INTERNAL if layer_of(i.target) > layer_of(i.source)]
    assert not offenders, ("a module imports from a higher layer (" + " -> ".join(names) + "):\n"
                           + "\n".join(offenders))


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_a_module_nobody_placed_has_no_layer():
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("rlhf_core.brand_new_module")
