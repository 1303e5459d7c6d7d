"""`kai-flows deploy`: the Python form of the deployment guide's `kubernetes/deploy.sh` for the ML pipelines.

Renders the cluster manifests (`workflow_templates/cluster/*.yaml`) and the WorkflowTemplates, validates all of
them, then applies them by server-side apply (field manager `kai-flows`, conflicts forced: this tool owns these
objects) in dependency order, in three groups the guide's `--skip-*` flags name:
1. infrastructure: Namespace with its ResourceQuota and LimitRange, PriorityClasses, the steps' RBAC, queue
   ConfigMaps, the artifact repository, the steps' NetworkPolicy;
2. coordinator (objects labelled `app.kubernetes.io/component: coordinator`): its RBAC, ConfigMaps (its config,
   the Grafana dashboard) and NetworkPolicies, the migration Job (deploy waits for every Job it applies to
   complete, with a timeout, before it applies anything after it), then Service, Deployment, HPA, PDB,
   ServiceMonitor and PrometheusRule;
3. workflows: the WorkflowTemplates.
Every object's API is resolved before the first apply, so a cluster without Argo's CRDs changes nothing; the
Prometheus Operator's kinds, where the cluster lacks their CRDs, are skipped with a warning naming them (the
coordinator runs without them). Before a workload is applied, the Secrets its pods read must exist, or deploy stops
there, naming them with the commands that create them. A redeploy keeps the replica count an HPA chose.
`--dry-run` renders and validates without a cluster. A registry, tag, image lock or cluster setting other than the
committed defaults compiles the pipelines into a temporary folder and deploys that; the committed YAML stays
untouched. With `require_digests` (production) every image must be pinned by a registry digest: pass the image
lock that `kai-flows images build --push --lock FILE` wrote.
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kai_flows import resources
from kai_flows.policy import NAMESPACE

if TYPE_CHECKING:
    from kai_flows.compile import ClusterSettings

FIELD_MANAGER = "kai-flows"
COMMITTED = resources.templates_dir()  # the WorkflowTemplates shipped with kai-flows
# Dependency order within a group: what a later kind refers to is applied first; unknown kinds go last. The quota
# and LimitRange precede every pod; NetworkPolicies precede the pods they fence; the migration Job precedes the
# Deployment (and deploy waits for it).
KIND_ORDER = ("Namespace", "ResourceQuota", "LimitRange", "PriorityClass", "ServiceAccount", "ClusterRole", "Role",
              "ClusterRoleBinding", "RoleBinding", "ConfigMap", "Secret", "NetworkPolicy", "Job", "Service",
              "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule")
TEMPLATE_KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")
CLUSTER_SCOPED = ("Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "ClusterWorkflowTemplate")
GROUPS = ("infrastructure", "coordinator", "workflows")  # apply order; `--skip-<group>` leaves one out
OPTIONAL_API_GROUPS = {"monitoring.coreos.com": "the Prometheus Operator"}  # skipped with a warning when absent
WORKLOAD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
# How long deploy waits for a Job (the coordinator's migrations): the Job's own deadline (600 s, which fails it
# with DeadlineExceeded, reported by name) and a minute more.
MIGRATION_TIMEOUT = 660.0


class DeployError(ValueError):
    """Deploy stopped; the message names the file or object at fault. Objects applied before it stay applied."""


@dataclass(frozen=True)
class Manifest:
    doc: dict[str, Any]
    source: str  # file it came from, relative to its root

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def label(self) -> str:
        meta = self.doc.get("metadata") or {}
        ns = f" -n {meta['namespace']}" if meta.get("namespace") else ""
        return f"{self.kind}/{meta.get('name', '?')}{ns}"


@dataclass
class DeployOptions:
    context: str | None = None
    namespace: str = NAMESPACE
    registry: str | None = None
    tag: str | None = None
    image_lock: Path | None = None  # pin images by the registry digests `images build --push --lock` recorded
    require_digests: bool = False  # refuse any image not pinned by digest
    insecure_artifact_repository: bool = False  # the operator's opt-out of TLS to S3, by name
    kube_api_cidrs: tuple[str, ...] = ()  # where step pods reach the Kubernetes API; empty: the compiler's default
    database_cidrs: tuple[str, ...] = ()  # where the coordinator reaches PostgreSQL; empty: the compiler's default
    dry_run: bool = False
    skip_infrastructure: bool = False
    skip_coordinator: bool = False
    skip_workflows: bool = False
    skip_cluster: bool = False  # deprecated: --skip-infrastructure --skip-coordinator
    skip_templates: bool = False  # deprecated: --skip-workflows
    migration_timeout: float = MIGRATION_TIMEOUT  # seconds deploy waits for each Job it applies
    poll_interval: float = 2.0  # seconds between two looks at a Job
    source: Path = field(default_factory=lambda: COMMITTED)  # committed YAML root (templates + cluster/)
    images_dir: Path = field(default_factory=resources.dockerfiles_dir)  # Dockerfiles lint checks images against


# ------------------------------------------------------------------------------------------ render


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_namespace(name: str) -> str:
    """A namespace Kubernetes would create (an RFC 1123 label) and that is not one of the cluster's own."""
    if not _DNS_LABEL.match(name):
        raise DeployError(f"namespace {name!r} is not a valid Kubernetes name (at most 63 lowercase letters, digits "
                          "and hyphens, starting and ending with a letter or digit)")
    if name.startswith("kube-") or name == "default":
        raise DeployError(f"namespace {name!r} belongs to the cluster itself (kube-* and default are reserved); "
                          "give kai-flows a namespace of its own")
    return name


