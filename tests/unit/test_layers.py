"""The import rules of docs/architecture.md, checked on the source with `ast`.

Layers, bottom to top: the domain (the pure `ledger` modules in DOMAIN), `schemas` (the wire
and its codec), the rest of `ledger` (store, history, database, settings, ...), `projections`,
`consumers`, `entrypoints`. A module may import its own layer and the layers below it, never one
above; the domain imports only the standard library and itself (plus the listed exceptions); no
two modules import each other, directly or round a loop. Imports inside functions count: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# The folders are installed under budget_ledger (pyproject.toml); imports say
# `budget_ledger.ledger.store`, the rules below say `ledger.store`.
INSTALLED_AS = "budget_ledger."
PACKAGES = ("schemas", "ledger", "projections", "consumers", "entrypoints")
DOMAIN = {
    "ledger.alerts",
    "ledger.amounts",
    "ledger.budget",
    "ledger.commands",
    "ledger.decide",
    "ledger.events",
    "ledger.frozen",
    "ledger.evolve",
    "ledger.periods",
    "ledger.reasons",
    "ledger.state",
}
LAYERS = ("domain", "schemas", "ledger", "projections", "consumers", "entrypoints")

# Exceptions still allowed; each names why. The test fails when one is no longer needed, so
# these lists can only shrink.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
ALLOWED_DOMAIN_IMPORTS: dict[tuple[str, str], str] = {
    # A persistent (HAMT) map, so that copying a state with many reservations stays cheap.
    ("ledger.state", "immutables"): "the reservations map in BudgetState",
    ("ledger.evolve", "immutables"): "updating the reservations map",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports, anywhere in its body, with relative imports resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.removeprefix(INSTALLED_AS) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").removeprefix(INSTALLED_AS)
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from pkg import mod` imports the submodule when there is one.
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def _internal(target: str) -> str | None:
    """The project module `target` names (itself, or the module that defines the name)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


EDGES: dict[str, set[str]] = {
    name: {t for imp in _imports(name, path) if (t := _internal(imp)) and t != name}
    for name, path in MODULES.items()
}


def _layer(module: str) -> int:
    # The domain is the bottom floor; above it every package is one floor each.
    return 0 if module in DOMAIN else LAYERS.index(module.split(".")[0])


def test_the_walk_sees_the_tree() -> None:
    # Guards against a vacuous pass: the walker must find modules and their imports.
    assert {"ledger.budget", "ledger.store", "entrypoints.cli"} <= MODULES.keys()
    assert "ledger.budget" in EDGES["ledger.store"]
    assert "entrypoints.worker_commands" in EDGES["entrypoints.cli"]
    assert "consumers.command_consumer" in EDGES["entrypoints.worker_commands"]  # lazy import


def test_no_module_imports_a_higher_layer() -> None:
    upward = {
        (src, dst) for src, targets in EDGES.items() for dst in targets if _layer(dst) > _layer(src)
    }
    found = {
        f"{src} ({LAYERS[_layer(src)]}) imports {dst} ({LAYERS[_layer(dst)]})"
        for src, dst in upward - ALLOWED_UPWARD.keys()
    }
    assert not found, "upward imports:\n" + "\n".join(sorted(found))
    stale = ALLOWED_UPWARD.keys() - upward
    assert not stale, f"remove these exceptions, they are gone: {sorted(stale)}"


def test_the_domain_imports_only_the_standard_library() -> None:
    used = set()
    for module in DOMAIN:
        for imported in _imports(module, MODULES[module]):
            top = imported.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if _internal(imported) in DOMAIN:
                continue
            used.add((module, imported if _internal(imported) else top))
    found = sorted(used - ALLOWED_DOMAIN_IMPORTS.keys())
    assert not found, f"the domain imports outside the standard library: {found}"
    stale = ALLOWED_DOMAIN_IMPORTS.keys() - used
    assert not stale, f"remove these exceptions, they are gone: {sorted(stale)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    circles = _cycles(EDGES)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)
