"""The package's layers, read from the source with ``ast`` (nothing is imported).

The import graph has one node per module of ``src/admm_snn`` and an edge for every import of another
module of the package: ``import admm_snn.x``, ``from admm_snn.x import y``, relative imports
(``from . import solver``, ``from ..network import forward``), at module level or inside functions and
``if TYPE_CHECKING`` blocks alike. ``from .pkg import name`` points at the submodule ``pkg.name`` when
there is one, else at ``pkg`` itself. Modules the command line loads by name at run time
(``importlib.import_module`` on ``cli.EXPERIMENT_COMMANDS``) are not edges; the experiment commands
import their option groups from ``options``, never from ``cli``.

Layers:

* the command-line layer: ``cli``, ``options`` (option groups and their conversion into records),
  ``launch`` (``python -m admm_snn.launch`` / torchrun), and the experiment code (``experiments/``) may
  import anything;
* everything else (the library) never imports ``argparse`` nor a command-line module;
* the network and the ADMM engine (``network``, ``admm/``) never import the training loop, the
  multi-process runners or the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "admm_snn"

CLI_LAYER = ("admm_snn.cli", "admm_snn.options", "admm_snn.launch", "admm_snn.experiments")
ENGINE = ("admm_snn.network", "admm_snn.admm")
ENGINE_MUST_NOT_IMPORT = ("admm_snn.train", "admm_snn.distributed", "admm_snn.federated",
                          "admm_snn.estimator", *CLI_LAYER)


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package)."""
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The longest module of the package that ``name`` (a dotted path) is or lies in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of the package it imports, top-level names of the outside packages it imports)."""
    path, is_pkg = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_pkg else module.rpartition(".")[0]
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    inside.add(_owner(alias.name))
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            if not (full == PKG or full.startswith(PKG + ".")):
                outside.add(full.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                inside.add(sub if sub in MODULES else _owner(full))
    inside.discard(None)
    inside.discard(module)
    return inside, outside


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    """A check of the parser itself: known edges of every kind are found."""
    assert "admm_snn.admm.solver" in GRAPH["admm_snn.train"][0]  # from .admm import solver as S
    assert "admm_snn.network" in GRAPH["admm_snn.admm.solver"][0]  # from ..network import ...
    assert "admm_snn.launch" in GRAPH["admm_snn.cli"][0]  # inside a function
    assert "argparse" in GRAPH["admm_snn.cli"][1]
    assert "torch" in GRAPH["admm_snn.network"][1]
    assert len(MODULES) > 30


def test_no_import_cycles():
    cycles = [set(c) for c in _cycles({m: edges for m, (edges, _) in GRAPH.items()})]
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_experiment_code_has_one_home():
    """compare, sweep, bench and plots live in admm_snn.experiments, nowhere else."""
    for old in ("admm_snn.compare", "admm_snn.plots", "admm_snn.commands", "admm_snn.experiment"):
        assert not any(m == old or m.startswith(old + ".") for m in MODULES), old
    for new in ("compare", "sweep", "plots", "bench", "cli"):
        assert f"admm_snn.experiments.{new}" in MODULES


def test_library_knows_nothing_of_the_command_line():
    bad = []
    for module, (inside, outside) in GRAPH.items():
        if _in(module, CLI_LAYER):
            continue
        if "argparse" in outside:
            bad.append(f"{module} imports argparse")
        bad += [f"{module} imports {m}" for m in sorted(inside) if _in(m, CLI_LAYER)]
    assert not bad, "; ".join(bad)


def test_engine_does_not_know_the_layers_above():
    bad = [f"{module} imports {m}" for module, (inside, _) in GRAPH.items() if _in(module, ENGINE)
           for m in sorted(inside) if _in(m, ENGINE_MUST_NOT_IMPORT)]
    assert not bad, "; ".join(bad)


def test_engine_does_not_print():
    """The network and the ADMM engine report through return values and exceptions, not print()."""
    bad = []
    for module, (path, _) in MODULES.items():
        if not _in(module, ENGINE):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "open"):
                bad.append(f"{module}:{node.lineno} calls {node.func.id}()")
    assert not bad, "; ".join(bad)