def component(m: Manifest) -> str:
    """The group an object belongs to: `workflows` (the templates), `coordinator` (labelled so), else
    `infrastructure`."""
    from kai_flows.cluster.coordinator import COMPONENT, COMPONENT_LABEL

    if m.kind in TEMPLATE_KINDS:
        return "workflows"
    labels = (m.doc.get("metadata") or {}).get("labels") or {}
    return "coordinator" if labels.get(COMPONENT_LABEL) == COMPONENT else "infrastructure"


def groups(opts: DeployOptions) -> tuple[str, ...]:
    """The groups to deploy, after the skip flags (the deprecated ones included)."""
    skipped = {"infrastructure": opts.skip_infrastructure or opts.skip_cluster,
               "coordinator": opts.skip_coordinator or opts.skip_cluster,
               "workflows": opts.skip_workflows or opts.skip_templates}
    return tuple(g for g in GROUPS if not skipped[g])


def _rank(m: Manifest) -> tuple[int, int, str]:
    kind = KIND_ORDER.index(m.kind) if m.kind in KIND_ORDER else len(KIND_ORDER)
    return GROUPS.index(component(m)), kind, m.source


def _load(root: Path, pattern: str) -> list[Manifest]:
    out = []
    for path in sorted(root.glob(pattern)):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            raise DeployError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        for d in docs:
            if not isinstance(d, dict) or not d.get("kind") or not (d.get("metadata") or {}).get("name"):
                raise DeployError(f"{path}: a document without kind or metadata.name")
            out.append(Manifest(d, path.relative_to(root).as_posix()))
    return out


def _retarget(m: Manifest, old: str, new: str) -> Manifest:
    """Move an object from namespace `old` to `new` (the Namespace itself, namespaced objects, RBAC subjects, and
    the namespace named inside the coordinator's config and alerts)."""
    if old == new:
        return m
    from kai_flows.cluster.coordinator import retarget

    doc = yaml.safe_load(yaml.safe_dump(m.doc))  # a deep copy: sources stay untouched
    meta = doc["metadata"]
    if m.kind == "Namespace" and meta["name"] == old:
        meta["name"] = new
    elif m.kind not in CLUSTER_SCOPED:
        meta["namespace"] = new
    for subject in doc.get("subjects") or []:
        if subject.get("namespace") == old:
            subject["namespace"] = new
    retarget(doc, old, new)
    return Manifest(doc, m.source)


