"""The coordinator service's settings: one YAML document, the ConfigMap `kai-coordinator-config` in a cluster.

`kai-flows compile` renders it from the policy (`CoordinatorConfig.from_policy`), so the cluster's copy starts
equal to what the templates were compiled with; an operator edits the ConfigMap to change queues, tiers, quality
tiers or timings without a new image. `kai-flows coordinator --config FILE` reads it; every field is checked,
and an unknown key is an error naming it (a typo must not silently keep a default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kai_flows.policy import NAMESPACE, Policy, PolicyError, QueueClass, Tier, build_policy

CONFIG_FILE_NAME = "coordinator.yaml"  # the ConfigMap's key, mounted as /etc/kai/coordinator/coordinator.yaml
QUALITY_TIERS = ("draft", "standard", "high")  # the reconstruction pipelines' quality_tier values
# Admission wait targets of the guide's queue classes: interactive is user-facing, maintenance can wait hours.
WAIT_TARGETS = {"interactive": 120.0, "batch": 1800.0, "maintenance": 14400.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueSettings(_Strict):
    concurrency: Annotated[int, Field(gt=0, strict=True)]
    weight: Annotated[int, Field(gt=0, strict=True)]
    # How long a job of this class may wait for admission before the QueueWaitOverTarget alert fires.
    wait_target_seconds: Annotated[float, Field(gt=0)] = 1800.0


class TierSettings(_Strict):
    """What an operator may change about a subscription tier (its name is fixed by the policy)."""

    queue: str
    priority_class: str
    pool_override: str | None = None
    gpu: bool = True
    max_parallel_tasks: Annotated[int, Field(gt=0)] = 10


class BackpressureSettings(_Strict):
    # A workflow pod Pending as Unschedulable for this long holds its queue class's admission.
    unschedulable_after_seconds: Annotated[float, Field(ge=0)] = 60.0
    # After the backend refused or failed a submission, the class waits this long before the next one.
    refusal_hold_seconds: Annotated[float, Field(gt=0)] = 30.0


class CoordinatorConfig(_Strict):
    namespace: str = NAMESPACE  # where the coordinator creates workflows
    poll_interval_seconds: Annotated[float, Field(gt=0)] = 2.0
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    queues: dict[str, QueueSettings]
    tiers: dict[str, TierSettings]
    # Subscription tier -> the quality_tier values its jobs may ask for (a tier not listed may ask for any).
    quality_tiers: dict[str, list[str]] = Field(default_factory=dict)
    backpressure: BackpressureSettings = BackpressureSettings()

    @classmethod
    def from_policy(cls, policy: Policy) -> CoordinatorConfig:
        return cls(
            namespace=policy.namespace,
            queues={n: QueueSettings(concurrency=q.concurrency, weight=q.weight,
                                     wait_target_seconds=WAIT_TARGETS.get(n, 1800.0))
                    for n, q in policy.queues.items()},
            tiers={n: TierSettings(**t.model_dump(exclude={"name"})) for n, t in policy.tiers.items()},
            # The free tier's jobs stop at standard quality: high is the costliest path (full resolution, dense).
            quality_tiers={"free": ["draft", "standard"]},
        )

    @classmethod
    def load(cls, path: str | Path) -> CoordinatorConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as e:
            raise PolicyError(f"coordinator config {path}: cannot read it ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise PolicyError(f"coordinator config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: object, source: str = "coordinator config") -> CoordinatorConfig:
        try:
            config = cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "document"
            raise PolicyError(f"{source}: {where}: {err['msg']}") from None
        config.policy()  # cross-checks: every tier's queue, priority class and pool exist
        for tier, allowed in config.quality_tiers.items():
            if tier not in config.tiers:
                raise PolicyError(f"{source}: quality_tiers names tier {tier!r}, which tiers does not define")
            if unknown := sorted(set(allowed) - set(QUALITY_TIERS)):
                raise PolicyError(f"{source}: quality_tiers.{tier}: unknown quality tier(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(QUALITY_TIERS)}")
        return config

    def task_queue_config(self) -> str:
        """The queues as the platform's `task_queue_config` JSON (what KAI_TASK_QUEUE_CONFIG carries)."""
        queues = {n: {"concurrency": q.concurrency, "weight": q.weight} for n, q in sorted(self.queues.items())}
        return json.dumps(queues, separators=(",", ":"))

    def policy(self) -> Policy:
        base = build_policy(self.task_queue_config())
        tiers = {n: Tier(name=n, **t.model_dump()) for n, t in self.tiers.items()}
        policy = base.model_copy(update={"tiers": tiers, "namespace": self.namespace})
        for t in tiers.values():
            policy.priority_class(t.priority_class)
            if t.pool_override:
                policy.pool(t.pool_override)
            if t.queue not in policy.queues:
                raise PolicyError(f"tier {t.name!r} uses queue class {t.queue!r}, which queues does not define")
        return policy

    def queue_classes(self) -> dict[str, QueueClass]:
        return {n: QueueClass(name=n, concurrency=q.concurrency, weight=q.weight) for n, q in self.queues.items()}

    def allowed_quality(self, tier: str) -> tuple[str, ...]:
        return tuple(self.quality_tiers.get(tier, QUALITY_TIERS))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
