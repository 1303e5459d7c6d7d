"""Kai's scheduling policy, in one place: node pools, priority classes, queue classes and tiers.

Templates, cluster manifests, lint, the local engine and submission all read `load_policy()`.
The values come from the platform's deployment guide (shared/seed/kai-deployment-guide.md, "Infrastructure
Components" and `task_queue_config`).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from kai_flows import __version__
from kai_flows.argo.names import QUEUE_CONFIGMAP  # one name for every layer; policy.queue_configmap defaults to it

POOL_LABEL = "kai.io/node-pool"
GPU_RESOURCE = "nvidia.com/gpu"
# On a GPU step's template: "true" when it may run without a GPU (CPU path), "false" when it must not.
CPU_FALLBACK_ANNOTATION = "kai-flows.io/cpu-fallback"
NAMESPACE = "kai-ml"
DEFAULT_REGISTRY = "registry.example.com"  # compiled images are <registry>/kai/<family>:<tag>
# The release's version: the committed templates stay reproducible without any image built, and never name
# `latest`, which moves under a running cluster. A build pins digests on top (`images build --push --lock`).
DEFAULT_TAG = __version__
# Every emptyDir the templates declare is capped: a runaway step fills its node's disk and gets other pods evicted.
SCRATCH_SIZE_LIMIT = "20Gi"
# Pod Security Admission level the namespace enforces (and audits, and warns about).
POD_SECURITY_LEVEL = "restricted"
# Every step pod carries this label (its step's name): the step NetworkPolicy selects pods by it.
STEP_LABEL = "kai-flows.io/step"
# Written on the artifact-repository ConfigMap when the operator opted out of TLS by name; lint refuses
# `insecure: true` without it.
INSECURE_REPOSITORY_ANNOTATION = "kai-flows.io/insecure-artifact-repository"
DEFAULT_TASK_QUEUE_CONFIG = (
    '{"interactive":{"concurrency":5,"weight":10},"batch":{"concurrency":10,"weight":5},'
    '"maintenance":{"concurrency":2,"weight":1}}'
)


class PolicyError(ValueError):
    """A policy value is missing or malformed; the message names it."""


class Taint(BaseModel):
    key: str = POOL_LABEL
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class NodePool(BaseModel):
    name: str
    purpose: str
    taint: Taint | None = None
    gpu: str | None = None  # accelerator model the pool carries, if any

    @property
    def node_selector(self) -> dict[str, str]:
        return {POOL_LABEL: self.name}

    def tolerations(self) -> list[dict[str, str]]:
        if self.taint is None:
            return []
        t = self.taint
        tolerations = [{"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}]
        if self.gpu:
            # GPU nodes usually carry the device plugin's own taint as well.
            tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
        return tolerations


class PriorityClass(BaseModel):
    name: str
    value: int
    description: str
    default: bool = False
    preemption_policy: Literal["PreemptLowerPriority", "Never"] = "PreemptLowerPriority"


class QueueClass(BaseModel):
    name: str
    concurrency: int = Field(gt=0)
    weight: int = Field(gt=0)

    @property
    def semaphore_key(self) -> str:
        return self.name


class Tier(BaseModel):
    """A subscription tier: where its jobs run and how urgently."""

    name: str
    priority_class: str
    queue: str
    pool_override: str | None = None  # every pod moves to this pool (e.g. free -> spot-instances)
    gpu: bool = True  # may GPU steps get a GPU; without, GPU-capable pipelines take their CPU path
    max_parallel_tasks: int = 10


class Policy(BaseModel):
    pools: dict[str, NodePool]
    priority_classes: dict[str, PriorityClass]
    queues: dict[str, QueueClass]
    tiers: dict[str, Tier]
    namespace: str = NAMESPACE
    queue_configmap: str = QUEUE_CONFIGMAP

    @property
    def default_priority_class(self) -> PriorityClass:
        return next(p for p in self.priority_classes.values() if p.default)

    def pool(self, name: str) -> NodePool:
        return _lookup(self.pools, name, "node pool")

    def priority_class(self, name: str) -> PriorityClass:
        return _lookup(self.priority_classes, name, "priority class")

    def queue(self, name: str) -> QueueClass:
        return _lookup(self.queues, name, "queue class")

    def tier(self, name: str) -> Tier:
        return _lookup(self.tiers, name, "tier")

    def tier_pod_spec_patch(self, tier: Tier, *, has_gpu_steps: bool = False) -> str:
        """A workflow-level podSpecPatch for a tier's jobs (deterministic JSON).

        Argo applies the workflow's podSpecPatch after the template's own fields, so it is the one place where a
        submit-time choice can override the compiled `priorityClassName` (a template value beats
        `spec.podPriorityClassName`) and, for tiers with a pool override, the node selector and tolerations.
        For a tier without GPUs running a pipeline with GPU steps, it also deletes the `nvidia.com/gpu` request
        and limit of the main container (a strategic-merge null), so those steps take their CPU path instead of
        waiting for a GPU node forever; the submitter refuses the job when a GPU step has no CPU path.
        """
        patch: dict[str, object] = {"priorityClassName": tier.priority_class}
        if tier.pool_override is not None:
            pool = self.pool(tier.pool_override)
            patch |= {"nodeSelector": pool.node_selector, "tolerations": pool.tolerations()}
        if has_gpu_steps and not tier.gpu:
            no_gpu = {GPU_RESOURCE: None}
            # Without a pool override the pod may still land on a GPU node: hide its devices too, or a CUDA
            # image (NVIDIA_VISIBLE_DEVICES=all) would use GPUs it never requested.
            hidden = [{"name": "CUDA_VISIBLE_DEVICES", "value": ""},
                      {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
            patch["containers"] = [{"name": "main", "resources": {"limits": no_gpu, "requests": no_gpu},
                                    "env": hidden}]
        return json.dumps(patch, sort_keys=True, separators=(",", ":"))


def _lookup(table: dict, name: str, kind: str):  # type: ignore[no-untyped-def]
    try:
        return table[name]
    except KeyError:
        raise PolicyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}") from None


def _pools() -> dict[str, NodePool]:
    pools = [
        NodePool(name="cpu-optimized", purpose="general processing: quality, preprocessing, conversion"),
        NodePool(name="gpu-optimized", purpose="ML inference (T4 GPUs)", gpu="nvidia-tesla-t4",
                 taint=Taint(value="gpu-optimized")),
        NodePool(name="gpu-high-end", purpose="ML training, radiance fields (A100 GPUs)", gpu="nvidia-tesla-a100",
                 taint=Taint(value="gpu-high-end")),
        NodePool(name="memory-optimized", purpose="large models, dense reconstruction",
                 taint=Taint(value="memory-optimized")),
        NodePool(name="storage-optimized", purpose="data-intensive operations", taint=Taint(value="storage-optimized")),
        NodePool(name="orchestration", purpose="control plane services: coordinator, Argo",
                 taint=Taint(value="orchestration")),
        NodePool(name="spot-instances", purpose="cost-effective, preemptible batch processing",
                 taint=Taint(value="spot-instances")),
    ]
    return {p.name: p for p in pools}


def _priority_classes() -> dict[str, PriorityClass]:
    classes = [
        PriorityClass(name="system-critical", value=1_000_000, description="essential components, never preempted"),
        PriorityClass(name="interactive", value=100_000, description="user-facing requests needing low latency"),
        PriorityClass(name="high-priority-batch", value=10_000, description="important batch jobs"),
        PriorityClass(name="medium-priority-batch", value=1_000, description="normal batch jobs", default=True),
        PriorityClass(name="low-priority-batch", value=100, description="non-urgent batch jobs"),
        PriorityClass(name="maintenance", value=10, description="system maintenance tasks", preemption_policy="Never"),
        PriorityClass(name="preemptible", value=1, description="jobs that may run on spot/preemptible instances",
                      preemption_policy="Never"),
    ]
    return {c.name: c for c in classes}


def _tiers() -> dict[str, Tier]:
    tiers = [
        Tier(name="free", priority_class="low-priority-batch", queue="batch", pool_override="spot-instances",
             gpu=False, max_parallel_tasks=2),
        Tier(name="pro", priority_class="medium-priority-batch", queue="batch", max_parallel_tasks=6),
        Tier(name="enterprise", priority_class="high-priority-batch", queue="interactive", max_parallel_tasks=10),
        Tier(name="internal", priority_class="maintenance", queue="maintenance", gpu=False, max_parallel_tasks=2),
    ]
    return {t.name: t for t in tiers}


class _QueueEntry(BaseModel):
    concurrency: int = Field(gt=0)
    weight: int = Field(gt=0)

    @field_validator("concurrency", "weight", mode="before")
    @classmethod
    def _ints_only(cls, v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("must be a positive integer")
        return v


def parse_task_queue_config(text: str, source: str = "task_queue_config") -> dict[str, QueueClass]:
    """Parse the platform's `task_queue_config` JSON: {"class": {"concurrency": N, "weight": W}, ...}."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolicyError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(f"{source}: expected a non-empty JSON object of queue classes")
    queues: dict[str, QueueClass] = {}
    for name, entry in raw.items():
        try:
            parsed = _QueueEntry.model_validate(entry)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "value"
            raise PolicyError(f"{source}: queue class {name!r}: {where}: {err['msg']}") from None
        queues[name] = QueueClass(name=name, concurrency=parsed.concurrency, weight=parsed.weight)
    return queues