def _cluster_settings(opts: DeployOptions) -> ClusterSettings:
    from kai_flows.compile import ClusterSettings

    default = ClusterSettings()
    return ClusterSettings(insecure_artifact_repository=opts.insecure_artifact_repository,
                           kube_api_cidrs=opts.kube_api_cidrs or default.kube_api_cidrs,
                           database_cidrs=opts.database_cidrs or default.database_cidrs)


def source_root(opts: DeployOptions, workdir: Path) -> Path:
    """The committed YAML, or (for another registry, tag, image lock or cluster setting) a fresh compile into
    `workdir`."""
    from kai_flows import compile as compiler
    from kai_flows.images import ImageError, resolve_images
    from kai_flows.pipeline import PipelineError

    try:
        registry, tag, digests = resolve_images(opts.registry, opts.tag, opts.image_lock)
    except ImageError as e:
        raise DeployError(str(e)) from None
    settings = _cluster_settings(opts)
    if (registry, tag, digests, settings) == (compiler.DEFAULT_REGISTRY, compiler.DEFAULT_TAG, None,
                                              compiler.ClusterSettings()):
        if not opts.source.is_dir():
            raise DeployError(f"{opts.source}: no such folder (run `kai-flows compile` first)")
        return opts.source
    try:
        compiler.compile_all(workdir, registry, tag, digests=digests, settings=settings)
    except PipelineError as e:
        raise DeployError(str(e)) from None
    return workdir


def render_all(opts: DeployOptions, workdir: Path) -> list[Manifest]:
    """Every object of the source, whatever the skip flags, in apply order (validation sees them all: a skipped
    group's objects are what the cluster already has, and the others refer to them)."""
    from kai_flows.cluster.coordinator import restamp

    wanted = groups(opts)
    root = source_root(opts, workdir)
    cluster, templates = _load(root, "cluster/*.yaml"), _load(root, "*.yaml")
    if not cluster and {"infrastructure", "coordinator"} & set(wanted):
        raise DeployError(f"{root / 'cluster'}: no cluster manifests (run `kai-flows compile`)")
    if not templates and "workflows" in wanted:
        raise DeployError(f"{root}: no WorkflowTemplates (run `kai-flows compile`)")
    manifests = [_retarget(m, NAMESPACE, opts.namespace) for m in cluster + templates]
    restamp([m.doc for m in manifests])  # the config checksum of the config as retargeted
    return sorted(manifests, key=_rank)


def render(opts: DeployOptions, workdir: Path) -> list[Manifest]:
    """Every object to apply, in apply order: the groups the options select, each in dependency order."""
    wanted = groups(opts)
    return [m for m in render_all(opts, workdir) if component(m) in wanted]


# ------------------------------------------------------------------------------------------ validate


def validate(manifests: list[Manifest], workdir: Path, images_dir: Path | None = None,
             require_digests: bool = False, context: list[Manifest] | None = None) -> list[str]:
    """Problems found by `kai_flows.lint` (strict Argo schema, Kubernetes schemas, argo lint rules, Kai policy)
    on the rendered objects, written out under their source names; an empty list means they may be applied.
    `context`: every rendered object (a superset of `manifests`), linted together so that references between them
    resolve; only the problems of `manifests` are reported."""
    staged = workdir / "rendered"
    for m in context or manifests:
        path = staged / m.source
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("---\n" + yaml.safe_dump(m.doc, sort_keys=False))
    try:
        from kai_flows.lint import lint_paths
    except ImportError:
        return _schema_only(manifests)
    problems = lint_paths([staged], images_dir=images_dir or resources.dockerfiles_dir(),
                          require_digests=require_digests)
    wanted = {(m.source, f"{m.kind}/{m.doc['metadata']['name']}") for m in manifests}
    return [str(p).replace(f"{staged}/", "") for p in problems
            if not p.object or (Path(p.file).relative_to(staged).as_posix(), p.object) in wanted]


