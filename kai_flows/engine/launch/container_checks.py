"""What the container runtime refuses before a run starts: every pod field it cannot honour as the kubelet would,
named with its field path."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from kai_flows.engine.model import Template, TemplateError
from kai_flows.policy import CPU_FALLBACK_ANNOTATION

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # what Kubernetes requires of a volume name


def check_template(t: Template, where: str) -> None:
    """Raise TemplateError for the first field of container template `t` the container runtime cannot honour."""
    pod = t.pod
    for feature in pod.cluster_features:
        raise TemplateError(f"{where}: {feature.rsplit('.', 1)[-1]!r} is not supported by the container runtime "
                            f"({feature})")
    for field in pod.unsupported_security:
        raise TemplateError(f"{where}: {field} is not applied by the container runtime (it applies user, groups, "
                            "runAsNonRoot, readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation, "
                            "privileged and the RuntimeDefault seccomp profile)")
    for e in pod.env:
        if e.source:
            raise TemplateError(f"{where}.container.env[{e.name}]: {e.source} takes its value from the cluster (a "
                                "Secret, ConfigMap or field); the container runtime supports literal values only")
    for v in pod.volumes:
        if not DNS1123_LABEL.match(v.name):
            raise TemplateError(f"{where}: volume name {v.name!r} is not a DNS-1123 label (Kubernetes refuses it)")
    for m in pod.mounts:
        at = f"{where}.container.volumeMounts[{m.name}]"
        vol = pod.volume(m.name)
        if vol is None:
            raise TemplateError(f"{at}: no volume named {m.name!r} in spec.volumes or the template's volumes")
        if vol.kind != "emptyDir":
            raise TemplateError(f"{at}: volume {m.name!r} is a {vol.kind}; the container runtime mounts emptyDir "
                                "volumes only")
        if vol.medium:
            raise TemplateError(f"{at}: emptyDir medium {vol.medium!r} (a tmpfs counted against the memory limit) "
                                "is not supported by the container runtime")
        _check_path(m.mount_path, f"{at}.mountPath")
        if m.sub_path and (PurePosixPath(m.sub_path).is_absolute() or ".." in PurePosixPath(m.sub_path).parts):
            raise TemplateError(f"{at}.subPath: {m.sub_path!r} must be a relative path without '..'")
    for decl in (*t.input_artifacts, *t.output_artifacts):
        _check_path(decl.path, f"{where}: artifact {decl.name!r} path")
    for op in t.output_params:
        _check_path(op.path, f"{where}: output parameter {op.name!r} valueFrom.path")
    if t.gpus and t.annotations.get(CPU_FALLBACK_ANNOTATION) != "true":
        raise TemplateError(f"{where}: requests {t.gpus} GPU(s) without a CPU path (annotation "
                            f"{CPU_FALLBACK_ANNOTATION}); the container runtime gives containers no GPU")


def _check_path(path: str, what: str) -> None:
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise TemplateError(f"{what}: {path!r} must be an absolute path without '..' parts")
