"""The package is a layered house: no import cycles, no import from a lower floor upward.

Every ``import`` in ``kbfm/`` counts, including those inside functions (a lazy import
only hides a cycle). Run ``python tests/test_layers.py`` to print the floor plan and any
offending imports.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kbfm"

# Floors, lowest first. A module may import from its own area or from a lower floor.
# Areas on the same floor do not import each other. ``core`` is every private top-level
# module (``kbfm/_*.py``) plus ``prompts``.
FLOORS: list[tuple[str, ...]] = [
    ("core",),
    ("io", "datasets"),
    ("encoders",),
    ("knowledge",),
    ("pp", "metrics"),
    ("models", "im"),
    ("tl",),
    ("pl",),
    ("agent",),
    ("web", "demo"),
    ("cli",),
    ("kbfm",),  # the package's own __init__
]
RANK = {area: floor for floor, areas in enumerate(FLOORS) for area in areas}


def module_name(path: Path) -> str:
    """Dotted module name of a file under ``kbfm/``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def area(module: str) -> str:
    """The area (floor plan unit) a module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "kbfm"
    if parts[1].startswith("_") or parts[1] == "prompts":
        return "core"
    return parts[1]


def _targets(module: str, is_package: bool, node: ast.AST, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported kbfm module: line}}`` over every import statement."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(module, path.name == "__init__.py", node, known):
                # ``import kbfm.x.y`` also runs kbfm.x's __init__; the deepest known name counts
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].setdefault(target, node.lineno)
        graph.setdefault(module, {})
    return dict(graph)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports from an area into a higher floor or a sibling area on the same floor."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            a, b = area(module), area(target)
            if a == b or (b == "kbfm" and target == "kbfm._version"):
                continue
            if RANK[b] >= RANK[a]:
                bad.append(
                    f"{module}:{line} imports {target} ({a} floor {RANK[a]} -> {b} floor {RANK[b]})"
                )
    return bad


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_area_has_a_floor():
    areas = {area(m) for m in import_graph()}
    assert areas <= set(RANK), f"areas without a floor in FLOORS: {sorted(areas - set(RANK))}"


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_from_a_lower_floor_upward():
    bad = upward_imports(import_graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_imports_and_cycles():
    graph = {"kbfm.a": {"kbfm.b": 1}, "kbfm.b": {"kbfm.a": 9}, "kbfm.c": {}}
    assert cycles(graph) == [["kbfm.a", "kbfm.b"]]
    # a function-level import in a real file is seen: kbfm.cli.qc imports pl lazily
    graph = import_graph()
    assert any(t.startswith("kbfm.pl") for t in graph["kbfm.cli.qc"])
    assert upward_imports({"kbfm.io.x": {"kbfm.tl.y": 3}}) == [
        "kbfm.io.x:3 imports kbfm.tl.y (io floor 1 -> tl floor 6)"
    ]


if __name__ == "__main__":
    g = import_graph()
    for floor, areas in enumerate(FLOORS):
        print(floor, ", ".join(areas))
    for line in upward_imports(g):
        print("UPWARD", line)
    for group in cycles(g):
        print("CYCLE", " <-> ".join(group))
