"""What a step pod must be to run in Kai's hardened namespace, checked on Argo templates (and, by
`check_workload_pod`, on the pods of Kubernetes workloads: the coordinator's Deployment and migration Job).

- images: a release tag, never `latest` nor no tag at all (which means `latest`); with `require_digests`
  (production) pinned by a registry digest too;
- Pod Security `restricted` beyond what kai_policy checks per container: a seccomp profile on every container,
  Argo's own executor containers (`init`, `wait`) locked down through the template's podSpecPatch, only the volume
  kinds `restricted` allows, no host namespaces;
- a sizeLimit on every emptyDir;
- the step label on every pod, which the step NetworkPolicy selects;
- no inline S3 artifact over plain HTTP unless the object opts out by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

from kai_flows.lint.kai_policy import containers
from kai_flows.lint.problem import Reporter
from kai_flows.lint.spec_view import POD_TYPES, as_dict, as_list, template_type
from kai_flows.policy import INSECURE_REPOSITORY_ANNOTATION, STEP_LABEL

P = tuple[str | int, ...]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")
# Pod Security Standards, restricted: the volume kinds it allows.
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret")
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
# The containers Argo's controller adds to a container/script/containerSet pod: (podSpecPatch list, name).
EXECUTOR_CONTAINERS = (("initContainers", "init"), ("containers", "wait"))
RESTRICTED = "Pod Security 'restricted'"


def check_pod_hardening(obj: dict[str, Any], spec: dict[str, Any], sp: P, report: Reporter, *,
                        require_digests: bool = False) -> None:
    opted_out = as_dict(as_dict(obj.get("metadata")).get("annotations")).get(INSECURE_REPOSITORY_ANNOTATION) == "true"
    _volumes(as_list(spec.get("volumes")), (*sp, "volumes"), report)
    if spec.get("hostNetwork") is True:
        report((*sp, "hostNetwork"), f"hostNetwork: true puts step pods on the node's network; {RESTRICTED} "
                                     "forbids it")
    pod_labels = as_dict(as_dict(spec.get("podMetadata")).get("labels"))
    for i, tmpl in enumerate(as_list(spec.get("templates"))):
        if not isinstance(tmpl, dict):
            continue
        tp = (*sp, "templates", i)
        for cp, c, _ in containers(tmpl, tp):
            _image(c.get("image"), (*cp, "image"), report, require_digests)
        if template_type(tmpl) in POD_TYPES:
            _pod(tmpl, tp, spec, report, pod_labels)
    if not opted_out:
        for path in _insecure_s3(spec, sp):
            report((*path, "insecure"), "inline S3 artifact with insecure: true: its bytes and the S3 credentials "
                                        f"travel in clear text; use TLS, or opt out by name (annotation "
                                        f"{INSECURE_REPOSITORY_ANNOTATION}: \"true\")")


# ---------------------------------------------------------------------------------------------- workloads

# Where each workload kind keeps its pod spec.
WORKLOAD_POD_SPECS: dict[str, P] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def workload_pod(obj: dict[str, Any]) -> tuple[dict[str, Any], P] | None:
    """The pod spec of a workload object and its path, or None for other kinds."""
    path = WORKLOAD_POD_SPECS.get(str(obj.get("kind")))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = as_dict(node).get(key)
    return as_dict(node), path


def check_workload_pod(pod: dict[str, Any], pp: P, report: Reporter, *, require_digests: bool = False) -> None:
    """Pod Security `restricted` on a Kubernetes pod spec (kai_policy's check_pod covers root, privilege escalation
    and capabilities), a read-only root filesystem, sized emptyDirs, release-tagged images."""
    pod_sc = as_dict(pod.get("securityContext"))
    for key in HOST_NAMESPACES:
        if pod.get(key) is True:
            report((*pp, key), f"{key}: true shares the node's namespaces; {RESTRICTED} forbids it")
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(as_list(pod.get(key))):
            if not isinstance(c, dict):
                continue
            cp, name = (*pp, key, i), f"container '{c.get('name')}'"
            sc = as_dict(c.get("securityContext"))
            _image(c.get("image"), (*cp, "image"), report, require_digests)
            _seccomp(sc, pod_sc, (*cp, "securityContext"), name, report)
            if sc.get("readOnlyRootFilesystem") is not True:
                report((*cp, "securityContext", "readOnlyRootFilesystem"), f"{name} may write to its root "
                       "filesystem: set readOnlyRootFilesystem: true (and mount an emptyDir where it writes)")
    _volumes(as_list(pod.get("volumes")), (*pp, "volumes"), report)


# ---------------------------------------------------------------------------------------------- images


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """`repo[:tag][@digest]` -> (repo, tag, digest); a registry's `host:port` is not a tag."""
    name, _, digest = image.partition("@")
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, None, digest or None
    return repo, tag, digest or None


def _image(image: Any, path: P, report: Reporter, require_digests: bool) -> None:
    if not isinstance(image, str) or not image or "{{" in image:
        return
    _, tag, digest = split_image(image)
    fix = "name a release tag, pinned by `--image-lock` from `kai-flows images build --push --lock FILE`"
    if tag is None and digest is None:
        report(path, f"image '{image}' has neither a tag nor a digest: that means ':latest', which moves; {fix}")
    elif tag == "latest":
        report(path, f"image '{image}' is tagged 'latest', which moves under a running cluster; {fix}")
    if require_digests and not DIGEST.search(image):
        report(path, f"image '{image}' is not pinned by a registry digest (@sha256:...), which a production deploy "
                     "requires: compile or deploy with --image-lock FILE from `kai-flows images build --push "
                     "--lock FILE`")


