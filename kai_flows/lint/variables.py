"""Every `{{...}}` variable must resolve in its context (argo lint's resolveAllVariables, made stricter).

Contexts: a template's own inputs and (leaf) output paths; `tasks.T.*` of a DAG task's ancestors; `steps.S.*`
of earlier step groups; `item` only inside a loop; `workflow.*` globals, `workflow.parameters.X` only for
declared arguments; `workflow.status`/`workflow.failures` only in the exit handler; `duration`, `status`,
`exitCode` only in metrics. Expression tags (`{{=...}}`) are evaluated at run time and are not checked.
Unlike argo lint, unknown roots such as `{{foo.bar}}` are errors too (a typo would reach the pod verbatim).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kai_flows.lint.problem import Reporter
from kai_flows.lint.spec_view import (
    OUTPUT_TYPES,
    POD_TYPES,
    DagView,
    SpecView,
    as_dict,
    as_list,
    is_leaf,
    loop_kind,
    template_type,
)

P = tuple[str | int, ...]
TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
METRIC_ONLY = {"duration", "status", "exitCode"}


@dataclass
class Scope:
    names: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    # context for precise messages
    tasks: set[str] = field(default_factory=set)  # sibling tasks/steps of the current DAG/steps template
    task_prefix: str = "tasks"
    in_loop: bool = False
    in_exit: bool = False
    in_metrics: bool = False
    workflow_params: set[str] = field(default_factory=set)

    def copy(self) -> Scope:
        return Scope(set(self.names), set(self.prefixes), set(self.tasks), self.task_prefix, self.in_loop,
                     self.in_exit, self.in_metrics, self.workflow_params)

    def resolves(self, tag: str) -> bool:
        return tag in self.names or any(tag.startswith(p) for p in self.prefixes)


def strings(node: Any, path: P) -> Iterator[tuple[P, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, (*path, i))


def _globals(obj: dict[str, Any], spec: dict[str, Any], view: SpecView) -> Scope:
    scope = Scope()
    wf = "workflow."
    scope.names |= {wf + n for n in ("name", "namespace", "uid", "serviceAccountName", "mainEntrypoint",
                                     "annotations", "annotations.json", "labels", "labels.json")}
    scope.prefixes |= {wf + "creationTimestamp", wf + "duration", wf + "scheduledTime"}
    if spec.get("priority") is not None:
        scope.names.add(wf + "priority")
    params = [as_dict(p).get("name") for p in as_list(as_dict(spec.get("arguments")).get("parameters"))]
    scope.workflow_params = {p for p in params if isinstance(p, str)}
    if scope.workflow_params:
        scope.names |= {wf + "parameters", wf + "parameters.json"}
        scope.names |= {f"{wf}parameters.{p}" for p in scope.workflow_params}
    meta = as_dict(obj.get("metadata"))
    wmeta = as_dict(spec.get("workflowMetadata"))
    for key in ("annotations", "labels"):
        for src in (meta.get(key), wmeta.get(key), wmeta.get("labelsFrom") if key == "labels" else None):
            scope.names |= {f"{wf}{key}.{k}" for k in as_dict(src)}
    for tmpl in view.templates:
        for kind in ("parameters", "artifacts"):
            for out in as_list(as_dict(tmpl.get("outputs")).get(kind)):
                g = as_dict(out).get("globalName")
                if isinstance(g, str) and g:
                    scope.names.add(f"{wf}outputs.{kind}.{g}")
                    if "{{" in g:
                        scope.prefixes.add(f"{wf}outputs.{kind}.")
    return scope


def _template_scope(tmpl: dict[str, Any], base: Scope) -> Scope:
    scope = base.copy()
    kind, leaf = template_type(tmpl), is_leaf(tmpl)
    scope.prefixes.add("node.name")
    inputs, outputs = as_dict(tmpl.get("inputs")), as_dict(tmpl.get("outputs"))
    params = [as_dict(p).get("name") for p in as_list(inputs.get("parameters"))]
    if params:
        scope.names.add("inputs.parameters")
    scope.names |= {f"inputs.parameters.{p}" for p in params}
    for a in as_list(inputs.get("artifacts")):
        scope.names.add(f"inputs.artifacts.{as_dict(a).get('name')}")
        if leaf:
            scope.names.add(f"inputs.artifacts.{as_dict(a).get('name')}.path")
    if leaf:
        for a in as_list(outputs.get("artifacts")):
            if as_dict(a).get("path"):
                scope.names.add(f"outputs.artifacts.{as_dict(a).get('name')}.path")
        for p in as_list(outputs.get("parameters")):
            if as_dict(as_dict(p).get("valueFrom")).get("path"):
                scope.names.add(f"outputs.parameters.{as_dict(p).get('name')}.path")
    if kind in POD_TYPES:
        scope.names.add("pod.name")
    if tmpl.get("retryStrategy") is not None:
        scope.names.add("retries")
        scope.names |= {f"lastRetry.{k}" for k in ("exitCode", "status", "duration", "message")}
    return scope


def _metrics_scope(tmpl: dict[str, Any], scope: Scope) -> Scope:
    m = scope.copy()
    m.in_metrics = True
    m.names |= METRIC_ONLY | {"workflow.status"}
    m.prefixes |= {"resourcesDuration.", "workflow.duration"}
    if template_type(tmpl) in OUTPUT_TYPES:
        m.names.add("outputs.result")
    outputs = as_dict(tmpl.get("outputs"))
    m.names |= {f"outputs.parameters.{as_dict(p).get('name')}" for p in as_list(outputs.get("parameters"))}
    m.names |= {f"outputs.artifacts.{as_dict(a).get('name')}" for a in as_list(outputs.get("artifacts"))}
    return m


def _outputs_of(prefix: str, tmpl: dict[str, Any] | None, aggregate: bool, scope: Scope) -> None:
    """What `tasks.T.` / `steps.S.` offers once T has run (addOutputsToScope with isAncestor)."""
    scope.names |= {f"{prefix}.{k}" for k in ("id", "startedAt", "finishedAt", "hostNodeName", "status")}
    if tmpl is None:  # templateRef or inline: outputs unknown here
        scope.prefixes.add(f"{prefix}.outputs.")
        scope.names.add(f"{prefix}.exitCode")
        return
    if tmpl.get("daemon"):
        scope.names.add(f"{prefix}.ip")
    if template_type(tmpl) in OUTPUT_TYPES:
        scope.names |= {f"{prefix}.outputs.result", f"{prefix}.exitCode"}
    outputs = as_dict(tmpl.get("outputs"))
    scope.names |= {f"{prefix}.outputs.parameters.{as_dict(p).get('name')}"
                    for p in as_list(outputs.get("parameters"))}
    scope.names |= {f"{prefix}.outputs.artifacts.{as_dict(a).get('name')}" for a in as_list(outputs.get("artifacts"))}
    if aggregate:
        scope.names.add(f"{prefix}.outputs.parameters")


def _add_items(call: dict[str, Any], scope: Scope) -> None:
    kind = loop_kind(call)
    if kind is None:
        return
    scope.in_loop = True
    scope.names.add("item")
    if kind == "withItems":
        for item in as_list(call.get("withItems")):
            if isinstance(item, dict):
                scope.names |= {f"item.{k}" for k in item}
            elif isinstance(item, list):
                scope.names |= {f"item.[{i}]" for i in range(len(item))}
    elif kind == "withParam":
        scope.prefixes.add("item.")


def _why(tag: str, scope: Scope) -> str:
    root, _, rest = tag.partition(".")
    if tag in ("workflow.status", "workflow.failures"):
        return "only available in the exit handler (spec.onExit)" + (" and metrics" if "status" in tag else "")
    if tag in METRIC_ONLY or root == "resourcesDuration":
        return "only available in metrics"
    if root == "item":
        return "no such key in withItems" if scope.in_loop else "only available in a task with withItems/withParam"
    if tag.startswith("workflow.parameters."):
        return f"no workflow argument '{tag.split('.', 2)[2]}' in spec.arguments.parameters"
    if root in ("tasks", "steps"):
        name = rest.split(".", 1)[0]
        if root != scope.task_prefix or name not in scope.tasks:
            return f"no {root[:-1]} '{name}' in this template"
        if root == "tasks":
            return f"task '{name}' is not an ancestor of this task (add it to depends)"
        return f"step '{name}' does not run in an earlier step group"
    if root == "inputs":
        return "the template declares no such input" + (" (paths exist only in container/script templates)"
                                                        if tag.endswith(".path") else "")
    if root == "outputs":
        return ("the template declares no such output" if tag.endswith(".path") or scope.in_metrics
                else "a template's own outputs are available only as .path (leaf) or in metrics")
    if root == "pod":
        return "pod.name exists only in container/script/resource templates"
    return "unknown variable"


def _missing_dependency(path: P, obj: dict[str, Any], tag: str, scope: Scope) -> str | None:
    """argo lint's validateDAGTaskArgumentDependency wording for arguments taken from a non-ancestor."""
    root, _, rest = tag.partition(".")
    name = rest.split(".", 1)[0]
    if root != "tasks" or name not in scope.tasks or len(path) < 4 or path[-4] != "arguments":
        return None
    kind = {"artifacts": "artifact", "parameters": "parameter"}.get(str(path[-3]))
    node: Any = obj
    for p in path[:-1]:
        node = node[p]
    return f"missing dependency '{name}' for {kind} '{as_dict(node).get('name')}'" if kind else None


