"""The code's shape, read from its import graph: shared/ is layered by concern,
the consensus core does no I/O, and no module draws from the global random."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("primary", "secondary", "shared")

#: Lowest first: a module may import its own layer and the ones before it.
LAYERS = (
    ("shared.runtime",),
    ("shared.consensus",),
    ("shared.log",),
    ("shared.wire",),
    ("shared.web",),
    ("shared.service", "shared.keys", "shared.node"),
    ("primary", "secondary"),
)
#: What the consensus core must never import: it is fed messages and the time.
NOT_IN_THE_CORE = {"zmq", "bottle", "waitress", "threading", "socket", "time", "select",
                   "asyncio", "sqlite3", "os", "subprocess", "prometheus_client"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(), str(path))
        for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(tree: ast.Module) -> set[str]:
    """Every module ``tree`` imports, as a dotted name (``from a import b`` gives a.b
    when a.b is a module of the project, else a)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCES = sources()
GRAPH = {name: {i for i in imported(tree) if i in SOURCES and i != name}
         for name, tree in SOURCES.items()}


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_shared_has_one_subpackage_per_concern_and_only_the_wiring_at_its_top():
    top = sorted(p.name for p in (ROOT / "shared").glob("*.py"))
    assert top == ["__init__.py", "keys.py", "service.py"]
    packages = sorted(p.parent.name for p in (ROOT / "shared").glob("*/__init__.py"))
    assert packages == ["consensus", "log", "node", "runtime", "web", "wire"]


def test_every_module_imports_only_its_own_layer_and_those_below():
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if module not in ("shared", "primary", "secondary")
        for target in targets
        if target not in ("shared", "primary", "secondary") and layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_roles_do_not_import_each_other():
    crossing = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                if m.split(".")[0] in ("primary", "secondary")
                and t.split(".")[0] in ("primary", "secondary")
                and m.split(".")[0] != t.split(".")[0]]
    assert crossing == []


def test_the_import_graph_has_no_cycle():
    visiting, done, cycles = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
            return
        visiting.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("shared.consensus.")))
def test_the_consensus_core_imports_only_the_standard_library_and_itself(module):
    roots = {name.split(".")[0] for name in imported(SOURCES[module])}
    outside = sorted(name for name in imported(SOURCES[module])
                     if name.split(".")[0] == "shared" and not name.startswith("shared.consensus")
                     and name != "shared")
    assert outside == []
    assert roots - {"shared", "__future__"} <= set(sys.stdlib_module_names)
    assert roots & NOT_IN_THE_CORE == set()


def test_the_layer_check_would_see_an_upward_import():
    """The checks above read real imports: a planted one is found."""
    planted = ast.parse("from shared.wire import frames\nimport zmq\n")
    targets = {i for i in imported(planted) if i in SOURCES}
    assert "shared.wire.frames" in targets
    assert layer_of("shared.wire.frames") > layer_of("shared.consensus.raft")
    assert {i.split(".")[0] for i in imported(planted)} & NOT_IN_THE_CORE == {"zmq"}


def global_random_calls(tree: ast.Module) -> list[int]:
    """Lines that call a function of the random module itself (random.random(),
    random.uniform(), ...) rather than of an owned random.Random."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "random"
            and node.func.attr != "Random"]


def test_no_module_draws_from_the_global_random():
    found = {m: lines for m, tree in SOURCES.items() if (lines := global_random_calls(tree))}
    assert found == {}
    assert global_random_calls(ast.parse("import random\nrandom.uniform(1, 2)\n")) == [2]
