"""The code's shape a contributor relies on: one direction of imports, names only in the registry, a short loop."""
from __future__ import annotations

import ast
from pathlib import Path

from lxsweep import subnetworks

PACKAGE = Path(__file__).resolve().parent.parent / "lxsweep"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every lxsweep module ``path`` imports, at the top or inside a function (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lxsweep":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lxsweep")
    return {m for m in found if m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_even_through_deferred_imports():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert not {m for m in graph["lxsweep.config"] if m.startswith("lxsweep.tracking")}, "config imports tracking"
    # The fit loop knows no trial keys, stores, plans or registry.
    assert not graph["lxsweep.train"] & {"lxsweep.plan", "lxsweep.store", "lxsweep.subnetworks", "lxsweep.masks",
                                          "lxsweep.trial"}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _spelled_names(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and ast.get_docstring(node, clean=False) is not None}
    return [f"{path.name}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names
            and id(n) not in docstrings]


def test_only_the_registry_spells_a_subnetwork_name():
    names = set(subnetworks.names()) | {subnetworks.DENSE}
    spelled = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "subnetworks.py"
               for hit in _spelled_names(path, names)]
    assert spelled == []
    # The check sees a name where one is spelled.
    assert _spelled_names(PACKAGE / "subnetworks.py", names)


def test_the_registry_declares_the_reports_comparisons():
    frozen = {("low", "dense"), ("low", "random"), ("high", "random"), ("low", "high"), ("random", "dense"),
              ("reinit", "low"), ("reinit", "random"), ("code_high", "code_random"), ("code_high", "random"),
              ("code_random", "random"), ("low", "code_random"), ("low", "code_high"), ("low", "layer_random"),
              ("layer_random", "random")}
    builtin = {name for pair in frozen for name in pair}  # a plugin another test registered adds its own pairs
    declared = [(a, b) for a, b in subnetworks.comparisons() if a in builtin]
    assert set(declared) == frozen and len(declared) == 14
    assert subnetworks.comparisons(["low", "random"]) == [("low", "random")]
    assert subnetworks.ticket() == "low"


def test_the_fit_loop_reads_in_one_sitting():
    assert len((PACKAGE / "train.py").read_text().splitlines()) <= 350
    assert len((PACKAGE / "trial.py").read_text().splitlines()) <= 300
