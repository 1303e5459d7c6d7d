"""`kai-flows deploy`: the Python form of the deployment guide's `kubernetes/deploy.sh` for the ML pipelines.

Renders the cluster prerequisites (`workflow_templates/cluster/*.yaml`) and the WorkflowTemplates, validates
all of them, then applies them by server-side apply (field manager `kai-flows`, conflicts forced: this tool owns
these objects) in dependency order: Namespace, PriorityClasses, ServiceAccounts and RBAC, ConfigMaps, then
templates. Every object's API is resolved before the first apply, so a cluster without Argo's CRDs changes
nothing. `--dry-run` renders and validates without a cluster. A registry, tag, image lock or cluster setting other
than the committed defaults compiles the pipelines into a temporary folder and deploys that; the committed YAML
stays untouched. With `require_digests` (production) every image must be pinned by a registry digest: pass the
image lock that `kai-flows images build --push --lock FILE` wrote.
"""

from __future__ import annotations

import re
import tempfile
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
# Dependency order: what a later kind refers to is applied first; unknown kinds go last but before templates.
# The step NetworkPolicy goes before the templates: no step pod runs before its egress is fenced.
KIND_ORDER = ("Namespace", "PriorityClass", "ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding",
              "RoleBinding", "ConfigMap", "Secret", "NetworkPolicy")
