"""The import graph of wsplex (STYLE.md): no cycles, and ``ws`` stands alone.

The layer contracts themselves are import-linter's (``[tool.importlinter]`` in
``pyproject.toml``, run by ``scripts/test.sh``); these are the rules a contract
cannot say. Imports under ``if TYPE_CHECKING:`` count: a cycle that only the
type checker sees still ties two layers into one.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

import grimp
import pytest

Graph = dict[str, set[str]]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("wsplex", exclude_type_checking_imports=False, cache_dir=None)


def internal(graph: grimp.ImportGraph) -> Graph:
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def strongly_connected(edges: Graph) -> Iterator[set[str]]:
    """Tarjan's components with more than one module (a module importing itself is no cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[set[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                yield from visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                yield component

    for node in sorted(edges):
        if node not in index:
            yield from visit(node)


def shortest_cycle(edges: Graph, component: set[str]) -> list[str]:
    """One cycle through the component's first module, as a path that ends where it starts."""
    start = min(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(edges[node] & component):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle in {component}")


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    steps = []
    for importer, imported in itertools.pairwise(cycle):
        lines = [str(d["line_number"]) for d in graph.get_import_details(importer=importer,
                                                                          imported=imported)]
        steps.append(f"{importer} (l.{','.join(lines)}) -> {imported}")
    return "; ".join(steps)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    edges = internal(graph)
    cycles = [describe(graph, shortest_cycle(edges, c)) for c in strongly_connected(edges)]
    assert not cycles, "import cycles in wsplex:\n" + "\n".join(cycles)


def test_ws_imports_nothing_else_of_wsplex(graph: grimp.ImportGraph) -> None:
    """The contract lists wsplex's other top-level modules; this covers ones added later."""
    outside = {(module, imported) for module in graph.find_descendants("wsplex.ws") | {"wsplex.ws"}
               for imported in graph.find_modules_directly_imported_by(module)
               if imported.startswith("wsplex") and not imported.startswith("wsplex.ws")}
    assert not outside, sorted(outside)
