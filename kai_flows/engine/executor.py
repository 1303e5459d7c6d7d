"""The DAG executor: Argo's semantics for the subset `load.py` accepts, on one machine.

One scheduler thread owns every node; worker threads run pods (`pod.run_attempt`) and post their results on a
queue. Rules (argo.md; workflow/controller/dag.go, operator.go, node_counters.go of Argo v3.7):
- node names `<wf>.<task>`, fan-out children `<task>(<i>:<item>)`, retry attempts `<node>(<n>)`; ids and pod
  names as Argo computes them (`kai_flows.argo.names`);
- the entrypoint (and onExit) runs as its own node whatever its kind: a DAG, or a Pod for a container template;
  a retryStrategy (the template's, else `spec.retryStrategy`) makes any node, DAGs included, a Retry node whose
  children are the attempts (operator.go executeTemplate, retryStrategy());
- `depends` decides Omitted (cascades through plain dependents); `when` false gives Skipped (plain dependents
  still run); an empty fan-out is a Skipped node; aggregation keeps Succeeded children in index order;
- only the targets (`dag.target`, default the leaves) and what they depend on run; the DAG's phase comes from
  its targets' branches once nothing in it runs, an Omitted target inheriting the phase of its branch
  (assessDAGPhase): with `dag.failFast` (default true) the first failed target decides, without it the last.
  `dag.failFast` never stops a task from starting: the controller keeps starting every task whose dependencies
  allow it (issues #5223, #10312: the documentation says otherwise, the controller is followed);
- template-level `failFast: true` (checkParallelism): once a child of the DAG failed, no new child starts, and
  when none of its pods runs the DAG fails with "template has failed or errored children and failFast enabled";
- retries: `limit`+1 attempts, policy Always/OnFailure(Failed)/OnError(Error)/OnTransientError(Error),
  backoff `duration*factor^n` stopping when it would pass `maxDuration` from the first attempt;
- parallelism: `spec.parallelism` (and the engine's own limit) counts running pods of the whole run; a
  template's `parallelism` counts its running children, Pods and nested DAGs alike (a nested DAG is one child
  however many pods it runs); queue semaphores are cross-process file-lock slots held while a pod runs.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kai_flows.argo import depends
from kai_flows.argo.names import QUEUE_CONFIGMAP, argo_node_id, argo_pod_name
from kai_flows.engine import expressions, loops, variables
from kai_flows.engine.model import EngineError, RetryStrategy, Task, Template, Workflow
from kai_flows.engine.pod import AttemptSpec, PodResult, PodServices, run_attempt
from kai_flows.engine.records import Node, now_iso
from kai_flows.engine.semaphores import QueueSemaphores, Slot

FAILED = ("Failed", "Error")
_FROM = re.compile(r"^\{\{\s*tasks\.([a-zA-Z0-9][-a-zA-Z0-9]*)\.outputs\.artifacts\.([-a-zA-Z0-9_]+)\s*\}\}$")


# An output parameter of a Skipped/Omitted task whose template declares no valueFrom.default: an "absent
# optional" (scope.go addSkippedParamToScope, Argo 3.7.13+). A task argument that is exactly a reference to one
# is not supplied (the input's own default applies, else the task fails); any other use of it is an error.
ABSENT = "\x00kai-absent-optional\x00"
_PURE_REF = re.compile(r"^\{\{\s*([^{}]+?)\s*\}\}$")


def _absent_ref(value: str, scope: dict[str, str]) -> bool:
    m = _PURE_REF.match(value)
    return m is not None and scope.get(m.group(1)) == ABSENT


def _substitute(text: str, scope: dict[str, str], what: str) -> str:
    out = variables.substitute(text, scope)
    if ABSENT in out:
        raise EngineError(f"{what}: {text!r} references an absent optional (skipped/omitted node output with no "
                          "default)")
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^-a-zA-Z0-9_.():]", "_", name)[:200]


@dataclass
class RunContext:
    run_name: str
    uid: str
    params: dict[str, str]
    services: PodServices
    scratch_root: Path
    logs_dir: Path
    parallelism: int
    semaphores: QueueSemaphores
    has_gpu: bool = False
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)  # node name -> Argo node dict (resume)
    on_change: Callable[[], None] = lambda: None
    created: str = field(default_factory=now_iso)


class Unit:
    """What a task (or one fan-out child, or the entrypoint) runs: a pod with retries, or a DAG."""

    node: Node
    done: bool = False

    def advance(self) -> bool:
        """Move on what can move (a nested DAG's tasks, a retry's next attempt). True when something changed."""
        return False


class SettledUnit(Unit):
    """A node decided without running anything (Skipped, Omitted, or an Error found before it started)."""

    def __init__(self, node: Node) -> None:
        self.node, self.done = node, True


def next_attempt(retry: RetryStrategy, phase: str, attempts: int, first_start: float, last_message: str,
                 stopping: str = "") -> tuple[float | None, str]:
    """processNodeRetries after a failed attempt: (seconds before the next attempt, "") or (None, the Retry
    node's final message). `attempts`: how many ran so far; `stopping`: why the run is stopping, if it is."""
    if stopping:
        return None, "retry exceeded workflow deadline" if stopping == "deadline" else last_message
    backoff = retry.backoff
    if backoff.max_duration is not None and time.monotonic() - first_start > backoff.max_duration:
        return None, "Max duration limit exceeded"
    delay = backoff.duration * backoff.factor ** (attempts - 1)
    if backoff.max_duration is not None and time.monotonic() + delay - first_start > backoff.max_duration:
        return None, "Backoff would exceed max duration limit"
    if not retry.allows(phase):
        return None, last_message
    if attempts > int(retry.limit):
        return None, "No more retries left"
    return delay, ""


class PodUnit(Unit):
    def __init__(self, ex: Executor, dag: DagRun | None, node: Node, template: Template, params: dict[str, str],
                 artifacts: dict[str, tuple[str, str | None]], retry: RetryStrategy | None) -> None:
        self.ex, self.dag, self.node, self.template = ex, dag, node, template
        self.params, self.artifacts = params, artifacts
        self.retry = retry
        self.attempt = 0
        self.first_start: float | None = None
        self.not_before = 0.0
        self.slots: list[Slot] = []
        self.done = False
        self.running = False
        self.result: PodResult | None = None

    def attempt_node(self) -> Node:
        if self.retry is None:
            return self.node
        name = f"{self.node.name}({self.attempt})"
        n = self.ex.new_node(name, f"{self.node.display_name}({self.attempt})", "Pod", self.template.name,
                             self.node.boundary_id)
        n.kai["attempt"] = self.attempt
        self.node.children.append(n.id)
        return n

    def finish(self, attempt: Node, res: PodResult) -> None:
        ex = self.ex
        attempt.phase = res.phase
        attempt.message = res.message
        attempt.finished_at = now_iso()
        if self.dag is not None and res.phase in FAILED:
            self.dag.unsuccessful += 1  # every failed attempt pod counts (node_counters.go)
        outputs: dict[str, Any] = {}
        if res.parameters:
            outputs["parameters"] = res.parameters
        if res.artifacts:
            outputs["artifacts"] = res.artifacts
        if res.result is not None and res.phase == "Succeeded":
            outputs["result"] = res.result
        if res.exit_code is not None:
            outputs["exitCode"] = str(res.exit_code)
        attempt.outputs = outputs or None
        attempt.kai.update(res.figures)
        if res.figures.get("overMemoryLimit"):
            ex.warn(f"{attempt.name}: peak memory {res.figures['peakMemoryBytes'] / 2**20:.0f} MiB exceeds its "
                    f"limit {res.figures['memoryLimitBytes'] / 2**20:.0f} MiB (a cluster would OOM-kill it)")
        if self.retry is not None and res.phase in FAILED:
            assert self.first_start is not None
            delay, message = next_attempt(self.retry, res.phase, self.attempt + 1, self.first_start, res.message,
                                          ex.stop_cause if ex.stopping else "")
            if delay is None:
                self._complete(res, message)
                return
            self.attempt += 1
            self.not_before = time.monotonic() + delay
            self.node.kai["retries"] = self.attempt
            ex.ready.append(self)
            return
        self._complete(res, res.message)

    def _complete(self, res: PodResult, message: str) -> None:
        self.result = res
        self.done = True
        node = self.node
        if node.type == "Retry":
            last = self.ex.nodes[node.children[-1]]
            node.outputs = last.outputs
            node.kai.update({k: v for k, v in last.kai.items() if k not in ("log", "attempt")})
        node.phase = res.phase
        node.message = message
        node.finished_at = now_iso()
        if self.template.metrics:
            node.kai["metrics"] = self._metrics(res)

    def _metrics(self, res: PodResult) -> list[dict[str, Any]]:
        """Template metrics evaluated as Argo would emit them, with the metric-only `{{duration}}`/`{{status}}`
        (recorded in run.json; there is no Prometheus locally)."""
        scope = self.ex.global_scope()
        scope.update({"duration": str(res.figures.get("wallSeconds", 0)), "status": res.phase})
        scope.update({f"inputs.parameters.{k}": v for k, v in self.params.items()})
        out = []
        for m in self.template.metrics:
            try:
                if m.get("when") and not expressions.evaluate_when(variables.substitute(str(m["when"]), scope)):
                    continue
                kind = next(k for k in ("counter", "gauge", "histogram") if k in m)
                out.append({"name": m.get("name"), "type": kind,
                            "labels": {lb["key"]: variables.substitute(str(lb["value"]), scope)
                                       for lb in m.get("labels", [])},
                            "value": variables.substitute(str(m[kind].get("value", "")), scope)})
            except (StopIteration, KeyError, TypeError, variables.UnresolvedVariable, expressions.ExpressionError) as e:
                self.ex.warn(f"{self.node.name}: metric {m.get('name')!r} not evaluated: {e}")
        return out


class DagUnit(Unit):
    """A nested DAG (or the entrypoint DAG), started when its boundary admits one more child; with a
    retryStrategy its node is a Retry node and each attempt is a DAG node `<name>(<n>)` run afresh."""

    def __init__(self, ex: Executor, boundary: DagRun | None, node: Node, template: Template,
                 params: dict[str, str], retry: RetryStrategy | None) -> None:
        self.ex, self.boundary, self.node, self.template = ex, boundary, node, template
        self.params, self.retry = params, retry
        self.attempt = 0
        self.run: DagRun | None = None
        self.not_before = 0.0
        self.first_start: float | None = None
        self.done = False
        node.phase = "Pending"

    @property
    def active(self) -> bool:
        return self.run is not None and not self.run.node.fulfilled

    def _start_attempt(self) -> None:
        ex = self.ex
        if self.retry is None:
            run_node = self.node
        else:
            name = f"{self.node.name}({self.attempt})"
            run_node = ex.new_node(name, f"{self.node.display_name}({self.attempt})", "DAG", self.template.name,
                                   self.node.boundary_id)
            run_node.inputs = self.node.inputs
            self.node.children.append(run_node.id)
            self.node.phase = "Running"
            self.node.started_at = self.node.started_at or now_iso()
        self.first_start = self.first_start or time.monotonic()
        self.run = DagRun(ex, self.template, run_node, self.params, self.boundary)
        ex.dags.append(self.run)
        if self.boundary is not None:
            self.boundary.active += 1

    def advance(self) -> bool:
        if self.done:
            return False
        if self.run is None:
            if self.ex.stopping:  # never started: recorded as not run, like a pod
                self.node.phase, self.node.message = "Failed", "Stopped"
                self.node.finished_at = now_iso()
                self.done = True
                return True
            if time.monotonic() < self.not_before or (self.boundary is not None and not self.boundary.admits()):
                return False
            self._start_attempt()
            return True
        if self.run.node.fulfilled:
            return False
        changed = self.run.advance()
        if not self.run.node.fulfilled:
            return changed
        phase = self.run.node.phase
        if self.boundary is not None:
            self.boundary.active -= 1
            if phase in FAILED:
                self.boundary.unsuccessful += 1
        if self.retry is None:
            self.done = True
            return True
        message = self.run.node.message
        if phase in FAILED:
            assert self.first_start is not None
            delay, message = next_attempt(self.retry, phase, self.attempt + 1, self.first_start, message,
                                          self.ex.stop_cause if self.ex.stopping else "")
            if delay is not None:
                self.attempt += 1
                self.node.kai["retries"] = self.attempt
                self.not_before = time.monotonic() + delay
                self.run = None
                return True
        node = self.node
        node.phase, node.message = phase, message
        node.outputs = self.run.node.outputs
        node.finished_at = now_iso()
        self.done = True
        return True


class TaskRun:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.node: Node | None = None
        self.units: list[tuple[int, Unit]] = []
        self.started = False
        self.fanout = task.fanout
        self.pending_items: list[tuple[int, Any]] = []

    @property
    def done(self) -> bool:
        return self.node is not None and self.node.fulfilled


class DagRun:
    def __init__(self, ex: Executor, template: Template, node: Node, inputs: dict[str, str],
                 parent: DagRun | None) -> None:
        self.ex, self.template, self.node, self.inputs, self.parent = ex, template, node, inputs, parent
        self.tasks = {t.name: TaskRun(t) for t in template.tasks}
        self.active = 0  # running children with this DAG as boundary: pods, and nested DAGs (one each)
        self.active_pods = 0
        self.unsuccessful = 0  # children (pods, nested DAGs) that ended Failed or Error
        self.halted = False  # template-level failFast tripped
        self.units: list[Unit] = []
        deps = {t.name: depends.depends_task_names(t.depends) if t.depends else set() for t in template.tasks}
        self.deps = deps
        node.phase = "Running"
        node.started_at = node.started_at or now_iso()
        self.targets = self._targets()
        self.wanted = self._ancestry(self.targets)  # what executeDAG reaches from the targets

    def _targets(self) -> list[str]:
        """dag.target (space-separated, maybe a parameter expression), else the leaves, sorted
        (findLeafTaskNames)."""
        raw = self.template.target
        if raw and "{{" in raw:
            try:
                raw = variables.substitute(raw, self.scope())
            except variables.UnresolvedVariable as e:
                self._fail_now("Error", f"dag.target {self.template.target!r}: {e}")
                return []
        if raw.strip():
            names = raw.split()
            unknown = [n for n in names if n not in self.tasks]
            if unknown:
                self._fail_now("Error", f"target {unknown[0]!r} is not a task of dag {self.template.name!r}")
                return []
            return names
        has_dependents = {d for ds in self.deps.values() for d in ds}
        return sorted(n for n in self.deps if n not in has_dependents)

    def _ancestry(self, names: list[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.deps[n])
        return seen

    def _fail_now(self, phase: str, message: str) -> None:
        self.node.phase, self.node.message = phase, message
        self.node.finished_at = now_iso()

    def admits(self) -> bool:
        """Whether one more child may start (checkParallelism with this DAG as the boundary)."""
        if self.blocked:
            return False
        limit = self.template.parallelism
        return limit is None or self.active < limit

    @property
    def blocked(self) -> bool:
        """Template-level failFast: a child failed, so no new child starts."""
        return self.template.fail_fast_children and self.unsuccessful > 0

    # ---- scope ---------------------------------------------------------------------------------------------
    def scope(self) -> dict[str, str]:
        scope = self.ex.global_scope()
        scope.update({f"inputs.parameters.{k}": v for k, v in self.inputs.items()})
        for name, tr in self.tasks.items():
            if tr.node is None or not tr.node.fulfilled:
                continue
            prefix = f"tasks.{name}"
            n = tr.node
            scope.update({f"{prefix}.id": n.id, f"{prefix}.status": n.phase,
                          f"{prefix}.startedAt": n.started_at or "", f"{prefix}.finishedAt": n.finished_at or ""})
            if tr.fanout:
                children = []
                for index, unit in tr.units:
                    outs = unit.node.outputs or {}
                    params = {p["name"]: p.get("value", "") for p in outs.get("parameters", [])}
                    children.append((index, unit.node.phase, params, outs.get("result")))
                for k, v in loops.aggregate_outputs(name, children).items():
                    scope[k if k.startswith("tasks.") else f"{prefix}.{k}"] = v
            elif n.phase in ("Skipped", "Omitted") and not n.outputs:
                # addSkippedNodeOutputsToScope: the producer's valueFrom.default, else an absent optional
                for op in self.ex.wf.templates[tr.task.template].output_params:
                    scope[f"{prefix}.outputs.parameters.{op.name}"] = op.default if op.default is not None else ABSENT
            else:
                outs = n.outputs or {}
                if "exitCode" in outs:
                    scope[f"{prefix}.exitCode"] = outs["exitCode"]
                for p in outs.get("parameters", []):
                    scope[f"{prefix}.outputs.parameters.{p['name']}"] = p.get("value", "")
                if "result" in outs:
                    scope[f"{prefix}.outputs.result"] = outs["result"]
        return scope

    def artifact_key(self, task: str, art: str) -> str | None:
        tr = self.tasks.get(task)
        if tr is None or tr.node is None:
            return None
        for a in (tr.node.outputs or {}).get("artifacts", []):
            if a["name"] == art:
                return a["s3"]["key"]
        return None

    def task_state(self, name: str) -> depends.TaskState:
        tr = self.tasks[name]
        if tr.node is None or not tr.node.fulfilled:
            return depends.TaskState("Running", fanout=tr.fanout)
        t = tr.task
        return depends.TaskState(tr.node.phase, fanout=tr.fanout,
                                     children_phases=[u.node.phase for _, u in tr.units] if tr.fanout else [],
                                     continue_on_failed=t.continue_on_failed, continue_on_error=t.continue_on_error)

    # ---- scheduling ----------------------------------------------------------------------------------------
    def advance(self) -> bool:
        """Start whatever can start, settle whatever finished. True when something changed."""
        if self.node.fulfilled:
            return False
        changed = False
        for tr in self.tasks.values():
            if tr.task.name not in self.wanted:
                continue  # not a target nor needed by one: Argo never reaches it
            if tr.done:
                continue
            if not tr.started:
                if self.ex.stopping or self.blocked:
                    continue
                if tr.task.depends:
                    states = {n: self.task_state(n) for n in self.deps[tr.task.name]}
                    try:
                        go = depends.evaluate_depends(tr.task.depends, states)
                    except expressions.ExpressionError as e:
                        self._settle_task(tr, "Error", f"depends {tr.task.depends!r}: {e}", "Skipped")
                        changed = True
                        continue
                    if go is None:
                        continue
                    if not go:
                        self._settle_task(tr, "Omitted", "omitted: depends condition not met", "Skipped")
                        changed = True
                        continue
                self._start_task(tr)
                changed = True
            changed |= self._advance_task(tr)
        if self._check_done():
            changed = True
        return changed

    def _task_node_name(self, task: str) -> str:
        return f"{self.node.name}.{task}"

    def _connect(self, tr: TaskRun, node: Node) -> None:
        """Argo's graph: a root task is a child of the DAG node, others of their dependencies' outbound nodes."""
        deps = self.deps[tr.task.name]
        if not deps:
            self.node.children.append(node.id)
            return
        for dep in sorted(deps):
            dn = self.tasks[dep].node
            if dn is None:
                continue
            outbound = [self.ex.nodes[c] for c in dn.children] if dn.type in ("TaskGroup", "Retry") else []
            if dn.type == "Retry" and outbound:
                outbound = outbound[-1:]
            for o in outbound or [dn]:
                if node.id not in o.children:
                    o.children.append(node.id)

    def _settle_task(self, tr: TaskRun, phase: str, message: str, node_type: str) -> None:
        name = self._task_node_name(tr.task.name)
        tmpl = self.ex.wf.templates[tr.task.template]
        node = self.ex.new_node(name, tr.task.name, node_type, tmpl.name, self.node.id)
        node.phase, node.message = phase, message
        node.started_at = node.finished_at = now_iso()
        tr.node, tr.started = node, True
        self._connect(tr, node)

    def _start_task(self, tr: TaskRun) -> None:
        task = tr.task
        tr.started = True
        scope = self.scope()
        name = self._task_node_name(task.name)
        tmpl = self.ex.wf.templates[task.template]
        if not tr.fanout:
            unit = self._make_unit(task, name, task.name, scope, tmpl, parent=None, tr=tr)
            tr.node = unit.node
            tr.units = [(0, unit)]
            return
        try:
            items = loops.expand_items(
                variables.substitute_obj(task.with_items, scope) if task.with_items is not None else None,
                _substitute(task.with_param, scope, "withParam") if task.with_param is not None else None,
                variables.substitute_obj(task.with_sequence, scope) if task.with_sequence is not None else None)
        except (variables.UnresolvedVariable, expressions.ExpressionError, EngineError, ValueError, TypeError) as e:
            tr.started = False
            self._settle_task(tr, "Error", f"task {task.name!r}: {e}", "Skipped")
            return
        if not items:
            tr.started = False
            self._settle_task(tr, "Skipped", "Skipped, empty params", "Skipped")
            return
        group = self.ex.new_node(name, task.name, "TaskGroup", tmpl.name, self.node.id)
        group.phase, group.started_at = "Running", now_iso()
        tr.node = group
        self._connect(tr, group)
        tr.pending_items = list(enumerate(items))
        self._spawn_children(tr)

    def _spawn_children(self, tr: TaskRun) -> None:
        """Create the fan-out's children (each starts when parallelism admits it)."""
        if not tr.pending_items or self.ex.stopping:
            return
        assert tr.node is not None
        scope = self.scope()
        tmpl = self.ex.wf.templates[tr.task.template]
        for index, item in tr.pending_items:
            child_name = loops.child_node_name(tr.node.name, index, item)
            child_scope = dict(scope)
            child_scope.update(loops.item_scope(item))
            display = child_name[len(self.node.name) + 1:]
            unit = self._make_unit(tr.task, child_name, display, child_scope, tmpl, parent=tr.node, tr=tr)
            tr.units.append((index, unit))
        tr.pending_items = []

    def _make_unit(self, task: Task, name: str, display: str, scope: dict[str, str], tmpl: Template,
                   parent: Node | None, tr: TaskRun) -> Unit:
        ex = self.ex

        def attach(node: Node) -> None:
            if parent is not None:
                parent.children.append(node.id)
            else:
                self._connect(tr, node)

        def settled(phase: str, message: str) -> Unit:
            node = ex.new_node(name, display, "Skipped", tmpl.name, self.node.id)
            node.phase, node.message = phase, message
            node.started_at = node.finished_at = now_iso()
            attach(node)
            return SettledUnit(node)

        if task.when:
            try:
                text = _substitute(task.when, scope, "when")
                run_it = expressions.evaluate_when(text)
            except (variables.UnresolvedVariable, expressions.ExpressionError, EngineError) as e:
                return settled("Error", f"when {task.when!r}: {e}")
            if not run_it:
                return settled("Skipped", f"when '{text}' evaluated false")
        try:
            args: dict[str, str] = {}
            for p in task.params:
                if _absent_ref(p.value or "", scope):
                    if next((i.value for i in tmpl.inputs if i.name == p.name), None) is None:
                        raise EngineError(f"inputs.parameters.{p.name}: argument references an absent optional "
                                          "(skipped/omitted node output with no default)")
                    continue  # not supplied: the input's own default applies (ProcessArgs)
                args[p.name] = _substitute(p.value or "", scope, f"argument {p.name!r}")
            params = ex.resolve_inputs(tmpl, args)
            arts: dict[str, tuple[str, str | None]] = {}
            given = {a.name: a for a in task.artifacts}
            for decl in tmpl.input_artifacts:
                a = given.get(decl.name)
                sub = _substitute(a.sub_path, scope, f"artifact {decl.name!r} subPath") if a and a.sub_path else None
                key: str | None = None
                if a is not None and a.from_ is not None:
                    m = _FROM.match(a.from_.strip())
                    if not m:
                        raise EngineError(f"artifact {decl.name!r}: 'from' must be "
                                          "'{{tasks.T.outputs.artifacts.A}}', got " + repr(a.from_))
                    key = self.artifact_key(m.group(1), m.group(2))
                    if key is None and not decl.optional:
                        raise EngineError(f"Unable to resolve: {a.from_} (task {m.group(1)!r} has no output "
                                          f"artifact {m.group(2)!r})")
                elif a is not None and a.s3_key is not None:
                    key = variables.substitute(a.s3_key, scope)
                elif decl.s3_key is not None:
                    key = variables.substitute(decl.s3_key, {**scope, **{f"inputs.parameters.{k}": v
                                                                         for k, v in params.items()}})
                if key:
                    arts[decl.name] = (key, sub)
                elif not decl.optional:
                    raise EngineError(f"input artifact {decl.name!r} of template {tmpl.name!r} was not supplied")
            unit = ex.make_unit(tmpl, name, display, params, arts, self, attach)
        except (variables.UnresolvedVariable, EngineError) as e:
            return settled("Error", str(e))
        self.units.append(unit)
        return unit

    def _advance_task(self, tr: TaskRun) -> bool:
        if tr.node is None or tr.node.fulfilled:
            return False
        changed = False
        for _, unit in tr.units:
            changed |= unit.advance()
        if tr.fanout and tr.pending_items:
            return changed
        if not all(u.done for _, u in tr.units):
            return changed
        if tr.fanout:
            phase = "Succeeded"
            for _, u in tr.units:
                if u.node.phase in FAILED:
                    phase = u.node.phase
            tr.node.phase = phase
            tr.node.finished_at = now_iso()
        return True

    def _check_done(self) -> bool:
        if self.node.fulfilled:
            return True
        if self.blocked and self.active == 0:  # Argo waits for its pods only; a nested DAG is let finish too
            self._halt()
            return True
        for tr in self.tasks.values():
            if tr.node is not None and not tr.node.fulfilled:
                return False
        undone = [tr for tr in self.tasks.values() if not tr.done and tr.task.name in self.wanted]
        if undone and not self.ex.stopping:
            return False  # something can still start once its dependencies settle
        self.node.phase = self._assess()
        self.node.finished_at = now_iso()
        if self.ex.stopping and undone:
            self.node.phase, self.node.message = "Failed", "Stopped"
        return True

    def _halt(self) -> None:
        """Template failFast with no pod left running: the DAG fails; children that never started never existed
        (Argo never created them)."""
        self.halted = True
        for tr in self.tasks.values():
            for _, unit in tr.units:
                if not unit.done and isinstance(unit, (PodUnit, DagUnit)):
                    if unit.attempt > 0:  # a Retry node waiting for its next attempt: it ends with its last one
                        last = self.ex.nodes[unit.node.children[-1]]
                        unit.node.phase, unit.node.message = last.phase, last.message
                        unit.node.finished_at = now_iso()
                        unit.done = True
                    else:
                        self.ex.discard(unit)
            if tr.node is not None and not tr.node.fulfilled:
                if tr.fanout and tr.units and any(u.done for _, u in tr.units):
                    kept = [u for _, u in tr.units if u.node.id in self.ex.nodes]
                    tr.node.phase = next((u.node.phase for u in kept if u.node.phase in FAILED), "Succeeded")
                    tr.node.finished_at = now_iso()
                else:
                    self.ex.forget(tr.node)
                    tr.node = None
        self._fail_now("Failed", "template has failed or errored children and failFast enabled")

    def _branch_phase(self, name: str, memo: dict[str, str]) -> str:
        if name in memo:
            return memo[name]
        tr = self.tasks[name]
        if tr.node is not None and tr.node.phase in ("Succeeded", "Failed", "Error", "Skipped"):
            memo[name] = tr.node.phase
            return memo[name]
        parents = [self._branch_phase(p, memo) for p in sorted(self.deps[name])]
        bad = [p for p in parents if p in FAILED]
        memo[name] = bad[0] if bad else "Succeeded"
        return memo[name]

    def _assess(self) -> str:
        """assessDAGPhase once nothing runs: each target's branch phase; with dag.failFast the first failed
        target decides, without it the last one (continueOn excuses a target's own failure)."""
        memo: dict[str, str] = {}
        result = "Succeeded"
        for target in self.targets:
            bp = self._branch_phase(target, memo)
            if bp in FAILED:
                t = self.tasks[target].task
                if (bp == "Failed" and t.continue_on_failed) or (bp == "Error" and t.continue_on_error):
                    continue
                result = bp
                if self.template.fail_fast:
                    break
        return result


class Executor:
    def __init__(self, wf: Workflow, ctx: RunContext) -> None:
        self.wf, self.ctx = wf, ctx
        self.nodes: dict[str, Node] = {}
        self.ready: deque[PodUnit] = deque()
        self.events: queue.Queue[tuple[PodUnit, Node, PodResult | BaseException]] = queue.Queue()
        self.running = 0
        self.dags: list[DagRun] = []
        self.stopping = False
        self.stop_reason = ""
        self.stop_cause = ""  # "user" (SIGINT/SIGTERM), "deadline" (spec.activeDeadlineSeconds), "store", ...
        self.status = "Running"
        self.started = time.monotonic()
        self.warnings: list[str] = []
        self.on_warning: Callable[[str], None] = lambda _m: None
        self.parallelism = max(1, min(ctx.parallelism, wf.parallelism or ctx.parallelism))
        # one worker per running pod, reused: starting a thread per pod costs milliseconds under load
        self.pool = ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="kai-pod")
        self._lock = threading.Lock()

    # ---- nodes ---------------------------------------------------------------------------------------------
    def new_node(self, name: str, display: str, ntype: str, template: str, boundary: str) -> Node:
        node_id = argo_node_id(self.ctx.run_name, name)
        node = Node(id=node_id, name=name, display_name=display, type=ntype, template_name=template,
                    boundary_id=boundary)
        self.nodes[node_id] = node
        return node

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.on_warning(message)

    def failures(self) -> list[dict[str, Any]]:
        out = []
        for n in self.nodes.values():
            if n.type == "Pod" and n.phase in FAILED:
                out.append({"displayName": n.display_name, "message": n.message, "templateName": n.template_name,
                            "phase": n.phase, "podName": n.pod_name, "finishedAt": n.finished_at or ""})
        return out

    def global_scope(self) -> dict[str, str]:
        wf, ctx = self.wf, self.ctx
        scope = {
            "workflow.name": ctx.run_name, "workflow.namespace": wf.namespace, "workflow.uid": ctx.uid,
            "workflow.priority": str(wf.priority), "workflow.serviceAccountName": wf.service_account,
            "workflow.creationTimestamp": ctx.created, "workflow.status": self.status,
            "workflow.duration": f"{time.monotonic() - self.started:.6f}",
            "workflow.parameters": json.dumps([{"name": k, "value": v} for k, v in ctx.params.items()]),
            "workflow.failures": json.dumps(self.failures()),
        }
        scope.update({f"workflow.parameters.{k}": v for k, v in ctx.params.items()})
        scope.update({f"workflow.labels.{k}": v for k, v in wf.labels.items()})
        scope.update({f"workflow.annotations.{k}": v for k, v in wf.annotations.items()})
        return scope

    def resolve_retry(self, retry: RetryStrategy | None, params: dict[str, str]) -> RetryStrategy | None:
        """The retryStrategy with a parameter-expression `limit` resolved in the node's scope."""
        if retry is None or isinstance(retry.limit, int):
            return retry
        scope = self.global_scope()
        scope.update({f"inputs.parameters.{k}": v for k, v in params.items()})
        value = variables.substitute(retry.limit, scope)
        try:
            return dataclasses.replace(retry, limit=int(value))
        except ValueError:
            raise EngineError(f"retryStrategy.limit {retry.limit!r} resolved to {value!r}, not an integer") from None

    def make_unit(self, tmpl: Template, name: str, display: str, params: dict[str, str],
                  arts: dict[str, tuple[str, str | None]], boundary: DagRun | None,
                  attach: Callable[[Node], None]) -> Unit:
        """The node (Pod, DAG, or Retry when a retryStrategy applies) and unit that run `tmpl`."""
        retry = self.resolve_retry(tmpl.retry or self.wf.retry, params)
        boundary_id = boundary.node.id if boundary is not None else ""
        if tmpl.kind == "dag":
            node = self.new_node(name, display, "Retry" if retry else "DAG", tmpl.name, boundary_id)
            node.inputs = {"parameters": [{"name": k, "value": v} for k, v in params.items()]} if params else None
            attach(node)
            return DagUnit(self, boundary, node, tmpl, params, retry)
        node = self.new_node(name, display, "Retry" if retry else "Pod", tmpl.name, boundary_id)
        inputs: dict[str, Any] = {}
        if params:
            inputs["parameters"] = [{"name": k, "value": v} for k, v in params.items()]
        if arts:
            inputs["artifacts"] = [{"name": k, "s3": {"key": v[0]}, **({"subPath": v[1]} if v[1] else {})}
                                   for k, v in arts.items()]
        node.inputs = inputs or None
        attach(node)
        unit = PodUnit(self, boundary, node, tmpl, params, arts, retry)
        if not self.reuse(unit):
            self.ready.append(unit)
        return unit

    def forget(self, node: Node) -> None:
        """Remove a node that never started (Argo would not have created it) from the graph."""
        if self.nodes.pop(node.id, None) is None:
            return
        for other in self.nodes.values():
            if node.id in other.children:
                other.children.remove(node.id)

    def discard(self, unit: Unit) -> None:
        self.forget(unit.node)
        unit.done = True

    def resolve_inputs(self, tmpl: Template, args: dict[str, str]) -> dict[str, str]:
        """A template's input parameters from the task's arguments and the template's defaults."""
        values: dict[str, str] = {}
        for p in tmpl.inputs:
            value = args.get(p.name, p.value)
            if value is None:
                raise EngineError(f"inputs.parameters.{p.name} was not supplied to template {tmpl.name!r}")
            if p.enum and value not in p.enum:
                raise EngineError(f"inputs.parameters.{p.name}: value {value!r} is not one of {list(p.enum)}")
            values[p.name] = value
        return values

    # ---- resume --------------------------------------------------------------------------------------------
    def reuse(self, unit: PodUnit) -> bool:
        """On resume, a pod node that Succeeded before (and whose artifacts are still published) is not rerun."""
        old = self.ctx.previous.get(unit.node.name)
        if not old or old.get("phase") != "Succeeded" or old.get("templateName") != unit.template.name:
            return False
        outputs = old.get("outputs") or {}
        store = self.ctx.services.store
        for art in outputs.get("artifacts", []):
            if not store.exists(art["s3"]["key"]):
                return False
        node = unit.node
        node.outputs = outputs or None
        node.phase, node.message = "Succeeded", old.get("message", "")
        node.started_at, node.finished_at = old.get("startedAt"), old.get("finishedAt")
        node.kai.update(old.get("kai", {}))
        node.kai["reused"] = True
        for child_id in old.get("children", []) if node.type == "Retry" else []:
            old_child = self.ctx.previous.get("#id:" + child_id)
            if old_child:
                child = Node.from_argo(old_child)
                self.nodes[child.id] = child
                node.children.append(child.id)
        unit.done = True
        return True

    # ---- running pods --------------------------------------------------------------------------------------
    def _limits_allow(self, unit: PodUnit) -> bool:
        """checkParallelism: the run's pods, then the boundary DAG's active children (its own limit only: a
        nested DAG counts once in its parent, its pods count in itself)."""
        if self.running >= self.parallelism:
            return False
        return unit.dag is None or unit.dag.admits()

    def start_ready(self) -> None:
        now = time.monotonic()
        waiting: deque[PodUnit] = deque()
        while self.ready:
            unit = self.ready.popleft()
            if unit.done:
                continue
            if self.stopping:  # never started: recorded as not run
                unit.node.phase, unit.node.message = "Failed", "Stopped"
                unit.done = True
                continue
            if unit.not_before > now or not self._limits_allow(unit):
                waiting.append(unit)
                continue
            slots = self.ctx.semaphores.try_acquire_all(unit.template.semaphores) \
                if unit.template.semaphores else []
            if slots is None:
                unit.node.message = "Waiting for " + ", ".join(f"{QUEUE_CONFIGMAP}/{k}"
                                                               for k in unit.template.semaphores)
                waiting.append(unit)
                continue
            unit.slots = slots
            self._launch(unit)
        self.ready = waiting

    def _launch(self, unit: PodUnit) -> None:
        attempt = unit.attempt_node()
        now = now_iso()
        unit.node.phase = "Running"
        unit.node.message = ""
        unit.node.started_at = unit.node.started_at or now
        attempt.phase, attempt.started_at = "Running", now
        if unit.first_start is None:
            unit.first_start = time.monotonic()
        pod_name = argo_pod_name(self.ctx.run_name, unit.template.name, attempt.name)
        attempt.pod_name = pod_name
        log_path = self.ctx.logs_dir / f"{_safe(unit.node.name)}.log"
        unit.node.kai["log"] = str(log_path)
        attempt.kai["image"] = unit.template.image
        spec = AttemptSpec(
            template=unit.template, node_name=attempt.name, node_id=attempt.id, pod_name=pod_name,
            params=unit.params, artifacts=unit.artifacts, scope=self.global_scope(),
            retries=unit.attempt if unit.retry is not None else None,
            scratch=self.ctx.scratch_root / attempt.id, log_path=log_path, wf_name=self.ctx.run_name,
            has_gpu=self.ctx.has_gpu,
        )
        self.running += 1
        unit.running = True
        if unit.dag is not None:
            unit.dag.active += 1
            unit.dag.active_pods += 1

        def work() -> None:
            try:
                res: PodResult | BaseException = run_attempt(spec, self.ctx.services)
            except BaseException as e:  # a bug in the engine must not hang the run
                res = e
            self.events.put((unit, attempt, res))

        self.pool.submit(work)

    def _on_event(self, unit: PodUnit, attempt: Node, res: PodResult | BaseException) -> None:
        self.running -= 1
        unit.running = False
        if unit.dag is not None:
            unit.dag.active -= 1
            unit.dag.active_pods -= 1
        for slot in unit.slots:
            slot.release()
        unit.slots = []
        if isinstance(res, BaseException):
            res = PodResult("Error", f"engine error: {type(res).__name__}: {res}")
        if res.argv:
            attempt.kai["command"] = res.argv
        unit.finish(attempt, res)

    # ---- main loop -----------------------------------------------------------------------------------------
    def stop(self, reason: str = "Stopped", cause: str = "user") -> None:
        """Stop the run (SIGINT, deadline, a lost store): no new pods, kill running process groups."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self.stop_cause = cause
            self.ctx.services.groups.stop_all()

    def resume_for_exit_handler(self) -> None:
        """After a workflow deadline Argo still runs the exit handler: accept new pods again."""
        self.stopping = False
        self.ctx.services.groups.stopping = False

    def root_unit(self, template: Template, node_name: str, display: str) -> Unit:
        """The entrypoint (or onExit) as its own node: its inputs bound from the workflow's arguments by name,
        as Argo passes spec.arguments to the entrypoint template."""
        try:
            params = self.resolve_inputs(template, dict(self.ctx.params))
            scope = {**self.global_scope(), **{f"inputs.parameters.{k}": v for k, v in params.items()}}
            arts: dict[str, tuple[str, str | None]] = {}
            for decl in template.input_artifacts:
                if decl.s3_key is not None:
                    arts[decl.name] = (variables.substitute(decl.s3_key, scope), None)
                elif not decl.optional:
                    raise EngineError(f"input artifact {decl.name!r} of template {template.name!r} was not supplied")
            return self.make_unit(template, node_name, display, params, arts, None, lambda _n: None)
        except (variables.UnresolvedVariable, EngineError) as e:
            node = self.new_node(node_name, display, "Skipped", template.name, "")
            node.phase, node.message = "Error", str(e)
            node.started_at = node.finished_at = now_iso()
            return SettledUnit(node)

    def run_root(self, template: Template, node_name: str, display: str, tick: Callable[[], None], *,
                 deadline_s: float | None = None) -> Node:
        """Run `template` as a root node until it and every pod it started are done."""
        unit = self.root_unit(template, node_name, display)
        deadline = time.monotonic() + deadline_s if deadline_s else None
        while True:
            while unit.advance():
                pass
            before = self.running
            self.start_ready()
            if self.running != before:
                tick()  # show what just started
            if unit.done and self.running == 0:
                break
            if deadline is not None and time.monotonic() > deadline and not self.stopping:
                self.stop("Max duration limit exceeded", cause="deadline")
            timeout = 0.25
            if self.ready:
                soonest = min(u.not_before for u in self.ready) - time.monotonic()
                timeout = max(0.005, min(timeout, soonest)) if soonest > 0 else 0.05
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                tick()
                continue
            self._on_event(*event)
            while True:  # drain what else finished meanwhile, then re-plan once
                try:
                    self._on_event(*self.events.get_nowait())
                except queue.Empty:
                    break
            tick()
        tick()
        return unit.node


def new_uid() -> str:
    return str(uuid.uuid4())
