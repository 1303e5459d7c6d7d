"""The DAG executor: Argo's semantics for the subset `load.py` accepts, on one machine.

One scheduler thread owns every node; worker threads run pods (`pod.run_attempt`) and post their results on a
queue. Rules (argo.md; workflow/controller/dag.go, operator.go):
- node names `<wf>.<task>`, fan-out children `<task>(<i>:<item>)`, retry attempts `<node>(<n>)`; ids and pod
  names as Argo computes them (`kai_flows.store.argo_keys`);
- `depends` decides Omitted (cascades through plain dependents); `when` false gives Skipped (plain dependents
  still run); an empty fan-out is a Skipped node; aggregation keeps Succeeded children in index order;
- a DAG's phase comes from its target tasks (default: the leaves), an Omitted target inheriting the phase of its
  branch (assessDAGPhase), so a failure handled by a `X.Failed` dependent does not fail the DAG;
- failFast (default true): once a task fails and no task of the DAG names its failure in `depends`
  (`X.Failed`, `X.Errored`, `X.AllFailed`, `X.AnySucceeded`) and it has no continueOn, no new task or fan-out
  child starts; running ones finish; the DAG is Failed;
- retries: `limit`+1 attempts, policy Always/OnFailure(Failed)/OnError(Error)/OnTransientError(Error),
  backoff `duration*factor^n` stopping when it would pass `maxDuration` from the first attempt;
- parallelism: the run's (min of the engine's and `spec.parallelism`) and each DAG template's limit running
  pods; queue semaphores are cross-process file-lock slots held while a pod runs.
"""

from __future__ import annotations

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

from kai_flows.engine import expressions, loops, variables
from kai_flows.engine.model import EngineError, Task, Template, Workflow
from kai_flows.engine.pod import AttemptSpec, PodResult, PodServices, run_attempt
from kai_flows.engine.records import Node, now_iso
from kai_flows.engine.semaphores import QueueSemaphores, Slot
from kai_flows.store.argo_keys import argo_node_id, argo_pod_name

FAILED = ("Failed", "Error")
_FROM = re.compile(r"^\{\{\s*tasks\.([a-zA-Z0-9][-a-zA-Z0-9]*)\.outputs\.artifacts\.([-a-zA-Z0-9_]+)\s*\}\}$")
_HANDLES = ("Failed", "Errored", "AllFailed", "AnySucceeded")


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
    """What a task (or one fan-out child) runs: a pod with retries, or a nested DAG."""

    node: Node
    done: bool = False


class PodUnit(Unit):
    def __init__(self, ex: Executor, dag: DagRun, node: Node, template: Template, params: dict[str, str],
                 artifacts: dict[str, tuple[str, str | None]]) -> None:
        self.ex, self.dag, self.node, self.template = ex, dag, node, template
        self.params, self.artifacts = params, artifacts
        self.retry = template.retry or ex.wf.retry
        self.attempt = 0
        self.first_start: float | None = None
        self.not_before = 0.0
        self.slots: list[Slot] = []
        self.done = False
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
        if self.retry is not None and res.phase in FAILED and not ex.stopping and self._should_retry(res.phase):
            if self.attempt < self.retry.limit:
                delay = self.retry.backoff.duration * (self.retry.backoff.factor ** self.attempt)
                maxd = self.retry.backoff.max_duration
                assert self.first_start is not None
                if maxd is not None and time.monotonic() + delay - self.first_start > maxd:
                    self._complete(res, f"{res.message} (Backoff would exceed max duration limit)")
                    return
                self.attempt += 1
                self.not_before = time.monotonic() + delay
                self.node.kai["retries"] = self.attempt
                ex.ready.append(self)
                return
        self._complete(res, res.message)

    def _should_retry(self, phase: str) -> bool:
        assert self.retry is not None
        policy = self.retry.policy
        return policy == "Always" or (policy == "OnFailure" and phase == "Failed") or (
            policy in ("OnError", "OnTransientError") and phase == "Error")

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
    def __init__(self, run: DagRun) -> None:
        self.run = run
        self.node = run.node

    @property  # type: ignore[override]
    def done(self) -> bool:
        return self.run.node.fulfilled


