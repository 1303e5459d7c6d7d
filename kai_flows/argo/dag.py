"""A DAG template's task graph, through the standard library's `graphlib`: order, cycles and ancestry.

The graph is `{task: the tasks it depends on}` (what `kai_flows.argo.depends` reads from `depends`), the same for the
engine's loader and lint. Argo refuses a cycle at validation (workflow/validate/validate.go verifyNoCycles,
"dependency cycle detected: a->b->a") and orders the tasks topologically before it runs them (sortDAGTasks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter

__all__ = ["ancestors", "find_cycle", "topological_order"]


def topological_order(deps: Mapping[str, Iterable[str]]) -> tuple[list[str], list[str]]:
    """`(ordered, blocked)`: the tasks each after its dependencies, as far as that goes, and those a cycle keeps
    from ever being ready (the tasks on a cycle and every task after one), in the order `deps` names them."""
    sorter: TopologicalSorter[str] = TopologicalSorter(deps)
    try:
        sorter.prepare()
    except CycleError:
        pass  # graphlib still hands out every node that does not wait on a cycle
    ordered: list[str] = []
    while sorter.is_active():
        ready = sorter.get_ready()
        if not ready:
            break
        ordered.extend(ready)
        sorter.done(*ready)
    placed = set(ordered)
    return ordered, [name for name in deps if name not in placed]


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One dependency cycle as a path `[a, b, ..., a]` in which each task depends on the next, or None.

    graphlib reports the first cycle its depth-first walk meets, starting from the nodes in the order they were
    added and following each node's successors in order. Adding every task first and each dependency as a
    *successor* of its task makes that walk follow `depends` from the first task, so the cycle named is the one a
    reader finds by following the dependencies from the top of the DAG.
    """
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in deps:
        sorter.add(name)
    for name, ds in deps.items():
        for d in ds:
            sorter.add(d, name)  # `name` precedes `d` here: the walk goes from a task to its dependencies
    try:
        sorter.prepare()
    except CycleError as e:
        return list(e.args[1])
    return None


def ancestors(deps: Mapping[str, Iterable[str]], name: str) -> set[str]:
    """Every task `name` depends on, directly or through others (GetTaskAncestry, unordered); `name` itself only
    when it sits on a cycle."""
    seen: set[str] = set()
    stack = list(deps.get(name, ()))
    while stack:
        d = stack.pop()
        if d not in seen:
            seen.add(d)
            stack.extend(deps.get(d, ()))
    return seen