def _schema_only(manifests: list[Manifest]) -> list[str]:
    """Fallback without kai_flows.lint: Kubernetes schemas (kubernetes-validate), Argo's JSON schema."""
    import json

    import jsonschema
    import kubernetes_validate

    schema_file = next(iter(sorted(resources.schemas_dir().glob("argo-*.schema.json"))), None)
    argo = json.loads(schema_file.read_text()) if schema_file else None
    problems = []
    for m in manifests:
        try:
            if m.doc.get("apiVersion", "").startswith("argoproj.io/"):
                if argo is not None:
                    definition = f"io.argoproj.workflow.v1alpha1.{m.kind}"
                    jsonschema.validate(m.doc, {**argo, "oneOf": [{"$ref": f"#/definitions/{definition}"}]})
            else:
                kubernetes_validate.validate(m.doc, kubernetes_validate.latest_version(), strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
            problems.append(f"{m.source}: {m.label}: {str(e).splitlines()[0]}")
    return problems


# ------------------------------------------------------------------------------------------ apply


def dynamic_client(context: str | None) -> Any:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from urllib3.exceptions import HTTPError

    from kai_flows.submit.backends import kube_api_client
    from kai_flows.submit.errors import SubmitError

    try:
        api_client, description = kube_api_client(context)
    except SubmitError as e:
        raise DeployError(str(e)) from None
    try:
        return DynamicClient(api_client)  # reads the API server's discovery documents
    except ApiException as e:
        raise DeployError(f"{description}: API discovery failed: HTTP {e.status} {e.reason}") from None
    except HTTPError as e:
        raise DeployError(f"cannot reach {description}: {type(e).__name__}") from None


Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _resolve(manifests: list[Manifest], client: Any, on_warning: Notify) -> list[tuple[Manifest, Any]]:
    """Each object's API resource, before anything is applied: a missing API stops the deploy (Argo's CRDs), or,
    for an optional one (the Prometheus Operator's), leaves its objects out with a warning naming them."""
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    plan: list[tuple[Manifest, Any]] = []
    skipped: dict[str, list[Manifest]] = {}
    for m in manifests:
        api_version = m.doc["apiVersion"]
        try:
            plan.append((m, client.resources.get(api_version=api_version, kind=m.kind)))
        except ResourceNotFoundError:
            group = api_version.split("/")[0] if "/" in api_version else ""
            if group in OPTIONAL_API_GROUPS:
                skipped.setdefault(group, []).append(m)
                continue
            hint = " (install Argo Workflows' CRDs first)" if api_version.startswith("argoproj.io/") else ""
            raise DeployError(f"{m.source}: the cluster serves no {api_version} {m.kind}{hint}") from None
    for group, left_out in skipped.items():
        kinds = ", ".join(sorted({m.kind for m in left_out}))
        on_warning(f"the cluster serves no {group} API ({kinds}: {OPTIONAL_API_GROUPS[group]}'s CRDs are not "
                   f"installed); not applied: {', '.join(m.label for m in left_out)}. Install "
                   f"{OPTIONAL_API_GROUPS[group]} and deploy again to have Prometheus scrape and alert")
    return plan


def _pod_spec(m: Manifest) -> dict[str, Any] | None:
    path = {"Pod": ("spec",), "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}.get(
        m.kind, ("spec", "template", "spec"))
    if m.kind not in WORKLOAD_KINDS:
        return None
    node: Any = m.doc
    for key in path:
        node = (node or {}).get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def secret_refs(m: Manifest) -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys of the Secrets one object refers to: an artifact repository ConfigMap's
    `*Secret` references; a workload's env secretKeyRef, envFrom secretRef and secret volumes."""
    namespace = m.doc["metadata"].get("namespace", "")
    needed: dict[tuple[str, str], set[str]] = {}

    def walk(node: Any, parent: str = "") -> None:
        if isinstance(node, dict):
            if parent.endswith("Secret") and isinstance(node.get("name"), str) and isinstance(node.get("key"), str):
                needed.setdefault((namespace, node["name"]), set()).add(node["key"])
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, parent)

    if m.kind == "ConfigMap":
        for text in (m.doc.get("data") or {}).values():
            try:
                walk(yaml.safe_load(text))
            except yaml.YAMLError:
                continue  # not YAML: holds no references
    pod = _pod_spec(m)
    if pod is not None:
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name") and not ref.get("optional"):
                    needed.setdefault((namespace, ref["name"]), set()).add(str(ref.get("key", "")))
            for source in c.get("envFrom") or []:
                ref = source.get("secretRef") or {}
                if ref.get("name") and not ref.get("optional"):
                    needed.setdefault((namespace, ref["name"]), set())
        for volume in pod.get("volumes") or []:
            ref = volume.get("secret") or {}
            if ref.get("secretName") and not ref.get("optional"):
                keys = needed.setdefault((namespace, ref["secretName"]), set())
                keys.update(str(i["key"]) for i in ref.get("items") or [] if i.get("key"))
    return needed


