"""`lint_paths`: load every YAML document under the given paths and run all checks on each object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kai_flows.argo.schema import schema_problems
from kai_flows.lint.argo_rules import check_metadata, check_spec
from kai_flows.lint.cluster_hardening import check_cluster_hardening
from kai_flows.lint.documents import Document, collect_files, load_documents
from kai_flows.lint.kai_policy import Cluster, PolicyChecker
from kai_flows.lint.kube_schema import check_kubernetes_schema
from kai_flows.lint.pod_hardening import check_pod_hardening, check_workload_pod, workload_pod
from kai_flows.lint.problem import Problem, Reporter
from kai_flows.lint.spec_view import as_dict
from kai_flows.lint.variables import check_variables
from kai_flows.policy import Policy, load_policy

WORKFLOW_KINDS = ("Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")


def _is_argo(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith("argoproj.io/")


def _spec(obj: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    if obj.get("kind") == "CronWorkflow":
        inner = spec.get("workflowSpec")
        return (inner, ("spec", "workflowSpec")) if isinstance(inner, dict) else None
    return spec, ("spec",)


def _cluster(docs: list[Document]) -> Cluster:
    cluster = Cluster()
    for d in docs:
        if d.kind == "ConfigMap" and not _is_argo(d.obj):
            cluster.configmaps[d.name] = as_dict(d.obj.get("data"))
        if d.kind == "ServiceAccount":
            cluster.has_service_accounts = True
            cluster.service_accounts.add(d.name)
    return cluster


def default_images_dir(file: Path) -> Path:
    """`images/` in the nearest ancestor of the linted file that has one (a checkout's), else the image
    Dockerfiles shipped with kai-flows."""
    for parent in file.resolve().parents:
        if (parent / "images").is_dir():
            return parent / "images"
    from kai_flows.resources import dockerfiles_dir

    return dockerfiles_dir()


def _check_cluster_object(d: Document, policy: Policy, report: Reporter) -> None:
    """A name (the API server requires one; the schemas do not), and the policy on the cluster manifests."""
    if not as_dict(d.obj.get("metadata")).get("name"):
        report(("metadata", "name"), "required field missing")
    if d.kind == "PriorityClass" and d.name not in policy.priority_classes:
        report(("metadata", "name"), f"unknown priority class '{d.name}'; known: {', '.join(policy.priority_classes)}")
    if d.kind == "ConfigMap" and d.name == policy.queue_configmap:
        for key, value in as_dict(d.obj.get("data")).items():
            if not str(value).isdigit() or int(value) < 1:
                report(("data", key), f"semaphore limit '{value}' is not a positive integer")


def lint_documents(docs: list[Document], *, images_dir: Path | None = None, policy: Policy | None = None,
                   require_digests: bool = False) -> list[Problem]:
    """Every problem of `docs`; `require_digests` (production) also refuses any image not pinned by digest."""
    policy = policy or load_policy()
    cluster = _cluster(docs)
    problems: list[Problem] = []
    for d in docs:
        report = Reporter(d.file, d.obj, d.label)
        if _is_argo(d.obj):
            for path, message in schema_problems(d.obj):
                report(path, message)
            if d.kind in WORKFLOW_KINDS:
                check_metadata(d.obj, report)
                found = _spec(d.obj)
                if found is not None:
                    spec, sp = found
                    check_spec(spec, sp, report, d.kind)
                    check_variables(d.obj, spec, sp, report)
                    images = images_dir or default_images_dir(Path(d.file))
                    PolicyChecker(policy, cluster, images, report).check(spec, sp)
                    check_pod_hardening(d.obj, spec, sp, report, require_digests=require_digests)
        else:
            check_kubernetes_schema(d.obj, report)
            _check_cluster_object(d, policy, report)
            check_cluster_hardening(d, docs, report)
            if (found_pod := workload_pod(d.obj)) is not None:
                pod, pp = found_pod
                images = images_dir or default_images_dir(Path(d.file))
                PolicyChecker(policy, cluster, images, report).check_pod(pod, pp)
                check_workload_pod(pod, pp, report, require_digests=require_digests)
        problems.extend(dict.fromkeys(report.problems))  # drop exact duplicates, keep order
    return problems


@dataclass
class LintResult:
    problems: list[Problem]
    files: int
    objects: int


def lint_result(paths: list[Path], *, images_dir: Path | None = None, policy: Policy | None = None,
                require_digests: bool = False) -> LintResult:
    """Like lint_paths, with the number of files and objects linted (for the CLI's summary)."""
    docs: list[Document] = []
    problems: list[Problem] = []
    files = collect_files([Path(p) for p in paths])
    for file in files:
        found, bad = load_documents(file)
        docs.extend(found)
        problems.extend(bad)
    problems += lint_documents(docs, images_dir=images_dir, policy=policy, require_digests=require_digests)
    return LintResult(problems, len(files), len(docs))


def lint_paths(paths: list[Path], *, images_dir: Path | None = None, policy: Policy | None = None,
               require_digests: bool = False) -> list[Problem]:
    """Lint every *.yaml/*.yml file under `paths` (directories recurse); an empty list means all is well.

    Raises LintError when a path does not exist.
    """
    return lint_result(paths, images_dir=images_dir, policy=policy, require_digests=require_digests).problems
