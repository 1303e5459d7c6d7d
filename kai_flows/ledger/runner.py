"""What the coordinator drives: the WorkflowRunner protocol and the RunStatus it reads back.

A runner runs one workflow per (job, attempt) and labels it with the job id and attempt *as it creates it*, so a
coordinator that died between creating the workflow and recording its name finds it again with `find_by_label`
instead of submitting twice. Phases are Argo's. The runners: local_backend.py (the local engine) and
argo_backend.py (a cluster, through kai_flows.submit); factory.py picks one by the CLI's `--backend` name.

This module imports no runner, so the coordinator depends on the contract alone (the runners import it, not the
other way round: no cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, get_args, runtime_checkable
from uuid import UUID

from kai_flows.ledger.models import Job, JobOutput

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Error"]
PHASES: tuple[Phase, ...] = get_args(Phase)


def job_workflow_name(job_id: UUID | str, attempt: int) -> str:
    """The workflow name of a job's attempt: deterministic, so a second create of the same attempt collides."""
    return f"job-{UUID(str(job_id))}-{attempt}"


@dataclass(frozen=True)
class RunStatus:
    """A workflow's phase; its outputs once it succeeded; why it failed (empty: the coordinator words it).

    `unschedulable`: while one of its pods cannot be scheduled, the scheduler's reason ("0/3 nodes are available:
    3 Insufficient nvidia.com/gpu"), since `unschedulable_since`; the coordinator holds the queue class's admission
    when that lasts (back-pressure). Runners without a scheduler leave it empty.
    """

    phase: Phase
    outputs: tuple[JobOutput, ...] = ()
    message: str = ""
    unschedulable: str = ""
    unschedulable_since: datetime | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:  # a runner's bug, not the workflow's: caught here, not as a job stuck forever
            raise ValueError(f"phase {self.phase!r} is none of {', '.join(PHASES)}")


@runtime_checkable
class WorkflowRunner(Protocol):
    def submit(self, job: Job) -> str:
        """Create the job's workflow, labelled with job.id and job.attempts; return its name.
        BackendError: the job itself is refused (final); any other error is transient (the coordinator retries)."""
        ...

    def status(self, workflow_name: str) -> RunStatus:
        """The workflow's phase and, once it succeeded, its outputs. WorkflowNotFound when there is no such one."""
        ...

    def find_by_label(self, job_id: UUID | str, attempt: int) -> str | None:
        """The workflow created for this job and attempt, if there is one."""
        ...

    def cancel(self, workflow_name: str) -> None:
        """Stop the workflow (a no-op once it has ended). WorkflowNotFound when there is no such one."""
        ...