# ---------------------------------------------------------------------------------------------- pods


def _pod(tmpl: dict[str, Any], tp: P, spec: dict[str, Any], report: Reporter, pod_labels: dict[str, Any]) -> None:
    # Argo puts the template's pod securityContext on the pod instead of the workflow's, not merged with it.
    pod_sc = as_dict(tmpl["securityContext"] if "securityContext" in tmpl else spec.get("securityContext"))
    for cp, c, name in containers(tmpl, tp):
        _seccomp(as_dict(c.get("securityContext")), pod_sc, (*cp, "securityContext"), f"container '{name}'", report)
    if template_type(tmpl) != "resource":  # a resource template's executor is its main container
        _executors(tmpl, tp, pod_sc, report)
    _volumes(as_list(tmpl.get("volumes")), (*tp, "volumes"), report)
    labels = {**pod_labels, **as_dict(as_dict(tmpl.get("metadata")).get("labels"))}
    if STEP_LABEL not in labels:
        report((*tp, "metadata", "labels"), f"the pod carries no label '{STEP_LABEL}': the step NetworkPolicy, "
                                            "which fences step pods' traffic, does not select it")


def _seccomp(sc: dict[str, Any], pod_sc: dict[str, Any], path: P, who: str, report: Reporter) -> None:
    profile = as_dict(sc["seccompProfile"] if "seccompProfile" in sc else pod_sc.get("seccompProfile"))
    kind = profile.get("type")
    if kind not in SECCOMP_ALLOWED:
        what = f"seccomp profile '{kind}'" if kind else "no seccomp profile"
        report((*path, "seccompProfile"), f"{who} has {what}: {RESTRICTED} needs seccompProfile.type "
                                          "RuntimeDefault (or Localhost) on the pod or the container")


def _patch(tmpl: dict[str, Any]) -> dict[str, Any] | None:
    """The template's podSpecPatch as a mapping; None when it cannot be read without its Argo variables. A
    variable inside a JSON string (a sized step's `"{{inputs.parameters.kai-memory}}"`) is read as a placeholder:
    the security fields checked here are never variables in such a patch, and a variable there fails the check."""
    text = tmpl.get("podSpecPatch")
    if not isinstance(text, str) or not text.strip():
        return {}
    if "{{" in text:
        if not text.lstrip().startswith("{"):
            return None
        text = re.sub(r"\{\{[^}]*\}\}", "<variable>", text)
    try:
        return as_dict(json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text))
    except (ValueError, yaml.YAMLError):
        return {}  # the schema check names a malformed patch; here it locks nothing down


def _executors(tmpl: dict[str, Any], tp: P, pod_sc: dict[str, Any], report: Reporter) -> None:
    """Argo's `init` and `wait` containers get the controller's executor securityContext (none by default) plus
    what the template's podSpecPatch gives them; `restricted` checks them like any container."""
    patch = _patch(tmpl)
    if patch is None:
        return
    path = (*tp, "podSpecPatch")
    for key in HOST_NAMESPACES:
        if patch.get(key) is True:
            report(path, f"podSpecPatch sets {key}: true, which {RESTRICTED} forbids")
    for section, name in EXECUTOR_CONTAINERS:
        found = [as_dict(c) for c in as_list(patch.get(section)) if as_dict(c).get("name") == name]
        sc = as_dict(found[0].get("securityContext")) if found else {}
        who = f"Argo's executor container '{name}'"
        if sc.get("allowPrivilegeEscalation") is not False or "ALL" not in as_list(
                as_dict(sc.get("capabilities")).get("drop")):
            report(path, f"{who} may escalate privileges or keep capabilities, so {RESTRICTED} refuses the pod: "
                         f"give it allowPrivilegeEscalation: false and capabilities.drop [ALL] in podSpecPatch "
                         f"({section} name '{name}')")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            report(path, f"{who} may run as root: set runAsNonRoot: true on the pod securityContext")
        _seccomp(sc, pod_sc, path, who, report)


def _volumes(volumes: list[Any], path: P, report: Reporter) -> None:
    for i, v in enumerate(volumes):
        v = as_dict(v)
        name = v.get("name", f"#{i}")
        kinds = [k for k in v if k != "name"]
        for kind in kinds:
            if kind not in RESTRICTED_VOLUMES:
                report((*path, i, kind), f"volume '{name}' is a {kind}, which {RESTRICTED} forbids (it allows "
                                         f"{', '.join(RESTRICTED_VOLUMES)})")
        if "emptyDir" in v and not as_dict(v["emptyDir"]).get("sizeLimit"):
            report((*path, i, "emptyDir", "sizeLimit"), f"emptyDir volume '{name}' has no sizeLimit: a runaway step "
                                                        "fills its node's disk and gets other pods evicted")


# ---------------------------------------------------------------------------------------------- artifacts


def _insecure_s3(node: Any, path: P) -> Iterator[P]:
    """Paths of every `s3` location in the spec that sets insecure: true."""
    if isinstance(node, dict):
        s3 = node.get("s3")
        if isinstance(s3, dict) and s3.get("insecure") is True:
            yield (*path, "s3")
        for k, v in node.items():
            yield from _insecure_s3(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _insecure_s3(v, (*path, i))
