"""Kai's scheduling and security policy (kai_flows/policy.py) applied to Argo objects and to the pods of
Kubernetes workloads (the coordinator's Deployment and migration Job: `check_pod`).

Checked per container (main, script, containerSet, init and sidecars): requests and limits for cpu and memory;
an image `<registry>/kai/<name>:<tag>` with a Dockerfile at `images/<name>/Dockerfile`; no way to run as root,
escalate privileges or keep capabilities. Per template (or pod): GPU requests only on a GPU pool with a toleration
for its taint; known pools and priority classes; semaphore keys that exist in the queue ConfigMap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kai_flows.argo.names import ARTIFACT_REPOSITORY_CONFIGMAP
from kai_flows.lint.problem import Reporter
from kai_flows.lint.spec_view import POD_TYPES, as_dict, as_list, template_type
from kai_flows.policy import POOL_LABEL, Policy

P = tuple[str | int, ...]
# The registry may carry a path (`ghcr.io/org`), as `kai-flows compile --registry` allows.
KAI_IMAGE = re.compile(r"^(?P<registry>[^/\s]+(?:/[^/\s]+)*?)/kai/(?P<name>[a-z0-9][a-z0-9._-]*)"
                       r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@sha256:[0-9a-f]{64})?$")
VARIABLE = re.compile(r"^\{\{\s*workflow\.parameters\.([-\w]+)\s*\}\}$")
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
RESOURCES = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")


@dataclass
class Cluster:
    """What the linted cluster manifests declare (used instead of the policy where present)."""

    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> data
    service_accounts: set[str] = field(default_factory=set)
    has_service_accounts: bool = False


def containers(tmpl: dict[str, Any], tp: P) -> Iterator[tuple[P, dict[str, Any], str]]:
    for key in ("container", "script"):
        if isinstance(tmpl.get(key), dict):
            yield (*tp, key), tmpl[key], as_dict(tmpl[key]).get("name") or "main"
    for i, c in enumerate(as_list(as_dict(tmpl.get("containerSet")).get("containers"))):
        if isinstance(c, dict):
            yield (*tp, "containerSet", "containers", i), c, str(c.get("name"))
    for key in ("initContainers", "sidecars"):
        for i, c in enumerate(as_list(tmpl.get(key))):
            if isinstance(c, dict):
                yield (*tp, key, i), c, str(c.get("name"))


def _candidates(value: Any, spec: dict[str, Any]) -> list[str] | None:
    """A literal, or every value `{{workflow.parameters.X}}` may take (its enum, else its value); None if unknown."""
    if not isinstance(value, str):
        return None
    m = VARIABLE.match(value)
    if m is None:
        return None if "{{" in value else [value]
    for p in as_list(as_dict(spec.get("arguments")).get("parameters")):
        p = as_dict(p)
        if p.get("name") == m.group(1):
            if as_list(p.get("enum")):
                return [str(e) for e in p["enum"]]
            return [str(p["value"])] if p.get("value") is not None else None
    return None


def _gpu_request(container: dict[str, Any]) -> str | None:
    res = as_dict(container.get("resources"))
    for section in ("limits", "requests"):
        for key, qty in as_dict(res.get(section)).items():
            if str(key).endswith("/gpu") and str(qty) not in ("0", ""):
                return str(key)
    return None


def _tolerates(tolerations: list[Any], taint: Any) -> bool:
    for t in tolerations:
        t = as_dict(t)
        op = t.get("operator", "Equal")
        key_ok = t.get("key") == taint.key or (not t.get("key") and op == "Exists")
        value_ok = op == "Exists" or t.get("value") == taint.value
        effect_ok = not t.get("effect") or t.get("effect") == taint.effect
        if key_ok and value_ok and effect_ok:
            return True
    return False


class PolicyChecker:
    def __init__(self, policy: Policy, cluster: Cluster, images_dir: Path, report: Reporter) -> None:
        self.policy, self.cluster, self.images_dir, self.report = policy, cluster, images_dir, report

    def check(self, spec: dict[str, Any], sp: P) -> None:
        self._priority_class(spec.get("podPriorityClassName"), spec, (*sp, "podPriorityClassName"))
        self._pools(spec, sp, spec)
        self._synchronization(as_dict(spec.get("synchronization")), (*sp, "synchronization"), spec)
        self._references(spec, sp)
        defaults = as_dict(spec.get("templateDefaults"))
        for i, tmpl in enumerate(as_list(spec.get("templates"))):
            if not isinstance(tmpl, dict):
                continue
            tp = (*sp, "templates", i)
            self._priority_class(tmpl.get("priorityClassName"), spec, (*tp, "priorityClassName"))
            self._pools(tmpl, tp, spec)
            self._synchronization(as_dict(tmpl.get("synchronization")), (*tp, "synchronization"), spec)
            gpu = None
            for cp, c, name in containers(tmpl, tp):
                self._resources(c, cp, name, as_dict(defaults.get(cp[len(tp)])) if len(cp) == len(tp) + 1 else {})
                self._image(c, cp, name)
                self._security(c, cp, name, tmpl, spec)
                gpu = gpu or _gpu_request(c)
            if template_type(tmpl) in POD_TYPES:
                self._placement(tmpl, tp, spec, gpu)

    def check_pod(self, pod: dict[str, Any], pp: P) -> None:
        """A Kubernetes pod spec (at path `pp`): the per-container and placement rules, and a ServiceAccount
        defined in the linted manifests."""
        self._priority_class(pod.get("priorityClassName"), {}, (*pp, "priorityClassName"))
        self._pools(pod, pp, {})
        gpu = None
        for key in ("initContainers", "containers"):
            for i, c in enumerate(as_list(pod.get(key))):
                if not isinstance(c, dict):
                    continue
                cp, name = (*pp, key, i), str(c.get("name"))
                self._resources(c, cp, name, {})
                self._image(c, cp, name)
                self._security(c, cp, name, pod, {})
                gpu = gpu or _gpu_request(c)
        self._placement(pod, pp, {}, gpu)
        sa = pod.get("serviceAccountName")
        if isinstance(sa, str) and self.cluster.has_service_accounts and sa not in self.cluster.service_accounts:
            self.report((*pp, "serviceAccountName"), f"ServiceAccount '{sa}' is not defined in the linted manifests")

    def _priority_class(self, value: Any, spec: dict[str, Any], path: P) -> None:
        if value is None:
            return
        for v in _candidates(value, spec) or []:
            if v not in self.policy.priority_classes:
                self.report(path, f"unknown priority class '{v}'; known: {', '.join(self.policy.priority_classes)}")

    def _pools(self, holder: dict[str, Any], hp: P, spec: dict[str, Any]) -> None:
        """Every kai.io/node-pool value named in nodeSelector, tolerations, affinity or podSpecPatch is known."""
        found: list[tuple[P, Any]] = []
        if POOL_LABEL in as_dict(holder.get("nodeSelector")):
            found.append(((*hp, "nodeSelector", POOL_LABEL), holder["nodeSelector"][POOL_LABEL]))
        for i, t in enumerate(as_list(holder.get("tolerations"))):
            if as_dict(t).get("key") == POOL_LABEL and as_dict(t).get("value") is not None:
                found.append(((*hp, "tolerations", i, "value"), t["value"]))
        terms = as_dict(as_dict(as_dict(holder.get("affinity")).get("nodeAffinity"))
                        .get(REQUIRED)).get("nodeSelectorTerms")
        for i, term in enumerate(as_list(terms)):
            for j, expr in enumerate(as_list(as_dict(term).get("matchExpressions"))):
                if as_dict(expr).get("key") == POOL_LABEL:
                    for v in as_list(expr.get("values")):
                        found.append(((*hp, "affinity", "nodeAffinity", REQUIRED, "nodeSelectorTerms", i,
                                       "matchExpressions", j, "values"), v))
        patch = holder.get("podSpecPatch")
        if isinstance(patch, str) and "{{" not in patch:
            try:
                value = as_dict(as_dict(json.loads(patch)).get("nodeSelector")).get(POOL_LABEL)
            except json.JSONDecodeError:
                value = None
            if value is not None:
                found.append(((*hp, "podSpecPatch"), value))
        for path, value in found:
            for v in _candidates(value, spec) or []:
                if v not in self.policy.pools:
                    self.report(path, f"unknown node pool '{v}'; known: {', '.join(self.policy.pools)}")

    def _placement(self, tmpl: dict[str, Any], tp: P, spec: dict[str, Any], gpu: str | None) -> None:
        """GPU pods on a GPU pool; pods pinned to a tainted pool tolerate its taint (template values replace spec's)."""
        selector = as_dict(tmpl["nodeSelector"] if "nodeSelector" in tmpl else spec.get("nodeSelector"))
        tolerations = as_list(tmpl["tolerations"] if "tolerations" in tmpl else spec.get("tolerations"))
        gpu_pools = ", ".join(p.name for p in self.policy.pools.values() if p.gpu)
        pool_name = selector.get(POOL_LABEL)
        if gpu and pool_name is None:
            self.report((*tp, "nodeSelector"), f"requests {gpu} but has no nodeSelector {POOL_LABEL} for a GPU pool "
                                               f"({gpu_pools})")
        pool = self.policy.pools.get(str(pool_name))
        if pool is None:
            return
        if gpu and not pool.gpu:
            self.report((*tp, "nodeSelector", POOL_LABEL), f"requests {gpu} but pool '{pool.name}' has no GPUs "
                                                           f"({gpu_pools} do)")
        if pool.taint is not None and not _tolerates(tolerations, pool.taint):
            t = pool.taint
            self.report((*tp, "tolerations"), f"no toleration for pool '{pool.name}' taint "
                                              f"{t.key}={t.value}:{t.effect}")

    def _resources(self, c: dict[str, Any], cp: P, name: str, default: dict[str, Any]) -> None:
        res, dres = as_dict(c.get("resources")), as_dict(default.get("resources"))
        missing = [r for r in RESOURCES
                   if as_dict(res.get(r.split(".")[0])).get(r.split(".")[1]) in (None, "")
                   and as_dict(dres.get(r.split(".")[0])).get(r.split(".")[1]) in (None, "")]
        if missing:
            self.report((*cp, "resources"), f"container '{name}' is missing resources {', '.join(missing)}")

    def _image(self, c: dict[str, Any], cp: P, name: str) -> None:
        image = c.get("image")
        if not isinstance(image, str) or not image or "{{" in image:
            return
        m = KAI_IMAGE.match(image)
        if m is None:
            self.report((*cp, "image"), f"image '{image}' is not a Kai image <registry>/kai/<name>:<tag> built from "
                                        f"{self.images_dir}")
            return
        dockerfile = self.images_dir / m.group("name") / "Dockerfile"
        if not dockerfile.is_file():
            self.report((*cp, "image"), f"image '{image}' has no Dockerfile at {dockerfile}")

    def _security(self, c: dict[str, Any], cp: P, name: str, tmpl: dict[str, Any], spec: dict[str, Any]) -> None:
        sc = as_dict(c.get("securityContext"))
        pod = as_dict(tmpl["securityContext"] if "securityContext" in tmpl else spec.get("securityContext"))
        scp = (*cp, "securityContext")
        non_root = sc.get("runAsNonRoot", pod.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod.get("runAsUser"))
        if user == 0:
            self.report((*scp, "runAsUser"), f"container '{name}' runs as root (runAsUser: 0)")
        elif non_root is not True:
            self.report((*scp, "runAsNonRoot"), f"container '{name}' may run as root: set runAsNonRoot: true on the "
                                                "container or the pod securityContext")
        if sc.get("privileged") is True:
            self.report((*scp, "privileged"), f"container '{name}' is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.report((*scp, "allowPrivilegeEscalation"), f"container '{name}' allows privilege escalation: set "
                                                            "allowPrivilegeEscalation: false")
        caps = as_dict(sc.get("capabilities"))
        if "ALL" not in [str(x) for x in as_list(caps.get("drop"))]:
            self.report((*scp, "capabilities"), f"container '{name}' does not drop all capabilities: set "
                                                "capabilities.drop: [ALL]")
        if as_list(caps.get("add")):
            self.report((*scp, "capabilities", "add"), f"container '{name}' adds capabilities {caps['add']}")

    def _synchronization(self, sync: dict[str, Any], path: P, spec: dict[str, Any]) -> None:
        refs = [((*path, "semaphores", i), s) for i, s in enumerate(as_list(sync.get("semaphores")))]
        if sync.get("semaphore") is not None:
            refs.append(((*path, "semaphore"), sync["semaphore"]))
        for rp, ref in refs:
            cm = as_dict(as_dict(ref).get("configMapKeyRef"))
            if not cm:
                continue
            cm_name, key = cm.get("name"), cm.get("key")
            if not isinstance(cm_name, str):
                continue
            if cm_name in self.cluster.configmaps:
                keys, source = set(self.cluster.configmaps[cm_name]), f"ConfigMap '{cm_name}'"
            elif cm_name == self.policy.queue_configmap:
                keys, source = set(self.policy.queues), f"the policy's queues ({cm_name})"
            else:
                self.report((*rp, "configMapKeyRef", "name"), f"semaphore ConfigMap '{cm_name}' is not "
                                                              f"'{self.policy.queue_configmap}' nor a linted ConfigMap")
                continue
            for k in _candidates(key, spec) or []:
                if k not in keys:
                    self.report((*rp, "configMapKeyRef", "key"), f"semaphore key '{k}' is not in {source}; "
                                                                 f"known: {', '.join(sorted(keys))}")

    def _references(self, spec: dict[str, Any], sp: P) -> None:
        """Names the spec takes from linted cluster manifests must exist there."""
        ref = as_dict(spec.get("artifactRepositoryRef"))
        cm = ref.get("configMap", ARTIFACT_REPOSITORY_CONFIGMAP) if ref else None
        key = ref.get("key") if isinstance(ref.get("key"), str) else None
        if isinstance(cm, str) and cm in self.cluster.configmaps and key and key not in self.cluster.configmaps[cm]:
            self.report((*sp, "artifactRepositoryRef", "key"), f"ConfigMap '{cm}' has no key '{ref['key']}'")
        sa = spec.get("serviceAccountName")
        if isinstance(sa, str) and self.cluster.has_service_accounts and sa not in self.cluster.service_accounts:
            self.report((*sp, "serviceAccountName"), f"ServiceAccount '{sa}' is not defined in the linted manifests")
