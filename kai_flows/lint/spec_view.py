"""Read-only helpers over a raw (possibly invalid) Argo WorkflowSpec dict: template types, DAG edges, ancestry
(the `depends` grammar and the graph questions themselves are `kai_flows.argo.depends` and `kai_flows.argo.dag`).

Every accessor tolerates wrong types (the schema check reports those); nothing here raises on bad input.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from kai_flows.argo import dag
from kai_flows.argo.depends import depends_refs, task_depends

TEMPLATE_TYPES = ("container", "containerSet", "steps", "script", "resource", "dag", "suspend", "data", "http",
                  "plugin")
LEAF_TYPES = {"container", "containerSet", "script", "resource", "data", "http", "plugin"}
POD_TYPES = {"container", "containerSet", "script", "resource"}
OUTPUT_TYPES = {"container", "containerSet", "script", "data", "http", "plugin"}  # that have outputs.result


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def template_types(tmpl: dict[str, Any]) -> list[str]:
    return [t for t in TEMPLATE_TYPES if tmpl.get(t) is not None]


def template_type(tmpl: dict[str, Any]) -> str | None:
    """The template's type, the first set in Argo's order (as Template.GetType), when several are set."""
    types = template_types(tmpl)
    return types[0] if types else None


def is_leaf(tmpl: dict[str, Any]) -> bool:
    return any(t in LEAF_TYPES for t in template_types(tmpl))


def loop_kind(task: dict[str, Any]) -> str | None:
    kinds = [k for k in ("withItems", "withParam", "withSequence") if task.get(k)]
    return kinds[0] if kinds else None


def task_dependencies(task: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(task, result or None) for each operand of the task's `depends` (or `dependencies`), as Argo reads them."""
    return [(ref.task, ref.result) for ref in depends_refs(task_depends(task))]


class DagView:
    def __init__(self, tasks: list[Any]) -> None:
        self.tasks = [t for t in tasks if isinstance(t, dict)]
        self.by_name = {t["name"]: t for t in self.tasks if isinstance(t.get("name"), str)}
        # each task's dependencies that are tasks of this DAG (argo_rules reports the others)
        self.graph = {name: [d for d, _ in task_dependencies(t) if d in self.by_name]
                      for name, t in self.by_name.items()}

    def ancestors(self, name: str) -> set[str]:
        return dag.ancestors(self.graph, name)

    def cycle(self) -> list[str] | None:
        """One dependency cycle as a path of task names, each depending on the next, or None."""
        return dag.find_cycle(self.graph)


class SpecView:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.templates = [t for t in as_list(spec.get("templates")) if isinstance(t, dict)]

    @cached_property
    def by_name(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for t in self.templates:
            if isinstance(t.get("name"), str):
                out.setdefault(t["name"], t)
        return out

    def children(self, tmpl: dict[str, Any]) -> list[str]:
        """Names of templates a dag/steps template (and task hooks) call."""
        calls: list[Any] = []
        for task in as_list(as_dict(tmpl.get("dag")).get("tasks")):
            calls.append(task)
        for group in as_list(tmpl.get("steps")):
            calls.extend(as_list(group))
        names = []
        for c in calls:
            if not isinstance(c, dict):
                continue
            if isinstance(c.get("template"), str):
                names.append(c["template"])
            for hook in as_dict(c.get("hooks")).values():
                if isinstance(as_dict(hook).get("template"), str):
                    names.append(hook["template"])
        return names

    def reachable(self, roots: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = [r for r in roots if isinstance(r, str)]
        while stack:
            n = stack.pop()
            if n in seen or n not in self.by_name:
                continue
            seen.add(n)
            stack.extend(self.children(self.by_name[n]))
        return seen

    def exit_templates(self) -> set[str]:
        roots = [self.spec.get("onExit")]
        for hook_name, hook in as_dict(self.spec.get("hooks")).items():
            if hook_name == "exit":
                roots.append(as_dict(hook).get("template"))
        for tmpl in self.templates:
            for task in [*as_list(as_dict(tmpl.get("dag")).get("tasks")),
                         *[s for g in as_list(tmpl.get("steps")) for s in as_list(g)]]:
                roots.append(as_dict(as_dict(as_dict(task).get("hooks")).get("exit")).get("template"))
                roots.append(as_dict(task).get("onExit"))
        return self.reachable([r for r in roots if isinstance(r, str)])
