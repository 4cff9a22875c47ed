"""The package's layers, read from the source with ``ast`` (nothing is imported): the experiment code lives
in ``admm_snn.experiments`` and the library never imports it, and the experiment modules import each other
without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "admm_snn"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every admm_snn module that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("admm_snn"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("admm_snn"):
                continue
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # "from . import plots" names a module
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def test_experiment_code_has_one_home():
    files = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for old in ("admm_snn.compare", "admm_snn.plots", "admm_snn.commands", "admm_snn.experiment"):
        assert not any(f == old or f.startswith(old + ".") for f in files), old
    for new in ("compare", "sweep", "plots", "bench", "cli"):
        assert f"admm_snn.experiments.{new}" in files


def test_library_does_not_import_the_experiments():
    graph = _graph()
    offenders = {m: sorted(i for i in deps if i.startswith("admm_snn.experiments"))
                 for m, deps in graph.items()
                 if not m.startswith("admm_snn.experiments") and m != "admm_snn.cli"}
    assert {m: v for m, v in offenders.items() if v} == {}


def test_no_import_cycle_through_the_experiments():
    graph = _graph()
    exp = {m for m in graph if m.startswith("admm_snn.experiments")}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for n in graph[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    cycles = [m for m in exp if m in reach(m) - {"admm_snn.cli"} and m != "admm_snn.experiments.cli"]
    assert cycles == []