def _check_strings(node: Any, path: P, scope: Scope, obj: dict[str, Any], report: Reporter) -> None:
    for spath, text in strings(node, path):
        for raw in TAG.findall(text):
            tag = raw.strip()
            if not tag or tag.startswith("=") or scope.resolves(tag):
                continue
            msg = _missing_dependency(spath, obj, tag, scope) or f"failed to resolve {{{{{tag}}}}}: {_why(tag, scope)}"
            report(spath, msg)


def check_variables(obj: dict[str, Any], spec: dict[str, Any], sp: P, report: Reporter) -> None:
    view = SpecView(spec)
    base = _globals(obj, spec, view)
    exit_templates = view.exit_templates()
    for i, tmpl in enumerate(as_list(spec.get("templates"))):
        if not isinstance(tmpl, dict):
            continue
        tp = (*sp, "templates", i)
        scope = _template_scope(tmpl, base)
        if isinstance(tmpl.get("name"), str) and tmpl["name"] in exit_templates:
            scope.in_exit = True
            scope.names |= {"workflow.status", "workflow.failures"}
        kind = template_type(tmpl)
        body = {k: v for k, v in tmpl.items() if k not in ("metrics", "dag", "steps")}
        if kind == "dag":
            scope = _check_dag(view, tmpl, tp, scope, obj, report)
        elif kind == "steps":
            scope = _check_steps(view, tmpl, tp, scope, obj, report)
        _check_strings(body, tp, scope, obj, report)
        _check_strings(tmpl.get("metrics"), (*tp, "metrics"), _metrics_scope(tmpl, scope), obj, report)
    spec_metrics = base.copy()
    spec_metrics.in_metrics = True
    spec_metrics.names |= {"workflow.status", "workflow.failures"}
    _check_strings(spec.get("metrics"), (*sp, "metrics"), spec_metrics, obj, report)


