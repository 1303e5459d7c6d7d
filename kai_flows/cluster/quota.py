"""The namespace's ResourceQuota and LimitRange, derived from the policy and the compiled steps.

Why these numbers:
- The quota is a ceiling, not the scheduler: the queue semaphores decide what runs. It is what full admission
  may use: every admissible workflow (the queue classes' concurrencies added up) running the largest step any
  pipeline declares, plus the coordinator at its HPA maximum (and a rollout's surge pod) and its migration Job.
  A fan-out that would go beyond it (assess-image over a large photo set) waits: Argo retries a pod the quota
  refuses. It bounds what a bug (a runaway fan-out, submissions around the semaphores) can take from the
  cluster's other tenants. It counts requests only: limits reserve nothing, and a limits quota would count
  Argo's executor containers (which kai-flows does not size) at the LimitRange's default and hold fan-outs back
  for nothing.
- The LimitRange gives the containers that declare no resources (Argo's `init` and `wait`) a request, which a
  requests quota needs from every container, and a limit generous enough for the executor to upload an artifact;
  its maximum is twice the largest step, so a tier that scales a step up still fits and a typo (160Gi) is refused
  at admission instead of waiting for a node that never comes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kai_flows.argo.units import parse_quantity
from kai_flows.policy import GPU_RESOURCE, Policy

PODS_PER_WORKFLOW = 16  # pods of one workflow at once (a fan-out's assess-image pods) before the quota holds more
EXECUTOR_DEFAULT_REQUEST = {"cpu": "50m", "memory": "64Mi"}
EXECUTOR_DEFAULT_LIMIT = {"cpu": "1", "memory": "1Gi"}
QUOTA_NAME = "kai-flows"
GI = 1024**3


@dataclass(frozen=True)
class Peak:
    """The largest request (and limit) of any one container, each resource on its own."""

    cpu: float = 0.0
    memory: float = 0.0
    gpu: int = 0
    cpu_limit: float = 0.0
    memory_limit: float = 0.0


def largest_step() -> Peak:
    """The largest step of the compiled pipelines (kai_flows.pipelines), resource by resource."""
    from kai_flows.pipelines import PIPELINES

    peak = Peak()
    for build in PIPELINES.values():
        pipeline = build()
        tasks = [*pipeline.tasks.values(), *([pipeline.exit_task] if pipeline.exit_task else [])]
        for task in tasks:
            s = task.step.spec
            memory = float(parse_quantity(s.memory_max or s.memory))  # a sized step may be planned up to its max
            peak = Peak(max(peak.cpu, float(parse_quantity(s.cpu))), max(peak.memory, memory),
                        max(peak.gpu, s.gpu or 0),
                        max(peak.cpu_limit, float(parse_quantity(s.cpu_limit or s.cpu))),
                        max(peak.memory_limit, float(parse_quantity(s.memory_limit or s.memory_max or s.memory))))
    return peak


def _cores(q: str) -> float:
    return float(parse_quantity(q))


def _cpu(cores: float) -> str:
    return str(math.ceil(cores))


def _gib(n_bytes: float) -> str:
    return f"{math.ceil(n_bytes / GI)}Gi"


def namespace_limits(policy: Policy, meta: Callable[..., dict[str, Any]],
                     step: Peak | None = None) -> list[dict[str, Any]]:
    """[ResourceQuota, LimitRange] for the namespace (see the module docstring for the reasoning)."""
    from kai_flows.cluster import coordinator as c

    step = step or largest_step()
    workflows = sum(q.concurrency for q in policy.queues.values())
    coordinator_pods = c.MAX_REPLICAS + 1  # + a rollout's surge pod
    cpu = (workflows * step.cpu + coordinator_pods * _cores(c.RESOURCES["requests"]["cpu"])
           + _cores(c.MIGRATION_RESOURCES["requests"]["cpu"]))
    memory = (workflows * step.memory + coordinator_pods * float(parse_quantity(c.RESOURCES["requests"]["memory"]))
              + float(parse_quantity(c.MIGRATION_RESOURCES["requests"]["memory"])))
    hard = {"requests.cpu": _cpu(cpu), "requests.memory": _gib(memory),
            "pods": str(workflows * PODS_PER_WORKFLOW + coordinator_pods + 1)}
    if step.gpu:
        hard[f"requests.{GPU_RESOURCE}"] = str(workflows * step.gpu)
    max_cpu = 2 * max(step.cpu_limit, _cores(c.RESOURCES["limits"]["cpu"]))
    max_memory = 2 * max(step.memory_limit, float(parse_quantity(c.RESOURCES["limits"]["memory"])))
    return [
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta(QUOTA_NAME), "spec": {"hard": hard}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta(QUOTA_NAME), "spec": {"limits": [{
            "type": "Container",
            "defaultRequest": dict(EXECUTOR_DEFAULT_REQUEST),
            "default": dict(EXECUTOR_DEFAULT_LIMIT),
            "max": {"cpu": _cpu(max_cpu), "memory": _gib(max_memory)},
        }]}},
    ]