def required_secrets(manifests: list[Manifest]) -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys of every Secret the manifests refer to (the artifact repository's S3 credentials,
    the coordinator's database URL and API token): kai-flows renders the references, never the values, so an
    operator creates these."""
    needed: dict[tuple[str, str], set[str]] = {}
    for m in manifests:
        for ref, keys in secret_refs(m).items():
            needed.setdefault(ref, set()).update(keys)
    return needed


def _create_command(namespace: str, name: str, keys: set[str]) -> str:
    literals = " ".join(f"--from-literal={k}=..." for k in sorted(keys)) or "--from-literal=<key>=..."
    return f"kubectl -n {namespace} create secret generic {name} {literals}"


def _check_secrets(refs: dict[tuple[str, str], set[str]], client: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """(the Secrets that do not exist, lines about those that could not be checked)."""
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
    from urllib3.exceptions import HTTPError

    secrets = client.resources.get(api_version="v1", kind="Secret")
    missing, unknown = [], []
    for (namespace, name), keys in sorted(refs.items()):
        try:
            secrets.get(name=name, namespace=namespace)
        except NotFoundError:
            missing.append((namespace, name))
        except DynamicApiError as e:  # e.g. 403: a least-privilege deployer may not read Secrets
            unknown.append(f"could not check Secret {namespace}/{name} (keys {', '.join(sorted(keys))}): "
                           f"HTTP {e.status}; make sure it exists")
        except HTTPError as e:
            unknown.append(f"could not check Secret {namespace}/{name}: {type(e).__name__}; make sure it exists")
    return missing, unknown


def missing_secrets(manifests: list[Manifest], client: Any, skip: set[tuple[str, str]] | None = None) -> list[str]:
    """One line per required Secret (but those in `skip`) the cluster lacks, with the command that creates it."""
    needed = {ref: keys for ref, keys in required_secrets(manifests).items() if ref not in (skip or set())}
    missing, unknown = _check_secrets(needed, client)
    lines = []
    for namespace, name in missing:
        users = [m for m in manifests if (namespace, name) in secret_refs(m)]
        effects = []
        if any(m.kind == "ConfigMap" for m in users):
            effects.append("workflows cannot reach their artifacts")
        effects += [f"{m.label.split(' -n ')[0]} cannot start" for m in users if m.kind in WORKLOAD_KINDS]
        effects = effects or [f"{', '.join(m.label for m in users)} cannot use it"]
        lines.append(f"Secret {namespace}/{name} does not exist; {' and '.join(effects)} until it does: "
                     f"{_create_command(namespace, name, needed[(namespace, name)])}")
    return lines + unknown


def _keep_scaled_replicas(m: Manifest, resource: Any, manifests: list[Manifest]) -> Manifest:
    """A Deployment an HPA of the manifests scales keeps its live replica count: re-applying the rendered one
    would undo the HPA's choice (and kill or start pods) on every deploy."""
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    name = m.doc["metadata"]["name"]
    scaled = any(o.kind == "HorizontalPodAutoscaler" and (o.doc.get("spec") or {}).get("scaleTargetRef", {}).get(
        "name") == name for o in manifests)
    if m.kind != "Deployment" or not scaled or "replicas" not in (m.doc.get("spec") or {}):
        return m
    try:
        live = resource.get(name=name, namespace=m.doc["metadata"].get("namespace")).to_dict()
    except NotFoundError:
        return m  # created now, with the rendered count
    except DynamicApiError:
        return m  # cannot tell: the rendered count, as kubectl apply would
    replicas = (live.get("spec") or {}).get("replicas")
    if replicas is None:
        return m
    doc = copy.deepcopy(m.doc)
    doc["spec"]["replicas"] = replicas
    return Manifest(doc, m.source)


def _pod_problems(client: Any, namespace: str, job: str) -> str:
    """Why a Job's pods do not get on (waiting or terminated containers), for the error message; best effort."""
    try:
        pods = client.resources.get(api_version="v1", kind="Pod").get(
            namespace=namespace, label_selector=f"job-name={job}").to_dict()
    except Exception:  # a hint only: the error about the Job stands without it
        return ""
    reasons = []
    for pod in pods.get("items") or []:
        for status in ((pod.get("status") or {}).get("containerStatuses") or []):
            state = status.get("state") or {}
            for what in ("waiting", "terminated"):
                detail = state.get(what) or {}
                if detail.get("reason") and detail.get("reason") != "Completed":
                    message = f": {detail['message']}" if detail.get("message") else ""
                    code = f" (exit code {detail['exitCode']})" if "exitCode" in detail else ""
                    reasons.append(f"pod {pod['metadata']['name']}: {detail['reason']}{code}{message}")
    return ("; " + "; ".join(reasons[:3])) if reasons else ""


def wait_for_job(m: Manifest, client: Any, timeout: float, interval: float, on_event: Notify = _quiet) -> None:
    """Return once the Job completed; DeployError naming it when it failed or `timeout` seconds passed."""
    from kubernetes.dynamic.exceptions import DynamicApiError

    meta = m.doc["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    jobs = client.resources.get(api_version="batch/v1", kind="Job")
    logs = f"kubectl -n {namespace} logs job/{name}"
    on_event(f"waiting for {m.label} to complete (at most {timeout:.0f} s)")
    started = time.monotonic()
    while True:
        try:
            status = jobs.get(name=name, namespace=namespace).to_dict().get("status") or {}
        except DynamicApiError as e:  # e.g. deleted meanwhile, or a deployer that may not read Jobs
            raise DeployError(f"{m.source}: reading the status of {m.label} failed: HTTP {e.status}: {e.summary()}; "
                              f"nothing after it was applied") from None
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        if "Complete" in conditions or ((status.get("succeeded") or 0) >= 1 and "Failed" not in conditions):
            on_event(f"{m.label} complete after {time.monotonic() - started:.0f} s")
            return
        if "Failed" in conditions:
            c = conditions["Failed"]
            raise DeployError(
                f"{m.source}: {m.label} failed ({c.get('reason', 'Failed')}: {c.get('message', 'no message')})"
                f"{_pod_problems(client, namespace, name)}; nothing after it was applied. See `{logs}`; a Job "
                f"runs once: delete it (kubectl -n {namespace} delete job {name}) and deploy again to retry")
        if time.monotonic() - started >= timeout:
            raise DeployError(
                f"{m.source}: {m.label} did not complete within {timeout:.0f} s"
                f"{_pod_problems(client, namespace, name)}; nothing after it was applied. See `{logs}` and "
                f"`kubectl -n {namespace} describe job {name}`")
        time.sleep(interval)


def apply(manifests: list[Manifest], client: Any, on_applied: Callable[[Manifest], None] | None = None, *,
          on_event: Notify = _quiet, on_warning: Notify = _quiet, job_timeout: float = MIGRATION_TIMEOUT,
          poll_interval: float = 2.0) -> list[Manifest]:
    """Server-side apply each object in order, after resolving every object's API (nothing is half-applied for
    want of a CRD); wait for each Job to complete before the next object; check a workload's Secrets before it.
    Returns the objects applied (the optional kinds the cluster cannot serve left out)."""
    from kubernetes.dynamic.exceptions import DynamicApiError

    plan = _resolve(manifests, client, on_warning)
    applied: list[Manifest] = []
    checked: set[tuple[str, str]] = set()
    for m, resource in plan:
        refs = {ref: keys for ref, keys in secret_refs(m).items() if ref not in checked} if m.kind in \
            WORKLOAD_KINDS else {}
        if refs:
            missing, unknown = _check_secrets(refs, client)
            checked.update(refs)
            for line in unknown:
                on_warning(line)
            if missing:
                commands = "; ".join(_create_command(ns, name, refs[(ns, name)]) for ns, name in missing)
                raise DeployError(
                    f"{m.source}: {m.label} reads Secret(s) the cluster lacks: "
                    f"{', '.join(f'{ns}/{name}' for ns, name in missing)}; its pods cannot start without them. "
                    f"{len(applied)} object(s) applied so far; create them ({commands}) and deploy again")
        m = _keep_scaled_replicas(m, resource, manifests)
        meta = m.doc["metadata"]
        try:
            client.server_side_apply(resource, body=m.doc, name=meta["name"], namespace=meta.get("namespace"),
                                     field_manager=FIELD_MANAGER, force_conflicts=True)
        except DynamicApiError as e:
            raise DeployError(f"{m.source}: applying {m.label} failed: HTTP {e.status}: {e.summary()}") from None
        applied.append(m)
        if on_applied:
            on_applied(m)
        if m.kind == "Job":
            wait_for_job(m, client, job_timeout, poll_interval, on_event)
    return applied


def deploy(opts: DeployOptions, on_applied: Callable[[Manifest], None] | None = None,
           client: Any = None, on_warning: Notify | None = None, on_event: Notify | None = None) -> list[Manifest]:
    """Render, validate, and (unless dry-run) apply; returns the manifests applied (with dry-run: that would be),
    in apply order. Warnings (kinds the cluster cannot serve, Secrets the manifests refer to that the cluster
    lacks) go to `on_warning`; progress (waiting for a Job) to `on_event`."""
    if not groups(opts):
        raise DeployError("nothing to deploy: the skip flags leave out infrastructure, coordinator and workflows")
    check_namespace(opts.namespace)
    with tempfile.TemporaryDirectory(prefix="kai-deploy-") as tmp:
        workdir = Path(tmp)
        everything = render_all(opts, workdir / "compiled")
        manifests = [m for m in everything if component(m) in groups(opts)]
        problems = validate(manifests, workdir, opts.images_dir, opts.require_digests, context=everything)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise DeployError(f"{len(problems)} problem(s) in the rendered manifests, nothing applied: {shown}")
        if opts.dry_run:
            return manifests
        client = client or dynamic_client(opts.context)
        applied = apply(manifests, client, on_applied, on_event=on_event or _quiet, on_warning=on_warning or _quiet,
                        job_timeout=opts.migration_timeout, poll_interval=opts.poll_interval)
        if on_warning:  # the workloads' Secrets were checked before them; the artifact repository's now
            checked = {ref for m in applied if m.kind in WORKLOAD_KINDS for ref in secret_refs(m)}
            for line in missing_secrets([m for m in applied if m.kind not in WORKLOAD_KINDS], client, checked):
                on_warning(line)
    return applied