def _check_dag(view: SpecView, tmpl: dict[str, Any], tp: P, scope: Scope, obj: dict[str, Any],
               report: Reporter) -> Scope:
    """Check each task in its own scope; return the scope of the DAG's outputs (every task has run)."""
    tasks = as_list(as_dict(tmpl.get("dag")).get("tasks"))
    dag = DagView(tasks)
    scope.tasks = set(dag.by_name)

    def callee(task: dict[str, Any]) -> dict[str, Any] | None:
        return view.by_name.get(task.get("template")) if isinstance(task.get("template"), str) else None

    after_all = scope.copy()
    for name, task in dag.by_name.items():
        _outputs_of(f"tasks.{name}", callee(task), loop_kind(task) is not None, after_all)
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        ts = scope.copy()
        for anc in dag.ancestors(str(task.get("name"))):
            _outputs_of(f"tasks.{anc}", callee(dag.by_name[anc]), loop_kind(dag.by_name[anc]) is not None, ts)
        if task.get("hooks"):
            ts.names.add(f"tasks.{task.get('name')}.status")
        _add_items(task, ts)
        # an inline template's own inputs resolve inside it
        inline = {k: v for k, v in task.items() if k != "inline"}
        _check_strings(inline, (*tp, "dag", "tasks", i), ts, obj, report)
    _check_strings({k: v for k, v in as_dict(tmpl.get("dag")).items() if k != "tasks"}, (*tp, "dag"), after_all,
                   obj, report)
    return after_all


def _check_steps(view: SpecView, tmpl: dict[str, Any], tp: P, scope: Scope, obj: dict[str, Any],
                 report: Reporter) -> Scope:
    groups = as_list(tmpl.get("steps"))
    scope.task_prefix = "steps"
    scope.tasks = {str(as_dict(s).get("name")) for g in groups for s in as_list(g)}
    done = scope.copy()
    for g, group in enumerate(groups):
        finished = []
        for s, step in enumerate(as_list(group)):
            if not isinstance(step, dict):
                continue
            ss = done.copy()
            _add_items(step, ss)
            _check_strings({k: v for k, v in step.items() if k != "inline"}, (*tp, "steps", g, s), ss, obj, report)
            finished.append(step)
        for step in finished:
            target = view.by_name.get(step.get("template")) if isinstance(step.get("template"), str) else None
            _outputs_of(f"steps.{step.get('name')}", target, loop_kind(step) is not None, done)
    return done
