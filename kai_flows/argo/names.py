"""Names: what the compiler writes and every other layer (engine, submit, ledger, lint, store) reads back, and
Argo's own names, computed as Argo computes them so a local run's nodes, pods and bucket read like a cluster run's.

Argo's (argoproj/argo-workflows v3.7): ``Workflow.NodeID`` (pkg/apis/workflow/v1alpha1/workflow_types.go) and
``GeneratePodName`` (workflow/util/pod_name.go, POD_NAMES=v2, the default). Both hash the node name with 32-bit
FNV-1a (Go's ``hash/fnv.New32a``) over its UTF-8 bytes, printed in decimal. The pod-name prefix ``<wf>-<template>``
is cut to 242 bytes so the name fits Kubernetes' 253-character limit.
"""

from __future__ import annotations

# JSON maps on each WorkflowTemplate: pipeline input -> the parameter carrying its S3 key, and pipeline output ->
# "<task>.<artifact>" (or "onExit.<task>.<artifact>").
INPUTS_ANNOTATION = "kai-flows.io/inputs"
OUTPUTS_ANNOTATION = "kai-flows.io/outputs"
# Argo's own: the text the UI shows for a template (the compiler writes the pipeline's description there).
DESCRIPTION_ANNOTATION = "workflows.argoproj.io/description"

# The semaphore ConfigMap of the queue classes (`synchronization.semaphores[].configMapKeyRef.name`): rendered by
# the compiler, named by submitted workflows, read by lint, shown by the local engine while a task waits.
QUEUE_CONFIGMAP = "kai-queues"
# Argo's default `artifactRepositoryRef.configMap`, and the one the compiler renders and its templates name.
ARTIFACT_REPOSITORY_CONFIGMAP = "artifact-repositories"

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_MAX_K8S_RESOURCE_NAME_LENGTH = 253
_K8S_NAMING_HASH_LENGTH = 10
_MAX_PREFIX_LENGTH = _MAX_K8S_RESOURCE_NAME_LENGTH - _K8S_NAMING_HASH_LENGTH


def fnv32a(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes of ``text`` (Go's ``hash/fnv.New32a``)."""
    h = _FNV32_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def argo_node_id(workflow_name: str, node_name: str) -> str:
    """Argo's node id: the workflow name for the root node, else ``<wf>-<fnv32a(nodeName)>``."""
    if node_name == workflow_name:
        return workflow_name
    return f"{workflow_name}-{fnv32a(node_name)}"


def argo_pod_name(workflow_name: str, template_name: str, node_name: str) -> str:
    """Argo's v2 pod name ``<wf>-<template>-<fnv32a(nodeName)>``, prefix truncated as Argo truncates it."""
    if workflow_name == node_name:
        return workflow_name
    prefix = f"{workflow_name}-{template_name}" if template_name else workflow_name
    raw = prefix.encode("utf-8")
    if len(raw) > _MAX_PREFIX_LENGTH - 1:
        # Go slices bytes; a cut inside a multi-byte character would leave invalid UTF-8 there, we drop it.
        prefix = raw[: _MAX_PREFIX_LENGTH - 1].decode("utf-8", errors="ignore")
    return f"{prefix}-{fnv32a(node_name)}"


def argo_artifact_key(workflow_name: str, pod_name: str, artifact_name: str) -> str:
    """The key of an ``archive: none`` output under Argo's default ``keyFormat`` ``{{workflow.name}}/{{pod.name}}``.

    Argo appends the basename of the artifact's ``path``; the compiler names that path after the artifact,
    so the last part is the artifact name.
    """
    for part, what in ((workflow_name, "workflow name"), (pod_name, "pod name"), (artifact_name, "artifact name")):
        if not part or "/" in part:
            raise ValueError(f"{what} {part!r} must be non-empty and contain no '/'")
    return f"{workflow_name}/{pod_name}/{artifact_name}"