TEMPLATE_KINDS = ("WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow")
CLUSTER_SCOPED = ("Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "ClusterWorkflowTemplate")


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
    dry_run: bool = False
    skip_cluster: bool = False
    skip_templates: bool = False
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


def _rank(m: Manifest) -> tuple[int, str]:
    if m.kind in TEMPLATE_KINDS:
        return len(KIND_ORDER) + 1, m.source
    return (KIND_ORDER.index(m.kind) if m.kind in KIND_ORDER else len(KIND_ORDER)), m.source


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
    """Move an object from namespace `old` to `new` (the Namespace itself, namespaced objects, RBAC subjects)."""
    if old == new:
        return m
    doc = yaml.safe_load(yaml.safe_dump(m.doc))  # a deep copy: sources stay untouched
    meta = doc["metadata"]
    if m.kind == "Namespace" and meta["name"] == old:
        meta["name"] = new
    elif m.kind not in CLUSTER_SCOPED:
        meta["namespace"] = new
    for subject in doc.get("subjects") or []:
        if subject.get("namespace") == old:
            subject["namespace"] = new
    return Manifest(doc, m.source)


def _cluster_settings(opts: DeployOptions) -> ClusterSettings:
    from kai_flows.compile import ClusterSettings

    return ClusterSettings(insecure_artifact_repository=opts.insecure_artifact_repository,
                           kube_api_cidrs=opts.kube_api_cidrs or ClusterSettings().kube_api_cidrs)


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


def render(opts: DeployOptions, workdir: Path) -> list[Manifest]:
    """Every object to apply, in apply order."""
    root = source_root(opts, workdir)
    manifests: list[Manifest] = []
    if not opts.skip_cluster:
        found = _load(root, "cluster/*.yaml")
        if not found:
            raise DeployError(f"{root / 'cluster'}: no cluster manifests (run `kai-flows compile`)")
        manifests += found
    if not opts.skip_templates:
        found = _load(root, "*.yaml")
        if not found:
            raise DeployError(f"{root}: no WorkflowTemplates (run `kai-flows compile`)")
        manifests += found
    manifests = [_retarget(m, NAMESPACE, opts.namespace) for m in manifests]
    return sorted(manifests, key=_rank)


# ------------------------------------------------------------------------------------------ validate


def validate(manifests: list[Manifest], workdir: Path, images_dir: Path | None = None,
             require_digests: bool = False) -> list[str]:
    """Problems found by `kai_flows.lint` (strict Argo schema, Kubernetes schemas, argo lint rules, Kai policy)
    on the rendered objects, written out under their source names; an empty list means they may be applied."""
    staged = workdir / "rendered"
    for m in manifests:
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
    return [str(p).replace(f"{staged}/", "") for p in problems]


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


def apply(manifests: list[Manifest], client: Any, on_applied: Callable[[Manifest], None] | None = None) -> None:
    """Server-side apply each object in order; resolves every object's API first so nothing is half-applied
    for want of a CRD."""
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    resources = []
    for m in manifests:
        try:
            resources.append(client.resources.get(api_version=m.doc["apiVersion"], kind=m.kind))
        except ResourceNotFoundError:
            hint = " (install Argo Workflows' CRDs first)" if m.doc["apiVersion"].startswith("argoproj.io/") else ""
            raise DeployError(f"{m.source}: the cluster serves no {m.doc['apiVersion']} {m.kind}{hint}") from None
    for m, resource in zip(manifests, resources, strict=True):
        meta = m.doc["metadata"]
        try:
            client.server_side_apply(resource, body=m.doc, name=meta["name"], namespace=meta.get("namespace"),
                                     field_manager=FIELD_MANAGER, force_conflicts=True)
        except DynamicApiError as e:
            raise DeployError(f"{m.source}: applying {m.label} failed: HTTP {e.status}: {e.summary()}") from None
        if on_applied:
            on_applied(m)


def required_secrets(manifests: list[Manifest]) -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys of every Secret the ConfigMaps refer to (the artifact repository's S3
    credentials): kai-flows renders the references, never the values, so an operator creates these."""
    needed: dict[tuple[str, str], set[str]] = {}

    def walk(node: Any, namespace: str, parent: str = "") -> None:
        if isinstance(node, dict):
            if parent.endswith("Secret") and isinstance(node.get("name"), str) and isinstance(node.get("key"), str):
                needed.setdefault((namespace, node["name"]), set()).add(node["key"])
            for k, v in node.items():
                walk(v, namespace, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, namespace, parent)

    for m in manifests:
        if m.kind == "ConfigMap":
            for text in (m.doc.get("data") or {}).values():
                try:
                    walk(yaml.safe_load(text), m.doc["metadata"].get("namespace", ""))
                except yaml.YAMLError:
                    continue  # not YAML: holds no references
    return needed


def missing_secrets(manifests: list[Manifest], client: Any) -> list[str]:
    """One line per required Secret the cluster lacks, with the command that creates it."""
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError
    from urllib3.exceptions import HTTPError

    secrets = client.resources.get(api_version="v1", kind="Secret")
    lines = []
    for (namespace, name), keys in sorted(required_secrets(manifests).items()):
        try:
            secrets.get(name=name, namespace=namespace)
        except NotFoundError:
            literals = " ".join(f"--from-literal={k}=..." for k in sorted(keys))
            lines.append(f"Secret {namespace}/{name} does not exist; workflows cannot reach their artifacts until "
                         f"it does: kubectl -n {namespace} create secret generic {name} {literals}")
        except DynamicApiError as e:  # e.g. 403: a least-privilege deployer may not read Secrets
            lines.append(f"could not check Secret {namespace}/{name} (keys {', '.join(sorted(keys))}): "
                         f"HTTP {e.status}; make sure it exists")
        except HTTPError as e:
            lines.append(f"could not check Secret {namespace}/{name}: {type(e).__name__}; make sure it exists")
    return lines


def deploy(opts: DeployOptions, on_applied: Callable[[Manifest], None] | None = None,
           client: Any = None, on_warning: Callable[[str], None] | None = None) -> list[Manifest]:
    """Render, validate, and (unless dry-run) apply; returns the manifests in apply order. After applying, each
    Secret the manifests refer to but the cluster lacks is reported through `on_warning`."""
    if opts.skip_cluster and opts.skip_templates:
        raise DeployError("nothing to deploy: both --skip-cluster and --skip-templates were given")
    check_namespace(opts.namespace)
    with tempfile.TemporaryDirectory(prefix="kai-deploy-") as tmp:
        workdir = Path(tmp)
        manifests = render(opts, workdir / "compiled")
        problems = validate(manifests, workdir, opts.images_dir, opts.require_digests)
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise DeployError(f"{len(problems)} problem(s) in the rendered manifests, nothing applied: {shown}")
        if not opts.dry_run:
            client = client or dynamic_client(opts.context)
            apply(manifests, client, on_applied)
            for line in missing_secrets(manifests, client) if on_warning else []:
                on_warning(line)
    return manifests