class TaskRun:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.node: Node | None = None
        self.units: list[tuple[int, Unit]] = []
        self.started = False
        self.noted = False  # failure looked at for failFast
        self.fanout = task.fanout

    @property
    def done(self) -> bool:
        return self.node is not None and self.node.fulfilled


class DagRun:
    def __init__(self, ex: Executor, template: Template, node: Node, inputs: dict[str, str],
                 parent: DagRun | None) -> None:
        self.ex, self.template, self.node, self.inputs, self.parent = ex, template, node, inputs, parent
        self.tasks = {t.name: TaskRun(t) for t in template.tasks}
        self.running = 0
        self.halted = False  # failFast tripped
        deps = {t.name: expressions.depends_task_names(t.depends) if t.depends else set() for t in template.tasks}
        self.deps = deps
        has_dependents = {d for ds in deps.values() for d in ds}
        self.targets = list(template.target) or sorted(n for n in deps if n not in has_dependents)
        self.handled = {n for t in template.tasks if t.depends
                        for n in deps[t.name] if re.search(rf"\b{re.escape(n)}\.({'|'.join(_HANDLES)})\b", t.depends)}
        node.phase = "Running"
        node.started_at = node.started_at or now_iso()

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

    def task_state(self, name: str) -> expressions.TaskState:
        tr = self.tasks[name]
        if tr.node is None or not tr.node.fulfilled:
            return expressions.TaskState("Running", fanout=tr.fanout)
        t = tr.task
        return expressions.TaskState(tr.node.phase, fanout=tr.fanout,
                                     children_phases=[u.node.phase for _, u in tr.units] if tr.fanout else [],
                                     continue_on_failed=t.continue_on_failed, continue_on_error=t.continue_on_error)

    # ---- scheduling ----------------------------------------------------------------------------------------
    def advance(self) -> bool:
        """Start whatever can start, settle whatever finished. True when something changed."""
        if self.node.fulfilled:
            return False
        changed = False
        for tr in self.tasks.values():
            if tr.done:
                if not tr.noted:
                    tr.noted = True
                    self._note_failure(tr)
                    changed = True
                continue
            if not tr.started:
                if self.ex.stopping:
                    continue
                if tr.task.depends:
                    states = {n: self.task_state(n) for n in self.deps[tr.task.name]}
                    try:
                        go = expressions.evaluate_depends(tr.task.depends, states)
                    except expressions.ExpressionError as e:
                        self._settle_task(tr, "Error", f"depends {tr.task.depends!r}: {e}", "Skipped")
                        changed = True
                        continue
                    if go is None:
                        continue
                    if not go:  # deciding an omission is not scheduling: failFast still records it
                        self._settle_task(tr, "Omitted", "omitted: depends condition not met", "Skipped")
                        changed = True
                        continue
                if self.halted:
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
                variables.substitute(task.with_param, scope) if task.with_param is not None else None,
                variables.substitute_obj(task.with_sequence, scope) if task.with_sequence is not None else None)
        except (variables.UnresolvedVariable, expressions.ExpressionError, ValueError, TypeError) as e:
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
        tr.pending_items = list(enumerate(items))  # type: ignore[attr-defined]
        self._spawn_children(tr)

    def _spawn_children(self, tr: TaskRun) -> None:
        """Create fan-out children still waiting (all at once unless failFast halted the DAG)."""
        pending: list[tuple[int, Any]] = getattr(tr, "pending_items", [])
        if not pending or self.halted or self.ex.stopping:
            return
        assert tr.node is not None
        scope = self.scope()
        tmpl = self.ex.wf.templates[tr.task.template]
        for index, item in pending:
            child_name = loops.child_node_name(tr.node.name, index, item)
            child_scope = dict(scope)
            child_scope.update(loops.item_scope(item))
            display = child_name[len(self.node.name) + 1:]
            unit = self._make_unit(tr.task, child_name, display, child_scope, tmpl, parent=tr.node, tr=tr)
            tr.units.append((index, unit))
        tr.pending_items = []  # type: ignore[attr-defined]

    def _make_unit(self, task: Task, name: str, display: str, scope: dict[str, str], tmpl: Template,
                   parent: Node | None, tr: TaskRun) -> Unit:
        ex = self.ex

        def settled(phase: str, message: str, node_type: str = "Skipped") -> Unit:
            node = ex.new_node(name, display, node_type, tmpl.name, self.node.id)
            node.phase, node.message = phase, message
            node.started_at = node.finished_at = now_iso()
            if parent is not None:
                parent.children.append(node.id)
            else:
                self._connect(tr, node)
            u = Unit()
            u.node, u.done = node, True
            return u

        if task.when:
            try:
                text = variables.substitute(task.when, scope)
                run_it = expressions.evaluate_when(text)
            except (variables.UnresolvedVariable, expressions.ExpressionError) as e:
                return settled("Error", f"when {task.when!r}: {e}")
            if not run_it:
                return settled("Skipped", f"when '{text}' evaluated false")
        try:
            args = {p.name: variables.substitute(p.value or "", scope) for p in task.params}
            params = ex.resolve_inputs(tmpl, args)
            arts: dict[str, tuple[str, str | None]] = {}
            given = {a.name: a for a in task.artifacts}
            for decl in tmpl.input_artifacts:
                a = given.get(decl.name)
                sub = variables.substitute(a.sub_path, scope) if a and a.sub_path else None
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
        except (variables.UnresolvedVariable, EngineError) as e:
            return settled("Error", str(e))
        if tmpl.kind == "dag":
            node = ex.new_node(name, display, "DAG", tmpl.name, self.node.id)
            if parent is not None:
                parent.children.append(node.id)
            else:
                self._connect(tr, node)
            node.inputs = {"parameters": [{"name": k, "value": v} for k, v in params.items()]} if params else None
            run = DagRun(ex, tmpl, node, params, self)
            ex.dags.append(run)
            return DagUnit(run)
        ntype = "Retry" if (tmpl.retry or ex.wf.retry) else "Pod"
        node = ex.new_node(name, display, ntype, tmpl.name, self.node.id)
        inputs: dict[str, Any] = {}
        if params:
            inputs["parameters"] = [{"name": k, "value": v} for k, v in params.items()]
        if arts:
            inputs["artifacts"] = [{"name": k, "s3": {"key": v[0]}, **({"subPath": v[1]} if v[1] else {})}
                                   for k, v in arts.items()]
        node.inputs = inputs or None
        if parent is not None:
            parent.children.append(node.id)
        else:
            self._connect(tr, node)
        unit = PodUnit(ex, self, node, tmpl, params, arts)
        if ex.reuse(unit):
            return unit
        ex.ready.append(unit)
        return unit

    def _advance_task(self, tr: TaskRun) -> bool:
        if tr.node is None or tr.node.fulfilled:
            return False
        changed = False
        for _, unit in tr.units:
            if isinstance(unit, DagUnit):
                changed |= unit.run.advance()
        if tr.fanout and getattr(tr, "pending_items", None):
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

    def _note_failure(self, tr: TaskRun) -> None:
        assert tr.node is not None
        phase = tr.node.phase
        if phase not in FAILED:
            return
        t = tr.task
        if (phase == "Failed" and t.continue_on_failed) or (phase == "Error" and t.continue_on_error):
            return
        if self.template.fail_fast and t.name not in self.handled:
            self.halted = True

    def running_units(self) -> bool:
        for tr in self.tasks.values():
            for _, u in tr.units:
                if not u.done:
                    return True
        return False

    def _check_done(self) -> bool:
        for tr in self.tasks.values():
            if tr.node is not None and not tr.node.fulfilled:
                return False
        undone = [tr for tr in self.tasks.values() if not tr.done]
        if undone and not (self.halted or self.ex.stopping):
            return False  # something can still start once its dependencies settle
        self.node.phase = self._assess(undone)
        self.node.finished_at = now_iso()
        if self.ex.stopping and self.node.phase == "Succeeded" and undone:
            self.node.phase, self.node.message = "Failed", "Stopped"
        return True

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

    def _assess(self, undone: list[TaskRun]) -> str:
        if self.halted:
            failed = [tr.node.phase for tr in self.tasks.values() if tr.node is not None and tr.node.phase in FAILED]
            return "Failed" if "Failed" in failed or not failed else "Error"
        memo: dict[str, str] = {}
        result = "Succeeded"
        for target in self.targets:
            bp = self._branch_phase(target, memo)
            if bp in FAILED:
                t = self.tasks[target].task
                if (bp == "Failed" and t.continue_on_failed) or (bp == "Error" and t.continue_on_error):
                    continue
                result = bp
                break
        if self.ex.stopping and undone:
            return "Failed"
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
        if self.running >= self.parallelism:
            return False
        dag: DagRun | None = unit.dag
        while dag is not None:
            if dag.template.parallelism is not None and dag.running >= dag.template.parallelism:
                return False
            dag = dag.parent
        return True

    def start_ready(self) -> None:
        now = time.monotonic()
        waiting: deque[PodUnit] = deque()
        while self.ready:
            unit = self.ready.popleft()
            if unit.done:
                continue
            if self.stopping or (unit.dag.halted and unit.attempt == 0):
                # never started: Argo would not have created it; record it as not run
                unit.node.phase, unit.node.message = ("Failed", "Stopped") if self.stopping else \
                    ("Omitted", "not started: failFast")
                unit.done = True
                continue
            if unit.not_before > now or not self._limits_allow(unit):
                waiting.append(unit)
                continue
            slots = self.ctx.semaphores.try_acquire_all(unit.template.semaphores) \
                if unit.template.semaphores else []
            if slots is None:
                unit.node.message = "Waiting for " + ", ".join(f"kai-queues/{k}" for k in unit.template.semaphores)
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
        dag: DagRun | None = unit.dag
        while dag is not None:
            dag.running += 1
            dag = dag.parent

        def work() -> None:
            try:
                res: PodResult | BaseException = run_attempt(spec, self.ctx.services)
            except BaseException as e:  # a bug in the engine must not hang the run
                res = e
            self.events.put((unit, attempt, res))

        self.pool.submit(work)

    def _on_event(self, unit: PodUnit, attempt: Node, res: PodResult | BaseException) -> None:
        self.running -= 1
        dag: DagRun | None = unit.dag
        while dag is not None:
            dag.running -= 1
            dag = dag.parent
        for slot in unit.slots:
            slot.release()
        unit.slots = []
        if isinstance(res, BaseException):
            res = PodResult("Error", f"engine error: {type(res).__name__}: {res}")
        if res.argv:
            attempt.kai["command"] = res.argv
        unit.finish(attempt, res)

    # ---- main loop -----------------------------------------------------------------------------------------
    def stop(self, reason: str = "Stopped") -> None:
        """Stop the run (SIGINT, deadline): no new pods, kill running process groups."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self.ctx.services.groups.stop_all()

    def run_dag(self, template: Template, node_name: str, display: str, tick: Callable[[], None]) -> Node:
        node = self.new_node(node_name, display, "DAG", template.name, "")
        run = DagRun(self, template, node, {}, None)
        self.dags.append(run)
        deadline = self.started + self.wf.deadline if self.wf.deadline else None
        while True:
            while run.advance():
                pass
            before = self.running
            self.start_ready()
            if self.running != before:
                tick()  # show what just started
            if node.fulfilled and self.running == 0:
                break
            if deadline is not None and time.monotonic() > deadline and not self.stopping:
                self.stop("Max duration limit exceeded")
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
        return node


def new_uid() -> str:
    return str(uuid.uuid4())
