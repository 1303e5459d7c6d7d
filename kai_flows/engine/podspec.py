"""The pod-level fields of a container template, as the container runtime honours them.

A pod's environment, mounts and security settings come from three places that Argo combines: the container
itself (`env`, `volumeMounts`, `securityContext`, `resources`), the template (`securityContext`, `volumes`) and the
workflow spec (`securityContext`, `volumes`). Argo puts the template's pod securityContext on the pod when the
template has one, else the workflow's (`workflow/controller/workflowpod.go`: `woc.execWf.Spec.SecurityContext`
unless `tmpl.SecurityContext` is set), and appends the template's volumes to the workflow's. Kubernetes then lets
the container's own securityContext fields win over the pod's (runAsUser, runAsGroup, runAsNonRoot).

This module only reads; what the container runtime cannot honour it names in `unsupported()`, and the process
runtime records these fields as cluster-only (see load.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""
    source: str = ""  # "valueFrom" / "envFrom" when the value comes from the cluster (a Secret, a field ref)


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # the volume source: "emptyDir", "hostPath", "secret", ...
    medium: str = ""  # emptyDir.medium ("" or "Memory")
    size_limit: str = ""  # emptyDir.sizeLimit, a quantity


@dataclass(frozen=True)
class SecurityContext:
    """The effective securityContext of the main container (pod fields with the container's on top)."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool = False
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool = True  # Kubernetes' default when unset
    privileged: bool = False
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()


@dataclass(frozen=True)
class PodSpec:
    env: tuple[EnvVar, ...] = ()
    mounts: tuple[VolumeMount, ...] = ()
    volumes: tuple[Volume, ...] = ()
    security: SecurityContext = field(default_factory=SecurityContext)
    image_pull_policy: str = ""
    working_dir: str = ""
    # fields present that no local runtime can honour, as field paths (`spec.templates[x].sidecars`, ...)
    cluster_features: tuple[str, ...] = ()
    # securityContext fields present that the container runtime cannot apply as the kubelet would
    unsupported_security: tuple[str, ...] = ()

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)


def _map(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _volumes(items: Any) -> list[Volume]:
    out = []
    for raw in items if isinstance(items, list) else []:
        v = _map(raw)
        kinds = [k for k in v if k != "name"]
        kind = kinds[0] if kinds else "emptyDir"
        ed = _map(v.get("emptyDir"))
        out.append(Volume(str(v.get("name", "")), kind, str(ed.get("medium") or ""), str(ed.get("sizeLimit") or "")))
    return out


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse(template: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> PodSpec:
    """The PodSpec of container template `template` in workflow spec `spec`; `where` is the template's path."""
    c = _map(template.get("container"))
    env = []
    for raw in c.get("env") or []:
        e = _map(raw)
        env.append(EnvVar(str(e.get("name", "")), "" if e.get("value") is None else str(e["value"]),
                          "valueFrom" if "valueFrom" in e else ""))
    env += [EnvVar(f"<envFrom[{i}]>", "", "envFrom") for i, _ in enumerate(c.get("envFrom") or [])]
    mounts = tuple(VolumeMount(str(m.get("name", "")), str(m.get("mountPath", "")), bool(m.get("readOnly", False)),
                               str(m.get("subPath") or ""))
                   for m in map(_map, c.get("volumeMounts") or []))
    pod_sc = _map(template["securityContext"]) if "securityContext" in template else _map(spec.get("securityContext"))
    c_sc = _map(c.get("securityContext"))
    caps = _map(c_sc.get("capabilities"))

    def pick(key: str) -> Any:
        return c_sc[key] if key in c_sc else pod_sc.get(key)

    security = SecurityContext(
        run_as_user=_int(pick("runAsUser")), run_as_group=_int(pick("runAsGroup")),
        run_as_non_root=bool(pick("runAsNonRoot")), fs_group=_int(pod_sc.get("fsGroup")),
        supplemental_groups=tuple(int(g) for g in pod_sc.get("supplementalGroups") or []),
        read_only_root_filesystem=bool(c_sc.get("readOnlyRootFilesystem", False)),
        allow_privilege_escalation=bool(c_sc.get("allowPrivilegeEscalation", True)),
        privileged=bool(c_sc.get("privileged", False)),
        drop=tuple(str(x) for x in caps.get("drop") or []), add=tuple(str(x) for x in caps.get("add") or []),
    )
    unsupported = [f"{prefix}.securityContext.{k}" for prefix, sc in (("pod", pod_sc), ("container", c_sc))
                   for k in ("seLinuxOptions", "sysctls", "windowsOptions", "procMount", "appArmorProfile")
                   if sc.get(k)]
    unsupported += [f"{prefix}.securityContext.seccompProfile.type={_map(sc['seccompProfile']).get('type')}"
                    for prefix, sc in (("pod", pod_sc), ("container", c_sc))
                    if sc.get("seccompProfile") and _map(sc["seccompProfile"]).get("type") != "RuntimeDefault"]
    cluster = [f"{where}.{k}" for k in ("sidecars", "initContainers") if template.get(k)]
    cluster += [f"{where}.container.{k}" for k in ("ports", "readinessProbe", "livenessProbe", "startupProbe",
                                                   "volumeDevices", "lifecycle") if c.get(k)]
    return PodSpec(env=tuple(env), mounts=mounts,
                   volumes=tuple(_volumes(spec.get("volumes")) + _volumes(template.get("volumes"))),
                   security=security, image_pull_policy=str(c.get("imagePullPolicy") or ""),
                   working_dir=str(c.get("workingDir") or ""), unsupported_security=tuple(unsupported),
                   cluster_features=tuple(cluster))
