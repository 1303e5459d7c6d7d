"""The loaded, validated form of a WorkflowTemplate: only what the local engine acts on.

`load.py` builds these from the YAML after refusing anything outside the supported subset; the executor reads
them and never looks at raw YAML again (except argument/loop values, which stay as the YAML gave them because
they are substituted at run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kai_flows.engine.pod_patch import MainResources
from kai_flows.engine.podspec import PodSpec


class EngineError(Exception):
    """Base of every error the engine reports as one line (never a traceback)."""


class TemplateError(EngineError):
    """The WorkflowTemplate is malformed or uses something the local engine does not support."""


@dataclass(frozen=True)
class Param:
    name: str
    value: str | None = None  # arguments: value; inputs: default
    enum: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class OutputParam:
    name: str
    path: str
    default: str | None = None


@dataclass(frozen=True)
class ArtifactDecl:
    """An input or output artifact of a container template."""

    name: str
    path: str
    optional: bool = False
    s3_key: str | None = None  # an input's own default source


@dataclass(frozen=True)
class ArtifactArg:
    """A task argument supplying an input artifact: `from` a task output, or an S3 key, plus `subPath`."""

    name: str
    from_: str | None = None
    s3_key: str | None = None
    sub_path: str | None = None


@dataclass(frozen=True)
class Backoff:
    duration: float = 0.0
    factor: float = 1.0
    max_duration: float | None = None


@dataclass(frozen=True)
class RetryStrategy:
    limit: int | str  # a string: a parameter expression, resolved when the node starts (IntOrString in Argo)
    policy: str = "OnFailure"
    backoff: Backoff = field(default_factory=Backoff)

    def allows(self, phase: str) -> bool:
        """Whether an attempt that ended in `phase` is retried under this policy (retryPolicy, argo.md)."""
        return self.policy == "Always" or (self.policy == "OnFailure" and phase == "Failed") or (
            self.policy in ("OnError", "OnTransientError") and phase == "Error")


@dataclass(frozen=True)
class Task:
    name: str
    template: str
    depends: str | None  # already normalised: `dependencies` become "A && B"
    when: str | None = None
    with_items: list[Any] | None = None
    with_param: str | None = None
    with_sequence: dict[str, Any] | None = None
    params: tuple[Param, ...] = ()
    artifacts: tuple[ArtifactArg, ...] = ()
    continue_on_failed: bool = False
    continue_on_error: bool = False

    @property
    def fanout(self) -> bool:
        # DAGTask.ShouldExpand: an empty withItems or withParam is no loop at all
        return bool(self.with_items) or bool(self.with_param) or self.with_sequence is not None


@dataclass(frozen=True)
class Template:
    name: str
    kind: str  # "dag" or "container"
    inputs: tuple[Param, ...] = ()
    input_artifacts: tuple[ArtifactDecl, ...] = ()
    output_params: tuple[OutputParam, ...] = ()
    output_artifacts: tuple[ArtifactDecl, ...] = ()
    # container
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    cpu_limit: float | None = None
    memory_limit: int | None = None  # bytes
    gpus: int = 0
    # The main container's resources and the podSpecPatches that hold Argo variables, applied when the pod starts
    # (kai_flows.engine.pod_patch); static patches are already in cpu_limit/memory_limit/gpus.
    resources: MainResources = field(default_factory=MainResources)
    resource_patches: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    retry: RetryStrategy | None = None  # container or dag (a dag's attempts are whole DAG runs)
    deadline: float | None = None  # activeDeadlineSeconds or timeout, whichever is shorter
    deadline_exprs: tuple[str, ...] = ()  # the same given as parameter expressions, resolved when the pod starts
    metrics: tuple[dict[str, Any], ...] = ()
    pod: PodSpec = field(default_factory=PodSpec)  # env, mounts, volumes, securityContext: the container runtime's
    # dag
    tasks: tuple[Task, ...] = ()
    target: str = ""  # dag.target: task names separated by spaces, maybe a parameter expression
    fail_fast: bool = True  # dag.failFast: only how the DAG's phase is assessed (dag.go assessDAGPhase)
    fail_fast_children: bool = False  # template-level failFast: no new child after a failed one (checkParallelism)
    parallelism: int | None = None
    semaphores: tuple[str, ...] = ()  # configmap keys (queue class names)

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)


@dataclass(frozen=True)
class Workflow:
    """A loaded WorkflowTemplate."""

    name: str
    namespace: str
    entrypoint: str
    templates: dict[str, Template]
    params: tuple[Param, ...] = ()
    parallelism: int | None = None
    semaphores: tuple[str, ...] = ()
    on_exit: str | None = None
    deadline: float | None = None
    retry: RetryStrategy | None = None  # spec-level default for every template without its own
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    service_account: str = ""
    source: str = "<dict>"
    ignored: tuple[str, ...] = ()  # cluster-only fields recorded, not acted on
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)
