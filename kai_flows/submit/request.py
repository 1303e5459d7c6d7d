"""A submission request and the Workflow it becomes (a `workflowTemplateRef` plus Kai's scheduling policy).

The Workflow carries what `argo submit --from workflowtemplate/NAME` would (generateName, the template label,
arguments) plus the queue's semaphore and priority and the tier's priority class, pod patch and parallelism,
all read from `kai_flows.policy`. Everything is checked here, before any call to a cluster.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kai_flows.policy import NAMESPACE, Policy, PolicyError, QueueClass, Tier, load_policy
from kai_flows.store.errors import InvalidKeyError
from kai_flows.store.manifest import check_location
from kai_flows.submit.errors import SubmitError
from kai_flows.submit.template import TemplateInfo, template_name
from kai_flows.tenancy import DEFAULT_TENANT, TenancyError, check_input_key, check_tenant

TEMPLATE_LABEL = "workflows.argoproj.io/workflow-template"
JOB_ID_LABEL = "kai-flows.io/job-id"
QUEUE_LABEL = "kai-flows.io/queue"
TIER_LABEL = "kai-flows.io/tier"
RESERVED_LABELS = (TEMPLATE_LABEL, JOB_ID_LABEL, QUEUE_LABEL, TIER_LABEL)

# Kubernetes label syntax: an optional DNS-subdomain prefix, a name part of <= 63 chars; values <= 63 chars.
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


class SubmitRequest(BaseModel):
    """One job to run: which pipeline, its parameters, and who it is for (queue class and tier)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = Field(min_length=1, description="pipeline / WorkflowTemplate name, e.g. image-quality")
    parameters: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, description="queue class; default: the tier's queue")
    tier: str | None = Field(default=None, description="subscription tier; default: the one on the default class")
    labels: dict[str, str] = Field(default_factory=dict)
    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    namespace: str = NAMESPACE
    tenant: str = Field(default=DEFAULT_TENANT, description="whose job: its inputs must be that tenant's uploads")

    @field_validator("tenant")
    @classmethod
    def _tenant_name(cls, v: str) -> str:
        return check_tenant(v)

    @field_validator("job_id")
    @classmethod
    def _job_id_is_label_value(cls, v: str) -> str:
        if not v or not _LABEL_VALUE.match(v):
            raise ValueError(f"job id {v!r} is not a valid label value (<= 63 of [A-Za-z0-9-_.], alphanumeric ends)")
        return v

    @property
    def template(self) -> str:
        return template_name(self.pipeline)


def parameter_value(value: Any) -> str:
    """Argo parameter values are strings; non-strings are written as JSON (true, 1.5, [..])."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def check_parameters(req: SubmitRequest, template: TemplateInfo) -> list[dict[str, str]]:
    """The `spec.arguments.parameters` list, in the template's declared order; raises on the first problem."""
    declared = {p.name for p in template.parameters}
    for name in req.parameters:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise SubmitError(f"pipeline {template.name!r} declares no parameter {name!r} (declared: {known})")
    out = []
    for p in template.parameters:
        if p.name not in req.parameters:
            if p.required:
                raise SubmitError(f"pipeline {template.name!r}: parameter {p.name!r} is required ({p.description})"
                                  if p.description else f"pipeline {template.name!r}: parameter {p.name!r} is required")
            continue
        value = parameter_value(req.parameters[p.name])
        if p.name in template.input_keys:
            what = f"pipeline {template.name!r}: parameter {p.name!r} carries the S3 key of input " \
                f"{template.input_keys[p.name]!r}"
            try:
                check_input_key(req.tenant, what, check_location(value))
            except InvalidKeyError as e:
                raise SubmitError(f"{what}: {e}") from None
            except TenancyError as e:
                raise SubmitError(str(e)) from None
        if p.enum is not None and value not in p.enum:
            raise SubmitError(f"pipeline {template.name!r}: parameter {p.name!r} = {value!r} is not one of "
                              f"{', '.join(p.enum)}")
        out.append({"name": p.name, "value": value})
    return out


def _check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if key in RESERVED_LABELS:
            raise SubmitError(f"label {key!r} is set by kai-flows and cannot be given")
        if not _LABEL_KEY.match(key):
            raise SubmitError(f"label key {key!r} is not a valid Kubernetes label key")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            raise SubmitError(f"label {key}={value!r}: not a valid Kubernetes label value")


def default_tier(policy: Policy) -> str:
    """The tier whose priority class is the cluster default (medium-priority-batch: `pro`)."""
    default_class = policy.default_priority_class.name
    return next(t.name for t in policy.tiers.values() if t.priority_class == default_class)


def check_scheduling(req: SubmitRequest, policy: Policy | None = None) -> tuple[Tier, QueueClass]:
    """The request's tier and queue class; SubmitError for an unknown one or a bad label (no template needed)."""
    policy = policy or load_policy()
    try:
        tier = policy.tier(req.tier or default_tier(policy))
        queue = policy.queue(req.queue or tier.queue)
    except PolicyError as e:
        raise SubmitError(str(e)) from None
    _check_labels(req.labels)
    return tier, queue


def build_workflow(req: SubmitRequest, template: TemplateInfo, policy: Policy | None = None) -> dict[str, Any]:
    """The Workflow object to create; raises SubmitError naming the bad parameter, queue, tier or label."""
    policy = policy or load_policy()
    tier, queue = check_scheduling(req, policy)
    arguments = check_parameters(req, template)
    name = req.template
    labels = {**req.labels, TEMPLATE_LABEL: name, JOB_ID_LABEL: req.job_id, QUEUE_LABEL: queue.name,
              TIER_LABEL: tier.name}
    spec: dict[str, Any] = {
        "workflowTemplateRef": {"name": name},
        "arguments": {"parameters": arguments},
        # Higher dequeues first in the controller's queue and in the semaphore's waiters: the queue's weight.
        "priority": queue.weight,
        "synchronization": {"semaphores": [{"configMapKeyRef": {"name": policy.queue_configmap,
                                                                "key": queue.semaphore_key}}]},
        "podPriorityClassName": tier.priority_class,
        "parallelism": tier.max_parallel_tasks,
    }
    if not tier.gpu and (gpu_only := sorted(n for n, fallback in template.gpu_steps.items() if not fallback)):
        raise SubmitError(f"tier {tier.name!r} runs without GPUs, but pipeline {req.pipeline!r} has GPU step(s) "
                          f"without a CPU path: {', '.join(gpu_only)}; submit it with a tier that has GPUs")
    spec["podSpecPatch"] = policy.tier_pod_spec_patch(tier, has_gpu_steps=bool(template.gpu_steps))
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"{name}-", "namespace": req.namespace, "labels": labels},
        "spec": spec,
    }
