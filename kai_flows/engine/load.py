"""Load a compiled WorkflowTemplate and refuse, by name, everything outside the subset the engine runs.

Every field of the YAML falls in one of three sets: supported (acted on), cluster-only (recorded in
`Workflow.ignored` and otherwise ignored: scheduling, security, pod GC, ...), or unsupported (a `TemplateError`
naming the file, the field and the template). `--strict`-style: an unknown field is an error too, because a field
the engine silently drops is a run that differs from the cluster's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kai_flows.argo import dag, units
from kai_flows.argo.depends import ExpressionError, depends_from_dependencies, depends_task_names
from kai_flows.argo.schema import field_path, schema_problems
from kai_flows.engine import pod_patch, podspec
from kai_flows.engine.model import (
    ArtifactArg,
    ArtifactDecl,
    Backoff,
    OutputParam,
    Param,
    RetryStrategy,
    Task,
    Template,
    TemplateError,
    Workflow,
)

CLUSTER_ONLY_SPEC = {
    "serviceAccountName", "podGC", "ttlStrategy", "securityContext", "volumes", "artifactRepositoryRef",
    "nodeSelector", "tolerations", "affinity", "podPriorityClassName", "podSpecPatch", "metrics", "podMetadata",
    "workflowMetadata", "imagePullSecrets", "archiveLogs", "hostNetwork", "dnsPolicy", "dnsConfig",
    "automountServiceAccountToken", "executor", "volumeClaimTemplates", "volumeClaimGC", "schedulerName",
    "podDisruptionBudget", "shutdown", "workflowTemplateRef",
}
SUPPORTED_SPEC = {"entrypoint", "templates", "arguments", "parallelism", "synchronization", "onExit",
                  "activeDeadlineSeconds", "retryStrategy", "priority"}
CLUSTER_ONLY_TEMPLATE = {
    "nodeSelector", "tolerations", "affinity", "priorityClassName", "securityContext", "volumes", "podSpecPatch",
    "serviceAccountName", "automountServiceAccountToken", "schedulerName", "metadata", "archiveLocation",
    "hostAliases", "initContainers", "sidecars",
}
SUPPORTED_TEMPLATE = {"name", "dag", "container", "inputs", "outputs", "retryStrategy", "activeDeadlineSeconds",
                      "timeout", "parallelism", "failFast", "synchronization", "metrics"}
OTHER_TEMPLATE_KINDS = ("steps", "script", "resource", "suspend", "http", "plugin", "containerSet", "data")
CLUSTER_ONLY_CONTAINER = {"image", "imagePullPolicy", "env", "envFrom", "resources", "securityContext",
                          "volumeMounts", "name", "ports", "readinessProbe", "livenessProbe", "startupProbe",
                          "workingDir"}
SUPPORTED_CONTAINER = {"command", "args"}
TASK_KEYS = {"name", "template", "arguments", "depends", "dependencies", "when", "withItems", "withParam",
             "withSequence", "continueOn"}
TASK_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
IO_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")


def parse_quantity(value: Any, where: str) -> float:
    """A Kubernetes quantity (`500m`, `2`, `512Mi`, `1G`) as a number; a negative one is refused."""
    try:
        quantity = units.parse_quantity(value)
        if quantity < 0:
            raise ValueError(quantity)
    except ValueError:
        raise TemplateError(f"{where}: {value!r} is not a Kubernetes quantity") from None
    return float(quantity)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from an Argo duration: an integer (seconds) or Go syntax like `10s`, `1m30s`, `2h`; not negative."""
    try:
        seconds = units.parse_duration(str(value).strip())
        if seconds < 0:
            raise ValueError(seconds)
    except ValueError:
        raise TemplateError(f"{where}: {value!r} is not a duration (use e.g. 30, 10s, 5m, 1h)") from None
    return seconds


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.ignored: list[str] = []
        self.spec: dict[str, Any] = {}

    def err(self, where: str, message: str) -> TemplateError:
        return TemplateError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.err(where, f"expected a mapping, got {type(value).__name__}")
        return dict(value)

    def seq(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.err(where, f"expected a list, got {type(value).__name__}")
        return value

    def check_keys(self, obj: dict[str, Any], where: str, supported: set[str], cluster_only: set[str] = frozenset(),
                   what: str = "") -> None:
        for key in obj:
            if key in supported:
                continue
            if key in cluster_only:
                self.ignored.append(f"{where}.{key}")
                continue
            raise self.err(where, f"{what or where} uses {key!r}, which the local engine does not support")

    def string(self, value: Any, where: str, *, required: bool = True) -> str | None:
        if value is None:
            if required:
                raise self.err(where, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.err(where, f"expected a string, got {type(value).__name__}")
        return str(value)

    def name(self, obj: dict[str, Any], where: str, pattern: re.Pattern[str] = IO_NAME) -> str:
        name = self.string(obj.get("name"), f"{where}.name")
        assert name is not None
        if not pattern.match(name):
            raise self.err(f"{where}.name", f"invalid name {name!r}")
        return name

    # ---- parameters and artifacts -------------------------------------------------------------------------
    def params(self, items: Any, where: str, *, value_key: str) -> tuple[Param, ...]:
        out: list[Param] = []
        for i, raw in enumerate(self.seq(items, where)):
            w = f"{where}[{i}]"
            p = self.mapping(raw, w)
            name = self.name(p, w)
            w = f"{where}[{name}]"
            self.check_keys(p, w, {"name", "value", "default", "enum", "description"}, {"globalName"},
                            f"parameter {name!r}")
            if "valueFrom" in p:
                raise self.err(w, "valueFrom on an input parameter is not supported by the local engine")
            value = p.get(value_key, p.get("default" if value_key == "value" else "value"))
            enum = tuple(str(e) for e in self.seq(p.get("enum"), f"{w}.enum"))
            out.append(Param(name, self.string(value, f"{w}.{value_key}", required=False), enum,
                             str(p.get("description") or "")))
        self.unique([p.name for p in out], where)
        return tuple(out)

    def unique(self, names: list[str], where: str) -> None:
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise self.err(where, f"name {n!r} appears twice")
            seen.add(n)

    def artifact_decls(self, items: Any, where: str, *, output: bool, tname: str) -> tuple[ArtifactDecl, ...]:
        out: list[ArtifactDecl] = []
        for i, raw in enumerate(self.seq(items, where)):
            a = self.mapping(raw, f"{where}[{i}]")
            name = self.name(a, f"{where}[{i}]")
            w = f"{where}[{name}]"
            self.check_keys(a, w, {"name", "path", "optional", "archive", "s3", "mode"}, {"globalName"},
                            f"template {tname!r} artifact {name!r}")
            path = self.string(a.get("path"), f"{w}.path")
            assert path is not None
            archive = self.mapping(a.get("archive"), f"{w}.archive")
            if output and set(archive) != {"none"}:
                raise self.err(f"{w}.archive", f"template {tname!r} output artifact {name!r} must use "
                               "'archive: {none: {}}'; the local engine stores artifacts unarchived")
            s3 = self.mapping(a.get("s3"), f"{w}.s3")
            self.check_keys(s3, f"{w}.s3", {"key"}, {"bucket", "endpoint", "insecure", "region",
                                                    "accessKeySecret", "secretKeySecret"})
            out.append(ArtifactDecl(name, path, bool(a.get("optional", False)),
                                    self.string(s3.get("key"), f"{w}.s3.key", required=False)))
        self.unique([a.name for a in out], where)
        return tuple(out)

    def artifact_args(self, items: Any, where: str) -> tuple[ArtifactArg, ...]:
        out: list[ArtifactArg] = []
        for i, raw in enumerate(self.seq(items, where)):
            a = self.mapping(raw, f"{where}[{i}]")
            name = self.name(a, f"{where}[{i}]")
            w = f"{where}[{name}]"
            self.check_keys(a, w, {"name", "from", "s3", "subPath", "optional"}, set(), f"artifact argument {name!r}")
            s3 = self.mapping(a.get("s3"), f"{w}.s3")
            self.check_keys(s3, f"{w}.s3", {"key"}, {"bucket", "endpoint", "insecure", "region",
                                                    "accessKeySecret", "secretKeySecret"})
            from_ = self.string(a.get("from"), f"{w}.from", required=False)
            key = self.string(s3.get("key"), f"{w}.s3.key", required=False)
            if (from_ is None) == (key is None):
                raise self.err(w, "an artifact argument needs exactly one of 'from' or 's3.key'")
            out.append(ArtifactArg(name, from_, key, self.string(a.get("subPath"), f"{w}.subPath", required=False)))
        return tuple(out)

    def output_params(self, items: Any, where: str, tname: str) -> tuple[OutputParam, ...]:
        out: list[OutputParam] = []
        for i, raw in enumerate(self.seq(items, where)):
            p = self.mapping(raw, f"{where}[{i}]")
            name = self.name(p, f"{where}[{i}]")
            w = f"{where}[{name}]"
            self.check_keys(p, w, {"name", "valueFrom", "description"}, {"globalName"}, f"output parameter {name!r}")
            vf = self.mapping(p.get("valueFrom"), f"{w}.valueFrom")
            for key in vf:
                if key not in ("path", "default"):
                    raise self.err(f"{w}.valueFrom", f"template {tname!r} output parameter {name!r} uses "
                                   f"valueFrom.{key}, which the local engine does not support (only path)")
            path = self.string(vf.get("path"), f"{w}.valueFrom.path")
            assert path is not None
            out.append(OutputParam(name, path, self.string(vf.get("default"), f"{w}.valueFrom.default",
                                                           required=False)))
        self.unique([p.name for p in out], where)
        return tuple(out)

    # ---- strategies ---------------------------------------------------------------------------------------
    def retry(self, raw: Any, where: str) -> RetryStrategy | None:
        if raw is None:
            return None
        r = self.mapping(raw, where)
        self.check_keys(r, where, {"limit", "retryPolicy", "backoff"}, {"affinity"}, "retryStrategy")
        limit: int | str
        if "{{" in str(r.get("limit", "")):
            limit = str(r["limit"])  # IntOrString: resolved from the node's parameters when it starts
        else:
            try:
                limit = int(str(r.get("limit", "0")))
            except ValueError:
                raise self.err(f"{where}.limit", f"{r.get('limit')!r} is not an integer") from None
        policy = str(r.get("retryPolicy") or "OnFailure")
        if policy not in ("Always", "OnFailure", "OnError", "OnTransientError"):
            raise self.err(f"{where}.retryPolicy", f"unknown retryPolicy {policy!r}")
        b = self.mapping(r.get("backoff"), f"{where}.backoff")
        self.check_keys(b, f"{where}.backoff", {"duration", "factor", "maxDuration"}, set(), "backoff")
        backoff = Backoff(
            parse_duration(b["duration"], f"{self.source}: {where}.backoff.duration") if "duration" in b else 0.0,
            float(str(b.get("factor", "1"))),
            parse_duration(b["maxDuration"], f"{self.source}: {where}.backoff.maxDuration")
            if "maxDuration" in b else None,
        )
        return RetryStrategy(limit, policy, backoff)

    def semaphores(self, raw: Any, where: str) -> tuple[str, ...]:
        from kai_flows.policy import load_policy

        s = self.mapping(raw, where)
        self.check_keys(s, where, {"semaphores", "semaphore"}, set(), "synchronization")
        entries = self.seq(s.get("semaphores"), f"{where}.semaphores") + ([s["semaphore"]] if "semaphore" in s else [])
        keys: list[str] = []
        queues = load_policy().queues
        for i, e in enumerate(entries):
            e = self.mapping(e, f"{where}.semaphores[{i}]")
            self.check_keys(e, f"{where}.semaphores[{i}]", {"configMapKeyRef"}, set(), "semaphore")
            ref = self.mapping(e.get("configMapKeyRef"), f"{where}.semaphores[{i}].configMapKeyRef")
            key = str(ref.get("key"))
            if key not in queues:
                raise self.err(f"{where}.semaphores[{i}]", f"queue {key!r} is not a queue class of the policy "
                               f"(known: {', '.join(sorted(queues))})")
            keys.append(key)
        return tuple(keys)

    def deadline(self, t: dict[str, Any], where: str) -> tuple[float | None, tuple[str, ...]]:
        """activeDeadlineSeconds and timeout: the shorter of the literal ones, and those given as parameter
        expressions (resolved when the pod starts)."""
        values, exprs = [], []
        for key in ("activeDeadlineSeconds", "timeout"):
            if key not in t:
                continue
            if "{{" in str(t[key]):
                exprs.append(str(t[key]))
            else:
                values.append(parse_duration(t[key], f"{self.source}: {where}.{key}"))
        return (min(values) if values else None), tuple(exprs)

    # ---- templates ----------------------------------------------------------------------------------------
    def template(self, raw: Any, index: int) -> Template:
        t = self.mapping(raw, f"spec.templates[{index}]")
        tname = self.name(t, f"spec.templates[{index}]", TASK_NAME)
        where = f"spec.templates[{tname}]"
        for kind in OTHER_TEMPLATE_KINDS:
            if kind in t:
                raise self.err(where, f"template {tname!r} uses {kind!r}, which the local engine does not support")
        kinds = [k for k in ("dag", "container") if k in t]
        if len(kinds) != 1:
            raise self.err(where, f"template {tname!r} must have exactly one of 'dag' or 'container'")
        self.check_keys(t, where, SUPPORTED_TEMPLATE, CLUSTER_ONLY_TEMPLATE, f"template {tname!r}")
        inputs = self.mapping(t.get("inputs"), f"{where}.inputs")
        self.check_keys(inputs, f"{where}.inputs", {"parameters", "artifacts"}, set(), f"template {tname!r} inputs")
        outputs = self.mapping(t.get("outputs"), f"{where}.outputs")
        self.check_keys(outputs, f"{where}.outputs", {"parameters", "artifacts"}, set(),
                        f"template {tname!r} outputs")
        common: dict[str, Any] = dict(
            name=tname,
            inputs=self.params(inputs.get("parameters"), f"{where}.inputs.parameters", value_key="default"),
            semaphores=self.semaphores(t["synchronization"], f"{where}.synchronization")
            if "synchronization" in t else (),
            metrics=tuple(self.seq(self.mapping(t.get("metrics"), f"{where}.metrics").get("prometheus"),
                                   f"{where}.metrics.prometheus")),
        )
        if "dag" in t:
            if "activeDeadlineSeconds" in t:  # validate.go validateNonLeaf, Argo's own message
                raise self.err(f"{where}.activeDeadlineSeconds",
                               f"templates.{tname}.activeDeadlineSeconds is only valid for leaf templates")
            if "timeout" in t:  # Argo does not apply it to a DAG ("may not be applied to Step or DAG templates")
                raise self.err(f"{where}.timeout", f"template {tname!r}: Argo does not apply 'timeout' to a DAG "
                               "template; put it on its container templates")
            if inputs.get("artifacts") or outputs:
                raise self.err(where, f"dag template {tname!r}: artifacts and outputs on a dag are not supported")
            dag = self.mapping(t["dag"], f"{where}.dag")
            self.check_keys(dag, f"{where}.dag", {"tasks", "failFast", "target"}, set(), f"dag {tname!r}")
            tasks = tuple(self.task(x, i, f"{where}.dag.tasks", tname)
                          for i, x in enumerate(self.seq(dag.get("tasks"), f"{where}.dag.tasks")))
            if not tasks:
                raise self.err(f"{where}.dag.tasks", f"dag {tname!r} has no tasks")
            parallelism = int(t["parallelism"]) if "parallelism" in t else None
            return Template(kind="dag", tasks=tasks, target=str(dag.get("target") or ""),
                            fail_fast=bool(dag.get("failFast", True)), fail_fast_children=bool(t.get("failFast")),
                            parallelism=parallelism, retry=self.retry(t.get("retryStrategy"), f"{where}.retryStrategy"),
                            **common)
        if "parallelism" in t or "failFast" in t:
            raise self.err(where, f"container template {tname!r}: 'parallelism'/'failFast' are dag-only fields")
        c = self.mapping(t["container"], f"{where}.container")
        self.check_keys(c, f"{where}.container", SUPPORTED_CONTAINER, CLUSTER_ONLY_CONTAINER,
                        f"template {tname!r} container")
        command = tuple(str(x) for x in self.seq(c.get("command"), f"{where}.container.command"))
        if not command:
            raise self.err(f"{where}.container.command", f"template {tname!r} has no command (the local engine "
                           "does not read images, so the entry point must be explicit)")
        resources = self.mapping(c.get("resources"), f"{where}.container.resources")
        main, patches = self.main_resources(resources, t, where)
        metadata = self.mapping(t.get("metadata"), f"{where}.metadata")
        deadline, deadline_exprs = self.deadline(t, where)
        return Template(
            kind="container",
            input_artifacts=self.artifact_decls(inputs.get("artifacts"), f"{where}.inputs.artifacts",
                                                output=False, tname=tname),
            output_params=self.output_params(outputs.get("parameters"), f"{where}.outputs.parameters", tname),
            output_artifacts=self.artifact_decls(outputs.get("artifacts"), f"{where}.outputs.artifacts",
                                                 output=True, tname=tname),
            image=str(c.get("image", "")),
            command=command,
            args=tuple(str(x) for x in self.seq(c.get("args"), f"{where}.container.args")),
            cpu_limit=main.limit("cpu"),
            memory_limit=None if main.limit("memory") is None else int(main.limit("memory") or 0),
            gpus=main.gpus,
            resources=main,
            resource_patches=patches,
            annotations={str(k): str(v) for k, v in self.mapping(metadata.get("annotations"),
                                                                  f"{where}.metadata.annotations").items()},
            retry=self.retry(t.get("retryStrategy"), f"{where}.retryStrategy"),
            deadline=deadline,
            deadline_exprs=deadline_exprs,
            pod=self.pod(t, where),
            **common,
        )

    def main_resources(self, resources: dict[str, Any], t: dict[str, Any],
                       where: str) -> tuple[pod_patch.MainResources, tuple[str, ...]]:
        """The main container's resources after the workflow's and the template's podSpecPatch, as Argo builds
        the pod; patches holding Argo variables are kept and applied when the pod starts (`pod_patch`)."""
        rw = f"{self.source}: {where}.container.resources"
        for section in ("requests", "limits"):
            for key, value in self.mapping(resources.get(section), f"{where}.container.resources.{section}").items():
                parse_quantity(value, f"{rw}.{section}.{key}")
        base = pod_patch.MainResources.of(resources)
        patches = tuple(str(x) for x in (self.spec.get("podSpecPatch"), t.get("podSpecPatch")) if x)
        if any("{{" in p for p in patches):
            return base, patches
        try:
            return pod_patch.apply(base, patches, f"{self.source}: {where}"), ()
        except pod_patch.PodPatchError as e:
            raise TemplateError(str(e)) from None

    def pod(self, t: dict[str, Any], where: str) -> podspec.PodSpec:
        try:
            return podspec.parse(t, self.spec, where)
        except (TypeError, ValueError) as e:  # e.g. runAsUser: "root"
            raise self.err(where, f"malformed securityContext, env, volumes or volumeMounts: {e}") from None

    def task(self, raw: Any, index: int, where: str, dag_name: str) -> Task:
        t = self.mapping(raw, f"{where}[{index}]")
        name = self.name(t, f"{where}[{index}]", TASK_NAME)
        w = f"{where}[{name}]"
        for key in ("templateRef", "inline", "hooks", "onExit"):
            if key in t:
                raise self.err(w, f"task {name!r} uses {key!r}, which the local engine does not support")
        self.check_keys(t, w, TASK_KEYS, set(), f"task {name!r}")
        template = self.string(t.get("template"), f"{w}.template")
        assert template is not None
        if "depends" in t and "dependencies" in t:
            raise self.err(w, f"task {name!r} uses both 'depends' and 'dependencies'")
        loops = [k for k in ("withItems", "withParam", "withSequence") if k in t]
        if len(loops) > 1:
            raise self.err(w, f"task {name!r} uses more than one of {loops}")
        cont = self.mapping(t.get("continueOn"), f"{w}.continueOn")
        if cont and "depends" in t:
            raise self.err(w, f"task {name!r}: 'continueOn' cannot be combined with 'depends'")
        if "dependencies" in t:
            deps = [str(d) for d in self.seq(t["dependencies"], f"{w}.dependencies")]
            depends = depends_from_dependencies(deps) if deps else None
        else:
            depends = self.string(t.get("depends"), f"{w}.depends", required=False) or None
        args = self.mapping(t.get("arguments"), f"{w}.arguments")
        self.check_keys(args, f"{w}.arguments", {"parameters", "artifacts"}, set(), f"task {name!r} arguments")
        with_items = t.get("withItems")
        if with_items is not None and not isinstance(with_items, list):
            raise self.err(f"{w}.withItems", "must be a list")
        with_seq = self.mapping(t.get("withSequence"), f"{w}.withSequence") if "withSequence" in t else None
        return Task(
            name=name, template=template, depends=depends,
            when=self.string(t.get("when"), f"{w}.when", required=False),
            with_items=with_items,
            with_param=self.string(t.get("withParam"), f"{w}.withParam", required=False),
            with_sequence=with_seq,
            params=self.params(args.get("parameters"), f"{w}.arguments.parameters", value_key="value"),
            artifacts=self.artifact_args(args.get("artifacts"), f"{w}.arguments.artifacts"),
            continue_on_failed=bool(cont.get("failed", False)),
            continue_on_error=bool(cont.get("error", False)),
        )

    # ---- whole document -----------------------------------------------------------------------------------
    def workflow(self, doc: Any) -> Workflow:
        doc = self.mapping(doc, "<document>")
        kind = doc.get("kind")
        if kind not in ("WorkflowTemplate", "Workflow"):
            raise self.err("kind", f"expected a WorkflowTemplate, got {kind!r}")
        if not str(doc.get("apiVersion", "")).startswith("argoproj.io/"):
            raise self.err("apiVersion", f"expected argoproj.io/v1alpha1, got {doc.get('apiVersion')!r}")
        meta = self.mapping(doc.get("metadata"), "metadata")
        name = self.string(meta.get("name") or meta.get("generateName"), "metadata.name")
        assert name is not None
        problems = schema_problems(doc)  # Argo's own strict schema first: what Argo would refuse, by field path
        if problems:
            path, message = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise self.err(field_path(path), f"{message}{more}; Argo's schema (v3.7) refuses it")
        spec = self.mapping(doc.get("spec"), "spec")
        self.check_keys(spec, "spec", SUPPORTED_SPEC, CLUSTER_ONLY_SPEC, "the workflow spec")
        self.spec = spec
        templates: dict[str, Template] = {}
        for i, raw in enumerate(self.seq(spec.get("templates"), "spec.templates")):
            tmpl = self.template(raw, i)
            if tmpl.name in templates:
                raise self.err("spec.templates", f"template name {tmpl.name!r} appears twice")
            templates[tmpl.name] = tmpl
        entrypoint = self.string(spec.get("entrypoint"), "spec.entrypoint")
        assert entrypoint is not None
        on_exit = self.string(spec.get("onExit"), "spec.onExit", required=False)
        for where, ref in (("spec.entrypoint", entrypoint), ("spec.onExit", on_exit)):
            if ref is not None and ref not in templates:
                raise self.err(where, f"template {ref!r} is not defined")
        for tmpl in templates.values():
            if tmpl.kind == "dag":
                self.check_dag(tmpl, templates)
        args = self.mapping(spec.get("arguments"), "spec.arguments")
        self.check_keys(args, "spec.arguments", {"parameters"}, set(), "spec.arguments")
        labels = self.mapping(meta.get("labels"), "metadata.labels")
        annotations = self.mapping(meta.get("annotations"), "metadata.annotations")
        return Workflow(
            name=name.rstrip("-"), namespace=str(meta.get("namespace") or "default"), entrypoint=entrypoint,
            templates=templates,
            params=self.params(args.get("parameters"), "spec.arguments.parameters", value_key="value"),
            parallelism=int(spec["parallelism"]) if "parallelism" in spec else None,
            semaphores=self.semaphores(spec["synchronization"], "spec.synchronization")
            if "synchronization" in spec else (),
            on_exit=on_exit,
            deadline=parse_duration(spec["activeDeadlineSeconds"], f"{self.source}: spec.activeDeadlineSeconds")
            if "activeDeadlineSeconds" in spec else None,
            retry=self.retry(spec.get("retryStrategy"), "spec.retryStrategy"),
            labels={str(k): str(v) for k, v in labels.items()},
            annotations={str(k): str(v) for k, v in annotations.items()},
            priority=int(spec.get("priority") or 0),
            service_account=str(spec.get("serviceAccountName") or ""),
            source=self.source, ignored=tuple(self.ignored), raw=doc,
        )

    def check_dag(self, tmpl: Template, templates: dict[str, Template]) -> None:
        where = f"spec.templates[{tmpl.name}].dag.tasks"
        names = [t.name for t in tmpl.tasks]
        self.unique(names, where)
        for t in tmpl.tasks:
            if t.template not in templates:
                raise self.err(f"{where}[{t.name}].template", f"template {t.template!r} is not defined")
            if t.depends:
                try:
                    refs = depends_task_names(t.depends)
                except ExpressionError as e:
                    raise self.err(f"{where}[{t.name}].depends", str(e)) from None
                for ref in refs:
                    if ref not in names:
                        raise self.err(f"{where}[{t.name}].depends", f"task {t.name!r} depends on unknown task "
                                       f"{ref!r}")
        if "{{" not in tmpl.target:  # a parameter expression is checked when the DAG starts
            for name in tmpl.target.split():
                if name not in names:
                    raise self.err(f"spec.templates[{tmpl.name}].dag.target", f"target {name!r} is not a task")
        _, blocked = dag.topological_order({t.name: depends_task_names(t.depends) if t.depends else set()
                                            for t in tmpl.tasks})
        if blocked:
            raise self.err(where, f"dag {tmpl.name!r} has a dependency cycle among {sorted(blocked)}")


def load_workflow(source: str | Path | Mapping[str, Any]) -> Workflow:
    """Load and validate a WorkflowTemplate from a YAML file path, YAML text, or an already-parsed dict."""
    if isinstance(source, Mapping):
        return _Loader("<dict>").workflow(source)
    path = Path(source) if isinstance(source, Path) or "\n" not in str(source) else None
    if path is not None:
        if not path.is_file():
            raise TemplateError(f"{path}: no such WorkflowTemplate file")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TemplateError(f"{path}: cannot read: {e}") from None
        label = str(path)
    else:
        text, label = str(source), "<yaml>"
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TemplateError(f"{label}: {at}: malformed YAML: {problem}") from None
    if len(docs) != 1:
        raise TemplateError(f"{label}: expected exactly one YAML document, found {len(docs)}")
    return _Loader(label).workflow(docs[0])
