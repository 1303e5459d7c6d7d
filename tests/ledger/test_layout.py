"""The ledger's layout: every module imports alone, the imports between them form no cycle, and only the factory
imports a runner module (the coordinator depends on the WorkflowRunner contract, never on a runner)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import kai_flows.ledger

PACKAGE = "kai_flows.ledger"
ROOT = Path(kai_flows.ledger.__file__).parent
REPO = ROOT.parents[1]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


MODULES = {_module(p): p for p in sorted(ROOT.rglob("*.py"))}
TREES = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}


def _ledger_imports(module: str) -> set[str]:
    """The ledger modules `module` imports, at the top or inside a function (a lazy import still ties the two)."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            # `from kai_flows.ledger import jobs` names a module; `from kai_flows.ledger.jobs import get_job` does not
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


GRAPH = {m: _ledger_imports(m) for m in MODULES}


def _runner_modules() -> set[str]:
    """Modules defining a class with every method of the WorkflowRunner protocol (runner.py itself excepted)."""
    protocol = next(n for n in TREES[f"{PACKAGE}.runner"].body
                    if isinstance(n, ast.ClassDef) and n.name == "WorkflowRunner")
    wanted = {f.name for f in protocol.body if isinstance(f, ast.FunctionDef)}
    return {m for m, tree in TREES.items() if m != f"{PACKAGE}.runner"
            and any(isinstance(c, ast.ClassDef) and wanted <= {f.name for f in c.body if isinstance(f, ast.FunctionDef)}
                    for c in tree.body)}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_alone(module: str) -> None:
    r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_no_import_cycle_between_ledger_modules() -> None:
    try:
        list(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_only_the_factory_imports_a_runner() -> None:
    runners = _runner_modules()
    assert runners == {f"{PACKAGE}.local_backend", f"{PACKAGE}.argo_backend"}  # the test finds what it guards
    importers = {m: sorted(GRAPH[m] & runners) for m in GRAPH if GRAPH[m] & runners}
    assert importers == {f"{PACKAGE}.factory": sorted(runners)}
    assert not any(GRAPH[r] & (runners | {f"{PACKAGE}.factory"}) for r in runners)