def _queue_config_text() -> tuple[str, str]:
    if (value := os.environ.get("KAI_TASK_QUEUE_CONFIG")) is not None:
        candidate = Path(value)
        if not value.lstrip().startswith("{") and candidate.is_file():
            return candidate.read_text(), str(candidate)
        return value, "KAI_TASK_QUEUE_CONFIG"
    return DEFAULT_TASK_QUEUE_CONFIG, "default task_queue_config"


def build_policy(task_queue_config: str | None = None) -> Policy:
    text, source = (task_queue_config, "task_queue_config") if task_queue_config else _queue_config_text()
    policy = Policy(
        pools=_pools(), priority_classes=_priority_classes(), queues=parse_task_queue_config(text, source),
        tiers=_tiers(),
    )
    for tier in policy.tiers.values():
        policy.priority_class(tier.priority_class)
        if tier.queue not in policy.queues:
            raise PolicyError(f"tier {tier.name!r} uses queue class {tier.queue!r}, which {source} does not define")
        if tier.pool_override:
            policy.pool(tier.pool_override)
    return policy


@lru_cache(maxsize=4)
def _cached_policy(env_value: str | None) -> Policy:
    return build_policy()


def load_policy() -> Policy:
    """The policy in force: the built-in pools/classes/tiers plus `KAI_TASK_QUEUE_CONFIG` (JSON or a file path)."""
    return _cached_policy(os.environ.get("KAI_TASK_QUEUE_CONFIG"))
