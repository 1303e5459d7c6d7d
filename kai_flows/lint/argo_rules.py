"""What `argo lint` checks beyond the schema (workflow/validate/validate.go, v3.7): names, template types,
inputs/outputs, arguments and enums, DAG dependencies and cycles, loops, leaf-only fields, metrics, podGC.

Unlike argo lint, which stops at the first error, every finding is reported.
"""

from __future__ import annotations

import re
from typing import Any

from kai_flows.argo.depends import ITEM_RESULTS, RESULTS
from kai_flows.argo.units import parse_duration
from kai_flows.lint.problem import Reporter
from kai_flows.lint.spec_view import (
    DagView,
    SpecView,
    as_dict,
    as_list,
    is_leaf,
    loop_kind,
    task_dependencies,
    template_type,
    template_types,
)

P = tuple[str | int, ...]
MAX_OBJECT_NAME = 63
MAX_CRON_NAME = 52
MAX_FIELD_NAME = 128
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
ARGO_VARIABLE = re.compile(r"^\{\{.+\}\}$")
RETRY_POLICIES = {"Always", "OnFailure", "OnError", "OnTransientError", ""}
POD_GC = {"", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"}
VALUE_FROM_SOURCES = ("path", "jqFilter", "jsonPath", "parameter", "expression", "supplied")


def check_metadata(obj: dict[str, Any], report: Reporter) -> None:
    meta = as_dict(obj.get("metadata"))
    name, generate = meta.get("name"), meta.get("generateName")
    limit = MAX_CRON_NAME if obj.get("kind") == "CronWorkflow" else MAX_OBJECT_NAME
    if not name and not generate:
        report(("metadata", "name"), "required field missing")
    if isinstance(name, str) and name:
        if len(name) > limit:
            report(("metadata", "name"), f"name must be at most {limit} characters (is {len(name)})")
        if not OBJECT_NAME.match(name):
            report(("metadata", "name"), f"'{name}' is not a valid name: lower-case alphanumerics, '-' and '.'")


def _names(items: list[Any], path: P, report: Reporter, pattern: re.Pattern[str], what: str) -> None:
    """Non-empty, valid and unique `name` fields (validateWorkflowFieldNames)."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            continue  # the schema reports a missing name or a non-object
        name = item["name"]
        if not isinstance(name, str) or not name:
            report((*path, i, "name"), "name is required")
            continue
        if pattern is FIELD_NAME and len(name) > MAX_FIELD_NAME:
            report((*path, i, "name"), f"{what} name must be at most {MAX_FIELD_NAME} characters")
        if not pattern.match(name):
            rule = ("alphanumerics, '_' or '-'" if pattern is PARAM_NAME
                    else "alphanumerics or '-', starting with an alphanumeric")
            report((*path, i, "name"), f"{what} name '{name}' is invalid: must consist of {rule}")
        if name in seen:
            report((*path, i, "name"), f"{what} name '{name}' is not unique")
        seen.add(name)


def _check_arguments(args: dict[str, Any], path: P, report: Reporter, allow_empty: bool) -> None:
    params, arts = as_list(args.get("parameters")), as_list(args.get("artifacts"))
    _names(params, (*path, "parameters"), report, PARAM_NAME, "parameter")
    _names(arts, (*path, "artifacts"), report, PARAM_NAME, "artifact")
    for i, p in enumerate(params):
        p = as_dict(p)
        if p.get("value") is None and p.get("valueFrom") is None and not allow_empty:
            report((*path, "parameters", i), f"parameter '{p.get('name')}' needs a value or valueFrom")
        _check_enum(p, (*path, "parameters", i), "value", report)
    for i, a in enumerate(arts):
        a = as_dict(a)
        locations = set(a) - {"name", "from", "fromExpression", "optional", "subPath", "mode", "archive", "path",
                              "globalName", "recurseMode", "archiveLogs", "artifactGC", "deleted"}
        if not a.get("from") and not a.get("fromExpression") and not locations:
            report((*path, "artifacts", i), f"artifact '{a.get('name')}' needs from, an artifact location, or a key")
        if a.get("from") and a.get("fromExpression"):
            report((*path, "artifacts", i), "use either from or fromExpression, not both")


def _check_enum(param: dict[str, Any], path: P, key: str, report: Reporter) -> None:
    enum = param.get("enum")
    if enum is None:
        return
    if not isinstance(enum, list) or not enum:
        report((*path, "enum"), "enum must contain at least one value")
        return
    value = param.get(key)
    if value is not None and str(value) not in [str(e) for e in enum]:
        report((*path, key), f"{key} '{value}' of parameter '{param.get('name')}' is not in its enum {enum}")


def check_spec(spec: dict[str, Any], sp: P, report: Reporter, kind: str) -> None:
    view = SpecView(spec)
    if spec.get("workflowTemplateRef") is not None:
        if spec.get("templates"):
            report((*sp, "templates"), "templates cannot be set with workflowTemplateRef")
        _check_arguments(as_dict(spec.get("arguments")), (*sp, "arguments"), report, allow_empty=True)
        return
    _names(view.templates, (*sp, "templates"), report, FIELD_NAME, "template")
    entry = spec.get("entrypoint")
    if not entry and kind in ("Workflow", "CronWorkflow"):
        report((*sp, "entrypoint"), "entrypoint is required")
    for key in ("entrypoint", "onExit"):
        if isinstance(spec.get(key), str) and spec[key] and spec[key] not in view.by_name:
            report((*sp, key), f"template '{spec[key]}' is not defined")
    allow_empty = kind in ("WorkflowTemplate", "ClusterWorkflowTemplate")
    _check_arguments(as_dict(spec.get("arguments")), (*sp, "arguments"), report, allow_empty=allow_empty)
    strategy = as_dict(spec.get("podGC")).get("strategy", "")
    if isinstance(strategy, str) and strategy not in POD_GC:
        report((*sp, "podGC", "strategy"), f"unknown podGC strategy '{strategy}'; valid: {sorted(POD_GC - {''})}")
    for name, hook in as_dict(spec.get("hooks")).items():
        _check_hook(view, name, as_dict(hook), (*sp, "hooks", name), report)
    _check_metrics(as_dict(spec.get("metrics")), (*sp, "metrics"), report)
    for i, tmpl in enumerate(as_list(spec.get("templates"))):
        if isinstance(tmpl, dict):
            _check_template(view, tmpl, (*sp, "templates", i), report)


def _check_hook(view: SpecView, name: str, hook: dict[str, Any], path: P, report: Reporter) -> None:
    if name != "exit" and not hook.get("expression"):
        report(path, f"hook '{name}' needs an expression")
    t = hook.get("template")
    if isinstance(t, str) and t not in view.by_name:
        report((*path, "template"), f"template '{t}' is not defined")


def _check_template(view: SpecView, tmpl: dict[str, Any], tp: P, report: Reporter) -> None:
    types = template_types(tmpl)
    if not types and tmpl.get("templateRef") is None:
        report(tp, "template type unspecified: choose one of container, script, dag, steps, resource, suspend, ...")
    elif len(types) > 1:
        report(tp, f"multiple template types specified ({', '.join(types)}): choose one")
    kind = template_type(tmpl)
    leaf = is_leaf(tmpl)
    _check_inputs(tmpl, tp, report, leaf)
    _check_outputs(tmpl, tp, report, leaf, kind)
    if kind in ("dag", "steps"):
        if tmpl.get("activeDeadlineSeconds") is not None:
            report((*tp, "activeDeadlineSeconds"), "activeDeadlineSeconds is only valid for leaf templates")
    elif kind is not None and tmpl.get("parallelism") is not None:
        report((*tp, "parallelism"), "parallelism is only valid for steps and dag templates")
    if tmpl.get("timeout") is not None and kind is not None:
        if not leaf:
            report((*tp, "timeout"), f"{kind} template doesn't support the timeout field (leaf templates only)")
        elif re.fullmatch(r"\d+", str(tmpl["timeout"])):
            report((*tp, "timeout"), f"timeout '{tmpl['timeout']}' needs a unit (e.g. {tmpl['timeout']}s)")
    ads = tmpl.get("activeDeadlineSeconds")
    if ads is not None and leaf and not _positive_int_or_variable(ads):
        report((*tp, "activeDeadlineSeconds"), "activeDeadlineSeconds must be a positive integer or an argo variable")
    retry = as_dict(tmpl.get("retryStrategy"))
    if isinstance(retry.get("retryPolicy"), str) and retry["retryPolicy"] not in RETRY_POLICIES:
        report((*tp, "retryStrategy", "retryPolicy"),
               f"'{retry['retryPolicy']}' is not a valid retryPolicy; valid: {sorted(RETRY_POLICIES - {''})}")
    if retry.get("limit") is not None and not _int_or_variable(retry["limit"]):
        report((*tp, "retryStrategy", "limit"), f"limit '{retry['limit']}' is not an integer")
    for key in ("duration", "maxDuration", "cap"):
        value = as_dict(retry.get("backoff")).get(key)
        if isinstance(value, str) and not (_is_duration(value) or ARGO_VARIABLE.match(value)):
            report((*tp, "retryStrategy", "backoff", key), f"'{value}' is not a duration (e.g. 10s, 5m)")
    _check_metrics(as_dict(tmpl.get("metrics")), (*tp, "metrics"), report)
    for key in ("container", "script"):
        body = as_dict(tmpl.get(key))
        if key in tmpl and not body.get("image") and not _default_image(view, key):
            report((*tp, key, "image"), "image may not be empty")
    if kind in ("container", "script"):
        _check_mounts(tmpl, tp, kind, report)
    if kind == "dag":
        _check_dag(view, tmpl, tp, report)
    if kind == "steps":
        _check_steps(view, tmpl, tp, report)


def _default_image(view: SpecView, key: str) -> bool:
    return bool(as_dict(as_dict(view.spec.get("templateDefaults")).get(key)).get("image"))


def _is_duration(value: str) -> bool:
    """An integer (seconds) or a Go duration, as the controller reads a backoff (parseStringToDuration)."""
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def _int_or_variable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and (value.lstrip("-").isdigit()
                                                                  or bool(ARGO_VARIABLE.match(value))))


def _positive_int_or_variable(value: Any) -> bool:
    return _int_or_variable(value) and (not str(value).lstrip("-").isdigit() or int(value) > 0)


def _check_inputs(tmpl: dict[str, Any], tp: P, report: Reporter, leaf: bool) -> None:
    inputs = as_dict(tmpl.get("inputs"))
    params, arts = as_list(inputs.get("parameters")), as_list(inputs.get("artifacts"))
    _names(params, (*tp, "inputs", "parameters"), report, PARAM_NAME, "parameter")
    _names(arts, (*tp, "inputs", "artifacts"), report, PARAM_NAME, "artifact")
    for i, p in enumerate(params):
        for key in ("default", "value"):
            _check_enum(as_dict(p), (*tp, "inputs", "parameters", i), key, report)
    for i, a in enumerate(arts):
        a, ap = as_dict(a), (*tp, "inputs", "artifacts", i)
        if leaf and not a.get("path"):
            report((*ap, "path"), f"input artifact '{a.get('name')}' needs a path in a {template_type(tmpl)} template")
        if not leaf and a.get("path"):
            report((*ap, "path"), "artifact path is only valid in container/script templates")
        if a.get("from") or a.get("fromExpression"):
            report((*ap, "from"), "from is not valid in inputs")


def _check_outputs(tmpl: dict[str, Any], tp: P, report: Reporter, leaf: bool, kind: str | None) -> None:
    outputs = as_dict(tmpl.get("outputs"))
    params, arts = as_list(outputs.get("parameters")), as_list(outputs.get("artifacts"))
    _names(params, (*tp, "outputs", "parameters"), report, PARAM_NAME, "parameter")
    _names(arts, (*tp, "outputs", "artifacts"), report, PARAM_NAME, "artifact")
    for i, a in enumerate(arts):
        a, ap = as_dict(a), (*tp, "outputs", "artifacts", i)
        if leaf and not a.get("path"):
            report((*ap, "path"), f"output artifact '{a.get('name')}' needs a path")
        if not leaf and a.get("path"):
            report((*ap, "path"), "artifact path is only valid in container/script templates")
    for i, p in enumerate(params):
        p, pp = as_dict(p), (*tp, "outputs", "parameters", i)
        name, vf = p.get("name"), p.get("valueFrom")
        if vf is not None and p.get("value") is not None:
            report(pp, f"output parameter '{name}' has both value and valueFrom: choose one")
            continue
        if vf is None:
            if p.get("value") is None:
                report(pp, f"output parameter '{name}' has neither valueFrom nor value")
            continue
        vf = as_dict(vf)
        sources = [s for s in VALUE_FROM_SOURCES if vf.get(s) not in (None, "")]
        if len(sources) != 1:
            what = "no valueFrom source" if not sources else f"several valueFrom sources ({', '.join(sources)})"
            report((*pp, "valueFrom"), f"output parameter '{name}' has {what}: exactly one of "
                                       f"{', '.join(VALUE_FROM_SOURCES)}")
        elif kind in ("container", "script", "containerSet") and sources != ["path"]:
            report((*pp, "valueFrom"), f"output parameter '{name}' of a {kind} template needs valueFrom.path")
        elif kind in ("dag", "steps") and sources[0] not in ("parameter", "expression"):
            report((*pp, "valueFrom"), f"output parameter '{name}' of a {kind} template needs valueFrom.parameter "
                                       "or expression")


def _check_metrics(metrics: dict[str, Any], path: P, report: Reporter) -> None:
    for i, m in enumerate(as_list(metrics.get("prometheus"))):
        m, mp = as_dict(m), (*path, "prometheus", i)
        name = m.get("name")
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            report((*mp, "name"), f"metric name '{name}' is invalid: alphanumerics and '_' only")
        if not m.get("help"):
            report((*mp, "help"), f"metric '{name}' needs a help string")
        for j, label in enumerate(as_list(m.get("labels"))):
            key = as_dict(label).get("key")
            if not isinstance(key, str) or not METRIC_NAME.match(key):
                report((*mp, "labels", j, "key"), f"metric label '{key}' is invalid: alphanumerics and '_' only")
        kinds = [k for k in ("counter", "gauge", "histogram") if m.get(k) is not None]
        if len(kinds) != 1:
            report(mp, f"metric '{name}' needs exactly one of counter, gauge, histogram")
        for k in kinds:
            if not as_dict(m[k]).get("value"):
                report((*mp, k, "value"), f"metric '{name}' is missing {k}.value")
        gauge = as_dict(m.get("gauge"))
        if gauge.get("realtime") is True and "resourcesDuration." in str(gauge.get("value", "")):
            report((*mp, "gauge", "value"), "'resourcesDuration.*' metrics cannot be used in real-time")


def _check_mounts(tmpl: dict[str, Any], tp: P, kind: str, report: Reporter) -> None:
    seen: dict[str, str] = {}
    for i, m in enumerate(as_list(as_dict(tmpl.get(kind)).get("volumeMounts"))):
        mount = str(as_dict(m).get("mountPath"))
        if mount in seen:
            report((*tp, kind, "volumeMounts", i, "mountPath"), f"'{mount}' already mounted by {seen[mount]}")
        seen[mount] = f"volumeMount '{as_dict(m).get('name')}'"
    for i, a in enumerate(as_list(as_dict(tmpl.get("inputs")).get("artifacts"))):
        path = str(as_dict(a).get("path") or "")
        if path and path in seen:
            report((*tp, "inputs", "artifacts", i, "path"), f"'{path}' already mounted by {seen[path]}")
        if path:
            seen[path] = f"input artifact '{as_dict(a).get('name')}'"


def _name(item: Any) -> str | None:
    name = as_dict(item).get("name")
    return name if isinstance(name, str) else None


def _check_call(view: SpecView, call: dict[str, Any], cp: P, report: Reporter) -> None:
    """A DAG task or step: its template exists, its loop is single, its arguments match the callee's inputs."""
    how = [k for k in ("template", "templateRef", "inline") if call.get(k)]
    if len(how) != 1:
        report(cp, "needs exactly one of template, templateRef, inline")
    kinds = [k for k in ("withItems", "withParam", "withSequence") if call.get(k)]
    if len(kinds) > 1:
        report(cp, f"only one of withItems, withParam, withSequence can be specified (has {', '.join(kinds)})")
    seq = as_dict(call.get("withSequence"))
    if seq.get("count") is not None and seq.get("end") is not None:
        report((*cp, "withSequence"), "only one of count or end can be defined in withSequence")
    ref = as_dict(call.get("templateRef"))
    if call.get("templateRef") is not None and (not ref.get("name") or not ref.get("template")):
        report((*cp, "templateRef"), "templateRef needs name and template")
    args = as_dict(call.get("arguments"))
    _check_arguments(args, (*cp, "arguments"), report, allow_empty=False)
    for name, hook in as_dict(call.get("hooks")).items():
        _check_hook(view, name, as_dict(hook), (*cp, "hooks", name), report)
    target = call.get("template")
    if not isinstance(target, str) or not target:
        return
    callee = view.by_name.get(target)
    if callee is None:
        report((*cp, "template"), f"template '{target}' is not defined")
        return
    inputs = as_dict(callee.get("inputs"))
    given_p = {_name(p) for p in as_list(args.get("parameters"))}
    given_a = {_name(a) for a in as_list(args.get("artifacts"))}
    for p in as_list(inputs.get("parameters")):
        p = as_dict(p)
        if _name(p) not in given_p and p.get("value") is None and p.get("default") is None \
                and p.get("valueFrom") is None:
            report((*cp, "arguments"), f"input parameter '{p.get('name')}' of template '{target}' was not supplied")
    for a in as_list(inputs.get("artifacts")):
        a = as_dict(a)
        has_location = bool(set(a) & {"s3", "gcs", "http", "git", "raw", "artifactory", "hdfs", "oss", "azure"})
        if _name(a) not in given_a and not a.get("optional") and not has_location:
            report((*cp, "arguments"), f"input artifact '{a.get('name')}' of template '{target}' was not supplied")
    declared_p = {_name(p) for p in as_list(inputs.get("parameters"))}
    declared_a = {_name(a) for a in as_list(inputs.get("artifacts"))}
    for i, p in enumerate(as_list(args.get("parameters"))):
        if _name(p) not in declared_p:
            report((*cp, "arguments", "parameters", i), f"template '{target}' has no input parameter "
                                                         f"'{as_dict(p).get('name')}'")
    for i, a in enumerate(as_list(args.get("artifacts"))):
        if _name(a) not in declared_a:
            report((*cp, "arguments", "artifacts", i), f"template '{target}' has no input artifact "
                                                        f"'{as_dict(a).get('name')}'")


def _check_dag(view: SpecView, tmpl: dict[str, Any], tp: P, report: Reporter) -> None:
    dp = (*tp, "dag", "tasks")
    tasks = as_list(as_dict(tmpl.get("dag")).get("tasks"))
    if not tasks:
        report(dp, "a dag template must have at least one task")
        return
    _names(tasks, dp, report, FIELD_NAME, "task")
    dag = DagView(tasks)
    using_depends = any(as_dict(t).get("depends") for t in tasks)
    if using_depends and any(as_dict(t).get("dependencies") for t in tasks):
        report(dp, "cannot use both 'depends' and 'dependencies' in the same DAG template")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        name, cp = str(task.get("name", "")), (*dp, i)
        if (using_depends or task.get("dependencies")) and name[:1].isdigit():
            report((*cp, "name"), f"task name '{name}' cannot begin with a digit when using depends/dependencies")
        if using_depends and task.get("continueOn") is not None:
            report((*cp, "continueOn"), "cannot use continueOn with depends; use 'task.Failed'/'task.Errored'")
        _check_call(view, task, cp, report)
        field = "depends" if task.get("depends") else "dependencies"
        for dep, result in task_dependencies(task):
            if dep not in dag.by_name:
                report((*cp, field), f"dependency '{dep}' not defined")
            elif result is not None and result not in RESULTS:
                report((*cp, field), f"unknown result '{dep}.{result}'; valid: {', '.join(sorted(RESULTS))}")
            elif result in ITEM_RESULTS and loop_kind(dag.by_name[dep]) is None:
                report((*cp, field), f"dependency '{dep}' uses {result} but has no withItems/withParam/withSequence")
            if dep == name:
                report((*cp, field), f"task '{name}' depends on itself")
    cycle = dag.cycle()
    if cycle and len(cycle) > 2:
        report(dp, f"dependency cycle detected: {'->'.join(cycle)}")
    target = as_dict(tmpl.get("dag")).get("target")
    if isinstance(target, str):
        for t in target.split():
            if not ARGO_VARIABLE.match(t) and t not in dag.by_name:
                report((*tp, "dag", "target"), f"target '{t}' is not defined")


def _check_steps(view: SpecView, tmpl: dict[str, Any], tp: P, report: Reporter) -> None:
    seen: set[str] = set()
    for g, group in enumerate(as_list(tmpl.get("steps"))):
        for s, step in enumerate(as_list(group)):
            if not isinstance(step, dict):
                continue
            sp, name = (*tp, "steps", g, s), step.get("name")
            if not isinstance(name, str) or not name:
                report((*sp, "name"), "name is required")
            elif not FIELD_NAME.match(name) or len(name) > MAX_FIELD_NAME:
                report((*sp, "name"), f"step name '{name}' is invalid: alphanumerics or '-', starting with an "
                                      "alphanumeric")
            elif name in seen:
                report((*sp, "name"), f"step name '{name}' is not unique")
            seen.add(str(name))
            _check_call(view, step, sp, report)
